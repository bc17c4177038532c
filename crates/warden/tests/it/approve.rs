//! `warden approve` for refusals held by a standing order and for narrow `http` rules,
//! and its refusal to break an inline test (root).

use super::egress::Env;
use super::run;
use std::path::Path;
use std::process::{Command, Stdio};

const IMAGE: &str = "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n";

/// `warden run FILE` in a private mount namespace whose `/etc/hosts` maps
/// `upstream.test` to 127.0.0.2.
fn with_hosts(env: &Env, file: &Path) -> Command {
    let hosts = env.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 upstream.test\n").unwrap();
    let script = format!(
        "mount --bind {} /etc/hosts && exec {} run {}",
        hosts.display(),
        env!("CARGO_BIN_EXE_warden"),
        file.display()
    );
    let cmd = env.cmd();
    let envs: Vec<_> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
        .collect();
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .envs(envs)
        .stdin(Stdio::null());
    c
}

/// One run (nothing needs to answer at 127.0.0.2: only refusals matter).
fn run_once(env: &Env, file: &Path) -> (i32, String, String) {
    run(&mut with_hosts(env, file))
}

fn pending(env: &Env, file: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = run(env.cmd().args(["approvals", "--json"]).arg(file));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

/// Lines of `after` that are not in `before`, and lines of `before` gone from `after`.
pub(super) fn diff(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let added = after
        .lines()
        .filter(|l| !before.lines().any(|o| o == *l))
        .map(str::to_string)
        .collect();
    let removed = before
        .lines()
        .filter(|l| !after.lines().any(|o| o == *l))
        .map(str::to_string)
        .collect();
    (added, removed)
}

#[test]
fn approving_an_ask_order_and_a_narrow_http_refusal_changes_one_line_each() {
    let env = Env::new();
    let file = env.file();
    let script = "printf 'CONNECT upstream.test:8443 HTTP/1.1\\r\\nHost: upstream.test:8443\\r\\n\\r\\n' | busybox nc -w 2 127.0.0.1 3128 | busybox head -n 1; \
                  printf 'POST http://upstream.test:8080/upload HTTP/1.1\r\nHost: upstream.test:8080\r\nContent-Length: 1\r\n\r\nx' | busybox nc -w 2 127.0.0.1 3128 | busybox head -n 1";
    let text = format!(
        "{IMAGE}\nstanding-orders {{\n    order \"deps\" bounds=\"Only pinned packages.\" autonomy=\"ask\"\n}}\n\nsandbox \"net\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    egress {{\n        allow \"upstream.test\" port=8443 order=\"deps\" // held for a human\n        http \"upstream.test\" port=8080 methods=\"GET\" paths=\"/ok/**\"\n        test \"http://upstream.test:8080/upload\" method=\"POST\" expect=\"deny\"\n    }}\n}}\n"
    );
    std::fs::write(&file, &text).unwrap();
    let (code, out, err) = run_once(&env, &file);
    assert_eq!(code, 0, "{out}{err}");
    let list = pending(&env, &file);
    let find = |port: u64| {
        list.iter()
            .find(|a| a["port"] == port)
            .unwrap_or_else(|| panic!("no pending approval for port {port}: {list:?}"))
            .clone()
    };
    let (held, post) = (find(8443), find(8080));
    assert_eq!(held["order"], "deps");
    assert_eq!(post["method"], "POST");

    // Approving the POST would break the file's inline test: refused, nothing changed.
    let id = post["id"].as_str().unwrap();
    let (code, _, err) = run(env.cmd().arg("approve").arg(id).arg(&file));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("would make these inline tests")
            && err.contains("http://upstream.test:8080/upload -> allow, expected deny"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // Without that test, the approval adds exactly that method and path.
    let without: String = text
        .lines()
        .filter(|l| !l.contains("test \"http://upstream.test:8080/upload\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&file, &without).unwrap();
    let (code, _, err) = run(env.cmd().arg("approve").arg(id).arg(&file));
    assert_eq!(code, 0, "{err}");
    let after = std::fs::read_to_string(&file).unwrap();
    let (added, removed) = diff(&without, &after);
    assert!(removed.is_empty(), "{after}");
    assert_eq!(added.len(), 1, "{after}");
    assert!(
        added[0].trim_start().starts_with(
            "http \"upstream.test\" port=8080 methods=\"POST\" paths=\"/upload\" reason=\"approved "
        ),
        "{after}"
    );

    // The destination held by the `ask` order: its rule loses `order=` (one line).
    let before = after;
    let (code, _, err) = run(env
        .cmd()
        .arg("approve")
        .arg(held["id"].as_str().unwrap())
        .arg(&file));
    assert_eq!(code, 0, "{err}");
    let after = std::fs::read_to_string(&file).unwrap();
    let (added, removed) = diff(&before, &after);
    assert_eq!(
        removed,
        vec![
            "        allow \"upstream.test\" port=8443 order=\"deps\" // held for a human"
                .to_string()
        ],
        "{after}"
    );
    assert_eq!(added.len(), 1, "{after}");
    assert!(
        added[0].starts_with("        allow \"upstream.test\" port=8443 reason=\"approved ")
            && added[0].contains("under order `deps`")
            && added[0].ends_with("// held for a human"),
        "{after}"
    );
    let (code, out, _) = run(env.cmd().arg("test").arg(&file));
    assert_eq!(code, 0, "{out}");
    assert!(pending(&env, &file).is_empty());
}

/// A sandbox that asks once for each of `a`, `b`, `c` and `d.upstream.test` under the
/// `ask` order `deps` (nothing needs to answer: the refusals are what counts).
fn four_asks(env: &Env) -> std::path::PathBuf {
    let file = env.file();
    let connects: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|h| format!("printf 'CONNECT {h}.upstream.test:443 HTTP/1.1\\r\\nHost: {h}.upstream.test:443\\r\\n\\r\\n' | busybox nc -w 2 127.0.0.1 3128 | busybox head -n 1"))
        .collect();
    let script = connects.join("; ");
    std::fs::write(
        &file,
        format!(
            "{IMAGE}\nstanding-orders {{\n    order \"deps\" bounds=\"Only pinned packages.\" autonomy=\"ask\" earn-after=3\n}}\n\nsandbox \"net\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    egress {{\n        allow \"*.upstream.test\" port=443 order=\"deps\"\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run_once(env, &file);
    assert_eq!(code, 0, "{out}{err}");
    file
}

fn id_of(env: &Env, file: &Path, host: &str) -> String {
    pending(env, file)
        .iter()
        .find(|a| a["host"] == host)
        .unwrap_or_else(|| panic!("no pending approval for {host}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn orders_json(env: &Env, file: &Path) -> serde_json::Value {
    let (code, out, err) = run(env.cmd().args(["--json", "orders"]).arg(file));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["orders"][0].clone()
}

#[test]
fn earn_after_proposes_a_grant_after_n_approvals_in_a_row_and_not_after_a_denial() {
    let env = Env::new();
    let file = four_asks(&env);
    for h in ["a", "b"] {
        let id = id_of(&env, &file, &format!("{h}.upstream.test"));
        let (code, _, err) = run(env.cmd().arg("approve").arg(&id).arg(&file));
        assert_eq!(code, 0, "{err}");
    }
    let o = orders_json(&env, &file);
    assert_eq!(
        (
            o["approved_in_a_row"].as_u64(),
            o["propose_grant"].as_bool()
        ),
        (Some(2), Some(false))
    );
    let id = id_of(&env, &file, "c.upstream.test");
    let (code, _, err) = run(env.cmd().arg("approve").arg(&id).arg(&file));
    assert_eq!(code, 0, "{err}");
    let o = orders_json(&env, &file);
    assert_eq!(
        (
            o["approved_in_a_row"].as_u64(),
            o["propose_grant"].as_bool()
        ),
        (Some(3), Some(true))
    );
    let history = o["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert!(
        history
            .iter()
            .all(|d| d["decision"] == "approved" && d["sandbox"] == "net")
    );
    assert_eq!(history[2]["what"], "CONNECT c.upstream.test:443");
    let (code, out, _) = run(env.cmd().arg("orders").arg(&file));
    assert_eq!(code, 0);
    assert!(out.contains("proposed: `deps` had 3 asks in a row approved and none denied; `warden orders grant deps`"), "{out}");
    assert!(
        out.contains("| deps | Only pinned packages. |  | a human first |"),
        "{out}"
    );

    // Two approvals and a denial: nothing proposed.
    let env = Env::new();
    let file = four_asks(&env);
    for (h, verb) in [("a", "approve"), ("b", "approve"), ("c", "deny")] {
        let id = id_of(&env, &file, &format!("{h}.upstream.test"));
        let (code, _, err) = run(env.cmd().arg(verb).arg(&id).arg(&file));
        assert_eq!(code, 0, "{err}");
    }
    let o = orders_json(&env, &file);
    assert_eq!(
        (
            o["approved_in_a_row"].as_u64(),
            o["propose_grant"].as_bool()
        ),
        (Some(0), Some(false))
    );

    // `approve --always` approves and grants: the order's line says auto.
    let id = id_of(&env, &file, "d.upstream.test");
    let (code, _, err) = run(env.cmd().args(["approve", "--always"]).arg(&id).arg(&file));
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(
            "    order \"deps\" bounds=\"Only pinned packages.\" autonomy=\"auto\" earn-after=3\n"
        ),
        "{text}"
    );
    let o = orders_json(&env, &file);
    let decisions: Vec<&str> = o["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision"].as_str().unwrap())
        .collect();
    assert_eq!(
        decisions,
        ["approved", "approved", "denied", "approved", "granted"]
    );
}

#[test]
fn grant_and_revoke_are_one_line_each_and_a_running_sandbox_follows_within_a_second() {
    let env = Env::new();
    let file = env.file();
    let upstream = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = upstream.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in upstream.incoming().flatten() {
            let mut c = c;
            let _ = std::io::Write::write_all(&mut c, b"through\n");
        }
    });
    // Tries every 100 ms; prints when the answer changes between refused and through.
    let script = format!(
        "last=; i=0; while [ $i -lt 300 ]; do \
           r=$(printf 'CONNECT upstream.test:{port} HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\n\\r\\n' | busybox nc -w 1 127.0.0.1 3128 | busybox grep -c through); \
           if [ \"$r\" != \"$last\" ]; then echo \"state=$r\"; last=$r; fi; \
           [ -e /tmp/stop ] && exit 0; i=$((i+1)); busybox sleep 0.1; done"
    );
    let text = format!(
        "{IMAGE}\nstanding-orders {{\n    order \"deploy\" bounds=\"Staging first.\" autonomy=\"ask\" // a human first\n}}\n\nsandbox \"net\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    egress {{\n        allow \"127.0.0.2\" port={port}\n        allow \"upstream.test\" port={port} order=\"deploy\"\n    }}\n}}\n"
    );
    std::fs::write(&file, &text).unwrap();
    let mut child = with_hosts(&env, &file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send((l, std::time::Instant::now()));
        }
    });
    let next = |want: &str| {
        let (l, at) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect(want);
        assert_eq!(l, want);
        at
    };
    next("state=0");
    let before = std::fs::read_to_string(&file).unwrap();
    let t0 = std::time::Instant::now();
    let (code, _, err) = run(env.cmd().args(["orders", "grant", "deploy"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    let granted = std::fs::read_to_string(&file).unwrap();
    let (added, removed) = diff(&before, &granted);
    assert_eq!(removed.len(), 1, "{granted}");
    assert_eq!(
        added,
        vec!["    order \"deploy\" bounds=\"Staging first.\" autonomy=\"auto\" // a human first"]
    );
    let through = next("state=1");
    assert!(
        through - t0 < std::time::Duration::from_millis(1500),
        "{:?}",
        through - t0
    );
    let t1 = std::time::Instant::now();
    let (code, _, err) = run(env.cmd().args(["orders", "revoke", "deploy"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let refused = next("state=0");
    assert!(
        refused - t1 < std::time::Duration::from_millis(1500),
        "{:?}",
        refused - t1
    );
    // SAFETY: a signal to our own child; warden forwards it and cleans up.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
