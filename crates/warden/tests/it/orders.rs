//! Standing orders where the agent reads and acts (root): Claude Code from npm, in a
//! sandbox of the solo layout, against a scripted mock model on the host's loopback
//! reached through the inference router. The orders table is in Claude Code's user
//! memory (and reaches the model); the workspace's own `CLAUDE.md` is untouched; a
//! `git push` under an `ask` order is held by the `PreToolUse` hook until a human
//! approves it with `warden approve`, then the same call goes through; under a `never`
//! order the model is told the order's bounds.

use super::approve::diff;
use super::egress::Env;
use super::inference::{Answer, Mock, Seen, claude_code, model_and_stream, real_key};
use super::run;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const PUSH: &str = "git push origin main";

/// A model that asks for one `Bash` call of `git push origin main`; when told the call
/// is held for a human it waits for the test's word (`release`) and asks for the same
/// call again; any other tool result ends the turn with `done: RESULT`.
struct ScriptedModel {
    mock: Mock,
    release: Arc<(Mutex<bool>, Condvar)>,
}

impl ScriptedModel {
    fn start() -> ScriptedModel {
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        let gate = release.clone();
        let mock = Mock::scripted(move |req| answer(req, &gate));
        ScriptedModel { mock, release }
    }

    fn port(&self) -> u16 {
        self.mock.port
    }

    fn release(&self) {
        let (m, cv) = &*self.release;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }

    fn seen(&self) -> Vec<Seen> {
        self.mock.seen()
    }

    /// The tool results the model was sent, in order, over all calls (the last call
    /// carries the whole conversation).
    fn tool_results(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.body).ok())
            .map(|b| tool_results(&b))
            .max_by_key(Vec::len)
            .unwrap_or_default()
    }
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|p| p["text"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn tool_results(body: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in body["messages"].as_array().into_iter().flatten() {
        for part in m["content"].as_array().into_iter().flatten() {
            if part["type"] == "tool_result" {
                out.push(text_of(&part["content"]));
            }
        }
    }
    out
}

fn answer(req: &Seen, gate: &(Mutex<bool>, Condvar)) -> Answer {
    let path = req.line.split(' ').nth(1).unwrap_or("");
    if path.contains("/count_tokens") {
        return Answer::Json(r#"{"input_tokens":12}"#.into());
    }
    if !path.starts_with("/v1/messages") {
        return Answer::Status(
            404,
            r#"{"type":"error","error":{"type":"not_found_error","message":"not here"}}"#.into(),
        );
    }
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap_or_default();
    let (model, stream) = model_and_stream(req);
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let results = tool_results(&body);
    let turn = if !has_tools {
        Turn::Text("ok".into())
    } else if results.is_empty() {
        Turn::Push("toolu_01")
    } else if results.len() == 1 && results[0].contains("held by warden for a human") {
        // Wait for the human, as the agent was told to.
        let (m, cv) = gate;
        let g = m.lock().unwrap();
        let _ = cv.wait_timeout_while(g, Duration::from_secs(240), |released| !*released);
        Turn::Push("toolu_02")
    } else {
        let last = results.last().cloned().unwrap_or_default();
        Turn::Text(format!("done: {}", last.lines().next().unwrap_or("")))
    };
    if stream {
        Answer::Sse(turn.events(&model))
    } else {
        Answer::Json(turn.message(&model))
    }
}

enum Turn {
    Text(String),
    /// A `Bash` call of [`PUSH`] with this id.
    Push(&'static str),
}

impl Turn {
    fn block(&self) -> serde_json::Value {
        match self {
            Turn::Text(t) => serde_json::json!({"type": "text", "text": t}),
            Turn::Push(id) => serde_json::json!({"type": "tool_use", "id": id, "name": "Bash",
                "input": {"command": PUSH, "description": "Push the branch"}}),
        }
    }

    fn stop(&self) -> &'static str {
        match self {
            Turn::Text(_) => "end_turn",
            Turn::Push(_) => "tool_use",
        }
    }

    fn message(&self, model: &str) -> String {
        serde_json::json!({
            "id": "msg_scripted", "type": "message", "role": "assistant", "model": model,
            "content": [self.block()], "stop_reason": self.stop(), "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 5},
        })
        .to_string()
    }

    fn events(&self, model: &str) -> Vec<(String, String)> {
        let e = |n: &str, v: serde_json::Value| (n.to_string(), v.to_string());
        let (start, delta) = match self {
            Turn::Text(t) => (
                serde_json::json!({"type": "text", "text": ""}),
                serde_json::json!({"type": "text_delta", "text": t}),
            ),
            Turn::Push(id) => (
                serde_json::json!({"type": "tool_use", "id": id, "name": "Bash", "input": {}}),
                serde_json::json!({"type": "input_json_delta", "partial_json":
                    serde_json::json!({"command": PUSH, "description": "Push the branch"}).to_string()}),
            ),
        };
        vec![
            e(
                "message_start",
                serde_json::json!({"type": "message_start", "message": {
                    "id": "msg_scripted", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            ),
            e(
                "content_block_start",
                serde_json::json!({"type": "content_block_start", "index": 0, "content_block": start}),
            ),
            e(
                "content_block_delta",
                serde_json::json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            ),
            e(
                "content_block_stop",
                serde_json::json!({"type": "content_block_stop", "index": 0}),
            ),
            e(
                "message_delta",
                serde_json::json!({"type": "message_delta",
                    "delta": {"stop_reason": self.stop(), "stop_sequence": null},
                    "usage": {"output_tokens": 5}}),
            ),
            e("message_stop", serde_json::json!({"type": "message_stop"})),
        ]
    }
}

const WORKSPACE_CLAUDE_MD: &str = "# Project notes\n\nRun `make test` before committing.\n";

/// A sandbox of the solo layout running Claude Code headless with `prompt`, with a
/// stand-in `git` that prints what it was asked; `orders` is added to the file.
fn setup(env: &Env, model: &ScriptedModel, orders: &str) -> std::path::PathBuf {
    let claude = claude_code();
    let dir = env.dir.path();
    std::fs::create_dir_all(dir.join("workspace")).unwrap();
    std::fs::write(dir.join("workspace/CLAUDE.md"), WORKSPACE_CLAUDE_MD).unwrap();
    std::fs::create_dir_all(dir.join("tools")).unwrap();
    std::fs::write(
        dir.join("tools/git"),
        "#!/bin/bash\necho \"stand-in git ran: git $*\"\n",
    )
    .unwrap();
    let script = format!(
        "busybox cat /sandbox/home/.claude/CLAUDE.md | busybox sed 's/^/memory: /'; \
         for f in /sandbox/home/.codex/AGENTS.md /etc/ORDERS.md; do busybox cmp /sandbox/home/.claude/CLAUDE.md $f && echo \"memory: same $f\"; done; \
         echo changed >> /sandbox/home/.claude/CLAUDE.md 2>/dev/null || echo 'memory: read-only'; \
         {} -p 'push the branch' > /tmp/answer 2> /tmp/errors; echo \"claude exit=$?\"; \
         busybox cat /tmp/answer; busybox cat /tmp/errors >&2",
        claude.display()
    );
    let file = env.file();
    std::fs::write(
        &file,
        format!(
            "layout \"solo\"\n\nimage \"claude\" {{\n    from-host {:?} \"/bin/busybox\" \"/bin/bash\"\n    copy \"./tools\" to=\"/opt/tools\" mode=0o755\n    env \"PATH\" \"/opt/tools:/usr/bin:/bin\"\n    env \"SHELL\" \"/bin/bash\"\n}}\n\nprovider \"anthropic\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_ANTHROPIC_KEY\"\n\n{orders}\nsandbox \"agent\" {{\n    image \"claude\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    agent \"claude-code\"\n    inference {{\n        route \"*\" to=\"anthropic\"\n    }}\n}}\n",
            claude.display().to_string(),
            model.port()
        ),
    )
    .unwrap();
    file
}

fn pending(env: &Env, file: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = run(env.cmd().args(["--json", "approvals"]).arg(file));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_default()
}

#[test]
fn claude_codes_git_push_waits_for_a_human_under_an_ask_order() {
    let env = Env::new();
    let model = ScriptedModel::start();
    let file = setup(
        &env,
        &model,
        "standing-orders {\n    render \"/etc/ORDERS.md\"\n}\n",
    );
    let key = real_key("orders");
    let child = env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_ANTHROPIC_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The hook held the push: listed with its order, the model told why.
    let deadline = Instant::now() + Duration::from_secs(180);
    let held = loop {
        let p = pending(&env, &file);
        if let Some(a) = p.into_iter().next() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was held: {:#?}",
            model.seen()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(held["sandbox"], "agent");
    assert_eq!(held["order"], "git-push");
    assert_eq!(held["tool"], format!("Bash({PUSH})"));
    let id = held["id"].as_str().unwrap().to_string();
    let results = model.tool_results();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(
        results[0].contains("held by warden for a human: standing order `git-push` (ask a human first): Push a feature branch whose tests pass; never force")
            && results[0].contains(&format!("Approval {id} is pending")),
        "{results:?}"
    );
    // The table the agent reads reached the model through Claude Code's user memory.
    assert!(
        model.seen().iter().any(|s| s.body.contains("# Standing orders")
            && s.body.contains("| git-push (`Bash(git push:*)`) | Push a feature branch whose tests pass; never force. | Ask First | ask a human first |")),
        "the orders table never reached the model"
    );

    let (code, _, err) = run(env.cmd().args(["approve", &id]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("the next call `Bash({PUSH})` goes through, once")),
        "{err}"
    );
    assert!(pending(&env, &file).is_empty());
    model.release();

    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let results = model.tool_results();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[1].trim(), format!("stand-in git ran: {PUSH}"));
    let answer: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("memory: "))
        .collect();
    assert_eq!(
        answer,
        ["claude exit=0", &format!("done: stand-in git ran: {PUSH}")],
        "{stderr}"
    );
    // The table in Claude Code's user memory; the workspace's own file untouched.
    let memory: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("memory: "))
        .collect();
    assert_eq!(memory.first(), Some(&"# Standing orders"), "{stdout}");
    for line in [
        "same /sandbox/home/.codex/AGENTS.md",
        "same /etc/ORDERS.md",
        "read-only",
    ] {
        assert!(memory.contains(&line), "{line}: {memory:?}");
    }
    assert!(memory.iter().any(|l| l.starts_with("| production-deploy | Staging must pass CI and smoke test first. | New features = Ask First | ask a human first |")), "{memory:?}");
    assert_eq!(
        std::fs::read(env.dir.path().join("workspace/CLAUDE.md")).unwrap(),
        WORKSPACE_CLAUDE_MD.as_bytes()
    );
    // The decision is in the order's history.
    let (code, out, err) = run(env.cmd().args(["--json", "orders"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let push = v["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "git-push")
        .unwrap()
        .to_string();
    assert!(push.contains("approved") && push.contains(PUSH), "{push}");
}

#[test]
fn a_never_order_shows_claude_code_its_bounds() {
    let env = Env::new();
    let model = ScriptedModel::start();
    let file = setup(
        &env,
        &model,
        "standing-orders {\n    order \"git-push\" bounds=\"Nothing leaves this sandbox by git.\" autonomy=\"never\" tool=\"Bash(git push:*)\"\n}\n",
    );
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_ANTHROPIC_KEY", real_key("orders")));
    assert_eq!(code, 0, "{out}\n{err}");
    let results = model.tool_results();
    assert_eq!(
        results,
        [
            "refused by warden, whoever asks: standing order `git-push` (never): Nothing leaves this sandbox by git."
        ],
        "{out}\n{err}"
    );
    assert!(pending(&env, &file).is_empty());
    assert!(
        out.contains("done: refused by warden, whoever asks: standing order `git-push` (never): Nothing leaves this sandbox by git."),
        "{out}"
    );
}

/// `warden orders grant production-deploy` / `revoke` change one line each and a
/// running sandbox's endpoint follows within a second, under `warden run` (which follows the file) and
/// applied (the supervisor reloads).
#[test]
fn grant_and_revoke_reach_a_running_sandboxs_endpoint() {
    grant_and_revoke(false);
}

#[test]
fn grant_and_revoke_reach_an_applied_sandboxs_endpoint() {
    grant_and_revoke(true);
}

fn grant_and_revoke(applied: bool) {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::create_dir_all(dir.join("workspace")).unwrap();
    // The sandbox asks its endpoint about a deploy every 100 ms and keeps the answer.
    let ask = r#"{"order":"production-deploy","action":"deploy release 1.2"}"#;
    let script = format!(
        "while true; do busybox wget -q -O - --header 'Content-Type: application/json' --post-data '{ask}' \"$WARDEN_ORDERS_URL/v1/decide\" | busybox grep -o '\"status\":\"[a-z]*\"' > /tmp/s.new && busybox mv /tmp/s.new /sandbox/workspace/status; busybox grep '^| production-deploy' /sandbox/home/.claude/CLAUDE.md > /tmp/t.new && busybox mv /tmp/t.new /sandbox/workspace/table; busybox sleep 0.1; done"
    );
    let file = env.file();
    std::fs::write(
        &file,
        format!(
            "layout \"solo\"\n\nimage \"bb\" {{\n    from-host \"/bin/busybox\"\n}}\n\nstanding-orders {{\n    order \"git-push\" bounds=\"Push feature branches.\" autonomy=\"ask\" tool=\"Bash(git push:*)\"\n}}\n\nprovider \"a\" api=\"anthropic\" endpoint=\"http://127.0.0.1:9\" key-env=\"WARDEN_TEST_KEY\"\n\nsandbox \"agent\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    agent \"claude-code\"\n    inference {{\n        route \"*\" to=\"a\"\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let mut child = if applied {
        let (code, out, err) = run(env
            .cmd()
            .args(["apply", "--yes"])
            .arg(&file)
            .env("WARDEN_TEST_KEY", "k"));
        assert_eq!(code, 0, "{out}\n{err}");
        None
    } else {
        Some(
            env.cmd()
                .arg("run")
                .arg(&file)
                .env("WARDEN_TEST_KEY", "k")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    // The table the agent reads follows too.
    let table = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = std::fs::read_to_string(dir.join("workspace/table")).unwrap_or_default();
            if t.trim_end().ends_with(&format!("| {want} |")) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "table stayed {t:?}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let status = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = std::fs::read_to_string(dir.join("workspace/status")).unwrap_or_default();
            if s.trim() == format!("\"status\":\"{want}\"") {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "status stayed {s:?}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    status("pending");
    table("ask a human first");
    let before = std::fs::read_to_string(&file).unwrap();
    let grant = |verb: &str| {
        let (code, _, err) = run(env
            .cmd()
            .args(["orders", verb, "production-deploy"])
            .arg(&file));
        assert_eq!(code, 0, "{err}");
        Instant::now()
    };
    // The order is the solo layout's: granting it in this file adds one line, which
    // overrides the layout's.
    let t = grant("grant");
    let granted = std::fs::read_to_string(&file).unwrap();
    let line = "    order \"production-deploy\" bounds=\"Staging must pass CI and smoke test first.\" override=\"New features = Ask First\" autonomy=\"auto\"";
    assert_eq!(diff(&before, &granted), (vec![line.to_string()], vec![]));
    assert!(status("auto").duration_since(t) < Duration::from_secs(1));
    assert!(table("on its own").duration_since(t) < Duration::from_secs(1));
    let t = grant("revoke");
    let revoked = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        diff(&granted, &revoked),
        (
            vec![line.replace("\"auto\"", "\"ask\"")],
            vec![line.to_string()]
        )
    );
    assert!(status("pending").duration_since(t) < Duration::from_secs(1));
    assert!(table("ask a human first").duration_since(t) < Duration::from_secs(1));
    match child.as_mut() {
        Some(child) => {
            // SIGTERM: `warden run` forwards it and removes the sandbox.
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        None => {
            let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
            assert_eq!(code, 0, "{err}");
        }
    }
}
