//! Routes that cross APIs (root): Claude Code, which speaks Anthropic Messages, runs a
//! tool through a mock OpenAI Chat Completions provider; the official `openai` SDK's
//! Chat Completions and Responses calls reach a mock Anthropic provider; a privacy
//! `reroute` sends one prompt of a Claude Code session to the local (OpenAI) provider
//! and the other to Anthropic. `warden test` names the API a request leaves in.

use super::egress::Env;
use super::inference::{
    Answer, Mock, PLACEHOLDER, Seen, assert_debian_python, chat_completion, chat_events,
    claude_code, claude_file_with, model_and_stream, python_image, python_sdks, real_key,
};
use super::{run, warden};
use serde_json::{Value, json};

#[test]
fn warden_test_names_the_api_a_request_leaves_in() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("w.kdl");
    std::fs::write(
        &f,
        r#"image "i" {
    from-host "/bin/sh"
}
provider "anthropic" api="anthropic" endpoint="https://api.anthropic.com" key-env="K"
provider "local" api="openai" endpoint="http://10.0.0.5:8000/v1"
sandbox "s" {
    image "i"
    command "/bin/sh"
    inference {
        route "claude-*" to="anthropic"
        route "*" to="local"
        privacy detect="email" action="reroute" to="local"
        test model="claude-sonnet-4" api="anthropic" expect="anthropic" leaves="anthropic"
        test model="claude-sonnet-4" prompt="mail ana@example.com" api="anthropic" expect="local" leaves="openai"
        test model="gpt-4o" api="openai" expect="local"
        test model="qwen" leaves="openai" expect="local"
        test model="claude-sonnet-4" prompt="mail ana@example.com" api="anthropic" expect="local" leaves="anthropic"
    }
}
"#,
    )
    .unwrap();
    let (code, out, err) = run(warden().arg("test").arg(&f));
    assert_eq!(code, 1, "{out}\n{err}");
    let file = f.display().to_string();
    let lines: Vec<String> = out.lines().map(|l| l.replace(&file, "w.kdl")).collect();
    assert_eq!(
        lines,
        [
            "ok     s: model claude-sonnet-4 from an anthropic caller -> anthropic in the anthropic API (w.kdl:13)",
            "ok     s: model claude-sonnet-4 from an anthropic caller with prompt \"mail ana@example.com\" -> local in the openai API, translated from anthropic (w.kdl:14)",
            "ok     s: model gpt-4o from an openai caller -> local in the openai API (w.kdl:15)",
            "ok     s: model qwen -> local in the openai API (w.kdl:16)",
            "FAILED s: model claude-sonnet-4 from an anthropic caller with prompt \"mail ana@example.com\" -> local in the openai API, translated from anthropic, expected local in the anthropic API (w.kdl:17): routed by model; the router translates between the two APIs",
            "4 passed, 1 failed",
        ]
    );
}

/// A Chat Completions answer calling `Bash` with `echo hi`, whole or as chunks.
fn bash_call(model: &str, stream: bool) -> Answer {
    let call = json!({"id": "call_bash_1", "type": "function",
        "function": {"name": "Bash", "arguments": "{\"command\":\"echo hi\"}"}});
    if !stream {
        return Answer::Json(
            json!({"id": "chatcmpl-tool", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": null, "tool_calls": [call]}}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}})
            .to_string(),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        (
            String::new(),
            json!({"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    Answer::Sse(vec![
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_bash_1", "type": "function",
                "function": {"name": "Bash", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\":"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"echo hi\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        (
            String::new(),
            json!({"id": "chatcmpl-tool", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}})
            .to_string(),
        ),
        (String::new(), "[DONE]".into()),
    ])
}

fn chat_text(model: &str, stream: bool, text: &str) -> Answer {
    if stream {
        Answer::Sse(chat_events(model, text))
    } else {
        Answer::Json(chat_completion(model, text))
    }
}

fn body_of(seen: &Seen) -> Value {
    serde_json::from_str(&seen.body).unwrap_or_default()
}

/// The tool results (`role: tool` messages) of a Chat Completions request.
fn tool_results(seen: &Seen) -> Vec<String> {
    body_of(seen)["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Busybox's applets on the `PATH` (the Bash tool's shell wants the usual commands).
const APPLETS: &str =
    "busybox mkdir -p /tmp/bin && busybox --install -s /tmp/bin && export PATH=/tmp/bin:$PATH";

#[test]
fn claude_code_runs_a_tool_through_an_openai_provider() {
    let env = Env::new();
    let claude = claude_code();
    // Asked with the Bash tool and no result yet: call it. Given its result: answer.
    // Anything else Claude Code asks on the side: a short text.
    let local = Mock::scripted(|seen| {
        let (model, stream) = model_and_stream(seen);
        if !seen.line.starts_with("POST /v1/chat/completions") {
            return Answer::Status(404, r#"{"error":{"message":"not here"}}"#.into());
        }
        let results = tool_results(seen);
        let body = body_of(seen);
        let has_bash = body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["function"]["name"] == "Bash");
        if results.iter().any(|r| r.contains("hi")) {
            chat_text(&model, stream, "the command printed hi")
        } else if !results.is_empty() {
            chat_text(&model, stream, "the command failed")
        } else if has_bash {
            bash_call(&model, stream)
        } else {
            chat_text(&model, stream, "ok")
        }
    });
    let key = real_key("local");
    let file = env.file();
    let script = format!(
        "{APPLETS}; export SHELL=/bin/bash; {} -p 'run echo hi' --allowedTools Bash > /tmp/answer 2> /tmp/errors; echo \"claude exit=$?\"; cat /tmp/answer; cat /tmp/errors >&2",
        claude.display()
    );
    let providers = format!(
        "provider \"local\" api=\"openai\" endpoint=\"http://127.0.0.1:{}/v1\" key-env=\"WARDEN_TEST_LOCAL_KEY\"\n",
        local.port
    );
    let mut text = claude_file_with(
        &claude,
        &providers,
        "        route \"*\" to=\"local\"\n",
        &script,
    );
    text = text.replace(
        "\"/bin/busybox\"\n    env",
        "\"/bin/busybox\" \"/bin/bash\"\n    env",
    );
    std::fs::write(&file, &text).unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_LOCAL_KEY", &key));
    assert_eq!(code, 0, "{out}\n{err}");
    let seen = local.seen();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["claude exit=0", "the command printed hi"],
        "{err}\n{seen:#?}"
    );
    // Claude Code asked, the router sent Chat Completions with the real key, the tool
    // ran in the sandbox and its result came back under the call's id.
    assert!(
        seen.iter().all(|s| s.line == "POST /v1/chat/completions"),
        "{seen:#?}"
    );
    let bearer = format!("Bearer {key}");
    for s in &seen {
        assert_eq!(s.header("authorization"), Some(bearer.as_str()));
        assert!(!s.headers.iter().any(|(_, v)| v.contains(PLACEHOLDER)));
    }
    let answered: Vec<&Seen> = seen
        .iter()
        .filter(|s| tool_results(s).iter().any(|r| r.contains("hi")))
        .collect();
    assert!(
        !answered.is_empty(),
        "no tool result reached the mock: {seen:#?}"
    );
    let call_ids: Vec<Value> = body_of(answered[0])["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["tool_call_id"].clone())
        .collect();
    assert_eq!(call_ids, [json!("call_bash_1")]);
    let audit = std::fs::read_to_string(
        env.dir
            .path()
            .join("state/sandboxes/claude/inference.jsonl"),
    )
    .unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .filter(|e| e["endpoint"] == "messages")
            .all(|e| e["translated"] == "messages->chat-completions" && e["status"] == 200),
        "{audit}"
    );
}

/// What the `openai` SDK does in the sandbox against an Anthropic provider: Chat
/// Completions and Responses, whole and streamed, and the SDK's stream helpers.
const OPENAI_PY: &str = r#"
import openai

o = openai.OpenAI()
c = o.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
print("chat:", c.choices[0].message.content, c.usage.total_tokens)
parts = []
for ch in o.chat.completions.create(model="gpt-test", stream=True,
                                    messages=[{"role": "user", "content": "hi"}]):
    if ch.choices and ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
print("chat-stream:", "".join(parts))
r = o.responses.create(model="gpt-test", input="hi")
print("responses:", r.output_text, r.usage.total_tokens)
parts = []
for ev in o.responses.create(model="gpt-test", input="hi", stream=True):
    if ev.type == "response.output_text.delta":
        parts.append(ev.delta)
print("responses-stream:", "".join(parts))
with o.responses.stream(model="gpt-test", input="hi") as s:
    final = s.get_final_response()
print("responses-helper:", final.output_text, final.usage.total_tokens)
"#;

#[test]
fn the_openai_sdk_reaches_an_anthropic_provider() {
    assert_debian_python();
    let env = Env::new();
    let sdks = python_sdks();
    let mock = Mock::plain("hello from claude");
    let key = real_key("ant");
    let client = env.dir.path().join("client.py");
    std::fs::write(&client, OPENAI_PY).unwrap();
    let file = env.file();
    std::fs::write(
        &file,
        format!(
            "{}\nprovider \"anthropic\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_ANTHROPIC_KEY\"\n\nsandbox \"sdks\" {{\n    image \"py\"\n    command \"/usr/bin/python3\" \"/opt/client.py\"\n    inference {{\n        route \"gpt-*\" to=\"anthropic\" model=\"claude-test\"\n    }}\n}}\n",
            python_image(&sdks, &client),
            mock.port,
        ),
    )
    .unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_ANTHROPIC_KEY", &key));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "chat: hello from claude 15",
            "chat-stream: hello from claude",
            "responses: hello from claude 15",
            "responses-stream: hello from claude",
            "responses-helper: hello from claude 15",
        ],
        "{err}"
    );
    let seen = mock.seen();
    assert_eq!(
        seen.iter().map(|s| s.line.as_str()).collect::<Vec<_>>(),
        ["POST /v1/messages"; 5]
    );
    let streams: Vec<bool> = seen.iter().map(|s| model_and_stream(s).1).collect();
    assert_eq!(streams, [false, true, false, true, true]);
    for s in &seen {
        assert_eq!(s.header("x-api-key"), Some(key.as_str()));
        assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(s.header("authorization"), None);
        let b = body_of(s);
        assert_eq!(b["model"], "claude-test");
        assert_eq!(
            b["messages"],
            json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        );
    }
    let audit =
        std::fs::read_to_string(env.dir.path().join("state/sandboxes/sdks/inference.jsonl"))
            .unwrap();
    let translated: Vec<String> = audit
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                e["endpoint"].as_str().unwrap(),
                e["translated"].as_str().unwrap_or("-"),
                e["output_tokens"]
            )
        })
        .collect();
    assert_eq!(
        translated,
        [
            "chat-completions chat-completions->messages 3",
            "chat-completions chat-completions->messages 3",
            "responses responses->messages 3",
            "responses responses->messages 3",
            "responses responses->messages 3",
        ]
    );
}

#[test]
fn reroute_sends_the_prompt_with_an_email_to_the_local_openai_provider() {
    let env = Env::new();
    let claude = claude_code();
    let cloud = Mock::plain("answer from the cloud");
    let local = Mock::plain("answer from the local model");
    let (cloud_key, local_key) = (real_key("ant"), real_key("local"));
    let file = env.file();
    // One conversation: the second call continues the first (`--continue`), so it
    // carries both prompts; only it holds the address.
    let script = format!(
        "{APPLETS}; {c} -p 'say hi' > /tmp/a1 2>> /tmp/errors; echo \"first exit=$?\"; cat /tmp/a1; {c} -p --continue 'write to ana@example.com' > /tmp/a2 2>> /tmp/errors; echo \"second exit=$?\"; cat /tmp/a2; cat /tmp/errors >&2",
        c = claude.display()
    );
    let providers = format!(
        "provider \"anthropic\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_ANTHROPIC_KEY\"\nprovider \"local\" api=\"openai\" endpoint=\"http://127.0.0.1:{}/v1\" key-env=\"WARDEN_TEST_LOCAL_KEY\"\n",
        cloud.port, local.port
    );
    let inference = "        route \"*\" to=\"anthropic\"\n        privacy detect=\"email\" action=\"reroute\" to=\"local\"\n";
    std::fs::write(
        &file,
        claude_file_with(&claude, &providers, inference, &script),
    )
    .unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_ANTHROPIC_KEY", &cloud_key)
        .env("WARDEN_TEST_LOCAL_KEY", &local_key));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "first exit=0",
            "answer from the cloud",
            "second exit=0",
            "answer from the local model"
        ],
        "{err}\ncloud: {:#?}\nlocal: {:#?}",
        cloud.seen(),
        local.seen()
    );
    let cloud_seen = cloud.seen();
    let local_seen = local.seen();
    assert!(
        cloud_seen
            .iter()
            .all(|s| !s.body.contains("ana@example.com")),
        "the address reached the cloud: {cloud_seen:#?}"
    );
    assert!(
        cloud_seen.iter().any(|s| s.body.contains("say hi")),
        "{cloud_seen:#?}"
    );
    // The local model got the second prompt, with the first turn of the same
    // conversation before it, as Chat Completions with its own key.
    let continued: Vec<&Seen> = local_seen
        .iter()
        .filter(|s| s.body.contains("ana@example.com") && s.body.contains("say hi"))
        .collect();
    assert!(!continued.is_empty(), "{local_seen:#?}");
    let bearer = format!("Bearer {local_key}");
    for s in &local_seen {
        assert_eq!(s.line, "POST /v1/chat/completions");
        assert_eq!(s.header("authorization"), Some(bearer.as_str()));
    }
}

/// Codex's requests carry tools the Messages API has no place for (tool namespaces in an
/// `additional_tools` input item, a free-form `custom` tool): routed to an Anthropic
/// provider, Codex gets an error naming them, and nothing reaches the provider.
#[test]
fn codex_routed_to_anthropic_is_told_what_cannot_cross_and_nothing_is_sent() {
    let env = Env::new();
    let codex = super::inference::codex();
    let mock = Mock::plain("never sent");
    let key = real_key("ant");
    let file = env.file();
    let script = format!(
        "{} exec --skip-git-repo-check 'say hi' > /tmp/answer 2> /tmp/errors; echo \"codex exit=$?\"; busybox grep -o 'cannot translate [^;]*' /tmp/errors | busybox head -n 1",
        codex.display()
    );
    std::fs::write(
        &file,
        format!(
            "image \"codex\" {{\n    from-host {:?} \"/bin/busybox\"\n    env \"PATH\" \"/usr/bin:/bin\"\n}}\n\nprovider \"anthropic\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_ANTHROPIC_KEY\"\n\nsandbox \"codex\" {{\n    image \"codex\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    workdir \"/sandbox\"\n    filesystem {{\n        read-write \"/home/agent\" \"/tmp\" \"/sandbox\"\n    }}\n    limits memory=\"2GiB\" pids=512 cpus=2 open-files=4096\n    init grace=\"2s\"\n    agent \"codex\"\n    inference {{\n        route \"*\" to=\"anthropic\"\n    }}\n}}\n",
            codex.display().to_string(),
            mock.port,
        ),
    )
    .unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_ANTHROPIC_KEY", &key));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "codex exit=1",
            "cannot translate input items of type `additional_tools` to the provider's API"
        ],
        "{err}"
    );
    assert!(mock.seen().is_empty(), "{:#?}", mock.seen());
    let audit =
        std::fs::read_to_string(env.dir.path().join("state/sandboxes/codex/inference.jsonl"))
            .unwrap();
    let events: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e["decision"], "untranslatable", "{audit}");
        assert_eq!(e["translated"], "responses->messages", "{audit}");
        assert_eq!(e["status"], 400, "{audit}");
    }
}
