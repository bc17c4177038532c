//! Test rig: upstream servers on 127.0.0.2, a proxy on 127.0.0.1, a static resolver.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden_egress::{ProxyConfig, ProxyHandle, ProxyState, StaticResolver};
use warden_wire::egress::{Action, Cidr, EgressPolicy, EgressRule, HttpRule, MethodSet, Target};
use warden_wire::orders::Autonomy;

pub const SANDBOX: &str = "agent";
pub const UPSTREAM_IP: &str = "127.0.0.2";

pub fn rule(action: Action, target: Target, ports: &[u16]) -> EgressRule {
    EgressRule {
        action,
        target,
        ports: ports.to_vec(),
        http: None,
        reason: None,
        order: None,
        autonomy: Autonomy::Auto,
        line: 1,
    }
}

pub fn host(h: &str) -> Target {
    Target::Host(h.to_string())
}

pub fn cidr(c: &str) -> Target {
    Target::Cidr(Cidr::parse(c).expect("valid cidr"))
}

pub fn http_rule(h: &str, port: u16, methods: &[&str], paths: &[&str]) -> EgressRule {
    let mut r = rule(Action::Allow, host(h), &[port]);
    r.http = Some(HttpRule {
        methods: MethodSet::from_names(methods.iter().copied()).expect("methods"),
        paths: paths.iter().map(|p| p.to_string()).collect(),
    });
    r
}

pub fn policy(rules: Vec<EgressRule>, idle_timeout_secs: u64) -> EgressPolicy {
    EgressPolicy {
        version: warden_wire::WIRE_VERSION,
        sandbox: SANDBOX.to_string(),
        rules,
        idle_timeout_secs,
    }
}

/// Upstream servers the tests dial through the proxy.
pub struct Upstreams {
    pub echo: SocketAddr,
    pub http: SocketAddr,
    /// Raw request heads and bodies the HTTP upstream received, one entry per connection.
    pub seen: Arc<Mutex<Vec<String>>>,
}

/// A TCP echo server.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind((UPSTREAM_IP, 0))
        .await
        .expect("bind echo");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Whether `all` (a head ending at `end`, then what followed) holds the whole request:
/// a chunked body up to its last chunk, or `Content-Length` bytes of body.
fn request_complete(all: &[u8], end: usize) -> bool {
    let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
    let body = &all[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return find(body, b"0\r\n\r\n").is_some();
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

/// An HTTP server that answers every request, once it has all of it, with
/// `<method> <target>` as the body, keeps the connection open (the proxy must end the
/// exchange by framing), and records what it received until the client closes or 300 ms
/// of quiet. (Answering before the body is in would let the proxy end the exchange, as it
/// may, before the body reached this server.)
pub async fn http_server(seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let l = TcpListener::bind((UPSTREAM_IP, 0))
        .await
        .expect("bind http");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut all = Vec::new();
                let mut buf = [0u8; 65536];
                let mut answered = false;
                loop {
                    let r =
                        tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
                    match r {
                        Ok(Ok(n)) if n > 0 => all.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                    if !answered
                        && let Some(end) = find(&all, b"\r\n\r\n")
                        && request_complete(&all, end)
                    {
                        let line = String::from_utf8_lossy(&all[..end])
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_string();
                        let mut parts = line.split(' ');
                        let body = format!(
                            "{} {}",
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or("")
                        );
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                        answered = true;
                    }
                }
                seen.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&all).into_owned());
            });
        }
    });
    addr
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub async fn upstreams() -> Upstreams {
    let seen = Arc::new(Mutex::new(Vec::new()));
    Upstreams {
        echo: echo_server().await,
        http: http_server(seen.clone()).await,
        seen,
    }
}

pub fn resolver() -> StaticResolver {
    let up: IpAddr = UPSTREAM_IP.parse().expect("ip");
    StaticResolver::new()
        .with("allowed.test", &[up])
        .with("api.test", &[up])
        .with("ask.test", &[up])
        .with("new.test", &[up])
        .with("evil.test", &[up])
        .with("loop.test", &["127.0.0.1".parse().expect("ip")])
        .with("meta.test", &["169.254.169.254".parse().expect("ip")])
        .with("mixed.test", &[up, "10.0.0.1".parse().expect("ip")])
}

/// The standard policy. Rule indexes are asserted in reasons, so keep the order:
/// 0 the upstream address (named explicitly, since 127.0.0.0/8 is forbidden by default),
/// 1 allowed.test, 2 loop.test, 3 meta.test, 4 api.test (http GET /v1/**), 5 ask.test,
/// 6 mixed.test.
pub fn standard_rules(up: &Upstreams) -> Vec<EgressRule> {
    let ports = [up.echo.port(), up.http.port()];
    let mut ask = rule(Action::Allow, host("ask.test"), &ports);
    ask.order = Some("fetch-docs".into());
    ask.autonomy = Autonomy::Ask;
    vec![
        rule(Action::Allow, cidr("127.0.0.2/32"), &ports),
        rule(Action::Allow, host("allowed.test"), &ports),
        rule(Action::Allow, host("loop.test"), &[]),
        rule(Action::Allow, host("meta.test"), &[]),
        http_rule("api.test", up.http.port(), &["GET"], &["/v1/**"]),
        ask,
        rule(Action::Allow, host("mixed.test"), &[]),
    ]
}

pub struct Rig {
    pub state: Arc<ProxyState>,
    pub handle: ProxyHandle,
    pub proxy: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub fn start_proxy(policy: EgressPolicy, tweak: impl FnOnce(&mut ProxyConfig)) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ProxyConfig::new(dir.path());
    config.flush_interval = Duration::from_millis(50);
    tweak(&mut config);
    let state = ProxyState::with_resolver(policy, config, Arc::new(resolver())).expect("state");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let handle = warden_egress::spawn(listener, state.clone()).expect("spawn");
    let proxy = handle.local_addr();
    Rig {
        state,
        handle,
        proxy,
        dir,
    }
}

/// A parsed answer from the proxy (or from upstream through it).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn reason(&self) -> &str {
        self.header("x-warden-reason").unwrap_or("")
    }
}

pub fn parse_answer(raw: &[u8]) -> Answer {
    let end = find(raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&raw[end + 4..]).into_owned(),
    }
}

/// Send raw bytes to the proxy and read until it closes.
pub async fn exchange(proxy: SocketAddr, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    s.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("proxy answered in time")
        .expect("read");
    parse_answer(&out)
}

/// Open a CONNECT tunnel; returns the stream and the proxy's answer head.
pub async fn connect(proxy: SocketAddr, authority: &str) -> (TcpStream, Answer) {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    let mut answer = parse_answer(&head);
    if answer.status != 200 {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        answer.body = String::from_utf8_lossy(&rest).into_owned();
    }
    (s, answer)
}

/// Write `msg` into a tunnel and read the same number of bytes back.
pub async fn echo_roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read echo");
    back
}

/// Read the audit log as JSON values (after a flush).
pub fn audit_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(warden_egress::AUDIT_FILE))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
        .collect()
}

pub async fn flush(state: &Arc<ProxyState>) {
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.flush())
        .await
        .expect("flush");
}

/// What the HTTP upstream recorded once `n` connections ended (or after 5 s).
pub async fn seen_after(up: &Upstreams, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = up.seen.lock().expect("lock").clone();
        if seen.len() >= n || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
