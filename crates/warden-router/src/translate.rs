//! Translation between the Anthropic Messages API and the OpenAI Chat Completions API,
//! both ways, and from the OpenAI Responses API (through Chat Completions' shapes):
//! requests, answers, and streams event by event.
//!
//! What one side has and the other lacks is refused with [`Untranslatable`] naming the
//! feature (server-side tools, several choices, ...), never dropped without a word;
//! thinking blocks, which Chat Completions cannot carry, and the reasoning text some
//! OpenAI-compatible servers send (`reasoning_content`), which lacks the signature an
//! Anthropic thinking block needs, are dropped and counted in [`Notes`] for the audit.
//! Images a tool returned follow its result in the user turn (a Chat tool message
//! holds text only).
//!
//! Tool call ids are kept as they are both ways, so a later turn's tool results match
//! the calls the agent saw.
//!
//! The router picks a [`Crossing`] when a route's provider speaks the other API: it
//! translates the request with it, and the answer through a [`Translator`] that turns
//! upstream bytes into caller bytes as they arrive (a JSON answer is whole before it
//! can be translated; a stream goes event by event).

use serde_json::{Map, Value, json};
use warden_wire::inference::Api;

/// A feature of the request or answer the other API has no way to express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot translate {0} to the provider's API")]
pub struct Untranslatable(pub String);

/// What a translation dropped on purpose (for the audit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    /// Thinking / reasoning blocks dropped because the target has none.
    pub dropped_thinking: u32,
}

type R<T> = Result<T, Untranslatable>;

fn no(what: impl Into<String>) -> Untranslatable {
    Untranslatable(what.into())
}

fn text_of_blocks(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

/// Copies the sampling fields both APIs share under the same name.
fn copy_common(from: &Value, to: &mut Map<String, Value>) {
    for k in ["model", "temperature", "top_p", "stream"] {
        if let Some(v) = from.get(k) {
            to.insert(k.into(), v.clone());
        }
    }
}

// ---------------------------------------------------------------------------------
// Requests

/// An Anthropic Messages request as an OpenAI Chat Completions request.
pub fn messages_to_chat(req: &Value, notes: &mut Notes) -> R<Value> {
    let mut out = Map::new();
    copy_common(req, &mut out);
    if let Some(m) = req.get("max_tokens") {
        out.insert("max_tokens".into(), m.clone());
    }
    if let Some(s) = req.get("stop_sequences") {
        out.insert("stop".into(), s.clone());
    }
    if req.get("top_k").is_some() {
        return Err(no("`top_k`"));
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(u) = req.pointer("/metadata/user_id") {
        out.insert("user".into(), u.clone());
    }
    let mut messages = Vec::new();
    if let Some(system) = req.get("system") {
        let text = text_of_blocks(system).ok_or_else(|| no("a `system` that is not text"))?;
        messages.push(json!({"role": "system", "content": text}));
    }
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        match m.get("content") {
            Some(Value::String(s)) => messages.push(json!({"role": role, "content": s})),
            Some(Value::Array(blocks)) => {
                anthropic_blocks_to_chat(role, blocks, &mut messages, notes)?
            }
            _ => return Err(no("a message without content")),
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let mut list = Vec::with_capacity(tools.len());
        for t in tools {
            if let Some(kind) = t.get("type").and_then(Value::as_str)
                && kind != "custom"
            {
                return Err(no(format!("the server-side tool `{kind}`")));
            }
            let mut f = Map::new();
            f.insert("name".into(), t.get("name").cloned().unwrap_or(Value::Null));
            if let Some(d) = t.get("description") {
                f.insert("description".into(), d.clone());
            }
            f.insert(
                "parameters".into(),
                t.get("input_schema")
                    .cloned()
                    .unwrap_or(json!({"type": "object"})),
            );
            list.push(json!({"type": "function", "function": f}));
        }
        out.insert("tools".into(), Value::Array(list));
    }
    if let Some(tc) = req.get("tool_choice") {
        let choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": tc.get("name")}}),
            _ => return Err(no("this `tool_choice`")),
        };
        out.insert("tool_choice".into(), choice);
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(Value::Object(out))
}

fn anthropic_blocks_to_chat(
    role: &str,
    blocks: &[Value],
    messages: &mut Vec<Value>,
    notes: &mut Notes,
) -> R<()> {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    let mut results = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": b.get("text")})),
            Some("image") => parts.push(image_part(b)?),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id"),
                "type": "function",
                "function": {
                    "name": b.get("name"),
                    "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({})))
                        .unwrap_or_else(|_| "{}".into()),
                },
            })),
            Some("tool_result") => {
                let content = match b.get("content") {
                    Some(Value::Array(inner)) => {
                        // A Chat tool message holds text only: the images a tool
                        // returned (a screenshot, a file read) follow in the user turn.
                        let mut text = Vec::new();
                        for c in inner {
                            match c.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    text.push(c.get("text").and_then(Value::as_str).unwrap_or(""))
                                }
                                Some("image") => parts.push(image_part(c)?),
                                Some(other) => {
                                    return Err(no(format!(
                                        "tool result content of type `{other}`"
                                    )));
                                }
                                None => return Err(no("tool result content without a type")),
                            }
                        }
                        text.join("\n")
                    }
                    Some(c) => text_of_blocks(c).unwrap_or_default(),
                    None => String::new(),
                };
                results.push(json!({
                    "role": "tool",
                    "tool_call_id": b.get("tool_use_id"),
                    "content": content,
                }));
            }
            Some("thinking" | "redacted_thinking") => notes.dropped_thinking += 1,
            Some(other) => return Err(no(format!("content blocks of type `{other}`"))),
            None => return Err(no("a content block without a type")),
        }
    }
    // Tool results answer the previous assistant turn: they come first.
    messages.extend(results);
    if role == "assistant" {
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text.join("")) }});
        if !calls.is_empty() {
            m["tool_calls"] = Value::Array(calls);
        }
        messages.push(m);
    } else if !parts.is_empty() {
        messages.push(json!({"role": role, "content": parts}));
    }
    Ok(())
}

/// An Anthropic image block as a Chat Completions `image_url` part.
fn image_part(b: &Value) -> R<Value> {
    let src = b
        .get("source")
        .ok_or_else(|| no("an image without source"))?;
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            src.get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            src.get("data").and_then(Value::as_str).unwrap_or("")
        ),
        Some("url") => src
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        _ => return Err(no("an image source other than base64 or a URL")),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// An OpenAI Chat Completions request as an Anthropic Messages request.
pub fn chat_to_messages(req: &Value) -> R<Value> {
    let mut out = Map::new();
    copy_common(req, &mut out);
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(no("several choices (`n` > 1)"));
    }
    if let Some(f) = req.get("response_format")
        && f.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(no("`response_format`"));
    }
    let max = req
        .get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .cloned()
        .unwrap_or(json!(4096));
    out.insert("max_tokens".into(), max);
    match req.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(v @ Value::Array(_)) => {
            out.insert("stop_sequences".into(), v.clone());
        }
        _ => {}
    }
    if let Some(u) = req.get("user") {
        out.insert("metadata".into(), json!({"user_id": u}));
    }
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        match role {
            "system" | "developer" => system.push(
                m.get("content")
                    .and_then(text_of_blocks)
                    .unwrap_or_default(),
            ),
            "tool" => push_block(
                &mut messages,
                "user",
                json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id"),
                    "content": m.get("content").and_then(text_of_blocks).unwrap_or_default(),
                }),
            ),
            "assistant" => {
                if let Some(t) = m.get("content").and_then(text_of_blocks)
                    && !t.is_empty()
                {
                    push_block(
                        &mut messages,
                        "assistant",
                        json!({"type": "text", "text": t}),
                    );
                }
                for c in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let args = c
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    let input: Value = serde_json::from_str(args)
                        .map_err(|_| no("tool call arguments that are not JSON"))?;
                    push_block(
                        &mut messages,
                        "assistant",
                        json!({"type": "tool_use", "id": c.get("id"), "name": c.pointer("/function/name"), "input": input}),
                    );
                }
            }
            _ => match m.get("content") {
                Some(Value::String(s)) => {
                    push_block(&mut messages, "user", json!({"type": "text", "text": s}))
                }
                Some(Value::Array(parts)) => {
                    for p in parts {
                        let block = match p.get("type").and_then(Value::as_str) {
                            Some("text") => json!({"type": "text", "text": p.get("text")}),
                            Some("image_url") => image_block(
                                p.pointer("/image_url/url")
                                    .and_then(Value::as_str)
                                    .unwrap_or(""),
                            ),
                            Some(other) => {
                                return Err(no(format!("content parts of type `{other}`")));
                            }
                            None => return Err(no("a content part without a type")),
                        };
                        push_block(&mut messages, "user", block);
                    }
                }
                _ => return Err(no("a message without content")),
            },
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let mut list = Vec::with_capacity(tools.len());
        for t in tools {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(no("a tool that is not a function"));
            }
            let f = t.get("function").cloned().unwrap_or(json!({}));
            let mut tool = Map::new();
            tool.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
            if let Some(d) = f.get("description") {
                tool.insert("description".into(), d.clone());
            }
            tool.insert(
                "input_schema".into(),
                f.get("parameters")
                    .cloned()
                    .unwrap_or(json!({"type": "object"})),
            );
            list.push(Value::Object(tool));
        }
        out.insert("tools".into(), Value::Array(list));
    }
    if let Some(tc) = req.get("tool_choice") {
        let mut choice = match tc {
            Value::String(s) if s == "auto" => json!({"type": "auto"}),
            Value::String(s) if s == "required" => json!({"type": "any"}),
            Value::String(s) if s == "none" => json!({"type": "none"}),
            Value::Object(_) => json!({"type": "tool", "name": tc.pointer("/function/name")}),
            _ => return Err(no("this `tool_choice`")),
        };
        if req.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

fn image_block(url: &str) -> Value {
    match url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
    {
        Some((media, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

/// Appends `block` to the last message when it has `role`, else starts a message:
/// Anthropic wants turns to alternate.
fn push_block(messages: &mut Vec<Value>, role: &str, block: Value) {
    if let Some(last) = messages.last_mut()
        && last.get("role").and_then(Value::as_str) == Some(role)
        && let Some(content) = last.get_mut("content").and_then(Value::as_array_mut)
    {
        content.push(block);
        return;
    }
    messages.push(json!({"role": role, "content": [block]}));
}

/// An OpenAI Responses request as a Chat Completions request.
pub fn responses_to_chat(req: &Value) -> R<Value> {
    let mut out = Map::new();
    copy_common(req, &mut out);
    if req.get("previous_response_id").is_some() {
        return Err(no("`previous_response_id` (state kept by the provider)"));
    }
    if let Some(m) = req.get("max_output_tokens") {
        out.insert("max_tokens".into(), m.clone());
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut messages = Vec::new();
    if let Some(i) = req.get("instructions").and_then(Value::as_str) {
        messages.push(json!({"role": "system", "content": i}));
    }
    match req.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for it in items {
                let kind = it.get("type").and_then(Value::as_str).unwrap_or("message");
                match kind {
                    "message" => {
                        let role = it.get("role").and_then(Value::as_str).unwrap_or("user");
                        let content = match it.get("content") {
                            Some(Value::String(s)) => json!(s),
                            Some(Value::Array(parts)) => {
                                let mut list = Vec::new();
                                for p in parts {
                                    match p.get("type").and_then(Value::as_str) {
                                        Some("input_text" | "output_text") => list
                                            .push(json!({"type": "text", "text": p.get("text")})),
                                        Some("input_image") => list.push(json!({"type": "image_url", "image_url": {"url": p.get("image_url")}})),
                                        Some(other) => {
                                            return Err(no(format!("input parts of type `{other}`")));
                                        }
                                        None => return Err(no("an input part without a type")),
                                    }
                                }
                                if role == "assistant" {
                                    json!(text_of_blocks(&Value::Array(list)).unwrap_or_default())
                                } else {
                                    Value::Array(list)
                                }
                            }
                            _ => return Err(no("an input message without content")),
                        };
                        let role = if role == "developer" { "system" } else { role };
                        messages.push(json!({"role": role, "content": content}));
                    }
                    "function_call" => {
                        let call = json!({"id": it.get("call_id"), "type": "function", "function": {"name": it.get("name"), "arguments": it.get("arguments")}});
                        match messages.last_mut() {
                            Some(last)
                                if last.get("role").and_then(Value::as_str)
                                    == Some("assistant") =>
                            {
                                let calls = last
                                    .as_object_mut()
                                    .map(|o| o.entry("tool_calls").or_insert(json!([])));
                                if let Some(Value::Array(a)) = calls {
                                    a.push(call);
                                }
                            }
                            _ => messages.push(
                                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                            ),
                        }
                    }
                    "function_call_output" => messages.push(json!({"role": "tool", "tool_call_id": it.get("call_id"), "content": it.get("output")})),
                    "reasoning" => {}
                    other => return Err(no(format!("input items of type `{other}`"))),
                }
            }
        }
        _ => return Err(no("a request without `input`")),
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        let mut list = Vec::with_capacity(tools.len());
        for t in tools {
            match t.get("type").and_then(Value::as_str) {
                Some("function") => list.push(json!({"type": "function", "function": {"name": t.get("name"), "description": t.get("description"), "parameters": t.get("parameters")}})),
                Some(other) => return Err(no(format!("the built-in tool `{other}`"))),
                None => return Err(no("a tool without a type")),
            }
        }
        out.insert("tools".into(), Value::Array(list));
    }
    if let Some(tc) = req.get("tool_choice") {
        let choice = match tc {
            Value::String(_) => tc.clone(),
            Value::Object(_) => json!({"type": "function", "function": {"name": tc.get("name")}}),
            _ => return Err(no("this `tool_choice`")),
        };
        out.insert("tool_choice".into(), choice);
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------
// Answers

fn finish_to_stop(reason: Option<&str>) -> &'static str {
    match reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn stop_to_finish(reason: Option<&str>) -> &'static str {
    match reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Reasoning text some OpenAI-compatible servers add (`reasoning_content`: vLLM,
/// llama.cpp, DeepSeek; `reasoning`: Ollama, OpenRouter).
fn has_reasoning(msg: &Value) -> bool {
    ["reasoning_content", "reasoning"].iter().any(|k| {
        msg.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty())
    })
}

/// A Chat Completions answer as an Anthropic Messages answer.
pub fn chat_answer_to_messages(ans: &Value, notes: &mut Notes) -> R<Value> {
    let choice = ans
        .pointer("/choices/0")
        .ok_or_else(|| no("an answer without choices"))?;
    let msg = choice.get("message").cloned().unwrap_or(json!({}));
    if has_reasoning(&msg) {
        notes.dropped_thinking += 1;
    }
    let mut content = Vec::new();
    if let Some(t) = msg.get("content").and_then(Value::as_str)
        && !t.is_empty()
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = c
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value =
            serde_json::from_str(args).map_err(|_| no("tool call arguments that are not JSON"))?;
        content.push(json!({"type": "tool_use", "id": c.get("id"), "name": c.pointer("/function/name"), "input": input}));
    }
    Ok(json!({
        "id": ans.get("id"),
        "type": "message",
        "role": "assistant",
        "model": ans.get("model"),
        "content": content,
        "stop_reason": finish_to_stop(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": null,
        "usage": {
            "input_tokens": ans.pointer("/usage/prompt_tokens").cloned().unwrap_or(json!(0)),
            "output_tokens": ans.pointer("/usage/completion_tokens").cloned().unwrap_or(json!(0)),
        },
    }))
}

/// An Anthropic Messages answer as a Chat Completions answer.
pub fn messages_answer_to_chat(ans: &Value, notes: &mut Notes) -> R<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in ans
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id"),
                "type": "function",
                "function": {
                    "name": b.get("name"),
                    "arguments": serde_json::to_string(b.get("input").unwrap_or(&json!({}))).unwrap_or_else(|_| "{}".into()),
                },
            })),
            Some("thinking" | "redacted_thinking") => notes.dropped_thinking += 1,
            Some(other) => return Err(no(format!("answer content blocks of type `{other}`"))),
            None => return Err(no("a content block without a type")),
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let input = ans
        .pointer("/usage/input_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let output = ans
        .pointer("/usage/output_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(json!({
        "id": ans.get("id"),
        "object": "chat.completion",
        "created": 0,
        "model": ans.get("model"),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": stop_to_finish(ans.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output},
    }))
}

/// A Chat Completions answer as a Responses answer.
pub fn chat_answer_to_responses(ans: &Value) -> R<Value> {
    let choice = ans
        .pointer("/choices/0")
        .ok_or_else(|| no("an answer without choices"))?;
    let mut output = Vec::new();
    if let Some(t) = choice.pointer("/message/content").and_then(Value::as_str)
        && !t.is_empty()
    {
        output.push(json!({
            "type": "message", "id": format!("msg_{}", ans.get("id").and_then(Value::as_str).unwrap_or("")),
            "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": t, "annotations": []}],
        }));
    }
    for c in choice
        .pointer("/message/tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        output.push(json!({
            "type": "function_call", "id": format!("fc_{}", c.get("id").and_then(Value::as_str).unwrap_or("")),
            "call_id": c.get("id"), "name": c.pointer("/function/name"),
            "arguments": c.pointer("/function/arguments"), "status": "completed",
        }));
    }
    let input = ans
        .pointer("/usage/prompt_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let out_tokens = ans
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let incomplete = choice.get("finish_reason").and_then(Value::as_str) == Some("length");
    Ok(json!({
        "id": ans.get("id"),
        "object": "response",
        "created_at": 0,
        "model": ans.get("model"),
        "status": if incomplete { "incomplete" } else { "completed" },
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "output": output,
        "usage": {"input_tokens": input, "output_tokens": out_tokens, "total_tokens": input + out_tokens},
    }))
}

// ---------------------------------------------------------------------------------
// Streams

/// One server-sent event: its `event:` name (Anthropic names them; Chat Completions does
/// not) and its `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    fn named(name: &str, data: Value) -> Event {
        Event {
            name: Some(name.to_string()),
            data: data.to_string(),
        }
    }
    fn data(data: Value) -> Event {
        Event {
            name: None,
            data: data.to_string(),
        }
    }
    /// The event as it goes on the wire.
    pub fn to_sse(&self) -> String {
        match &self.name {
            Some(n) => format!("event: {n}\ndata: {}\n\n", self.data),
            None => format!("data: {}\n\n", self.data),
        }
    }
}

/// Chat Completions stream chunks in, Anthropic Messages events out.
#[derive(Debug, Default)]
pub struct ChatToMessagesStream {
    started: bool,
    /// The index of the open content block, and whether it is text.
    open: Option<(u64, bool)>,
    next_index: u64,
    /// Chat's tool call index → Anthropic block index.
    tool_blocks: Vec<(u64, u64)>,
    stop: Option<&'static str>,
    output_tokens: u64,
    input_tokens: u64,
    done: bool,
    pub notes: Notes,
    /// Reasoning text seen: counted once per answer, as one dropped block.
    reasoning: bool,
}

impl ChatToMessagesStream {
    /// Translates one `data:` payload (`[DONE]` included).
    pub fn push(&mut self, data: &str) -> R<Vec<Event>> {
        let mut out = Vec::new();
        if data.trim() == "[DONE]" {
            self.finish(&mut out);
            return Ok(out);
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|_| no("a stream chunk that is not JSON"))?;
        if !self.started {
            self.started = true;
            out.push(Event::named("message_start", json!({"type": "message_start", "message": {
                "id": chunk.get("id"), "type": "message", "role": "assistant", "model": chunk.get("model"),
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}})));
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.input_tokens = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
            self.output_tokens = u
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(out);
        };
        let delta = choice.get("delta").cloned().unwrap_or(json!({}));
        if !self.reasoning && has_reasoning(&delta) {
            // Anthropic thinking blocks carry a provider signature this text lacks.
            self.reasoning = true;
            self.notes.dropped_thinking += 1;
        }
        if let Some(t) = delta.get("content").and_then(Value::as_str)
            && !t.is_empty()
        {
            let index = self.open_block(&mut out, true, None);
            out.push(Event::named("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}})));
        }
        for c in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let tool_index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let block = match self.tool_blocks.iter().find(|(t, _)| *t == tool_index) {
                Some((_, b)) => *b,
                None => {
                    let b = self.open_block(&mut out, false, Some(c));
                    self.tool_blocks.push((tool_index, b));
                    b
                }
            };
            if let Some(args) = c.pointer("/function/arguments").and_then(Value::as_str)
                && !args.is_empty()
            {
                out.push(Event::named("content_block_delta", json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": args}})));
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(finish_to_stop(Some(r)));
        }
        Ok(out)
    }

    fn open_block(&mut self, out: &mut Vec<Event>, text: bool, tool: Option<&Value>) -> u64 {
        if let Some((i, is_text)) = self.open
            && is_text == text
            && text
        {
            return i;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        let block = match tool {
            Some(c) => {
                json!({"type": "tool_use", "id": c.get("id"), "name": c.pointer("/function/name"), "input": {}})
            }
            None => json!({"type": "text", "text": ""}),
        };
        out.push(Event::named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = Some((index, text));
        index
    }

    fn close_block(&mut self, out: &mut Vec<Event>) {
        if let Some((i, _)) = self.open.take() {
            out.push(Event::named(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        self.done = true;
        self.close_block(out);
        out.push(Event::named(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}}),
        ));
        out.push(Event::named(
            "message_stop",
            json!({"type": "message_stop"}),
        ));
    }
}

/// Anthropic Messages events in, Chat Completions chunks out.
#[derive(Debug, Default)]
pub struct MessagesToChatStream {
    id: Value,
    model: Value,
    /// Anthropic block index → Chat tool call index.
    tools: Vec<(u64, u64)>,
    input_tokens: u64,
    output_tokens: u64,
    pub notes: Notes,
}

impl MessagesToChatStream {
    fn chunk(&self, delta: Value, finish: Value) -> Event {
        Event::data(
            json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    }

    /// Translates one event's `data:` payload.
    pub fn push(&mut self, data: &str) -> R<Vec<Event>> {
        let ev: Value =
            serde_json::from_str(data).map_err(|_| no("a stream event that is not JSON"))?;
        let mut out = Vec::new();
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                self.id = ev.pointer("/message/id").cloned().unwrap_or(Value::Null);
                self.model = ev.pointer("/message/model").cloned().unwrap_or(Value::Null);
                self.input_tokens = ev
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), Value::Null));
            }
            Some("content_block_start") => {
                let block = ev.get("content_block").cloned().unwrap_or(json!({}));
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let n = self.tools.len() as u64;
                        self.tools.push((index, n));
                        out.push(self.chunk(json!({"tool_calls": [{"index": n, "id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": ""}}]}), Value::Null));
                    }
                    Some("thinking" | "redacted_thinking") => self.notes.dropped_thinking += 1,
                    _ => {}
                }
            }
            Some("content_block_delta") => {
                let delta = ev.get("delta").cloned().unwrap_or(json!({}));
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        out.push(self.chunk(json!({"content": delta.get("text")}), Value::Null))
                    }
                    Some("input_json_delta") => {
                        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some((_, n)) = self.tools.iter().find(|(b, _)| *b == index) {
                            out.push(self.chunk(json!({"tool_calls": [{"index": n, "function": {"arguments": delta.get("partial_json")}}]}), Value::Null));
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                self.output_tokens = ev
                    .pointer("/usage/output_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(self.output_tokens);
                let stop = ev.pointer("/delta/stop_reason").and_then(Value::as_str);
                out.push(self.chunk(json!({}), json!(stop_to_finish(stop))));
            }
            Some("message_stop") => {
                out.push(Event::data(json!({"id": self.id, "object": "chat.completion.chunk", "created": 0, "model": self.model, "choices": [],
                    "usage": {"prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens, "total_tokens": self.input_tokens + self.output_tokens}})));
                out.push(Event {
                    name: None,
                    data: "[DONE]".into(),
                });
            }
            Some("error") => out.push(Event::data(json!({"error": ev.get("error")}))),
            _ => {}
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// Chat Completions streams as Responses events

#[derive(Debug)]
enum Item {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: Value,
        name: Value,
        args: String,
        chat_index: u64,
    },
}

/// Chat Completions stream chunks in, OpenAI Responses events out (`response.created`,
/// `response.output_item.added`, `response.output_text.delta`,
/// `response.function_call_arguments.delta`, ..., `response.completed` with usage).
#[derive(Debug, Default)]
pub struct ChatToResponsesStream {
    id: String,
    model: Value,
    seq: u64,
    started: bool,
    /// Every item so far; those at `open..` are still in progress.
    items: Vec<Item>,
    open: usize,
    finish: Option<String>,
    input_tokens: u64,
    output_tokens: u64,
    done: bool,
}

impl ChatToResponsesStream {
    fn event(&mut self, name: &str, mut v: Value) -> Event {
        v["type"] = json!(name);
        v["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Event::named(name, v)
    }

    fn response(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        json!({"id": self.id, "object": "response", "created_at": 0, "status": status,
            "model": self.model, "output": output, "parallel_tool_calls": true,
            "tool_choice": "auto", "tools": [], "usage": usage})
    }

    fn item_json(item: &Item, status: &str) -> Value {
        match item {
            Item::Text { id, text } => json!({"type": "message", "id": id, "status": status,
                "role": "assistant",
                "content": if text.is_empty() && status != "completed" { json!([]) } else {
                    json!([{"type": "output_text", "text": text, "annotations": []}]) }}),
            Item::Call {
                id,
                call_id,
                name,
                args,
                ..
            } => json!({"type": "function_call",
                "id": id, "call_id": call_id, "name": name, "arguments": args, "status": status}),
        }
    }

    /// Translates one Chat Completions `data:` payload (`[DONE]` included).
    pub fn push(&mut self, data: &str) -> R<Vec<Event>> {
        let mut out = Vec::new();
        if data.trim() == "[DONE]" {
            self.finish(&mut out);
            return Ok(out);
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|_| no("a stream chunk that is not JSON"))?;
        if let Some(e) = chunk.get("error") {
            return Err(no(format!(
                "a stream error from the provider ({})",
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message")
            )));
        }
        if !self.started {
            self.started = true;
            self.id = format!(
                "resp_{}",
                chunk.get("id").and_then(Value::as_str).unwrap_or("0")
            );
            self.model = chunk.get("model").cloned().unwrap_or(Value::Null);
            let r = self.response("in_progress", Vec::new(), Value::Null);
            out.push(self.event("response.created", json!({"response": r})));
            let r = self.response("in_progress", Vec::new(), Value::Null);
            out.push(self.event("response.in_progress", json!({"response": r})));
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.input_tokens = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
            self.output_tokens = u
                .get("completion_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(out);
        };
        if let Some(t) = choice.pointer("/delta/content").and_then(Value::as_str)
            && !t.is_empty()
        {
            let index = match self.items.last() {
                Some(Item::Text { .. }) if self.open < self.items.len() => self.items.len() - 1,
                _ => {
                    self.close_all(&mut out);
                    let id = format!("msg_{}_{}", self.id, self.items.len());
                    self.items.push(Item::Text {
                        id: id.clone(),
                        text: String::new(),
                    });
                    let index = self.items.len() - 1;
                    let item = Self::item_json(&self.items[index], "in_progress");
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    out.push(self.event(
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
                    ));
                    index
                }
            };
            let id = match &mut self.items[index] {
                Item::Text { id, text } => {
                    text.push_str(t);
                    id.clone()
                }
                Item::Call { id, .. } => id.clone(),
            };
            out.push(self.event("response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []})));
        }
        for c in choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let chat_index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let found =
                self.items
                    .iter()
                    .enumerate()
                    .skip(self.open)
                    .find_map(|(i, it)| match it {
                        Item::Call { chat_index: n, .. } if *n == chat_index => Some(i),
                        _ => None,
                    });
            let index = match found {
                Some(i) => i,
                None => {
                    // A text item in progress ends where the calls begin.
                    if matches!(self.items.last(), Some(Item::Text { .. })) {
                        self.close_all(&mut out);
                    }
                    let call_id = c.get("id").cloned().unwrap_or(Value::Null);
                    let id = format!("fc_{}", call_id.as_str().unwrap_or(""));
                    self.items.push(Item::Call {
                        id,
                        call_id,
                        name: c.pointer("/function/name").cloned().unwrap_or(Value::Null),
                        args: String::new(),
                        chat_index,
                    });
                    let index = self.items.len() - 1;
                    let item = Self::item_json(&self.items[index], "in_progress");
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    index
                }
            };
            if let Some(a) = c.pointer("/function/arguments").and_then(Value::as_str)
                && !a.is_empty()
            {
                let id = match &mut self.items[index] {
                    Item::Call { id, args, .. } => {
                        args.push_str(a);
                        id.clone()
                    }
                    Item::Text { id, .. } => id.clone(),
                };
                out.push(self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": a}),
                ));
            }
        }
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(r.to_string());
        }
        Ok(out)
    }

    fn close_all(&mut self, out: &mut Vec<Event>) {
        while self.open < self.items.len() {
            let index = self.open;
            self.open += 1;
            let done = Self::item_json(&self.items[index], "completed");
            match &self.items[index] {
                Item::Text { id, text } => {
                    let (id, text) = (id.clone(), text.clone());
                    out.push(self.event("response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})));
                    out.push(self.event(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []}}),
                    ));
                }
                Item::Call { id, args, .. } => {
                    let (id, args) = (id.clone(), args.clone());
                    out.push(self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "arguments": args}),
                    ));
                }
            }
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": done}),
            ));
        }
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        if self.done {
            return;
        }
        self.done = true;
        self.close_all(out);
        let output = self
            .items
            .iter()
            .map(|i| Self::item_json(i, "completed"))
            .collect();
        let usage = json!({"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
        let incomplete = self.finish.as_deref() == Some("length");
        let mut r = self.response(
            if incomplete {
                "incomplete"
            } else {
                "completed"
            },
            output,
            usage,
        );
        if incomplete {
            r["incomplete_details"] = json!({"reason": "max_output_tokens"});
            out.push(self.event("response.incomplete", json!({"response": r})));
        } else {
            out.push(self.event("response.completed", json!({"response": r})));
        }
    }
}

// ---------------------------------------------------------------------------------
// Crossings: which translation a route needs, and the answer on its way back

/// A request crossing from the caller's API to a provider of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// An Anthropic Messages caller, an OpenAI (Chat Completions) provider.
    MessagesToChat,
    /// An OpenAI Chat Completions caller, an Anthropic provider.
    ChatToMessages,
    /// An OpenAI Responses caller, an Anthropic provider (through Chat Completions'
    /// shapes both ways).
    ResponsesToMessages,
}

impl Crossing {
    /// The crossing a call to `endpoint` needs to reach a provider of `provider`'s API:
    /// none when it speaks the caller's, an error when the call has no counterpart
    /// there.
    pub fn between(endpoint: crate::api::Endpoint, provider: Api) -> R<Option<Crossing>> {
        use crate::api::Endpoint as E;
        match (endpoint, provider) {
            (E::Messages, Api::Openai) => Ok(Some(Crossing::MessagesToChat)),
            (E::ChatCompletions, Api::Anthropic) => Ok(Some(Crossing::ChatToMessages)),
            (E::Responses, Api::Anthropic) => Ok(Some(Crossing::ResponsesToMessages)),
            (E::CountTokens, Api::Openai) => Err(no("`count_tokens`")),
            _ => Ok(None),
        }
    }

    /// The API the caller speaks (and hears back).
    pub fn caller(self) -> Api {
        match self {
            Crossing::MessagesToChat => Api::Anthropic,
            Crossing::ChatToMessages | Crossing::ResponsesToMessages => Api::Openai,
        }
    }

    /// For the audit: `messages->chat-completions` and the like.
    pub fn as_str(self) -> &'static str {
        match self {
            Crossing::MessagesToChat => "messages->chat-completions",
            Crossing::ChatToMessages => "chat-completions->messages",
            Crossing::ResponsesToMessages => "responses->messages",
        }
    }

    /// The provider's path the translated request goes to.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Crossing::MessagesToChat => "/v1/chat/completions",
            Crossing::ChatToMessages | Crossing::ResponsesToMessages => "/v1/messages",
        }
    }

    /// The request in the provider's API.
    pub fn request(self, req: &Value, notes: &mut Notes) -> R<Value> {
        match self {
            Crossing::MessagesToChat => messages_to_chat(req, notes),
            Crossing::ChatToMessages => chat_to_messages(req),
            Crossing::ResponsesToMessages => chat_to_messages(&responses_to_chat(req)?),
        }
    }

    /// A whole (non-streamed) answer in the caller's API.
    pub fn answer(self, ans: &Value, notes: &mut Notes) -> R<Value> {
        match self {
            Crossing::MessagesToChat => chat_answer_to_messages(ans, notes),
            Crossing::ChatToMessages => messages_answer_to_chat(ans, notes),
            Crossing::ResponsesToMessages => {
                chat_answer_to_responses(&messages_answer_to_chat(ans, notes)?)
            }
        }
    }
}

/// The message of an error answer of either API (`error.message` in both).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    match e {
        Value::String(s) => Some(s.clone()),
        _ => e.get("message").and_then(Value::as_str).map(str::to_string),
    }
}

#[derive(Debug)]
enum Streams {
    ChatToMessages(ChatToMessagesStream),
    MessagesToChat(MessagesToChatStream),
    MessagesToResponses(MessagesToChatStream, ChatToResponsesStream),
}

/// A provider's server-sent events in, the caller's out, event by event: each call to
/// [`StreamTranslator::feed`] returns what the bytes so far complete, nothing is held
/// back beyond an unfinished line.
#[derive(Debug)]
pub struct StreamTranslator {
    crossing: Crossing,
    streams: Streams,
    line: Vec<u8>,
    data: String,
    has_data: bool,
    /// Set once a translation failed: the caller got an error event, the rest is dropped.
    pub failed: Option<Untranslatable>,
    pub notes: Notes,
}

/// Longest stream line kept (a longer one is cut; its event then fails to parse).
const MAX_LINE: usize = 8 << 20;

impl StreamTranslator {
    pub fn new(crossing: Crossing) -> StreamTranslator {
        let streams = match crossing {
            Crossing::MessagesToChat => Streams::ChatToMessages(ChatToMessagesStream::default()),
            Crossing::ChatToMessages => Streams::MessagesToChat(MessagesToChatStream::default()),
            Crossing::ResponsesToMessages => Streams::MessagesToResponses(
                MessagesToChatStream::default(),
                ChatToResponsesStream::default(),
            ),
        };
        StreamTranslator {
            crossing,
            streams,
            line: Vec::new(),
            data: String::new(),
            has_data: false,
            failed: None,
            notes: Notes::default(),
        }
    }

    /// Upstream bytes in, caller bytes out (possibly none yet).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            if self.line.len() + chunk.len() <= MAX_LINE {
                self.line.extend_from_slice(chunk);
            }
            if !chunk.ends_with(b"\n") {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                self.dispatch(&mut out);
            } else if let Some(d) = line.strip_prefix("data:") {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
                self.has_data = true;
            }
            // `event:`, `id:`, `retry:` and comments: the payload says what it is.
        }
        out
    }

    /// The provider's stream ended: whatever the caller still needs to see it end.
    pub fn end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.feed(b"\n");
        }
        self.dispatch(&mut out);
        if self.failed.is_none() {
            let events = match &mut self.streams {
                Streams::ChatToMessages(s) => s.push("[DONE]"),
                Streams::MessagesToChat(_) => Ok(Vec::new()),
                Streams::MessagesToResponses(_, r) => r.push("[DONE]"),
            };
            self.write(events, &mut out);
        }
        out
    }

    fn dispatch(&mut self, out: &mut Vec<u8>) {
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        let data = std::mem::take(&mut self.data);
        if self.failed.is_some() {
            return;
        }
        let events = match &mut self.streams {
            Streams::ChatToMessages(s) => {
                let r = s.push(&data);
                self.notes.dropped_thinking = s.notes.dropped_thinking;
                r
            }
            Streams::MessagesToChat(s) => {
                let r = s.push(&data);
                self.notes.dropped_thinking = s.notes.dropped_thinking;
                r
            }
            Streams::MessagesToResponses(s, r) => match s.push(&data) {
                Ok(chat) => {
                    self.notes.dropped_thinking = s.notes.dropped_thinking;
                    let mut all = Vec::new();
                    let mut res = Ok(());
                    for e in chat {
                        match r.push(&e.data) {
                            Ok(evs) => all.extend(evs),
                            Err(e) => {
                                res = Err(e);
                                break;
                            }
                        }
                    }
                    res.map(|()| all)
                }
                Err(e) => Err(e),
            },
        };
        self.write(events, out);
    }

    fn write(&mut self, events: R<Vec<Event>>, out: &mut Vec<u8>) {
        match events {
            Ok(events) => {
                for e in events {
                    out.extend_from_slice(e.to_sse().as_bytes());
                }
            }
            Err(e) => {
                let msg = format!("the provider's stream could not be translated: {e}");
                let ev = match self.crossing.caller() {
                    Api::Anthropic => Event::named(
                        "error",
                        json!({"type": "error", "error": {"type": "api_error", "message": msg}}),
                    ),
                    Api::Openai => Event::data(
                        json!({"error": {"message": msg, "type": "server_error", "param": null, "code": "untranslatable"}}),
                    ),
                };
                out.extend_from_slice(ev.to_sse().as_bytes());
                self.failed = Some(e);
            }
        }
    }
}

/// A rough count of a Messages request's input tokens for a provider that cannot count
/// them: about four characters a token over its texts and tool definitions.
pub fn estimate_input_tokens(req: &Value) -> u64 {
    let chars: usize = crate::api::texts(req)
        .iter()
        .map(|t| t.chars().count())
        .sum::<usize>()
        + req.get("tools").map(|t| t.to_string().len()).unwrap_or(0);
    (chars as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: a request in one API and, field by field, the request expected in the
    /// other (written from the public API references).
    #[test]
    fn messages_requests_become_chat_requests() {
        let cases = [
            (
                json!({"model": "claude-x", "max_tokens": 100, "system": "be brief", "temperature": 0.2,
                       "stop_sequences": ["END"], "messages": [{"role": "user", "content": "hi"}]}),
                json!({"model": "claude-x", "max_tokens": 100, "temperature": 0.2, "stop": ["END"],
                       "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}),
            ),
            (
                json!({"model": "m", "max_tokens": 10, "stream": true,
                       "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}],
                       "tool_choice": {"type": "any"},
                       "messages": [
                           {"role": "user", "content": [{"type": "text", "text": "list"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
                           {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "ok"}, {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
                           {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a.txt"}]}]}]}),
                json!({"model": "m", "max_tokens": 10, "stream": true, "stream_options": {"include_usage": true},
                       "tools": [{"type": "function", "function": {"name": "Bash", "description": "run", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}],
                       "tool_choice": "required",
                       "messages": [
                           {"role": "user", "content": [{"type": "text", "text": "list"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]},
                           {"role": "assistant", "content": "ok", "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}]},
                           {"role": "tool", "tool_call_id": "toolu_1", "content": "a.txt"}]}),
            ),
        ];
        for (from, want) in cases {
            let mut notes = Notes::default();
            assert_eq!(messages_to_chat(&from, &mut notes).unwrap(), want);
        }
        let mut notes = Notes::default();
        messages_to_chat(&cases_thinking(), &mut notes).unwrap();
        assert_eq!(notes.dropped_thinking, 1);
        let web = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                         "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert_eq!(
            messages_to_chat(&web, &mut notes).unwrap_err().to_string(),
            "cannot translate the server-side tool `web_search_20250305` to the provider's API"
        );
    }

    fn cases_thinking() -> Value {
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}, {"type": "text", "text": "x"}]}]})
    }

    #[test]
    fn chat_requests_become_messages_requests() {
        let from = json!({"model": "gpt-x", "max_completion_tokens": 50, "stop": "END", "parallel_tool_calls": false,
            "tool_choice": {"type": "function", "function": {"name": "get"}},
            "tools": [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get", "arguments": "{\"k\":1}"}}]},
                {"role": "tool", "tool_call_id": "call_9", "content": "v"},
                {"role": "user", "content": [{"type": "text", "text": "and?"}, {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]}]});
        let want = json!({"model": "gpt-x", "max_tokens": 50, "stop_sequences": ["END"], "system": "sys",
            "tool_choice": {"type": "tool", "name": "get", "disable_parallel_tool_use": true},
            "tools": [{"name": "get", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "q"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_9", "name": "get", "input": {"k": 1}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "v"},
                                             {"type": "text", "text": "and?"},
                                             {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}}]}]});
        assert_eq!(chat_to_messages(&from).unwrap(), want);
        let n2 = json!({"model": "m", "n": 2, "messages": []});
        assert_eq!(
            chat_to_messages(&n2).unwrap_err().to_string(),
            "cannot translate several choices (`n` > 1) to the provider's API"
        );
    }

    #[test]
    fn responses_requests_become_chat_requests() {
        let from = json!({"model": "gpt-x", "instructions": "sys", "max_output_tokens": 30, "stream": true,
            "tools": [{"type": "function", "name": "shell", "description": "run", "parameters": {"type": "object"}}],
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "go"}]},
                {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\"cmd\":\"ls\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"}]});
        let want = json!({"model": "gpt-x", "max_tokens": 30, "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "shell", "description": "run", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "go"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": "{\"cmd\":\"ls\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}]});
        assert_eq!(responses_to_chat(&from).unwrap(), want);
        let web = json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]});
        assert_eq!(
            responses_to_chat(&web).unwrap_err().to_string(),
            "cannot translate the built-in tool `web_search` to the provider's API"
        );
    }

    #[test]
    fn answers_translate_with_tool_calls_stop_reasons_and_usage() {
        let chat = json!({"id": "c1", "model": "local", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "running", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\":\"echo hi\"}"}}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}});
        let mut notes = Notes::default();
        let msg = chat_answer_to_messages(&chat, &mut notes).unwrap();
        assert_eq!(notes.dropped_thinking, 0);
        assert_eq!(
            msg,
            json!({"id": "c1", "type": "message", "role": "assistant", "model": "local",
                "content": [{"type": "text", "text": "running"}, {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "echo hi"}}],
                "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 11, "output_tokens": 7}})
        );
        let mut notes = Notes::default();
        let back = messages_answer_to_chat(&msg, &mut notes).unwrap();
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            back["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"echo hi\"}"
        );
        assert_eq!(
            back["usage"],
            json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
        );
        let resp = chat_answer_to_responses(&chat).unwrap();
        assert_eq!(resp["status"], "completed");
        assert_eq!(resp["output"][0]["content"][0]["text"], "running");
        assert_eq!(resp["output"][1]["call_id"], "call_1");
        assert_eq!(resp["usage"]["total_tokens"], 18);
    }

    #[test]
    fn chat_streams_become_messages_events_as_they_arrive() {
        let mut s = ChatToMessagesStream::default();
        let chunks = [
            r#"{"id":"c","model":"local","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"id":"c","model":"local","choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
            r#"{"id":"c","model":"local","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"Bash","arguments":""}}]}}]}"#,
            r#"{"id":"c","model":"local","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"command\":"}}]}}]}"#,
            r#"{"id":"c","model":"local","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"echo hi\"}"}}]}}]}"#,
            r#"{"id":"c","model":"local","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","model":"local","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#,
            "[DONE]",
        ];
        let mut names = Vec::new();
        let mut partial = String::new();
        for c in chunks {
            for e in s.push(c).unwrap() {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                if let Some(p) = v.pointer("/delta/partial_json").and_then(Value::as_str) {
                    partial.push_str(p);
                }
                if e.name.as_deref() == Some("message_delta") {
                    assert_eq!(v["delta"]["stop_reason"], "tool_use");
                    assert_eq!(v["usage"]["output_tokens"], 9);
                }
                names.push(e.name.unwrap());
            }
        }
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(partial, "{\"command\":\"echo hi\"}");
    }

    #[test]
    fn messages_streams_become_chat_chunks_as_they_arrive() {
        let mut s = MessagesToChatStream::default();
        let events = [
            r#"{"type":"message_start","message":{"id":"m1","model":"claude-x","usage":{"input_tokens":3,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"k\":1}"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":6}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        let out: Vec<Event> = events.iter().flat_map(|e| s.push(e).unwrap()).collect();
        let data: Vec<&str> = out.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data.len(), 7, "{data:?}");
        let v = |i: usize| serde_json::from_str::<Value>(data[i]).unwrap();
        assert_eq!(v(0)["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(v(1)["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            v(2)["choices"][0]["delta"]["tool_calls"][0]["id"],
            "toolu_1"
        );
        assert_eq!(
            v(3)["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"k\":1}"
        );
        assert_eq!(v(4)["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v(5)["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9})
        );
        assert_eq!(data[6], "[DONE]");
        assert_eq!(out[6].to_sse(), "data: [DONE]\n\n");
    }

    #[test]
    fn a_stream_split_anywhere_translates_to_the_same_events() {
        let upstream = concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\n",
            ": keep-alive\n\n",
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let whole = {
            let mut t = StreamTranslator::new(Crossing::MessagesToChat);
            let mut out = t.feed(upstream.as_bytes());
            out.extend(t.end());
            out
        };
        let text = String::from_utf8(whole.clone()).unwrap();
        assert_eq!(
            text.lines()
                .filter_map(|l| l.strip_prefix("event: "))
                .collect::<Vec<_>>(),
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for size in [1, 2, 7, 33] {
            let mut t = StreamTranslator::new(Crossing::MessagesToChat);
            let mut out = Vec::new();
            for piece in upstream.as_bytes().chunks(size) {
                out.extend(t.feed(piece));
            }
            out.extend(t.end());
            assert_eq!(out, whole, "split every {size} bytes");
        }
    }

    #[test]
    fn a_broken_stream_event_becomes_one_error_event_in_the_callers_format() {
        let mut t = StreamTranslator::new(Crossing::ChatToMessages);
        let out = t.feed(
            b"event: message_start\ndata: {not json\n\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "data: {\"error\":{\"code\":\"untranslatable\",\"message\":\"the provider's stream could not be translated: cannot translate a stream event that is not JSON to the provider's API\",\"param\":null,\"type\":\"server_error\"}}\n\n"
        );
        assert!(t.failed.is_some());
        assert!(t.end().is_empty());
    }

    /// Arbitrary JSON shaped like the APIs' (their keys, nested anyhow) never makes a
    /// translation panic: it translates or says what it cannot.
    #[test]
    fn no_input_makes_a_translation_panic() {
        const KEYS: &[&str] = &[
            "model",
            "messages",
            "role",
            "content",
            "type",
            "text",
            "tools",
            "tool_choice",
            "tool_calls",
            "function",
            "arguments",
            "name",
            "input",
            "id",
            "system",
            "stream",
            "choices",
            "delta",
            "index",
            "usage",
            "source",
            "image_url",
            "url",
            "call_id",
            "output",
            "instructions",
            "max_tokens",
            "stop",
            "finish_reason",
            "message",
            "content_block",
            "partial_json",
            "stop_reason",
            "tool_use_id",
            "metadata",
        ];
        const WORDS: &[&str] = &[
            "user",
            "assistant",
            "tool",
            "system",
            "text",
            "tool_use",
            "tool_result",
            "image",
            "thinking",
            "function",
            "message",
            "function_call",
            "function_call_output",
            "message_start",
            "content_block_start",
            "content_block_delta",
            "input_json_delta",
            "text_delta",
            "message_delta",
            "base64",
            "auto",
            "any",
            "[DONE]",
            "{",
            "",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        fn arbitrary(next: &mut dyn FnMut(usize) -> usize, depth: u32) -> Value {
            match if depth == 0 { next(4) } else { next(7) } {
                0 => json!(WORDS[next(WORDS.len())]),
                1 => json!(next(5)),
                2 => Value::Null,
                3 => json!(next(2) == 0),
                4 | 5 => {
                    let mut m = Map::new();
                    for _ in 0..next(5) {
                        m.insert(KEYS[next(KEYS.len())].into(), arbitrary(next, depth - 1));
                    }
                    Value::Object(m)
                }
                _ => Value::Array((0..next(4)).map(|_| arbitrary(next, depth - 1)).collect()),
            }
        }
        for _ in 0..20_000 {
            let v = arbitrary(&mut next, 5);
            let mut notes = Notes::default();
            for c in [
                Crossing::MessagesToChat,
                Crossing::ChatToMessages,
                Crossing::ResponsesToMessages,
            ] {
                let _ = c.request(&v, &mut notes);
                let _ = c.answer(&v, &mut notes);
                let mut t = StreamTranslator::new(c);
                let data = format!("data: {v}\n\n");
                let _ = t.feed(data.as_bytes());
                let _ = t.feed(b"data: [DONE]\n\n");
                let _ = t.end();
            }
            let _ = estimate_input_tokens(&v);
        }
    }

    #[test]
    fn images_a_tool_returned_follow_its_result_and_reasoning_is_noted() {
        let from = json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                {"type": "text", "text": "shot.png"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}]}]}]});
        let mut notes = Notes::default();
        assert_eq!(
            messages_to_chat(&from, &mut notes).unwrap()["messages"],
            json!([
                {"role": "tool", "tool_call_id": "toolu_2", "content": "shot.png"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}]}])
        );
        let doc = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
            "content": [{"type": "document", "source": {}}]}]}]});
        assert_eq!(
            messages_to_chat(&doc, &mut notes).unwrap_err().to_string(),
            "cannot translate tool result content of type `document` to the provider's API"
        );
        let answer = json!({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"}}]});
        let mut notes = Notes::default();
        let msg = chat_answer_to_messages(&answer, &mut notes).unwrap();
        assert_eq!(msg["content"], json!([{"type": "text", "text": "4"}]));
        assert_eq!(notes.dropped_thinking, 1);
        let mut t = StreamTranslator::new(Crossing::MessagesToChat);
        for d in [
            r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"reasoning_content":"hm"}}]}"#,
            r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"reasoning_content":"m"}}]}"#,
            r#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"4"}}]}"#,
        ] {
            t.feed(format!("data: {d}\n\n").as_bytes());
        }
        assert_eq!(t.notes.dropped_thinking, 1);
    }
}
