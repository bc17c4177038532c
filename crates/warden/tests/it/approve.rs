//! `warden approve` for refusals held by a standing order and for narrow `http` rules,
//! and its refusal to break an inline test (root).

use super::egress::Env;
use super::run;
use std::path::Path;
use std::process::{Command, Stdio};

const IMAGE: &str = "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n";

/// `warden run FILE` in a private mount namespace whose `/etc/hosts` maps
/// `upstream.test` to 127.0.0.2 (nothing listens there: only refusals matter here).
fn run_once(env: &Env, file: &Path) -> (i32, String, String) {
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
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .envs(envs)
        .stdin(Stdio::null()))
}

fn pending(env: &Env, file: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = run(env.cmd().args(["approvals", "--json"]).arg(file));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

/// Lines of `after` that are not in `before`, and lines of `before` gone from `after`.
fn diff(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
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
