//! Integration tests: a real proxy on loopback, upstream servers on 127.0.0.2.

mod fuzz;
mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden_egress::{ApprovalStatus, approval_id, load_all_approvals, load_approvals};
use warden_wire::egress::Action;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_allowed_end_to_end() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let (mut s, answer) = connect(rig.proxy, &format!("allowed.test:{}", up.echo.port())).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        echo_roundtrip(&mut s, b"hello through the tunnel").await,
        b"hello through the tunnel"
    );
    // A larger payload, both ways at once.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_roundtrip(&mut s, &big).await, big);
    s.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .await
        .expect("tunnel ends after half-close");
    assert!(rest.is_empty());
    flush(&rig.state).await;
    let audit = audit_lines(rig.dir.path());
    let ev = audit
        .iter()
        .find(|e| e["kind"] == "connect")
        .expect("connect audited");
    assert_eq!(ev["decision"], "allow");
    assert_eq!(ev["host"], "allowed.test");
    assert_eq!(ev["rule"], 1);
    assert_eq!(ev["addr"], format!("127.0.0.2:{}", up.echo.port()));
    assert_eq!(ev["bytes_up"], 24 + 1_000_000);
    assert_eq!(ev["bytes_down"], 24 + 1_000_000);
    assert_eq!(ev["sandbox"], SANDBOX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_address_named_by_cidr_works() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let (mut s, answer) = connect(rig.proxy, &format!("127.0.0.2:{}", up.echo.port())).await;
    assert_eq!(answer.status, 200);
    assert_eq!(echo_roundtrip(&mut s, b"x").await, b"x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_allowed_is_rewritten_to_origin_form() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let port = up.http.port();
    let req = format!(
        "GET http://allowed.test:{port}/hello?x=1 HTTP/1.1\r\nHost: allowed.test:{port}\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n"
    );
    let answer = exchange(rig.proxy, req.as_bytes()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "GET /hello?x=1");
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.header("keep-alive"), None);
    // Upstream saw origin form, a canonical Host, no proxy credentials.
    let seen = seen_after(&up, 1).await;
    assert_eq!(
        seen,
        vec![format!(
            "GET /hello?x=1 HTTP/1.1\r\nhost: allowed.test:{port}\r\naccept: */*\r\nconnection: close\r\n\r\n"
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rule_allows_listed_method_and_path() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let port = up.http.port();
    let answer = exchange(
        rig.proxy,
        format!("GET http://api.test:{port}/v1/models HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "GET /v1/models");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_is_forwarded_and_a_pipelined_request_is_not() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let port = up.http.port();
    let first = format!(
        "POST http://allowed.test:{port}/upload HTTP/1.1\r\nHost: allowed.test:{port}\r\n\
         Transfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n"
    );
    let smuggled = "GET /admin HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
    let answer = exchange(rig.proxy, format!("{first}{smuggled}").as_bytes()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "POST /upload");
    let seen = seen_after(&up, 1).await;
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].ends_with("\r\n\r\n4\r\nwiki\r\n0\r\n\r\n"),
        "{:?}",
        seen[0]
    );
    assert!(!seen[0].contains("/admin"));
    // The request after it was not served, and the audit says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    let audit = loop {
        flush(&rig.state).await;
        let audit = audit_lines(rig.dir.path());
        if audit.len() >= 2 || Instant::now() > deadline {
            break audit;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0]["decision"], "allow");
    assert_eq!(
        (&audit[1]["host"], &audit[1]["port"], &audit[1]["method"]),
        (
            &serde_json::json!("allowed.test"),
            &serde_json::json!(80),
            &serde_json::json!("GET")
        )
    );
    assert_eq!(
        audit[1]["reason"],
        "pipelined: not served, the proxy answers one request per connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_refusal_is_listed_at_once_whatever_the_debounce() {
    let up = upstreams().await;
    // Counts are written at most every minute; a new destination is not held back.
    let rig = start_proxy(policy(standard_rules(&up), 30), |c| {
        c.flush_interval = Duration::from_secs(60);
    });
    let (_, answer) = connect(rig.proxy, "fresh.test:443").await;
    assert_eq!(answer.status, 403);
    let deadline = Instant::now() + Duration::from_secs(2);
    let pending = loop {
        let pending = load_approvals(rig.dir.path());
        if !pending.is_empty() || Instant::now() > deadline {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        pending
            .iter()
            .map(|a| (a.host.as_str(), a.count))
            .collect::<Vec<_>>(),
        vec![("fresh.test", 1)]
    );
    // A second refusal of the same destination only counts, in memory until the debounce.
    let (_, answer) = connect(rig.proxy, "fresh.test:443").await;
    assert_eq!(answer.status, 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(load_approvals(rig.dir.path())[0].count, 1);
    flush(&rig.state).await;
    assert_eq!(load_approvals(rig.dir.path())[0].count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_host_is_denied_and_surfaced_once_with_a_count() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    for _ in 0..2 {
        let (_, answer) = connect(rig.proxy, "evil.test:443").await;
        assert_eq!(answer.status, 403);
        assert_eq!(answer.reason(), "no egress rule allows this destination");
        assert_eq!(
            answer.body,
            "warden egress denied: no egress rule allows this destination\n"
        );
    }
    flush(&rig.state).await;
    let pending = load_approvals(rig.dir.path());
    assert_eq!(pending.len(), 1, "{pending:?}");
    let a = &pending[0];
    assert_eq!(a.id, approval_id(SANDBOX, "evil.test", 443, None));
    assert_eq!((a.host.as_str(), a.port, a.count), ("evil.test", 443, 2));
    assert_eq!(a.method, None);
    assert_eq!(a.sample, "CONNECT evil.test:443");
    assert_eq!(a.status, ApprovalStatus::Pending);
    assert!(a.first_seen <= a.last_seen && a.first_seen > 1_600_000_000);

    // A human denies it: no longer surfaced, still recorded.
    assert!(rig.state.deny_approval(&a.id));
    assert!(!rig.state.deny_approval("000000000000"));
    let (_, answer) = connect(rig.proxy, "evil.test:443").await;
    assert_eq!(answer.status, 403);
    flush(&rig.state).await;
    assert!(load_approvals(rig.dir.path()).is_empty());
    let all = load_all_approvals(rig.dir.path());
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].status, all[0].count), (ApprovalStatus::Denied, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_rule_is_denied_and_pending() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let (_, answer) = connect(rig.proxy, &format!("ask.test:{}", up.echo.port())).await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.reason(),
        "standing order `fetch-docs` needs a human to approve this"
    );
    let id = approval_id(SANDBOX, "ask.test", up.echo.port(), None);
    assert_eq!(answer.header("x-warden-approval"), Some(id.as_str()));
    flush(&rig.state).await;
    let pending = load_approvals(rig.dir.path());
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].order.as_deref(), Some("fetch-docs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_level_deny_is_adopted_by_a_running_proxy() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let (_, answer) = connect(rig.proxy, "evil.test:443").await;
    assert_eq!(answer.status, 403);
    flush(&rig.state).await;
    let id = approval_id(SANDBOX, "evil.test", 443, None);
    assert!(warden_egress::deny_approval(rig.dir.path(), &id).expect("deny in file"));
    // The proxy counts another attempt and flushes: the denial must survive.
    let (_, _) = connect(rig.proxy, "evil.test:443").await;
    flush(&rig.state).await;
    let all = load_all_approvals(rig.dir.path());
    assert_eq!((all[0].status, all[0].count), (ApprovalStatus::Denied, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_allows_new_connections_and_keeps_open_tunnels() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let (mut old, answer) = connect(rig.proxy, &format!("allowed.test:{}", up.echo.port())).await;
    assert_eq!(answer.status, 200);
    let new_target = format!("new.test:{}", up.echo.port());
    let (_, answer) = connect(rig.proxy, &new_target).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.reason(), "no egress rule allows this destination");

    let mut rules = standard_rules(&up);
    rules.push(rule(Action::Allow, host("new.test"), &[up.echo.port()]));
    rig.state.reload(policy(rules, 30)).expect("reload");

    let (mut fresh, answer) = connect(rig.proxy, &new_target).await;
    assert_eq!(answer.status, 200);
    assert_eq!(echo_roundtrip(&mut fresh, b"new").await, b"new");
    assert_eq!(echo_roundtrip(&mut old, b"still open").await, b"still open");
    // The approval the reload satisfied is no longer pending.
    flush(&rig.state).await;
    assert!(load_approvals(rig.dir.path()).is_empty());
    let all = load_all_approvals(rig.dir.path());
    assert_eq!(all[0].status, ApprovalStatus::Approved);

    // Removing the rule again denies new connections, and the reload refuses a
    // policy for another sandbox.
    rig.state
        .reload(policy(standard_rules(&up), 30))
        .expect("reload back");
    let (_, answer) = connect(rig.proxy, &new_target).await;
    assert_eq!(answer.status, 403);
    let mut other = policy(vec![], 30);
    other.sandbox = "someone-else".into();
    assert!(rig.state.reload(other).is_err());
}

/// (request bytes, expected status, expected `X-Warden-Reason`)
fn bypass_cases(up: &Upstreams) -> Vec<(String, u16, String)> {
    let echo = up.echo.port();
    let http = up.http.port();
    let connect = |a: &str| format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n");
    vec![
        (
            connect(&format!("loop.test:{echo}")),
            403,
            "loopback address refused".into(),
        ),
        (
            connect("meta.test:80"),
            403,
            "cloud metadata address refused".into(),
        ),
        (
            connect(&format!("mixed.test:{echo}")),
            403,
            "private address refused".into(),
        ),
        (
            connect("2130706433:80"),
            403,
            "loopback address refused".into(),
        ),
        (
            connect("0x7f.0.0.1:80"),
            403,
            "loopback address refused".into(),
        ),
        (connect("0177.1:80"), 403, "loopback address refused".into()),
        (
            connect("[::ffff:10.0.0.1]:80"),
            403,
            "private address refused".into(),
        ),
        (connect("[::1]:80"), 403, "loopback address refused".into()),
        (
            connect("169.254.169.254:80"),
            403,
            "cloud metadata address refused".into(),
        ),
        (
            connect("127.0.0.2:1"),
            403,
            "loopback address refused".into(),
        ),
        (
            connect(&format!("allowed.test:{}", 1)),
            403,
            "port not allowed by egress rule #1".into(),
        ),
        (
            connect(&format!("api.test:{http}")),
            403,
            "http rule #4 allows plain HTTP only, not tunnels".into(),
        ),
        (
            format!("GET http://allowed.test:{http}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            403,
            format!(
                "Host header `evil.test` does not match the request URI host `allowed.test:{http}`"
            ),
        ),
        (
            format!(
                "GET http://allowed.test:{http}@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"
            ),
            403,
            "userinfo in the request target refused".into(),
        ),
        (
            format!("GET http://allowed.test@evil.test:{http}/ HTTP/1.1\r\n\r\n"),
            403,
            "userinfo in the request target refused".into(),
        ),
        (
            format!(
                "POST http://api.test:{http}/v1/models HTTP/1.1\r\nHost: api.test:{http}\r\nContent-Length: 2\r\n\r\n{{}}"
            ),
            403,
            "method not allowed by http rule #4".into(),
        ),
        (
            format!("GET http://api.test:{http}/admin HTTP/1.1\r\nHost: api.test:{http}\r\n\r\n"),
            403,
            "path not allowed by http rule #4".into(),
        ),
        (
            format!("GET http://api.test:{http}/v1/../admin HTTP/1.1\r\n\r\n"),
            400,
            "dot segment in path refused".into(),
        ),
        (
            format!("GET http://api.test:{http}/v1/%2e%2e/admin HTTP/1.1\r\n\r\n"),
            400,
            "dot segment in path refused".into(),
        ),
        (
            format!(
                "POST http://allowed.test:{http}/ HTTP/1.1\r\nHost: allowed.test:{http}\r\n\
                 Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            400,
            "Content-Length together with Transfer-Encoding refused".into(),
        ),
        (
            format!(
                "POST http://allowed.test:{http}/ HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody"
            ),
            400,
            "duplicate Content-Length refused".into(),
        ),
        (
            format!(
                "POST http://allowed.test:{http}/ HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"
            ),
            400,
            "Transfer-Encoding other than `chunked` refused".into(),
        ),
        (
            format!("GET https://allowed.test:{http}/ HTTP/1.1\r\n\r\n"),
            400,
            "https:// needs a CONNECT tunnel".into(),
        ),
        (
            "GET /local HTTP/1.1\r\nHost: allowed.test\r\n\r\n".into(),
            400,
            "this is a proxy: the request target must be an absolute http:// URI".into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_attempts_are_refused_with_reasons() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let cases = bypass_cases(&up);
    let mut failures = Vec::new();
    for (req, status, reason) in &cases {
        let answer = exchange(rig.proxy, req.as_bytes()).await;
        if answer.status != *status || answer.reason() != reason {
            failures.push(format!(
                "{req:?}\n  expected {status} {reason:?}\n  got      {} {:?}",
                answer.status,
                answer.reason()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing reached the HTTP upstream.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(up.seen.lock().expect("lock").len(), 0);
    // Every refusal is audited with its reason.
    flush(&rig.state).await;
    let audit = audit_lines(rig.dir.path());
    assert_eq!(audit.len(), cases.len());
    assert!(
        audit
            .iter()
            .all(|e| e["decision"] == "deny" && e["reason"].is_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_gets_431() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let big = "a".repeat(100 * 1024);
    let req = format!(
        "GET http://allowed.test:{}/ HTTP/1.1\r\nX-Big: {big}\r\n\r\n",
        up.http.port()
    );
    let answer = exchange(rig.proxy, req.as_bytes()).await;
    assert_eq!(answer.status, 431);
    assert_eq!(answer.reason(), "request head larger than 65536 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_dropped_while_others_are_served() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |c| {
        c.header_timeout = Duration::from_millis(1000);
    });
    let proxy = rig.proxy;
    let started = Instant::now();
    let trickler = tokio::spawn(async move {
        let mut s = TcpStream::connect(proxy).await.expect("connect");
        let head = b"GET http://allowed.test/ HTTP/1.1\r\nX-Slow: ";
        // One byte every 100 ms, forever; stop when the proxy gives up on us.
        let mut out = Vec::new();
        for i in 0.. {
            let b = head.get(i).copied().unwrap_or(b'a');
            if s.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if started.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        (out, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let port = up.http.port();
    let t = Instant::now();
    let answer = exchange(
        proxy,
        format!("GET http://allowed.test:{port}/ok HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200);
    let served_at = started.elapsed();
    let (out, dropped_at) = trickler.await.expect("trickler");
    let answer = parse_answer(&out);
    assert_eq!(answer.status, 408);
    assert_eq!(answer.reason(), "request head not complete within 1000 ms");
    // The normal request was served while the trickler was still connected, and the
    // trickler was dropped after the header timeout, not at the end of its patience.
    assert!(
        served_at < dropped_at,
        "served at {served_at:?}, trickler dropped at {dropped_at:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "normal request took {:?}",
        t.elapsed()
    );
    assert!(
        dropped_at >= Duration::from_millis(1000) && dropped_at < Duration::from_millis(4000),
        "dropped after {dropped_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_closes_but_a_busy_one_has_no_total_timeout() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 1), |_| {});
    let target = format!("allowed.test:{}", up.echo.port());
    let (mut busy, answer) = connect(rig.proxy, &target).await;
    assert_eq!(answer.status, 200);
    let (mut idle, answer) = connect(rig.proxy, &target).await;
    assert_eq!(answer.status, 200);
    // 2.5 s of traffic every 300 ms: more than the idle timeout in total, never idle.
    for _ in 0..8 {
        assert_eq!(echo_roundtrip(&mut busy, b"tick").await, b"tick");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf))
        .await
        .expect("idle tunnel closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "idle tunnel is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_over_plain_http_becomes_a_tunnel() {
    // An upstream that answers 101 and then echoes.
    let l = tokio::net::TcpListener::bind((UPSTREAM_IP, 0))
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while find(&head, b"\r\n\r\n").is_none() {
            s.read_exact(&mut b).await.expect("read");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(
            head.contains("connection: upgrade\r\nupgrade: websocket\r\n"),
            "{head}"
        );
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .expect("write");
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let rules = vec![
        rule(Action::Allow, cidr("127.0.0.2/32"), &[port]),
        rule(Action::Allow, host("allowed.test"), &[port]),
    ];
    let rig = start_proxy(policy(rules, 30), |_| {});
    let mut s = TcpStream::connect(rig.proxy).await.expect("connect");
    s.write_all(
        format!(
            "GET http://allowed.test:{port}/ws HTTP/1.1\r\nHost: allowed.test:{port}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while find(&head, b"\r\n\r\n").is_none() {
        s.read_exact(&mut b).await.expect("read");
        head.push(b[0]);
    }
    assert_eq!(parse_answer(&head).status, 101);
    assert_eq!(echo_roundtrip(&mut s, b"frame").await, b"frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_rotates_and_keeps_n_files() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |c| {
        c.audit_max_bytes = 600;
        c.audit_keep = 2;
    });
    for _ in 0..12 {
        let (_, answer) = connect(rig.proxy, "evil.test:443").await;
        assert_eq!(answer.status, 403);
    }
    flush(&rig.state).await;
    let d = rig.dir.path();
    assert!(d.join("audit.jsonl").exists());
    assert!(d.join("audit.jsonl.1").exists());
    assert!(d.join("audit.jsonl.2").exists());
    assert!(!d.join("audit.jsonl.3").exists());
    for f in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
        let len = std::fs::metadata(d.join(f)).expect("meta").len();
        assert!(len <= 600, "{f} is {len} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_stops_accepting() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |c| {
        c.shutdown_grace = Duration::from_millis(200);
    });
    let (mut open, answer) = connect(rig.proxy, &format!("allowed.test:{}", up.echo.port())).await;
    assert_eq!(answer.status, 200);
    let proxy = rig.proxy;
    let t = Instant::now();
    rig.handle.shutdown().await.expect("shutdown");
    assert!(t.elapsed() < Duration::from_secs(2));
    // The open tunnel was cut after the grace period, and nobody listens any more.
    let mut buf = [0u8; 4];
    let n = tokio::time::timeout(Duration::from_secs(2), open.read(&mut buf))
        .await
        .expect("cut")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(TcpStream::connect(proxy).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_setup_sets_nodelay() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let s = TcpStream::connect(l.local_addr().expect("addr"))
        .await
        .expect("connect");
    assert!(!s.nodelay().expect("getsockopt"));
    warden_egress::setup_socket(&s).expect("setup");
    assert!(s.nodelay().expect("getsockopt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_and_chunked_responses_are_relayed_and_the_exchange_ends() {
    // An upstream that sends 100 Continue, then a chunked 200, then keeps the connection
    // open: the proxy must end the exchange by the chunked framing, not by waiting.
    let l = tokio::net::TcpListener::bind((UPSTREAM_IP, 0))
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        s.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
              Keep-Alive: timeout=60\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let rules = vec![
        rule(Action::Allow, cidr("127.0.0.2/32"), &[port]),
        rule(Action::Allow, host("allowed.test"), &[port]),
    ];
    let rig = start_proxy(policy(rules, 30), |_| {});
    let mut s = TcpStream::connect(rig.proxy).await.expect("connect");
    s.write_all(
        format!(
            "POST http://allowed.test:{port}/ HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("exchange ends by framing")
        .expect("read");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ salt).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_relayed_exactly_by_their_length() {
    const UP: usize = 3 * 1024 * 1024 + 7;
    const DOWN: usize = 5 * 1024 * 1024 + 3;
    // An upstream that reads the request body by its length, answers with a long body
    // followed by bytes past its Content-Length, and keeps the connection open: the
    // proxy must end both bodies by their framing.
    let l = tokio::net::TcpListener::bind((UPSTREAM_IP, 0))
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::oneshot::channel::<(Vec<u8>, Vec<u8>)>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut all = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let body_at = loop {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "request head");
            all.extend_from_slice(&buf[..n]);
            if let Some(p) = find(&all, b"\r\n\r\n") {
                break p + 4;
            }
        };
        while all.len() < body_at + UP {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "request body");
            all.extend_from_slice(&buf[..n]);
        }
        s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {DOWN}\r\n\r\n").as_bytes())
            .await
            .expect("write head");
        s.write_all(&pattern(DOWN, 0x33)).await.expect("write body");
        s.write_all(b"PAST THE BODY").await.expect("write extra");
        // Whatever else arrives before the proxy closes the connection.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => all.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let body = all.split_off(body_at);
        let _ = tx.send((all, body));
    });
    let rules = vec![
        rule(Action::Allow, cidr("127.0.0.2/32"), &[port]),
        rule(Action::Allow, host("allowed.test"), &[port]),
    ];
    let rig = start_proxy(policy(rules, 30), |_| {});
    let mut s = TcpStream::connect(rig.proxy).await.expect("connect");
    let sent = pattern(UP, 0x55);
    // Part of the body with the head, the rest later, then a pipelined request.
    let mut first = format!(
        "POST http://allowed.test:{port}/upload HTTP/1.1\r\nHost: allowed.test:{port}\r\n\
         Content-Length: {UP}\r\n\r\n"
    )
    .into_bytes();
    first.extend_from_slice(&sent[..1000]);
    s.write_all(&first).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&sent[1000..]).await.expect("write body");
        let _ = w
            .write_all(b"GET /admin HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
            .await;
        w
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out))
        .await
        .expect("exchange ends by framing")
        .expect("read");
    drop(writer.await.expect("writer"));
    let end = find(&out, b"\r\n\r\n").expect("response head") + 4;
    let answer = parse_answer(&out[..end]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(out.len() - end, DOWN, "exactly Content-Length bytes");
    assert!(
        out[end..] == pattern(DOWN, 0x33)[..],
        "response body intact"
    );

    let (head, body) = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("upstream done")
        .expect("upstream result");
    assert!(String::from_utf8_lossy(&head).starts_with("POST /upload HTTP/1.1\r\n"));
    assert_eq!(
        body.len(),
        UP,
        "no byte past the request body reached upstream"
    );
    assert!(body == pattern(UP, 0x55), "request body intact");

    flush(&rig.state).await;
    let audit = audit_lines(rig.dir.path());
    let ev = audit.iter().find(|e| e["kind"] == "http").expect("audited");
    assert_eq!(ev["status"], 200);
    assert!(ev["bytes_up"].as_u64().expect("bytes_up") >= UP as u64);
    assert!(ev["bytes_down"].as_u64().expect("bytes_down") >= DOWN as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_without_length_is_relayed_until_upstream_closes() {
    const DOWN: usize = 2 * 1024 * 1024 + 11;
    let l = tokio::net::TcpListener::bind((UPSTREAM_IP, 0))
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = vec![0u8; 4096];
        while find(&head, b"\r\n\r\n").is_none() {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.expect("head");
        s.write_all(&pattern(DOWN, 0x77)).await.expect("body");
    });
    let rules = vec![
        rule(Action::Allow, cidr("127.0.0.2/32"), &[port]),
        rule(Action::Allow, host("allowed.test"), &[port]),
    ];
    let rig = start_proxy(policy(rules, 30), |_| {});
    let mut s = TcpStream::connect(rig.proxy).await.expect("connect");
    s.write_all(
        format!(
            "GET http://allowed.test:{port}/file HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("ends when upstream closes")
        .expect("read");
    let end = find(&out, b"\r\n\r\n").expect("response head") + 4;
    assert_eq!(parse_answer(&out[..end]).status, 200);
    assert!(
        out[end..] == pattern(DOWN, 0x77)[..],
        "body intact to the end"
    );
}

/// Audit lines once at least `n` are written (events sent after a connection drained
/// reach the log a moment after the client saw the answer).
async fn audit_at_least(rig: &Rig, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        flush(&rig.state).await;
        let lines = audit_lines(rig.dir.path());
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn destination(ev: &serde_json::Value) -> (String, Option<u64>) {
    (
        ev["host"].as_str().unwrap_or("").to_string(),
        ev["port"].as_u64(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_after_a_refused_one_are_audited_with_their_destination() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let http = up.http.port();
    // Refused by the policy, with a body; then two requests in the same write.
    let refused = format!(
        "POST http://evil.test:{http}/ HTTP/1.1\r\nHost: evil.test:{http}\r\nContent-Length: 5\r\n\r\nhello"
    );
    let second =
        format!("GET http://allowed.test:{http}/x HTTP/1.1\r\nHost: allowed.test:{http}\r\n\r\n");
    let third = "CONNECT other.test:8443 HTTP/1.1\r\nHost: other.test:8443\r\n\r\n";
    let mut s = TcpStream::connect(rig.proxy).await.expect("connect proxy");
    s.write_all(format!("{refused}{second}{third}").as_bytes())
        .await
        .expect("write");
    // The answer is read; then one more request arrives while the proxy drains.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b))
            .await
            .expect("answer in time")
            .expect("read");
        assert_ne!(n, 0, "closed before an answer");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 403 "),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let late = format!("GET http://late.test:{http}/ HTTP/1.1\r\nHost: late.test:{http}\r\n\r\n");
    s.write_all(late.as_bytes()).await.expect("write late");
    drop(s);

    let audit = audit_at_least(&rig, 4).await;
    let seen: Vec<(String, Option<u64>, u64, String)> = audit
        .iter()
        .map(|e| {
            let (h, p) = destination(e);
            (
                h,
                p,
                e["status"].as_u64().unwrap_or(999),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let unserved = "pipelined: not served, the proxy answers one request per connection";
    let http = Some(u64::from(http));
    assert_eq!(
        seen,
        vec![
            (
                "evil.test".into(),
                http,
                403,
                "no egress rule allows this destination".into()
            ),
            ("allowed.test".into(), http, 0, unserved.into()),
            ("other.test".into(), Some(8443), 0, unserved.into()),
            ("late.test".into(), http, 0, unserved.into()),
        ]
    );
    assert!(audit.iter().all(|e| e["decision"] == "deny"));
    assert_eq!(audit[2]["kind"], "connect");
    assert_eq!(audit[3]["method"], "GET");
    // Nothing reached the upstream.
    assert_eq!(up.seen.lock().expect("lock").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_policy_carry_the_destination_the_request_named() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let h = up.http.port();
    let hp = Some(u64::from(h));
    let cases: Vec<(String, &str, Option<u64>)> = vec![
        (
            format!("GET http://allowed.test:{h}/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            "allowed.test",
            hp,
        ),
        (
            format!("GET http://allowed.test:{h}@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            "evil.test",
            Some(80),
        ),
        (
            format!("GET http://user:secret@evil.test:{h}/ HTTP/1.1\r\n\r\n"),
            "evil.test",
            hp,
        ),
        (
            format!(
                "POST http://allowed.test:{h}/ HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "allowed.test",
            hp,
        ),
        (
            format!(
                "POST http://allowed.test:{h}/ HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody"
            ),
            "allowed.test",
            hp,
        ),
        (
            format!(
                "POST http://allowed.test:{h}/ HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"
            ),
            "allowed.test",
            hp,
        ),
        (
            format!("POST http://allowed.test:{h}/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "allowed.test",
            hp,
        ),
        (
            "CONNECT evil.test:443 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".into(),
            "evil.test",
            Some(443),
        ),
        (
            format!("GET https://allowed.test:{h}/ HTTP/1.1\r\n\r\n"),
            "allowed.test",
            hp,
        ),
        (
            "GET /local HTTP/1.1\r\nHost: allowed.test\r\n\r\n".into(),
            "allowed.test",
            Some(80),
        ),
        (
            format!("GET http://api.test:{h}/v1/../admin HTTP/1.1\r\n\r\n"),
            "api.test",
            hp,
        ),
        (
            "GET http://evil.test:99999/ HTTP/1.1\r\n\r\n".into(),
            "evil.test",
            None,
        ),
    ];
    for (i, (req, host, port)) in cases.iter().enumerate() {
        let answer = exchange(rig.proxy, req.as_bytes()).await;
        assert!(
            answer.status == 400 || answer.status == 403,
            "{req:?}: {}",
            answer.status
        );
        let audit = audit_at_least(&rig, i + 1).await;
        assert_eq!(audit.len(), i + 1, "{req:?}: one audit line");
        let ev = &audit[i];
        assert_eq!(destination(ev), (host.to_string(), *port), "{req:?}");
        assert_eq!(ev["status"], answer.status, "{req:?}");
        assert_eq!(ev["reason"], answer.reason(), "{req:?}");
    }
    // Userinfo is never written to the log.
    let log = std::fs::read_to_string(rig.dir.path().join("audit.jsonl")).expect("audit");
    assert!(!log.contains("secret"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_destination_is_pending_again_when_its_rule_is_removed() {
    let up = upstreams().await;
    let rig = start_proxy(policy(standard_rules(&up), 30), |_| {});
    let target = format!("new.test:{}", up.echo.port());
    let id = approval_id(SANDBOX, "new.test", up.echo.port(), None);
    let (_, answer) = connect(rig.proxy, &target).await;
    assert_eq!(answer.status, 403);
    // Approved: the rule is added and the reload settles the record.
    let mut rules = standard_rules(&up);
    rules.push(rule(Action::Allow, host("new.test"), &[up.echo.port()]));
    rig.state.reload(policy(rules, 30)).expect("reload");
    let (_, answer) = connect(rig.proxy, &target).await;
    assert_eq!(answer.status, 200);
    flush(&rig.state).await;
    assert!(load_approvals(rig.dir.path()).is_empty());
    assert!(warden_egress::mark_approved(rig.dir.path(), &id).expect("mark"));
    // The rule is removed from the file: the next refusal is pending again.
    rig.state
        .reload(policy(standard_rules(&up), 30))
        .expect("reload back");
    let (_, answer) = connect(rig.proxy, &target).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.header("x-warden-approval"), Some(id.as_str()));
    flush(&rig.state).await;
    let pending = load_approvals(rig.dir.path());
    assert_eq!(
        pending
            .iter()
            .map(|a| (a.id.as_str(), a.status, a.count))
            .collect::<Vec<_>>(),
        vec![(id.as_str(), ApprovalStatus::Pending, 2)]
    );
}
