//! `warden audit`: what approvals, denials, orders and secrets recorded, filtered.

use super::egress::Env;
use super::run;

// The per-test database helper of the audit crate's own PostgreSQL tests.
#[path = "../../../warden-audit/tests/it/pg.rs"]
mod pg;
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

/// A tenant `acme` with one sandbox whose egress follows order `deploy`.
pub const FILE: &str = "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n\nsandbox \"acme-agent\" {\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    egress {\n        allow \"deploy.example\" order=\"deploy\"\n    }\n}\n\nsandbox \"globex-agent\" {\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    egress {\n        allow \"ship.example\" order=\"ship\"\n    }\n}\n\ntenant \"acme\" {\n    sandboxes \"acme-agent\"\n    users uid=300000 count=65536\n    role \"admin\" subject=\"alice@acme.example\"\n    role \"operator\" subject=\"olga@acme.example\"\n    role \"viewer\" subject=\"victor@acme.example\"\n}\n\ntenant \"globex\" {\n    sandboxes \"globex-agent\"\n    users uid=400000 count=65536\n    role \"admin\" subject=\"gina@globex.example\"\n}\n\nstanding-orders {\n    order \"deploy\" bounds=\"Staging first.\" autonomy=\"ask\"\n    order \"ship\" bounds=\"Tagged releases.\" autonomy=\"ask\"\n}\n";

/// Writes a pending approval for `sandbox` as its egress proxy would.
pub fn pending(state: &Path, sandbox: &str, id: &str, host: &str) {
    let dir = state.join("sandboxes").join(sandbox);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("approvals.json");
    let mut file: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({"version": 1, "approvals": []}));
    file["approvals"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "id": id, "sandbox": sandbox, "host": host, "port": 443, "method": null,
            "reason": "no rule allows it", "order": null, "count": 1,
            "first_seen": 1_800_000_000u64, "last_seen": 1_800_000_000u64,
            "sample": format!("CONNECT {host}:443"), "status": "pending"
        }));
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
}

/// `warden audit --json ARGS` in the directory of `warden.kdl`, whose `audit` node says
/// where the store is.
fn audit(env: &Env, args: &[&str]) -> Vec<Value> {
    let (code, out, err) = run(env
        .cmd()
        .current_dir(env.dir.path())
        .args(["audit", "--json"])
        .args(args));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["detail"]["kind"].as_str().unwrap().to_string())
        .collect()
}

/// An approval, a denial, an order granted, a secret set and an egress decision, made
/// through the CLI in the directory of a file holding `text`.
fn record_suite(env: &Env, text: &str) {
    let state = env.dir.path().join("state");
    std::fs::write(env.file(), text).unwrap();
    pending(&state, "acme-agent", "aaaaaaaaaaa1", "pypi.org");
    pending(&state, "acme-agent", "aaaaaaaaaaa2", "evil.example");
    let cmd = || {
        let mut c = env.cmd();
        c.env("USER", "tester")
            .env_remove("SUDO_USER")
            .current_dir(env.dir.path());
        c
    };
    let (code, _, err) = run(cmd().args(["approve", "aaaaaaaaaaa1"]).arg(env.file()));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(cmd().args(["deny", "aaaaaaaaaaa2"]).arg(env.file()));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(cmd().args(["orders", "grant", "deploy"]).arg(env.file()));
    assert_eq!(code, 0, "{err}");
    let kek = env.dir.path().join("kek");
    std::fs::write(&kek, [4u8; 32]).unwrap();
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = cmd()
        .env("WARDEN_KEK_FILE", &kek)
        .args(["secret", "set", "acme", "TOKEN"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"v").unwrap();
    assert!(child.wait().unwrap().success());
    // An egress decision the proxy of `acme-agent` wrote.
    std::fs::write(
        state.join("sandboxes/acme-agent/audit.jsonl"),
        "{\"ts_ms\":1,\"sandbox\":\"acme-agent\",\"kind\":\"connect\",\"host\":\"pypi.org\",\"port\":443,\"decision\":\"deny\",\"status\":403}\n",
    )
    .unwrap();
}

#[test]
fn approvals_denials_orders_and_secrets_are_recorded_with_tenant_and_actor() {
    let env = Env::new();
    record_suite(&env, FILE);
    let all = audit(&env, &[]);
    assert_eq!(
        kinds(&all),
        [
            "egress",
            "approval-approved",
            "approval-denied",
            "order-granted",
            "secret-set"
        ]
    );
    for e in &all[1..] {
        assert_eq!(e["tenant"], "acme", "{e}");
        assert_eq!(e["actor"], "tester", "{e}");
        assert_eq!(e["version"], 1);
    }
    assert_eq!(all[1]["sandbox"], "acme-agent");
    assert_eq!(all[1]["detail"]["approval"], "aaaaaaaaaaa1");
    assert_eq!(all[1]["detail"]["destination"], "pypi.org:443");
    assert!(
        all[1]["detail"]["rule"]
            .as_str()
            .unwrap()
            .starts_with("allow \"pypi.org\" port=443")
    );
    assert_eq!(
        all[2]["detail"]["destination"],
        "pypi.org:443".replace("pypi.org", "evil.example")
    );
    assert_eq!(all[3]["detail"]["order"], "deploy");
    assert_eq!(all[4]["detail"]["name"], "TOKEN");
    // Egress decisions are imported once, without a tenant (nothing was applied).
    assert_eq!(all[0]["actor"], "proxy");
    assert_eq!(kinds(&audit(&env, &["--kind", "egress"])), ["egress"]);

    assert_eq!(
        kinds(&audit(&env, &["--kind", "approval-denied"])),
        ["approval-denied"]
    );
    assert_eq!(
        kinds(&audit(
            &env,
            &["--sandbox", "acme-agent", "--tenant", "acme"]
        )),
        ["approval-approved", "approval-denied"]
    );
    assert!(audit(&env, &["--tenant", "globex"]).is_empty());
    assert!(audit(&env, &["--since", "99999999999"]).is_empty());
    assert_eq!(audit(&env, &["--since", "1"]).len(), 4);
    // Text: one line per event; a bad kind is a user error.
    let (code, out, _) = run(env.cmd().args(["audit", "--kind", "order-granted"]));
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1);
    assert!(
        out.contains("  order-granted      acme        -               tester"),
        "{out}"
    );
    let (code, _, err) = run(env.cmd().args(["audit", "--kind", "nope"]));
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: unknown kind `nope`; kinds: approval-approved"),
        "{err}"
    );
}

/// The filters the comparison of the two stores runs.
const QUERIES: &[&[&str]] = &[
    &[],
    &["--kind", "egress"],
    &["--kind", "approval-denied"],
    &["--sandbox", "acme-agent", "--tenant", "acme"],
    &["--tenant", "globex"],
    &["--since", "1"],
    &["--since", "99999999999"],
];

/// The same suite through the CLI into SQLite and into PostgreSQL (`audit "postgres://..."`
/// in the file): `warden audit --json` gives the same rows, in the same order, for every
/// filter; only ids and times (made when each event happened) differ.
#[test]
fn sqlite_and_postgres_give_the_same_rows() {
    let db = pg::Db::new();
    let (lite, post) = (Env::new(), Env::new());
    record_suite(&lite, FILE);
    record_suite(&post, &format!("{FILE}\naudit \"{}\"\n", db.url));
    // The events went to PostgreSQL, not to a SQLite database beside the spool.
    assert!(!post.dir.path().join("state/audit/audit.db").exists());
    assert!(lite.dir.path().join("state/audit/audit.db").exists());
    // Four recorded; the egress decision is imported by the first `warden audit`.
    assert_eq!(db.count_events(), 4);
    let masked = |mut rows: Vec<Value>| {
        for r in &mut rows {
            assert_eq!(r["id"].as_str().unwrap().len(), 32, "{r}");
            r["id"] = Value::Null;
            if r["detail"]["kind"] != "egress" {
                assert!(r["at_ms"].as_u64().unwrap() > 1_700_000_000_000, "{r}");
                r["at_ms"] = Value::Null;
            }
        }
        rows
    };
    for q in QUERIES {
        let (l, p) = (masked(audit(&lite, q)), masked(audit(&post, q)));
        assert_eq!(l, p, "warden audit --json {q:?}");
    }
    assert_eq!(audit(&post, &[]).len(), 5);
    assert_eq!(db.count_events(), 5);
    // A file that cannot be loaded says so.
    let (code, _, err) = run(post
        .cmd()
        .current_dir(post.dir.path())
        .args(["audit", "nonexistent.kdl"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "`nonexistent.kdl` cannot be loaded, so where its audit store lives is unknown"
        ),
        "{err}"
    );
}
