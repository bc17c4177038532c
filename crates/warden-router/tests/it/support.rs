//! Mock providers on 127.0.0.1 (plain and TLS with a CA made here), a router started in
//! front of them, and a client.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use warden_router::{Router, RouterConfig, RouterEvent, RouterHandle};
use warden_wire::inference::{Api, InferencePolicy, PrivacyRule, Provider, Route};

pub const ANTHROPIC_KEY: &str = "sk-ant-the-real-key";
pub const OPENAI_KEY: &str = "sk-openai-the-real-key";
pub const WAIT: Duration = Duration::from_secs(10);

/// A request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST /v1/messages?beta=true`
    pub line: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("mock got JSON")
    }
}

/// What the mock answers.
#[derive(Clone)]
pub enum Reply {
    Json(u16, String),
    /// Server-sent events: `first`, then wait for `gate`, then `rest`.
    Sse {
        first: String,
        gate: Option<Arc<Notify>>,
        rest: String,
    },
    /// Head and one chunk, then the connection is cut.
    BreakAfter(String),
    /// Head and one chunk, then wait for the router to close the connection and
    /// notify `closed`.
    Hold(String, Arc<Notify>),
    /// Never answer.
    Silent,
}

pub struct Mock {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

type Answer = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A plain HTTP mock answering every request with `answer`.
pub async fn mock(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Mock {
    start_mock(Arc::new(answer), None).await
}

/// The same over TLS, with a certificate for 127.0.0.1 signed by `ca`.
pub async fn tls_mock(
    ca: &TestCa,
    answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> Mock {
    start_mock(Arc::new(answer), Some(ca.acceptor())).await
}

async fn start_mock(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (answer, log, tls) = (answer.clone(), log.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acc) => {
                        if let Ok(s) = acc.accept(s).await {
                            serve_mock(s, answer, log).await;
                        }
                    }
                    None => serve_mock(s, answer, log).await,
                }
            });
        }
    });
    Mock { addr, seen }
}

async fn serve_mock<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    answer: Answer,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(seen) = read_request(&mut s, &mut buf).await else {
            return;
        };
        log.lock().expect("lock").push(seen.clone());
        let chunk = |t: &str| format!("{:x}\r\n{t}\r\n", t.len());
        let sse_head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        match answer(&seen) {
            Reply::Json(status, body) => {
                let out = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Sse { first, gate, rest } => {
                let _ = s
                    .write_all(format!("{sse_head}{}", chunk(&first)).as_bytes())
                    .await;
                let _ = s.flush().await;
                if let Some(g) = gate {
                    g.notified().await;
                }
                let _ = s
                    .write_all(format!("{}0\r\n\r\n", chunk(&rest)).as_bytes())
                    .await;
            }
            Reply::BreakAfter(first) => {
                let _ = s
                    .write_all(format!("{sse_head}{}", chunk(&first)).as_bytes())
                    .await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            Reply::Silent => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Reply::Hold(first, closed) => {
                let _ = s
                    .write_all(format!("{sse_head}{}", chunk(&first)).as_bytes())
                    .await;
                let _ = s.flush().await;
                let mut b = [0u8; 1024];
                loop {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                closed.notify_one();
                return;
            }
        }
        let _ = s.flush().await;
    }
}

async fn read_request<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut b = [0u8; 8192];
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.trim_end_matches(" HTTP/1.1").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..head_end + 4);
    while buf.len() < len {
        let mut b = [0u8; 8192];
        let n = s.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let body = buf.drain(..len).collect();
    Some(Seen {
        line,
        headers,
        body,
    })
}

/// A certificate authority made for one test, its PEM written to a file.
pub struct TestCa {
    pub pem_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    leaf_der: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "warden router test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf cert");
        let dir = tempfile::tempdir().expect("tempdir");
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, ca_cert.pem()).expect("write ca");
        TestCa {
            pem_path,
            _dir: dir,
            leaf_der: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
        }
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.leaf_key.clone().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

pub fn provider(name: &str, api: Api, endpoint: &str) -> Provider {
    Provider {
        name: name.into(),
        api,
        endpoint: endpoint.into(),
        key_env: Some(
            match api {
                Api::Anthropic => "TEST_ANTHROPIC_KEY",
                Api::Openai => "TEST_OPENAI_KEY",
            }
            .into(),
        ),
        key_file: None,
        ca: None,
        key_secret: None,
    }
}

pub fn route(model: &str, provider: &str) -> Route {
    Route {
        model: model.into(),
        provider: provider.into(),
        model_rewrite: None,
        fallback: Vec::new(),
    }
}

pub fn policy(
    providers: Vec<Provider>,
    routes: Vec<Route>,
    privacy: Vec<PrivacyRule>,
) -> InferencePolicy {
    InferencePolicy {
        version: warden_wire::WIRE_VERSION,
        sandbox: "agent".into(),
        providers,
        routes,
        privacy,
        idle_timeout_secs: None,
        requests_per_minute: None,
        tokens_per_minute: None,
    }
}

pub fn test_env(k: &str) -> Option<String> {
    match k {
        "TEST_ANTHROPIC_KEY" => Some(ANTHROPIC_KEY.into()),
        "TEST_OPENAI_KEY" => Some(OPENAI_KEY.into()),
        _ => None,
    }
}

pub struct Running {
    pub router: Arc<Router>,
    pub handle: RouterHandle,
    pub events: mpsc::UnboundedReceiver<RouterEvent>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }
    /// The next audit event.
    pub async fn event(&mut self) -> RouterEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an audit event in time")
            .expect("audit channel open")
    }
}

pub fn start(policy: InferencePolicy) -> Running {
    start_with(policy, RouterConfig::default())
}

pub fn start_with(policy: InferencePolicy, config: RouterConfig) -> Running {
    let (tx, events) = mpsc::unbounded_channel();
    let router = Router::with_env(policy, config, tx, test_env).expect("router");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind router");
    let handle = warden_router::spawn(listener, router.clone()).expect("spawn");
    Running {
        router,
        handle,
        events,
    }
}

/// One connection to the router.
pub struct Client {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: tokio::task::JoinHandle<()>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect router");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client { send, conn }
    }

    /// Send and return the answer's head with its body still to read.
    pub async fn open(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> http::Response<Incoming> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "router");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.send.ready().await.expect("ready");
        tokio::time::timeout(WAIT, self.send.send_request(req))
            .await
            .expect("answer in time")
            .expect("answer")
    }

    /// Send and read the whole answer.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, http::HeaderMap, String) {
        let resp = self.open(method, path, headers, body).await;
        let status = resp.status().as_u16();
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(WAIT, body.collect())
            .await
            .expect("body in time")
            .expect("body")
            .to_bytes();
        (
            status,
            parts.headers,
            String::from_utf8_lossy(&bytes).to_string(),
        )
    }

    /// Close the connection now.
    pub fn close(self) {
        self.conn.abort();
        drop(self.send);
    }
}

/// `POST /v1/messages` with a user prompt, through a fresh connection.
pub async fn messages(
    addr: SocketAddr,
    model: &str,
    prompt: &str,
) -> (u16, http::HeaderMap, String) {
    let body = serde_json::json!({
        "model": model,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": prompt}],
    })
    .to_string();
    Client::connect(addr)
        .await
        .call(
            "POST",
            "/v1/messages",
            &[
                ("content-type", "application/json"),
                ("anthropic-version", "2023-06-01"),
            ],
            &body,
        )
        .await
}

pub fn ok_message() -> Reply {
    Reply::Json(
        200,
        r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":12,"output_tokens":3}}"#.into(),
    )
}

/// A port nothing listens on.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
