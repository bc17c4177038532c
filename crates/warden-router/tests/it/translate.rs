//! Routes to a provider of the other API: requests translated on the way out, answers,
//! streams and errors on the way back, with privacy, fallback and limits still applying.

use crate::support::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Notify;
use warden_wire::inference::{Api, Detector, PrivacyAction, PrivacyRule};

const ANTHROPIC: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "claude-code-20250219"),
    ("x-api-key", "placeholder"),
];
const OPENAI: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("authorization", "Bearer placeholder"),
];

fn chat_tool_call() -> Reply {
    Reply::Json(
        200,
        json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "local-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"echo hi\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}})
        .to_string(),
    )
}

fn anthropic_text(text: &str) -> Reply {
    Reply::Json(
        200,
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": text}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 9, "output_tokens": 4}})
        .to_string(),
    )
}

fn local(up: &Mock) -> warden_wire::inference::Provider {
    provider("local", Api::Openai, &format!("{}/v1", up.url("http")))
}

fn sse(chunks: &[Value]) -> String {
    let mut s: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    s.push_str("data: [DONE]\n\n");
    s
}

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

/// `event:` names, in order.
fn event_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_string)
        .collect()
}

fn data_of(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("event json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_call_to_an_openai_provider_is_translated_both_ways() {
    let up = mock(|_| chat_tool_call()).await;
    let mut rt = route("claude-*", "local");
    rt.model_rewrite = Some("local-model".into());
    let mut r = start(policy(vec![local(&up)], vec![rt], vec![]));
    let body = json!({"model": "claude-sonnet-4", "max_tokens": 64, "system": "be brief",
        "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "say hi"}]});
    let (status, headers, answer) = Client::connect(r.addr())
        .await
        .call(
            "POST",
            "/v1/messages?beta=true",
            ANTHROPIC,
            &body.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(
        v,
        json!({"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "local-model",
            "content": [{"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "echo hi"}}],
            "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 20, "output_tokens": 5}})
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.line, "POST /v1/chat/completions");
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(s.header("x-api-key"), None);
    assert_eq!(s.header("anthropic-version"), None);
    assert_eq!(s.header("anthropic-beta"), None);
    assert_eq!(
        s.json(),
        json!({"model": "local-model", "max_tokens": 64,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hi"}],
            "tools": [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]})
    );
    let ev = r.event().await;
    assert_eq!(ev.decision, "route");
    assert_eq!(ev.translated.as_deref(), Some("messages->chat-completions"));
    assert_eq!(ev.upstream_model.as_deref(), Some("local-model"));
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(20), Some(5)));
    assert_eq!(ev.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_stream_reaches_a_messages_caller_event_by_event() {
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let c = |delta: Value, finish: Value| json!({"id": "c", "model": "local", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let first = format!(
        "data: {}\n\n",
        c(json!({"role": "assistant", "content": "Hel"}), Value::Null)
    );
    let rest = format!(
        "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        c(json!({"content": "lo"}), Value::Null),
        c(json!({}), json!("stop")),
        json!({"id": "c", "model": "local", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
    );
    let up = mock(move |_| Reply::Sse {
        first: first.clone(),
        gate: Some(g.clone()),
        rest: rest.clone(),
    })
    .await;
    let mut r = start(policy(vec![local(&up)], vec![route("*", "local")], vec![]));
    let body = r#"{"model":"claude-x","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut client = Client::connect(r.addr()).await;
    let resp = client.open("POST", "/v1/messages", ANTHROPIC, body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(!resp.headers().contains_key("content-length"));
    let mut body = resp.into_body();
    // The provider holds the rest back: the first chunk's events arrived alone.
    let head = next_data(&mut body).await.expect("first events");
    assert_eq!(
        event_names(&head),
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    assert_eq!(data_of(&head)[2]["delta"]["text"], "Hel");
    gate.notify_one();
    let mut tail = String::new();
    while let Ok(d) = next_data(&mut body).await {
        tail.push_str(&d);
    }
    assert_eq!(
        event_names(&tail),
        [
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let d = data_of(&tail);
    assert_eq!(d[0]["delta"]["text"], "lo");
    assert_eq!(d[2]["delta"]["stop_reason"], "end_turn");
    assert_eq!(d[2]["usage"]["output_tokens"], 2);
    assert_eq!(
        up.seen()[0].json()["stream_options"],
        json!({"include_usage": true})
    );
    let ev = r.event().await;
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(7), Some(2)));
    assert_eq!(ev.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_call_to_an_anthropic_provider_is_translated_and_thinking_noted() {
    let up = mock(|_| anthropic_text("hello")).await;
    let mut r = start(policy(
        vec![provider("a", Api::Anthropic, &up.url("http"))],
        vec![route("*", "a")],
        vec![],
    ));
    let body = json!({"model": "gpt-x", "max_tokens": 8, "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]});
    let (status, _, answer) = Client::connect(r.addr())
        .await
        .call("POST", "/v1/chat/completions", OPENAI, &body.to_string())
        .await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13})
    );
    let s = &up.seen()[0];
    assert_eq!(s.line, "POST /v1/messages");
    assert_eq!(s.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(s.header("authorization"), None);
    assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        s.json(),
        json!({"model": "gpt-x", "max_tokens": 8, "system": "sys",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    );
    let ev = r.event().await;
    assert_eq!(ev.translated.as_deref(), Some("chat-completions->messages"));
    assert_eq!(
        ev.notes,
        ["dropped 1 thinking block(s) of the answer: the caller's API has none"]
    );
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(9), Some(4)));
}

const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-x\",\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"there\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"shell\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"cmd\\\":\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"ls\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":8}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_stream_reaches_a_chat_caller_as_chunks() {
    let up = mock(|_| Reply::Sse {
        first: ANTHROPIC_STREAM.into(),
        gate: None,
        rest: String::new(),
    })
    .await;
    let mut r = start(policy(
        vec![provider("a", Api::Anthropic, &up.url("http"))],
        vec![route("*", "a")],
        vec![],
    ));
    let body = r#"{"model":"gpt-x","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, headers, answer) = Client::connect(r.addr())
        .await
        .call("POST", "/v1/chat/completions", OPENAI, body)
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(answer.ends_with("data: [DONE]\n\n"), "{answer}");
    let d = data_of(&answer);
    let text: String = d
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, "Hi there");
    let args: String = d
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(args, "{\"cmd\":\"ls\"}");
    let finish: Vec<&str> = d
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/finish_reason")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    assert_eq!(
        d.last().expect("usage chunk")["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19})
    );
    let ev = r.event().await;
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(11), Some(8)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_call_to_an_anthropic_provider_answers_and_streams_responses_events() {
    let up = mock(|s: &Seen| {
        if s.json()["stream"] == json!(true) {
            Reply::Sse {
                first: ANTHROPIC_STREAM.into(),
                gate: None,
                rest: String::new(),
            }
        } else {
            anthropic_text("from claude")
        }
    })
    .await;
    let mut r = start(policy(
        vec![provider("a", Api::Anthropic, &up.url("http"))],
        vec![route("*", "a")],
        vec![],
    ));
    let body =
        json!({"model": "gpt-x", "instructions": "sys", "input": "hi", "max_output_tokens": 20});
    let (status, _, answer) = Client::connect(r.addr())
        .await
        .call("POST", "/v1/responses", OPENAI, &body.to_string())
        .await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], "from claude");
    assert_eq!(v["usage"]["total_tokens"], 13);
    assert_eq!(
        up.seen()[0].json(),
        json!({"model": "gpt-x", "max_tokens": 20, "system": "sys",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
    );
    assert_eq!(
        r.event().await.translated.as_deref(),
        Some("responses->messages")
    );

    let body = json!({"model": "gpt-x", "input": "hi", "stream": true});
    let (status, _, answer) = Client::connect(r.addr())
        .await
        .call("POST", "/v1/responses", OPENAI, &body.to_string())
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        event_names(&answer),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let d = data_of(&answer);
    let seq: Vec<u64> = d
        .iter()
        .map(|e| e["sequence_number"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seq, (0..15).collect::<Vec<u64>>());
    let done = &d[14]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hi there");
    assert_eq!(done["output"][1]["type"], "function_call");
    assert_eq!(done["output"][1]["call_id"], "toolu_1");
    assert_eq!(done["output"][1]["arguments"], "{\"cmd\":\"ls\"}");
    assert_eq!(
        done["usage"]["input_tokens"]
            .as_u64()
            .zip(done["usage"]["output_tokens"].as_u64()),
        Some((11, 8))
    );
    let ev = r.event().await;
    assert_eq!((ev.input_tokens, ev.output_tokens), (Some(11), Some(8)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_error_reaches_the_caller_in_its_own_format_with_its_status() {
    let up = mock(|_| {
        Reply::Json(
            429,
            r#"{"error":{"message":"slow down","type":"rate_limit_exceeded","code":"x"}}"#.into(),
        )
    })
    .await;
    let mut r = start(policy(vec![local(&up)], vec![route("*", "local")], vec![]));
    let (status, _, answer) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 429);
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
    let ev = r.event().await;
    assert_eq!(ev.status, 429);
    assert_eq!(ev.error.as_deref(), Some("slow down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_translated_is_refused_naming_the_feature_and_nothing_is_sent() {
    let up = mock(|_| chat_tool_call()).await;
    let mut r = start(policy(vec![local(&up)], vec![route("*", "local")], vec![]));
    let body = json!({"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
    let (status, headers, answer) = Client::connect(r.addr())
        .await
        .call("POST", "/v1/messages", ANTHROPIC, &body.to_string())
        .await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-warden-reason"], "untranslatable");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "model `claude-x` is routed to provider `local`, which speaks the OpenAI API, and cannot translate the server-side tool `web_search_20250305` to the provider's API; nothing was sent"
    );
    assert!(up.seen().is_empty());
    assert_eq!(r.event().await.decision, "untranslatable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_to_an_openai_provider_is_an_estimate_marked_as_such() {
    let up = mock(|_| chat_tool_call()).await;
    let mut r = start(policy(vec![local(&up)], vec![route("*", "local")], vec![]));
    // 40 characters of text: about 10 tokens.
    let body =
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "a".repeat(40)}]});
    let (status, headers, answer) = Client::connect(r.addr())
        .await
        .call(
            "POST",
            "/v1/messages/count_tokens",
            ANTHROPIC,
            &body.to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-warden-estimated"], "true");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v, json!({"input_tokens": 10, "estimated": true}));
    assert!(up.seen().is_empty());
    let ev = r.event().await;
    assert_eq!(ev.decision, "estimate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_list_may_mix_apis() {
    let up = mock(|_| chat_tool_call()).await;
    let mut rt = route("*", "dead");
    rt.fallback = vec!["local".into()];
    let mut r = start(policy(
        vec![
            provider(
                "dead",
                Api::Anthropic,
                &format!("http://127.0.0.1:{}", dead_port()),
            ),
            local(&up),
        ],
        vec![rt],
        vec![],
    ));
    let (status, _, answer) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["content"][0]["name"], "Bash");
    assert_eq!(up.seen()[0].line, "POST /v1/chat/completions");
    let ev = r.event().await;
    assert_eq!(ev.attempts, ["dead", "local"]);
    assert_eq!(ev.translated.as_deref(), Some("messages->chat-completions"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reroute_and_redact_apply_before_translation() {
    let cloud = mock(|_| ok_message()).await;
    let local_up = mock(|_| chat_tool_call()).await;
    let mut r = start(policy(
        vec![
            provider("cloud", Api::Anthropic, &cloud.url("http")),
            local(&local_up),
        ],
        vec![route("*", "cloud")],
        vec![
            PrivacyRule {
                detect: vec![Detector::Email],
                action: PrivacyAction::Reroute { to: "local".into() },
            },
            PrivacyRule {
                detect: vec![Detector::Phone],
                action: PrivacyAction::Redact,
            },
        ],
    ));
    let (status, _, _) = messages(r.addr(), "claude-x", "mail ana@example.com").await;
    assert_eq!(status, 200);
    let (status, _, _) = messages(r.addr(), "claude-x", "plain prompt").await;
    assert_eq!(status, 200);
    assert_eq!(local_up.seen().len(), 1);
    assert_eq!(
        local_up.seen()[0].json()["messages"][0]["content"],
        "mail ana@example.com"
    );
    assert_eq!(cloud.seen().len(), 1);
    let ev = r.event().await;
    assert_eq!(ev.decision, "reroute");
    assert_eq!(ev.translated.as_deref(), Some("messages->chat-completions"));
    assert_eq!(r.event().await.translated, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_a_translated_stream_closes_the_upstream_connection() {
    let closed = Arc::new(Notify::new());
    let cl = closed.clone();
    let first = sse(&[
        json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"content": "a"}}]}),
    ]);
    let first = first.trim_end_matches("data: [DONE]\n\n").to_string();
    let up = mock(move |_| Reply::Hold(first.clone(), cl.clone())).await;
    let mut r = start(policy(vec![local(&up)], vec![route("*", "local")], vec![]));
    let mut c = Client::connect(r.addr()).await;
    let body = r#"{"model":"claude-x","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let resp = c.open("POST", "/v1/messages", ANTHROPIC, body).await;
    let mut body = resp.into_body();
    let head = next_data(&mut body).await.expect("first events");
    assert!(head.starts_with("event: message_start"), "{head}");
    drop(body);
    c.close();
    tokio::time::timeout(WAIT, closed.notified())
        .await
        .expect("the provider saw its connection closed");
    let ev = r.event().await;
    assert!(ev.error.is_some_and(|e| e.contains("caller went away")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_minute_count_the_translated_usage() {
    let up = mock(|_| chat_tool_call()).await; // 20 + 5 tokens each
    let mut p = policy(vec![local(&up)], vec![route("*", "local")], vec![]);
    p.tokens_per_minute = Some(40);
    let r = start(p);
    assert_eq!(messages(r.addr(), "claude-x", "hi").await.0, 200);
    assert_eq!(messages(r.addr(), "claude-x", "hi").await.0, 200);
    let (status, _, answer) = messages(r.addr(), "claude-x", "hi").await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(up.seen().len(), 2);
}
