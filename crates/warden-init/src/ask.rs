//! `/.warden/init ask-orders ...`: the agent's side of the standing orders endpoint.
//!
//! - `ask-orders claude-code`: Claude Code's `PreToolUse` hook (warden renders it into
//!   Claude Code's managed settings). Reads the hook's JSON on stdin (`tool_name`,
//!   `tool_input`, `cwd`), asks the endpoint, and prints the hook's answer: `allow` for
//!   an order the agent acts on alone or a call a human approved, `deny` with the
//!   order's bounds otherwise (a call held for a human says so, with its approval ID and
//!   what to do). It fails closed: an endpoint that cannot be asked is a `deny`.
//! - `ask-orders --order NAME ACTION...`: for scripts; exits 0 when the action may go
//!   ahead, 1 otherwise, and prints the reason.
//!
//! `WARDEN_ORDERS_URL` names the endpoint (warden sets it); `WARDEN_ORDERS_WAIT`
//! (seconds, default 0) how long to wait for a human before answering.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const DEFAULT_URL: &str = "http://127.0.0.1:3130";

/// Runs the `ask-orders` mode (`args` after `ask-orders`). Returns the exit status.
pub fn main(
    args: &[OsString],
    env: &[(OsString, OsString)],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let var = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.to_str())
            .map(str::to_string)
    };
    let url = var("WARDEN_ORDERS_URL").unwrap_or_else(|| DEFAULT_URL.to_string());
    let wait = var("WARDEN_ORDERS_WAIT")
        .and_then(|w| w.parse::<f64>().ok())
        .filter(|w| w.is_finite() && *w >= 0.0)
        .unwrap_or(0.0);
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.first().map(String::as_str) {
        Some("claude-code") => {
            let mut input = String::new();
            let hook: serde_json::Value = match stdin
                .take(1 << 20)
                .read_to_string(&mut input)
                .map_err(|e| e.to_string())
                .and_then(|_| serde_json::from_str(&input).map_err(|e| e.to_string()))
            {
                Ok(v) => v,
                Err(e) => {
                    return claude_answer(
                        stdout,
                        false,
                        &format!("warden could not read the hook's input: {e}"),
                    );
                }
            };
            let q = serde_json::json!({
                "tool": hook.get("tool_name").and_then(|v| v.as_str()).unwrap_or(""),
                "input": hook.get("tool_input").cloned().unwrap_or(serde_json::Value::Null),
                "cwd": hook.get("cwd").and_then(|v| v.as_str()),
                "home": var("HOME"),
                "wait": wait,
            });
            match ask(&url, &q, wait) {
                Ok(a) => {
                    let allowed = a.get("allowed").and_then(|v| v.as_bool()) == Some(true);
                    claude_answer(stdout, allowed, &explain(&a))
                }
                Err(e) => claude_answer(
                    stdout,
                    false,
                    &format!(
                        "warden's standing orders could not be asked ({e}); nothing runs until they can"
                    ),
                ),
            }
        }
        Some("--order") if args.len() >= 3 => {
            let q = serde_json::json!({
                "order": args[1],
                "action": args[2..].join(" "),
                "wait": wait,
            });
            match ask(&url, &q, wait) {
                Ok(a) => {
                    let _ = writeln!(stderr, "{}", explain(&a));
                    if a.get("allowed").and_then(|v| v.as_bool()) == Some(true) {
                        0
                    } else {
                        1
                    }
                }
                Err(e) => {
                    let _ = writeln!(stderr, "warden-init: cannot ask the standing orders: {e}");
                    2
                }
            }
        }
        _ => {
            let _ = writeln!(
                stderr,
                "usage: /.warden/init ask-orders claude-code   (Claude Code's PreToolUse hook)\n       /.warden/init ask-orders --order NAME ACTION..."
            );
            2
        }
    }
}

/// The reason the agent reads.
fn explain(a: &serde_json::Value) -> String {
    let s = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let reason = s("reason").trim_end_matches('.');
    let id = s("approval");
    match s("status") {
        "auto" => format!("allowed by warden: {reason}."),
        "approved" => format!("approved by a human (approval {id}): {reason}."),
        "pending" => format!(
            "held by warden for a human: {reason}. Approval {id} is pending (`warden approve {id}` on the host). Do not work around it; wait, and try the same call again once a human has approved it."
        ),
        "denied" => format!("denied by a human (approval {id}): {reason}. Do not try it again."),
        "never" => format!("refused by warden, whoever asks: {reason}."),
        other => format!("refused by warden ({other}): {reason}."),
    }
}

/// Claude Code's hook answer: exit 0 with the decision as JSON.
fn claude_answer(stdout: &mut dyn Write, allowed: bool, reason: &str) -> i32 {
    let out = serde_json::json!({
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": if allowed { "allow" } else { "deny" },
            "permissionDecisionReason": reason,
        }
    });
    let _ = writeln!(stdout, "{out}");
    let _ = stdout.flush();
    0
}

/// `POST /v1/decide` over plain HTTP/1.1 (the endpoint is on loopback).
fn ask(url: &str, q: &serde_json::Value, wait: f64) -> Result<serde_json::Value, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let mut s = TcpStream::connect(authority).map_err(|e| format!("{authority}: {e}"))?;
    let timeout = Duration::from_secs_f64(wait + 10.0);
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let body = q.to_string();
    let req = format!(
        "POST /v1/decide HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut resp)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the endpoint's answer has no body")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| format!("the endpoint's answer is not JSON: {e}"))?;
    if status != "200" {
        let msg = v
            .pointer("/error/message")
            .and_then(|m| m.as_str())
            .unwrap_or("refused");
        return Err(format!("the endpoint answered {status}: {msg}"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot endpoint on loopback answering `answer` with `status`; returns its
    /// URL and the request it received.
    fn endpoint(status: u16, answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            loop {
                let n = c.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if body.len() >= len {
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        c.write_all(resp.as_bytes()).unwrap();
                        return body.to_string();
                    }
                }
            }
        });
        (url, t)
    }

    fn hook(url: &str, stdin: &str) -> (i32, serde_json::Value) {
        let env = vec![
            (OsString::from("WARDEN_ORDERS_URL"), OsString::from(url)),
            (OsString::from("HOME"), OsString::from("/home/a")),
        ];
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = main(
            &[OsString::from("claude-code")],
            &env,
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        (code, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn the_hook_asks_about_the_call_and_answers_claude_code() {
        let (url, t) = endpoint(
            200,
            r#"{"decision":"ask","allowed":false,"status":"pending","order":"git-push","reason":"standing order `git-push` (ask a human first): Push only feature branches.","approval":"0123456789ab","call":"Bash(git push)"}"#,
        );
        let (code, out) = hook(
            &url,
            r#"{"session_id":"s","tool_name":"Bash","tool_input":{"command":"git push"},"cwd":"/w","hook_event_name":"PreToolUse"}"#,
        );
        let sent: serde_json::Value = serde_json::from_str(&t.join().unwrap()).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"tool":"Bash","input":{"command":"git push"},"cwd":"/w","home":"/home/a","wait":0.0})
        );
        assert_eq!(code, 0);
        let h = &out["hookSpecificOutput"];
        assert_eq!(h["permissionDecision"], "deny");
        let reason = h["permissionDecisionReason"].as_str().unwrap();
        assert!(reason.starts_with("held by warden for a human: standing order `git-push` (ask a human first): Push only feature branches. Approval 0123456789ab is pending"), "{reason}");
    }

    #[test]
    fn allowed_calls_are_allowed_and_everything_else_fails_closed() {
        let (url, t) = endpoint(
            200,
            r#"{"decision":"auto","allowed":true,"status":"auto","reason":"r","call":"Bash(ls)"}"#,
        );
        let (_, out) = hook(
            &url,
            r#"{"tool_name":"Bash","tool_input":{"command":"ls"}}"#,
        );
        t.join().unwrap();
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "allow");

        let (url, t) = endpoint(
            400,
            r#"{"error":{"code":"invalid_question","message":"bad"}}"#,
        );
        let (_, out) = hook(&url, r#"{"tool_name":"Bash","tool_input":{}}"#);
        t.join().unwrap();
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "deny");
        assert!(
            out["hookSpecificOutput"]["permissionDecisionReason"]
                .as_str()
                .unwrap()
                .contains("answered 400: bad")
        );

        // Nobody listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let (_, out) = hook(&url, r#"{"tool_name":"Bash","tool_input":{}}"#);
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "deny");
        // Input that is not the hook's JSON.
        let (_, out) = hook(&url, "garbage");
        assert_eq!(out["hookSpecificOutput"]["permissionDecision"], "deny");
    }
}
