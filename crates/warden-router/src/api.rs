//! What the two APIs look like to the router: which paths it serves, how each API
//! spells an error, where a request carries text, where an answer reports usage.

use serde_json::{Value, json};
use warden_wire::inference::{Api, Detector};

/// The calls the router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// `GET /v1/models`, in either API's shape.
    Models,
}

impl Endpoint {
    pub fn parse(method: &http::Method, path: &str) -> Option<Endpoint> {
        let post = method == http::Method::POST;
        match path {
            "/v1/messages" if post => Some(Endpoint::Messages),
            "/v1/messages/count_tokens" if post => Some(Endpoint::CountTokens),
            "/v1/chat/completions" if post => Some(Endpoint::ChatCompletions),
            "/v1/responses" if post => Some(Endpoint::Responses),
            "/v1/models" if method == http::Method::GET => Some(Endpoint::Models),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count-tokens",
            Endpoint::ChatCompletions => "chat-completions",
            Endpoint::Responses => "responses",
            Endpoint::Models => "models",
        }
    }

    /// The API of the call (for `models`, decided by the caller's headers).
    pub fn api(&self, anthropic_version: bool) -> Api {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => Api::Anthropic,
            Endpoint::ChatCompletions | Endpoint::Responses => Api::Openai,
            Endpoint::Models if anthropic_version => Api::Anthropic,
            Endpoint::Models => Api::Openai,
        }
    }
}

/// An error body in the caller's API. `code` is warden's name for the refusal (OpenAI's
/// `code` field; Anthropic's format has none, the message says it).
pub fn error_body(api: Api, status: u16, code: &str, message: &str) -> Vec<u8> {
    let v = match api {
        Api::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Api::Openai => {
            let kind = match status {
                400 | 404 | 413 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_exceeded",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Top-level request fields that carry text a person or a tool wrote.
const TEXT_FIELDS: &[&str] = &["system", "messages", "input", "instructions", "prompt"];

/// Keys whose string values are identifiers or binary data, never text: not scanned
/// (base64 image data would only produce noise) and never rewritten.
const NOT_TEXT: &[&str] = &[
    "type",
    "role",
    "id",
    "tool_use_id",
    "tool_call_id",
    "call_id",
    "media_type",
    "data",
    "signature",
    "image_url",
    "file_id",
    "file_data",
    "cache_control",
    "status",
    "model",
];

/// Every text string of the request (`system`, messages and their parts, tool calls and
/// results, Responses `input` and `instructions`), in document order.
pub fn texts(body: &Value) -> Vec<&str> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| !NOT_TEXT.contains(&k.as_str()))
                .for_each(|(_, x)| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Value::Object(m) = body {
        for f in TEXT_FIELDS {
            if let Some(v) = m.get(*f) {
                walk(v, &mut out);
            }
        }
    }
    out
}

/// Replace the findings of `only` in every text string of the request.
pub fn redact(body: &mut Value, only: &[Detector]) {
    fn walk(v: &mut Value, only: &[Detector]) {
        match v {
            Value::String(s) => {
                let (out, fired) = warden_wire::detect::redact(s, only);
                if !fired.is_empty() {
                    *s = out;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, only)),
            Value::Object(m) => m
                .iter_mut()
                .filter(|(k, _)| !NOT_TEXT.contains(&k.as_str()))
                .for_each(|(_, x)| walk(x, only)),
            _ => {}
        }
    }
    if let Value::Object(m) = body {
        for f in TEXT_FIELDS {
            if let Some(v) = m.get_mut(*f) {
                walk(v, only);
            }
        }
    }
}

/// Token counts an answer reported, the largest seen (stream events repeat and grow
/// them: Anthropic's `message_start` has the input, `message_delta` the final output).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input.unwrap_or(0) + self.output.unwrap_or(0)
    }

    /// Take the usage of one JSON answer or stream event: `usage`, `message.usage`
    /// (Anthropic `message_start`) or `response.usage` (Responses `response.completed`).
    pub fn take(&mut self, v: &Value) {
        let found = [
            v.get("usage"),
            v.get("message").and_then(|m| m.get("usage")),
            v.get("response").and_then(|m| m.get("usage")),
        ];
        for u in found.into_iter().flatten() {
            let n = |k: &str| u.get(k).and_then(Value::as_u64);
            let input = match (n("input_tokens"), n("prompt_tokens")) {
                (None, None) => None,
                (a, b) => Some(
                    a.or(b).unwrap_or(0)
                        + n("cache_creation_input_tokens").unwrap_or(0)
                        + n("cache_read_input_tokens").unwrap_or(0),
                ),
            };
            let output = n("output_tokens").or(n("completion_tokens"));
            if let Some(i) = input {
                self.input = Some(self.input.unwrap_or(0).max(i));
            }
            if let Some(o) = output {
                self.output = Some(self.output.unwrap_or(0).max(o));
            }
        }
    }
}

/// The models the routes admit, in the caller's API's list shape. Only literal route
/// models are listed: a glob admits names no list can enumerate.
pub fn models_body(api: Api, routes: &[warden_wire::inference::Route]) -> Vec<u8> {
    let mut names: Vec<&str> = Vec::new();
    for r in routes {
        if !r.model.contains(['*', '?']) && !names.contains(&r.model.as_str()) {
            names.push(&r.model);
        }
    }
    let owner = |m: &str| {
        routes
            .iter()
            .find(|r| r.model == m)
            .map(|r| r.provider.clone())
            .unwrap_or_default()
    };
    let v = match api {
        Api::Anthropic => json!({
            "data": names.iter().map(|m| json!({
                "type": "model",
                "id": m,
                "display_name": m,
                "created_at": "1970-01-01T00:00:00Z",
            })).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": names.first(),
            "last_id": names.last(),
        }),
        Api::Openai => json!({
            "object": "list",
            "data": names.iter().map(|m| json!({
                "id": m,
                "object": "model",
                "created": 0,
                "owned_by": owner(m),
            })).collect::<Vec<_>>(),
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_cover_system_messages_tool_results_and_responses_input() {
        let body = json!({
            "model": "claude-x",
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "result"}]},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]}
            ],
            "metadata": {"user_id": "not scanned"},
            "instructions": "be brief",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "in"}]}]
        });
        assert_eq!(
            texts(&body),
            vec!["sys", "hello", "result", "in", "be brief"]
        );
    }

    #[test]
    fn usage_takes_the_largest_counts_of_either_api() {
        let mut u = Usage::default();
        u.take(&json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}));
        u.take(&json!({"type": "message_delta", "usage": {"output_tokens": 42}}));
        assert_eq!(
            u,
            Usage {
                input: Some(10),
                output: Some(42)
            }
        );
        let mut u = Usage::default();
        u.take(&json!({"usage": {"prompt_tokens": 7, "completion_tokens": 3}}));
        assert_eq!(u.total(), 10);
    }
}
