//! Server-sent events: relayed as they come, never retried once started, cancelled
//! upstream when the caller leaves.

use crate::support::*;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use warden_router::RouterConfig;
use warden_wire::inference::Api;

const STREAM: &str =
    r#"{"model":"claude-x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

async fn next_data(body: &mut hyper::body::Incoming) -> Result<String, String> {
    loop {
        match tokio::time::timeout(WAIT, body.frame()).await {
            Err(_) => return Err("timed out".into()),
            Ok(None) => return Err("end of body".into()),
            Ok(Some(Err(e))) => return Err(format!("error: {e}")),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    return Ok(String::from_utf8_lossy(&d).to_string());
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_caller_before_the_provider_finishes() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let first = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
    let rest = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let up = mock(move |_| Reply::Sse {
        first: first.into(),
        gate: Some(g.clone()),
        rest: rest.into(),
    })
    .await;
    let mut r = start(policy(
        vec![provider("a", Api::Anthropic, &up.url("http"))],
        vec![route("*", "a")],
        vec![],
    ));
    let mut c = Client::connect(r.addr()).await;
    let resp = c.open("POST", "/v1/messages", &[], STREAM).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The provider is still holding the rest back: this chunk was relayed alone.
    assert_eq!(next_data(&mut body).await, Ok(first.to_string()));
    gate.notify_one();
    let mut tail = String::new();
    while let Ok(d) = next_data(&mut body).await {
        tail.push_str(&d);
    }
    assert_eq!(tail, rest);
    let ev = r.event().await;
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(25), Some(9)));
    assert_eq!(ev.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_after_its_first_byte_is_not_retried() {
    let first = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
    let broken = mock(move |_| Reply::BreakAfter(first.into())).await;
    let spare = mock(|_| ok_message()).await;
    let mut rt = route("*", "broken");
    rt.fallback = vec!["spare".into()];
    let mut r = start(policy(
        vec![
            provider("broken", Api::Anthropic, &broken.url("http")),
            provider("spare", Api::Anthropic, &spare.url("http")),
        ],
        vec![rt],
        vec![],
    ));
    let mut c = Client::connect(r.addr()).await;
    let resp = c.open("POST", "/v1/messages", &[], STREAM).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(next_data(&mut body).await, Ok(first.to_string()));
    let end = next_data(&mut body).await;
    assert!(
        end.as_ref().is_err_and(|e| e.starts_with("error")),
        "truncated, not ended: {end:?}"
    );
    assert!(spare.seen().is_empty());
    let ev = r.event().await;
    assert_eq!(ev.attempts, vec!["broken"]);
    assert!(ev.error.is_some_and(|e| e.contains("upstream failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_closes_the_upstream_connection() {
    let closed = Arc::new(Notify::new());
    let cl = closed.clone();
    let up = mock(move |_| Reply::Hold("data: {}\n\n".into(), cl.clone())).await;
    let mut r = start(policy(
        vec![provider("a", Api::Anthropic, &up.url("http"))],
        vec![route("*", "a")],
        vec![],
    ));
    let mut c = Client::connect(r.addr()).await;
    let resp = c.open("POST", "/v1/messages", &[], STREAM).await;
    let mut body = resp.into_body();
    assert_eq!(next_data(&mut body).await, Ok("data: {}\n\n".to_string()));
    drop(body);
    c.close();
    tokio::time::timeout(WAIT, closed.notified())
        .await
        .expect("the provider saw its connection closed");
    let ev = r.event().await;
    assert!(ev.error.is_some_and(|e| e.contains("caller went away")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_idle_past_the_timeout_is_cut() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let up = mock(move |_| Reply::Sse {
        first: "data: {}\n\n".into(),
        gate: Some(g.clone()),
        rest: "data: never\n\n".into(),
    })
    .await;
    let config = RouterConfig {
        idle_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    };
    let mut r = start_with(
        policy(
            vec![provider("a", Api::Anthropic, &up.url("http"))],
            vec![route("*", "a")],
            vec![],
        ),
        config,
    );
    let mut c = Client::connect(r.addr()).await;
    let mut body = c
        .open("POST", "/v1/messages", &[], STREAM)
        .await
        .into_body();
    assert_eq!(next_data(&mut body).await, Ok("data: {}\n\n".to_string()));
    let end = next_data(&mut body).await;
    assert!(
        end.as_ref().is_err_and(|e| e.starts_with("error")),
        "{end:?}"
    );
    let ev = r.event().await;
    assert!(
        ev.error
            .is_some_and(|e| e.contains("no byte from the provider"))
    );
    gate.notify_one();
}
