//! What a sandbox's `inference` and `agent` nodes put into it: the variables that point
//! clients at the inference router, and each agent's own configuration where it ignores
//! them or needs state prepared.
//!
//! - Every sandbox with `inference` gets `ANTHROPIC_BASE_URL` and `OPENAI_BASE_URL` (the
//!   router inside its network namespace), a placeholder in `ANTHROPIC_API_KEY` and
//!   `OPENAI_API_KEY` (clients refuse to start without a key; the router drops it and
//!   adds the provider's), and `NO_PROXY` covering loopback.
//! - `agent "claude-code"`: `$HOME/.claude.json` seeded by warden-init when absent
//!   (onboarding done, the placeholder key approved, the working directory trusted), so
//!   the interactive program starts straight into its prompt; Claude Code rewrites that
//!   file, so it is an ordinary file in `HOME` (a `read-write` tmpfs). Its non-essential
//!   traffic (telemetry, update checks) is off unless the file's `env` says otherwise.
//! - `agent "codex"`: `CODEX_HOME` is `$HOME/.codex`, whose `config.toml` is a read-only
//!   bind of a file warden writes into the bundle: a provider at the router over HTTP
//!   (Codex's built-in provider ignores `OPENAI_BASE_URL` for its WebSocket transport).
//! - Standing orders: the table (with each autonomy in words) is one file of the bundle,
//!   bound read-only where the agents read their instructions: `$HOME/.claude/CLAUDE.md`
//!   (Claude Code's user memory), `$HOME/.codex/AGENTS.md` (Codex's), and each
//!   `render "PATH"` of the file. A workspace's own `CLAUDE.md` or `AGENTS.md` is left
//!   alone.
//! - A sandbox with an agent gets the orders endpoint (`WARDEN_ORDERS_URL`), and Claude
//!   Code a `PreToolUse` hook in its managed settings (`/etc/claude-code/
//!   managed-settings.json`, read-only, which user and project settings cannot
//!   override) that asks the endpoint about every tool call.

use warden_lang::Model;
use warden_lang::model::{Agent, Sandbox};
use warden_wire::init::{INIT_PATH, SeedFile};
use warden_wire::orders::OrdersPolicy;
use warden_wire::sandbox::{BundleFile, ORDERS_ADDR, PLACEHOLDER_KEY, ROUTER_ADDR};

/// Where Codex's rendered configuration lives in the bundle (relative to it).
pub(crate) const CODEX_CONFIG: &str = "agents/codex/config.toml";
use warden_wire::sandbox::ORDERS_TABLE_FILE as ORDERS_TABLE;
/// Claude Code's managed settings (the tool-call hook), in the bundle.
pub(crate) const CLAUDE_SETTINGS: &str = "agents/claude-code/managed-settings.json";
/// Where Claude Code reads managed settings on Linux.
pub(crate) const CLAUDE_MANAGED_SETTINGS: &str = "/etc/claude-code/managed-settings.json";

/// Whether the sandbox is served the orders endpoint: it runs an agent.
pub(crate) fn serves_orders(s: &Sandbox) -> bool {
    !s.agents.is_empty()
}

/// The sandbox's `HOME` (see [`Sandbox::home`]).
pub(crate) fn home<'a>(model: &'a Model, s: &'a Sandbox) -> Option<&'a str> {
    let image_env = model.image(&s.image).map_or(&[][..], |i| &i.env[..]);
    s.home(image_env)
}

/// The variables of a sandbox with `inference`, set after the file's own (which may not
/// name them).
pub(crate) fn inference_env(s: &Sandbox) -> Vec<(&'static str, String)> {
    if s.inference.is_none() {
        return Vec::new();
    }
    let router = format!("http://{ROUTER_ADDR}");
    let mut env = vec![
        ("ANTHROPIC_BASE_URL", router.clone()),
        ("ANTHROPIC_API_KEY", PLACEHOLDER_KEY.to_string()),
        ("OPENAI_BASE_URL", format!("{router}/v1")),
        ("OPENAI_API_KEY", PLACEHOLDER_KEY.to_string()),
    ];
    if s.egress.is_none() {
        // With egress the proxy's variables carry the same `NO_PROXY`.
        env.push(("NO_PROXY", "localhost,127.0.0.1,::1".into()));
        env.push(("no_proxy", "localhost,127.0.0.1,::1".into()));
    }
    env
}

/// Defaults the agents need, set before the file's own `env` (which wins).
pub(crate) fn agent_defaults(s: &Sandbox, home: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if let (false, Some(home)) = (s.agents.is_empty(), home) {
        env.push(("HOME", home.to_string()));
    }
    if s.agents.contains(&Agent::ClaudeCode) {
        env.push(("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()));
    }
    env
}

/// Variables the agents' configuration depends on, set last.
pub(crate) fn agent_env(s: &Sandbox, home: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = match (s.agents.contains(&Agent::Codex), home) {
        (true, Some(home)) => vec![("CODEX_HOME", codex_home(home))],
        _ => Vec::new(),
    };
    if serves_orders(s) {
        env.push(("WARDEN_ORDERS_URL", format!("http://{ORDERS_ADDR}")));
    }
    env
}

fn codex_home(home: &str) -> String {
    format!("{}/.codex", home.trim_end_matches('/'))
}

/// Read-only binds of bundle files: `(destination, source relative to the bundle)`.
pub(crate) fn binds(model: &Model, s: &Sandbox, home: Option<&str>) -> Vec<(String, String)> {
    let mut binds = Vec::new();
    if let (true, Some(home)) = (s.agents.contains(&Agent::Codex), home) {
        binds.push((
            format!("{}/config.toml", codex_home(home)),
            CODEX_CONFIG.to_string(),
        ));
    }
    if !model.orders.is_empty() {
        let mut at: Vec<String> = Vec::new();
        if let Some(home) = home {
            let home = home.trim_end_matches('/');
            at.push(format!("{home}/.claude/CLAUDE.md"));
            at.push(format!("{}/AGENTS.md", codex_home(home)));
        }
        at.extend(model.orders_render.iter().cloned());
        at.dedup();
        binds.extend(at.into_iter().map(|a| (a, ORDERS_TABLE.to_string())));
    }
    if s.agents.contains(&Agent::ClaudeCode) && serves_orders(s) {
        binds.push((
            CLAUDE_MANAGED_SETTINGS.to_string(),
            CLAUDE_SETTINGS.to_string(),
        ));
    }
    binds
}

/// Files written into the bundle.
pub(crate) fn bundle_files(model: &Model, s: &Sandbox, orders: &OrdersPolicy) -> Vec<BundleFile> {
    let mut files = Vec::new();
    if s.agents.contains(&Agent::Codex) {
        files.push(BundleFile {
            path: CODEX_CONFIG.to_string(),
            content: codex_config(&s.workdir),
        });
    }
    if !model.orders.is_empty() {
        files.push(BundleFile {
            path: ORDERS_TABLE.to_string(),
            content: orders.to_markdown(),
        });
    }
    if s.agents.contains(&Agent::ClaudeCode) && serves_orders(s) {
        files.push(BundleFile {
            path: CLAUDE_SETTINGS.to_string(),
            content: claude_settings(),
        });
    }
    files
}

/// Claude Code's managed settings: every tool call passes the `PreToolUse` hook, which
/// asks the orders endpoint (and may wait up to `WARDEN_ORDERS_WAIT` seconds for a
/// human's decision).
fn claude_settings() -> String {
    let v = serde_json::json!({
        "hooks": {
            "PreToolUse": [{
                "matcher": "*",
                // Exec form: no shell between Claude Code and warden-init (an image
                // need not have `/bin/sh`).
                "hooks": [{"type": "command", "command": INIT_PATH, "args": ["ask-orders", "claude-code"], "timeout": 3600}],
            }],
        },
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
    text.push('\n');
    text
}

/// Files warden-init writes when they are missing.
pub(crate) fn seed_files(s: &Sandbox, home: Option<&str>) -> Vec<SeedFile> {
    match (s.agents.contains(&Agent::ClaudeCode), home) {
        (true, Some(home)) => vec![SeedFile {
            path: format!("{}/.claude.json", home.trim_end_matches('/')),
            content: claude_json(&s.workdir),
            mode: 0o600,
        }],
        _ => Vec::new(),
    }
}

/// Claude Code's state: onboarding done, the placeholder key approved (it records the
/// last 20 characters of approved keys), the working directory's trust dialog accepted.
fn claude_json(workdir: &str) -> String {
    let tail = &PLACEHOLDER_KEY[PLACEHOLDER_KEY.len().saturating_sub(20)..];
    let v = serde_json::json!({
        "hasCompletedOnboarding": true,
        "customApiKeyResponses": {"approved": [tail], "rejected": []},
        "projects": {workdir: {"hasTrustDialogAccepted": true}},
    });
    let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
    text.push('\n');
    text
}

fn toml_string(s: &str) -> String {
    // A TOML basic string is a JSON string for every character a path holds.
    serde_json::to_string(s).unwrap_or_default()
}

fn codex_config(workdir: &str) -> String {
    format!(
        "# Written by warden, read-only: Codex reaches its models through the sandbox's\n\
         # inference router, which adds the provider's key. Change the sandbox's\n\
         # `inference` block instead.\n\
         model_provider = \"warden\"\n\
         \n\
         [model_providers.warden]\n\
         name = \"warden inference router\"\n\
         base_url = \"http://{ROUTER_ADDR}/v1\"\n\
         env_key = \"OPENAI_API_KEY\"\n\
         wire_api = \"responses\"\n\
         \n\
         [projects.{}]\n\
         trust_level = \"trusted\"\n",
        toml_string(workdir)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_json_approves_the_placeholder() {
        let v: serde_json::Value = serde_json::from_str(&claude_json("/sandbox/w")).unwrap();
        let approved = v["customApiKeyResponses"]["approved"][0].as_str().unwrap();
        assert_eq!(approved.len(), 20);
        assert!(PLACEHOLDER_KEY.ends_with(approved));
        assert_eq!(v["projects"]["/sandbox/w"]["hasTrustDialogAccepted"], true);
        assert_eq!(v["hasCompletedOnboarding"], true);
    }

    #[test]
    fn codex_config_quotes_the_workdir() {
        let c = codex_config("/sandbox/a \"b\"");
        assert!(c.contains("[projects.\"/sandbox/a \\\"b\\\"\"]\n"), "{c}");
        assert!(
            c.contains("base_url = \"http://127.0.0.1:3129/v1\"\n"),
            "{c}"
        );
    }
}
