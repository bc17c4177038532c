//! Translation between the Anthropic Messages API and the OpenAI Chat Completions API,
//! both ways, and from the OpenAI Responses API (through Chat Completions' shapes):
//! requests, answers, and streams event by event.
//!
//! What one side has and the other lacks is refused with [`Untranslatable`] naming the
//! feature (server-side tools, several choices, ...), never dropped without a word;
//! thinking blocks, which Chat Completions cannot carry, are dropped and counted in
//! [`Notes`] for the audit.
//!
//! Tool call ids are kept as they are both ways, so a later turn's tool results match
//! the calls the agent saw.
//!
//! Not wired into the router's request flow yet: a route to a provider of the other API
//! is still refused there.

use serde_json::{Map, Value, json};

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
            Some("image") => {
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
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
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
            Some(other) => return Err(no(format!("a `{other}` content block"))),
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
                            Some(other) => return Err(no(format!("a `{other}` content part"))),
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
                                            return Err(no(format!("a `{other}` input part")));
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
                    other => return Err(no(format!("a `{other}` input item"))),
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

/// A Chat Completions answer as an Anthropic Messages answer.
pub fn chat_answer_to_messages(ans: &Value) -> R<Value> {
    let choice = ans
        .pointer("/choices/0")
        .ok_or_else(|| no("an answer without choices"))?;
    let msg = choice.get("message").cloned().unwrap_or(json!({}));
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
            Some(other) => return Err(no(format!("a `{other}` content block in the answer"))),
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
        let msg = chat_answer_to_messages(&chat).unwrap();
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
}
