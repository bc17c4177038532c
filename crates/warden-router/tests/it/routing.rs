//! Keys, headers, routes, fallback, limits, reload, start-up errors.

use crate::support::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use warden_router::{Router, RouterConfig, RouterError};
use warden_wire::inference::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_added_the_callers_auth_dropped_and_query_and_beta_headers_pass() {
    let up = mock(|_| ok_message()).await;
    let mut r = start(policy(
        vec![provider("anthropic", Api::Anthropic, &up.url("http"))],
        vec![route("claude-*", "anthropic")],
        vec![],
    ));
    let body = r#"{"model":"claude-sonnet-4","max_tokens":5,"stream":false,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, answer) = Client::connect(r.addr())
        .await
        .call(
            "POST",
            "/v1/messages?beta=true",
            &[
                ("content-type", "application/json"),
                ("x-api-key", "placeholder-in-the-sandbox"),
                ("authorization", "Bearer placeholder-in-the-sandbox"),
                ("cookie", "session=1"),
                ("anthropic-version", "2023-06-01"),
                (
                    "anthropic-beta",
                    "claude-code-20250219,interleaved-thinking-2025-05-14",
                ),
            ],
            body,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"text\":\"hi\""), "{answer}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.line, "POST /v1/messages?beta=true");
    assert_eq!(s.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(s.header("authorization"), None);
    assert_eq!(s.header("cookie"), None);
    assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        s.header("anthropic-beta"),
        Some("claude-code-20250219,interleaved-thinking-2025-05-14")
    );
    assert_eq!(s.header("host"), Some(up.addr.to_string().as_str()));
    // Unchanged requests go upstream byte for byte.
    assert_eq!(s.body, body.as_bytes());
    let ev = r.event().await;
    assert_eq!(ev.decision, "route");
    assert_eq!(ev.provider.as_deref(), Some("anthropic"));
    assert_eq!(ev.requested_model.as_deref(), Some("claude-sonnet-4"));
    assert_eq!(ev.status, 200);
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(12), Some(3)));
    assert!(ev.ttfb_ms.is_some());
    let line = serde_json::to_string(&ev).expect("json");
    assert!(
        !line.contains("\"hi\""),
        "no prompt or answer text in audit: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_over_https_with_an_extra_ca_gets_a_bearer_key() {
    let ca = TestCa::new();
    let up = tls_mock(&ca, |_| {
        Reply::Json(
            200,
            r#"{"id":"c1","object":"chat.completion","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#.into(),
        )
    })
    .await;
    let mut p = provider("openai", Api::Openai, &format!("{}/v1", up.url("https")));
    p.ca = Some(ca.pem_path.to_string_lossy().into());
    let mut r = start(policy(vec![p], vec![route("gpt-*", "openai")], vec![]));
    let (status, _, answer) = Client::connect(r.addr())
        .await
        .call(
            "POST",
            "/v1/chat/completions?api-version=2",
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer sandbox-placeholder"),
                ("x-api-key", "sandbox-placeholder"),
                ("openai-beta", "responses=v1"),
            ],
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let s = &up.seen()[0];
    assert_eq!(s.line, "POST /v1/chat/completions?api-version=2");
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(s.header("x-api-key"), None);
    assert_eq!(s.header("openai-beta"), Some("responses=v1"));
    let ev = r.event().await;
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(7), Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_provider_without_its_ca_is_not_trusted() {
    let ca = TestCa::new();
    let up = tls_mock(&ca, |_| ok_message()).await;
    let mut r = start(policy(
        vec![provider("a", Api::Anthropic, &up.url("https"))],
        vec![route("*", "a")],
        vec![],
    ));
    let (status, _, answer) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 502, "{answer}");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    assert!(up.seen().is_empty());
    assert_eq!(r.event().await.decision, "upstream-error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_route_wins_and_model_rewrites_the_upstream_model() {
    let fast = mock(|_| ok_message()).await;
    let main = mock(|_| ok_message()).await;
    let mut haiku = route("claude-haiku-*", "fast");
    haiku.model_rewrite = Some("claude-3-5-haiku-latest".into());
    let mut r = start(policy(
        vec![
            provider("fast", Api::Anthropic, &fast.url("http")),
            provider("main", Api::Anthropic, &main.url("http")),
        ],
        vec![
            haiku,
            route("claude-*", "main"),
            route("claude-haiku-9", "main"),
        ],
        vec![],
    ));
    assert_eq!(messages(r.addr(), "claude-haiku-9", "hi").await.0, 200);
    assert_eq!(messages(r.addr(), "claude-opus-4", "hi").await.0, 200);
    let (status, _, answer) = messages(r.addr(), "gpt-4o", "hi").await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("no inference route"), "{answer}");
    assert_eq!(fast.seen().len(), 1);
    assert_eq!(fast.seen()[0].json()["model"], "claude-3-5-haiku-latest");
    assert_eq!(main.seen().len(), 1);
    assert_eq!(main.seen()[0].json()["model"], "claude-opus-4");
    let ev = r.event().await;
    assert_eq!(
        ev.upstream_model.as_deref(),
        Some("claude-3-5-haiku-latest")
    );
    assert_eq!(ev.requested_model.as_deref(), Some("claude-haiku-9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_follows_a_refused_connection_and_a_503() {
    let busy = mock(|_| {
        Reply::Json(
            503,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#.into(),
        )
    })
    .await;
    let good = mock(|_| ok_message()).await;
    let mut rt = route("claude-*", "dead");
    rt.fallback = vec!["busy".into(), "good".into()];
    let mut r = start(policy(
        vec![
            provider(
                "dead",
                Api::Anthropic,
                &format!("http://127.0.0.1:{}", dead_port()),
            ),
            provider("busy", Api::Anthropic, &busy.url("http")),
            provider("good", Api::Anthropic, &good.url("http")),
        ],
        vec![rt],
        vec![],
    ));
    let (status, _, answer) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(busy.seen().len(), 1);
    assert_eq!(good.seen().len(), 1);
    let ev = r.event().await;
    assert_eq!(ev.attempts, vec!["dead", "busy", "good"]);
    assert_eq!(ev.provider.as_deref(), Some("good"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_follows_a_provider_silent_past_the_first_byte_timeout() {
    let silent = mock(|_| Reply::Silent).await;
    let good = mock(|_| ok_message()).await;
    let mut rt = route("*", "silent");
    rt.fallback = vec!["good".into()];
    let config = RouterConfig {
        first_byte_timeout: std::time::Duration::from_millis(300),
        ..RouterConfig::default()
    };
    let mut r = start_with(
        policy(
            vec![
                provider("silent", Api::Anthropic, &silent.url("http")),
                provider("good", Api::Anthropic, &good.url("http")),
            ],
            vec![rt],
            vec![],
        ),
        config,
    );
    let (status, _, answer) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((silent.seen().len(), good.seen().len()), (1, 1));
    assert_eq!(r.event().await.attempts, vec!["silent", "good"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_providers_429_reaches_the_caller() {
    let limited = mock(|_| {
        Reply::Json(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
        )
    })
    .await;
    let r = start(policy(
        vec![provider("a", Api::Anthropic, &limited.url("http"))],
        vec![route("*", "a")],
        vec![],
    ));
    let (status, _, answer) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 429);
    assert!(answer.contains("slow down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_61st_request_in_a_minute_gets_429_with_retry_after() {
    let up = mock(|_| ok_message()).await;
    let mut p = policy(
        vec![provider("a", Api::Anthropic, &up.url("http"))],
        vec![route("*", "a")],
        vec![],
    );
    p.requests_per_minute = Some(60);
    let r = start(p);
    let mut c = Client::connect(r.addr()).await;
    let body = r#"{"model":"claude-x","messages":[{"role":"user","content":"hi"}]}"#;
    let h = [("content-type", "application/json")];
    for i in 0..60 {
        let (status, _, answer) = c.call("POST", "/v1/messages", &h, body).await;
        assert_eq!(status, 200, "request {i}: {answer}");
    }
    let (status, headers, answer) = c.call("POST", "/v1/messages", &h, body).await;
    assert_eq!(status, 429, "{answer}");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((50..=60).contains(&retry), "retry-after {retry}");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(up.seen().len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_count_the_usage_answers_report() {
    let up = mock(|_| ok_message()).await; // 12 + 3 tokens each
    let mut p = policy(
        vec![provider("a", Api::Anthropic, &up.url("http"))],
        vec![route("*", "a")],
        vec![],
    );
    p.tokens_per_minute = Some(30);
    let r = start(p);
    assert_eq!(messages(r.addr(), "claude-x", "hi").await.0, 200);
    assert_eq!(messages(r.addr(), "claude-x", "hi").await.0, 200);
    let (status, headers, _) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(up.seen().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_the_next_requests_route() {
    let a = mock(|_| ok_message()).await;
    let b = mock(|_| ok_message()).await;
    let providers = vec![
        provider("a", Api::Anthropic, &a.url("http")),
        provider("b", Api::Anthropic, &b.url("http")),
    ];
    let r = start(policy(providers.clone(), vec![route("*", "a")], vec![]));
    // The same connection before and after: reload is per request, not per connection.
    let mut c = Client::connect(r.addr()).await;
    let body = r#"{"model":"claude-x","messages":[]}"#;
    assert_eq!(c.call("POST", "/v1/messages", &[], body).await.0, 200);
    r.router
        .reload(policy(providers, vec![route("*", "b")], vec![]))
        .expect("reload");
    assert_eq!(c.call("POST", "/v1/messages", &[], body).await.0, 200);
    assert_eq!((a.seen().len(), b.seen().len()), (1, 1));
    // A reload that cannot work changes nothing.
    let mut broken = provider("c", Api::Anthropic, "http://127.0.0.1:1");
    broken.key_env = Some("WARDEN_TEST_NOT_SET_ANYWHERE".into());
    let err = r
        .router
        .reload(policy(vec![broken], vec![route("*", "c")], vec![]))
        .expect_err("missing key");
    assert!(matches!(err, RouterError::Key { .. }), "{err}");
    assert_eq!(c.call("POST", "/v1/messages", &[], body).await.0, 200);
    assert_eq!(b.seen().len(), 2);
}

#[test]
fn a_missing_key_is_an_error_at_start() {
    let mut p = provider("anthropic", Api::Anthropic, "https://api.anthropic.com");
    p.key_env = Some("WARDEN_TEST_NOT_SET_ANYWHERE".into());
    let err = Router::new(
        policy(vec![p], vec![route("*", "anthropic")], vec![]),
        RouterConfig::default(),
        warden_router::NoAudit,
    )
    .expect_err("no key");
    assert_eq!(
        err.to_string(),
        "provider `anthropic`: no key: environment variable `WARDEN_TEST_NOT_SET_ANYWHERE` is not set"
    );
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    std::fs::write(&path, "sk-ant-from-a-file\n").expect("write");
    let mut p = provider("anthropic", Api::Anthropic, "https://api.anthropic.com");
    p.key_env = None;
    p.key_file = Some(path.to_string_lossy().into());
    let make = |p| {
        Router::new(
            policy(vec![p], vec![route("*", "anthropic")], vec![]),
            RouterConfig::default(),
            warden_router::NoAudit,
        )
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = make(p.clone()).expect_err("group-readable");
    assert!(err.to_string().contains("mode 640"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    make(p).expect("owner-only key file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_key_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key");
    std::fs::write(&path, "sk-from-file\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let up = mock(|_| Reply::Json(200, "{}".into())).await;
    let mut p = provider("o", Api::Openai, &format!("{}/v1", up.url("http")));
    p.key_env = None;
    p.key_file = Some(path.to_string_lossy().into());
    let r = start(policy(vec![p], vec![route("*", "o")], vec![]));
    let (status, _, _) = Client::connect(r.addr())
        .await
        .call(
            "POST",
            "/v1/responses",
            &[],
            r#"{"model":"gpt-5","input":"hi"}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(up.seen()[0].line, "POST /v1/responses");
    assert_eq!(
        up.seen()[0].header("authorization"),
        Some("Bearer sk-from-file")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_secret_is_asked_of_the_host_and_sent() {
    let up = mock(|_| Reply::Json(200, "{}".into())).await;
    let mut p = provider("o", Api::Openai, &format!("{}/v1", up.url("http")));
    p.key_env = None;
    p.key_secret = Some("OPENAI_KEY".into());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keys = {
        let asked = asked.clone();
        move |k: warden_router::KeySource<'_>| {
            asked.lock().unwrap().push(format!("{k:?}"));
            match k {
                warden_router::KeySource::Secret("OPENAI_KEY") => Some("sk-from-store".into()),
                _ => None,
            }
        }
    };
    let router = Router::with_keys(
        policy(vec![p.clone()], vec![route("*", "o")], vec![]),
        RouterConfig::default(),
        warden_router::NoAudit,
        keys,
    )
    .expect("router");
    assert_eq!(*asked.lock().unwrap(), ["Secret(\"OPENAI_KEY\")"]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind router");
    let handle = warden_router::spawn(listener, router).expect("spawn");
    let (status, _, _) = Client::connect(handle.local_addr())
        .await
        .call(
            "POST",
            "/v1/responses",
            &[],
            r#"{"model":"gpt-5","input":"hi"}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        up.seen()[0].header("authorization"),
        Some("Bearer sk-from-store")
    );
    // Without a store (a router made with `with_env`), the secret is an error at start.
    let err = Router::with_env(
        policy(vec![p], vec![route("*", "o")], vec![]),
        RouterConfig::default(),
        warden_router::NoAudit,
        |_| None,
    )
    .expect_err("no store");
    assert_eq!(
        err.to_string(),
        "provider `o`: no key: the tenant's secret `OPENAI_KEY` cannot be read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_refused_in_the_callers_format() {
    let up = mock(|_| ok_message()).await;
    let mut r = start(policy(
        vec![
            provider("a", Api::Anthropic, &up.url("http")),
            provider("o", Api::Openai, &up.url("http")),
        ],
        vec![route("claude-*", "a"), route("*", "o")],
        vec![],
    ));
    let mut c = Client::connect(r.addr()).await;
    let (status, headers, answer) = c
        .call(
            "POST",
            "/v1/chat/completions",
            &[],
            "{\"model\": \"gpt-4o\", \"messa",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_json");
    let (status, _, answer) = c.call("POST", "/v1/messages", &[], "not json").await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(up.seen().is_empty());
    assert_eq!(r.event().await.decision, "invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_listed_in_the_callers_shape() {
    let r = start(policy(
        vec![
            provider("a", Api::Anthropic, "http://127.0.0.1:1"),
            provider("o", Api::Openai, "http://127.0.0.1:1/v1"),
        ],
        vec![
            route("claude-sonnet-4", "a"),
            route("claude-*", "a"),
            route("gpt-4o", "o"),
        ],
        vec![],
    ));
    let mut c = Client::connect(r.addr()).await;
    let (status, _, answer) = c
        .call(
            "GET",
            "/v1/models",
            &[("anthropic-version", "2023-06-01")],
            "",
        )
        .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["id"], "claude-sonnet-4");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["has_more"], false);
    let (status, _, answer) = c.call("GET", "/v1/models", &[], "").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["id"], "gpt-4o");
    assert_eq!(v["data"][1]["owned_by"], "o");
}
