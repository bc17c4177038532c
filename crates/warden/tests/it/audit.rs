//! `warden audit`: what approvals, denials, orders and secrets recorded, filtered.

use super::egress::Env;
use super::run;
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

fn audit(env: &Env, args: &[&str]) -> Vec<Value> {
    let (code, out, err) = run(env.cmd().args(["audit", "--json"]).args(args));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["detail"]["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn approvals_denials_orders_and_secrets_are_recorded_with_tenant_and_actor() {
    let env = Env::new();
    let state = env.dir.path().join("state");
    std::fs::write(env.file(), FILE).unwrap();
    pending(&state, "acme-agent", "aaaaaaaaaaa1", "pypi.org");
    pending(&state, "acme-agent", "aaaaaaaaaaa2", "evil.example");
    let cmd = || {
        let mut c = env.cmd();
        c.env("USER", "tester").env_remove("SUDO_USER");
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
