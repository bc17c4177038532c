//! block, redact and reroute, observed at the providers.

use crate::support::*;
use serde_json::Value;
use warden_wire::inference::{Api, Detector, PrivacyAction, PrivacyRule};

fn rules() -> Vec<PrivacyRule> {
    vec![
        PrivacyRule {
            detect: vec![Detector::CreditCard],
            action: PrivacyAction::Block,
        },
        PrivacyRule {
            detect: vec![Detector::Email],
            action: PrivacyAction::Redact,
        },
        PrivacyRule {
            detect: vec![Detector::ApiKey],
            action: PrivacyAction::Reroute { to: "local".into() },
        },
    ]
}

struct Setup {
    cloud: Mock,
    local: Mock,
    r: Running,
}

async fn setup() -> Setup {
    let cloud = mock(|_| ok_message()).await;
    let local = mock(|_| ok_message()).await;
    let r = start(policy(
        vec![
            provider("cloud", Api::Anthropic, &cloud.url("http")),
            provider("local", Api::Anthropic, &local.url("http")),
        ],
        vec![route("*", "cloud")],
        rules(),
    ));
    Setup { cloud, local, r }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_answers_in_the_callers_format_naming_the_detector_and_sends_nothing() {
    let mut s = setup().await;
    let (status, _, answer) =
        messages(s.r.addr(), "claude-x", "charge 4111 1111 1111 1111 now").await;
    assert_eq!(status, 403);
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    let msg = v["error"]["message"].as_str().expect("message");
    assert!(msg.contains("`credit-card`"), "{msg}");
    assert!(
        !answer.contains("4111"),
        "the matched text is never echoed: {answer}"
    );
    // OpenAI callers get OpenAI's shape.
    let (status, _, answer) = Client::connect(s.r.addr())
        .await
        .call(
            "POST",
            "/v1/responses",
            &[],
            r#"{"model":"gpt-5","instructions":"card 4111-1111-1111-1111","input":"pay"}"#,
        )
        .await;
    assert_eq!(status, 403);
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["error"]["code"], "privacy_block");
    assert!(s.cloud.seen().is_empty() && s.local.seen().is_empty());
    let ev = s.r.event().await;
    assert_eq!(ev.decision, "block");
    assert_eq!(ev.detectors, vec!["credit-card"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redact_replaces_findings_in_every_text_and_sends_on() {
    let mut s = setup().await;
    let body = serde_json::json!({
        "model": "claude-x",
        "system": [{"type": "text", "text": "the user is bob@example.com"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "mail alice@example.org please"},
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "found carol@example.net."}
            ]}
        ]
    })
    .to_string();
    let (status, _, _) = Client::connect(s.r.addr())
        .await
        .call("POST", "/v1/messages", &[], &body)
        .await;
    assert_eq!(status, 200);
    let seen = s.cloud.seen();
    assert_eq!(seen.len(), 1);
    let v = seen[0].json();
    assert_eq!(v["system"][0]["text"], "the user is [REDACTED:email]");
    assert_eq!(
        v["messages"][0]["content"][0]["text"],
        "mail [REDACTED:email] please"
    );
    assert_eq!(
        v["messages"][0]["content"][1]["content"],
        "found [REDACTED:email]."
    );
    assert_eq!(v["messages"][0]["content"][1]["tool_use_id"], "toolu_01");
    let raw = String::from_utf8_lossy(&seen[0].body);
    assert!(!raw.contains("@example."), "{raw}");
    let ev = s.r.event().await;
    assert_eq!(ev.decision, "redact");
    assert_eq!(ev.detectors, vec!["email"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reroute_sends_the_request_to_the_named_provider_only() {
    let mut s = setup().await;
    let prompt = "deploy with sk-ant-api03-Zx8fK2mQ9vL4nR7tY1wB5cD3 please";
    let (status, _, _) = messages(s.r.addr(), "claude-x", prompt).await;
    assert_eq!(status, 200);
    assert!(s.cloud.seen().is_empty());
    let seen = s.local.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].json()["messages"][0]["content"], prompt);
    let ev = s.r.event().await;
    assert_eq!(ev.decision, "reroute");
    assert_eq!(ev.provider.as_deref(), Some("local"));
    // Clean prompts still go to the route's provider.
    assert_eq!(messages(s.r.addr(), "claude-x", "hello").await.0, 200);
    assert_eq!(s.cloud.seen().len(), 1);
}
