use super::*;
use warden_egress::approvals::{deny_approval, load_approvals, mark_approved};
use warden_wire::orders::Order;

fn policy(push: Autonomy) -> OrdersPolicy {
    let o = |name: &str, autonomy, tool: &str| Order {
        name: name.into(),
        bounds: format!("bounds of {name}"),
        override_: None,
        autonomy,
        tools: vec![tool.into()],
    };
    OrdersPolicy {
        version: 1,
        orders: vec![
            o("git-commit", Autonomy::Auto, "Bash(git commit:*)"),
            o("git-push", push, "Bash(git push:*)"),
            o("credentials", Autonomy::Never, "Read(//etc/shadow)"),
        ],
        unlisted: Autonomy::Ask,
    }
}

fn bash(cmd: &str) -> Question {
    Question {
        tool: Some("Bash".into()),
        input: serde_json::json!({ "command": cmd }),
        cwd: Some("/w".into()),
        ..Question::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn auto_ask_approved_once_then_denied_and_never() {
    let dir = tempfile::tempdir().unwrap();
    let e = Endpoint::new("agent", dir.path().to_path_buf(), policy(Autonomy::Ask));
    let rt = rt();
    let a = rt.block_on(e.decide(&bash("git commit -m x"))).unwrap();
    assert_eq!(
        (a.decision, a.allowed, a.status),
        (Autonomy::Auto, true, "auto")
    );
    assert_eq!(a.order.as_deref(), Some("git-commit"));

    let a = rt
        .block_on(e.decide(&bash("git push origin main")))
        .unwrap();
    assert_eq!(
        (a.decision, a.allowed, a.status),
        (Autonomy::Ask, false, "pending")
    );
    assert_eq!(
        a.reason,
        "standing order `git-push` (ask a human first): bounds of git-push"
    );
    let id = a.approval.clone().unwrap();
    let pending = load_approvals(dir.path());
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (
            pending[0].id.as_str(),
            pending[0].order.as_deref(),
            pending[0].tool.as_deref()
        ),
        (
            id.as_str(),
            Some("git-push"),
            Some("Bash(git push origin main)")
        )
    );
    // Asked again while pending: still pending, one record.
    let again = rt
        .block_on(e.decide(&bash("git push origin main")))
        .unwrap();
    assert_eq!(
        (again.status, again.approval.as_deref()),
        ("pending", Some(id.as_str()))
    );

    // Approved: the next identical call goes through, once.
    assert!(mark_approved(dir.path(), &id).unwrap());
    assert!(load_approvals(dir.path()).is_empty());
    let a = rt
        .block_on(e.decide(&bash("git push origin main")))
        .unwrap();
    assert_eq!((a.allowed, a.status), (true, "approved"));
    let a = rt
        .block_on(e.decide(&bash("git push origin main")))
        .unwrap();
    assert_eq!((a.allowed, a.status), (false, "pending"));
    assert_eq!(load_approvals(dir.path()).len(), 1);
    // Another call is another approval.
    let other = rt.block_on(e.decide(&bash("git push --force"))).unwrap();
    assert_ne!(other.approval, a.approval);

    // Denied: refused from then on.
    assert!(deny_approval(dir.path(), &id).unwrap());
    for _ in 0..2 {
        let a = rt
            .block_on(e.decide(&bash("git push origin main")))
            .unwrap();
        assert_eq!((a.allowed, a.status), (false, "denied"));
    }

    let q = Question {
        tool: Some("Read".into()),
        input: serde_json::json!({ "file_path": "/etc/shadow" }),
        ..Question::default()
    };
    let a = rt.block_on(e.decide(&q)).unwrap();
    assert_eq!(
        (a.decision, a.allowed, a.status),
        (Autonomy::Never, false, "never")
    );
    assert_eq!(
        a.reason,
        "standing order `credentials` (never): bounds of credentials"
    );
}

#[test]
fn one_sandboxs_approval_never_applies_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = Endpoint::new("a", dir.path().to_path_buf(), policy(Autonomy::Ask));
    let b = Endpoint::new("b", dir.path().to_path_buf(), policy(Autonomy::Ask));
    let rt = rt();
    let ask_a = rt.block_on(a.decide(&bash("git push"))).unwrap();
    let ask_b = rt.block_on(b.decide(&bash("git push"))).unwrap();
    assert_ne!(ask_a.approval, ask_b.approval);
    assert!(mark_approved(dir.path(), ask_a.approval.as_deref().unwrap()).unwrap());
    let b2 = rt.block_on(b.decide(&bash("git push"))).unwrap();
    assert_eq!((b2.allowed, b2.status), (false, "pending"));
    let a2 = rt.block_on(a.decide(&bash("git push"))).unwrap();
    assert_eq!((a2.allowed, a2.status), (true, "approved"));
}

#[test]
fn a_waiting_caller_gets_the_humans_decision_and_a_reload_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(Endpoint::new(
        "agent",
        dir.path().to_path_buf(),
        policy(Autonomy::Ask),
    ));
    let rt = rt();
    let mut q = bash("git push");
    q.wait = 10.0;
    let path = dir.path().to_path_buf();
    let approver = std::thread::spawn(move || {
        loop {
            if let Some(p) = load_approvals(&path).first() {
                break mark_approved(&path, &p.id).unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let start = std::time::Instant::now();
    let a = rt.block_on(e.decide(&q)).unwrap();
    assert!(approver.join().unwrap());
    assert_eq!((a.allowed, a.status), (true, "approved"));
    assert!(start.elapsed() < Duration::from_secs(5));
    // A wait that runs out answers pending.
    q.wait = 0.3;
    let a = rt.block_on(e.decide(&q)).unwrap();
    assert_eq!((a.allowed, a.status), (false, "pending"));
    // `warden orders grant git-push`: the next question is answered `auto`.
    e.reload(policy(Autonomy::Auto));
    let a = rt.block_on(e.decide(&bash("git push"))).unwrap();
    assert_eq!((a.decision, a.allowed), (Autonomy::Auto, true));
    e.reload(policy(Autonomy::Never));
    let a = rt.block_on(e.decide(&bash("git push"))).unwrap();
    assert_eq!(
        (a.decision, a.allowed, a.status),
        (Autonomy::Never, false, "never")
    );
}

#[test]
fn orders_by_name_and_bad_questions() {
    let dir = tempfile::tempdir().unwrap();
    let e = Endpoint::new("agent", dir.path().to_path_buf(), policy(Autonomy::Ask));
    let rt = rt();
    let q = Question {
        order: Some("git-commit".into()),
        action: Some("commit the fix".into()),
        ..Question::default()
    };
    assert!(rt.block_on(e.decide(&q)).unwrap().allowed);
    let q = Question {
        order: Some("unknown".into()),
        action: Some("x".into()),
        ..Question::default()
    };
    let a = rt.block_on(e.decide(&q)).unwrap();
    assert_eq!((a.decision, a.status), (Autonomy::Ask, "pending"));
    assert_eq!(a.reason, "no standing order `unknown`: a human first");
    for q in [
        Question::default(),
        Question {
            tool: Some("Bash".into()),
            order: Some("x".into()),
            ..Question::default()
        },
        Question {
            order: Some("x".into()),
            ..Question::default()
        },
        Question {
            tool: Some("".into()),
            ..Question::default()
        },
        Question {
            tool: Some("A\nB".into()),
            ..Question::default()
        },
    ] {
        let r = rt.block_on(e.decide(&q)).unwrap_err();
        assert_eq!(
            (r.status, r.code),
            (StatusCode::BAD_REQUEST, "invalid_question"),
            "{q:?}"
        );
    }
}

/// Over HTTP on loopback, as the sandbox's hook asks.
#[test]
fn served_over_http() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(Endpoint::new(
        "agent",
        dir.path().to_path_buf(),
        policy(Autonomy::Ask),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = rt.block_on(async { spawn(listener, e) });
    let call = |req: String| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let post = |body: &str| {
        call(format!(
            "POST /v1/decide HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    };
    let out = post(r#"{"tool":"Bash","input":{"command":"git push"}}"#);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains(r#""decision":"ask","allowed":false,"status":"pending""#),
        "{out}"
    );
    let out = post("{not json");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains(r#""code":"invalid_question""#), "{out}");
    let out = post(r#"{"tool":"Bash","wait":-1}"#);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let big = format!(
        r#"{{"tool":"Bash","input":{{"command":"{}"}}}}"#,
        "a".repeat(MAX_BODY)
    );
    assert!(post(&big).starts_with("HTTP/1.1 413"));
    let out = call("GET /v1/orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("git-push"),
        "{out}"
    );
    let out = call("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into());
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    rt.block_on(handle.shutdown());
}
