//! Egress from inside a real sandbox (root; busybox-static): the proxy is the only way
//! out, a refused destination becomes a pending approval, and approving it edits the file
//! and reaches the running sandbox without a restart.

use super::{run, warden};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An HTTP upstream on 127.0.0.2 answering every request with `body`; also echoes raw
/// bytes on a CONNECT tunnel (it answers whatever arrives first).
fn upstream(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let n = c.read(&mut buf).unwrap_or(0);
                if buf[..n].starts_with(b"GET ") {
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                } else {
                    let _ = c.write_all(&buf[..n]);
                }
            });
        }
    });
    port
}

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        assert!(
            Path::new("/bin/busybox").exists(),
            "these tests need busybox-static"
        );
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn cmd(&self) -> Command {
        let mut c = warden();
        c.env("WARDEN_STATE_DIR", self.dir.path().join("state"))
            .env("WARDEN_RUN_DIR", self.dir.path().join("run"))
            .env(
                "WARDEN_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("warden-cache"),
            );
        c
    }
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("warden.kdl")
    }
}

const IMAGE: &str = "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n";

#[test]
fn no_egress_means_no_network() {
    let env = Env::new();
    std::fs::write(env.file(), format!("{IMAGE}\nsandbox \"off\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n}}\n")).unwrap();
    let script = "busybox ip -o link 2>&1 | busybox cut -d: -f2 | busybox tr -d ' ' | busybox sort | busybox tr '\\n' ,; echo; \
                  busybox nc -w 1 10.1.2.3 80 </dev/null; echo nc=$?; \
                  busybox nslookup example.com 8.8.8.8 >/dev/null 2>&1; echo dns=$?";
    let (code, out, err) =
        run(env
            .cmd()
            .arg("run")
            .arg(env.file())
            .args(["--", "/bin/busybox", "sh", "-c", script]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "lo,", "only loopback: {out}");
    assert_eq!(lines[1], "nc=1", "{out}{err}");
    assert!(err.contains("Network is unreachable"), "{err}");
    assert_eq!(lines[2], "dns=1", "{out}");
}

#[test]
fn allowed_works_refused_is_recorded_and_approval_reaches_the_running_sandbox() {
    let env = Env::new();
    let port = upstream("hello-upstream");
    let file = env.file();
    // The sandbox asks for upstream.test until it gets through (at most ~20 s).
    let script = format!(
        "busybox wget -q -O- http://127.0.0.2:{port}/direct; echo; \
         printf 'CONNECT 127.0.0.2:{port} HTTP/1.1\\r\\nHost: 127.0.0.2:{port}\\r\\n\\r\\nping-through-tunnel' | busybox nc -w 2 127.0.0.1 3128 | busybox tail -n 1; echo; \
         busybox nc -w 1 127.0.0.2 {port} </dev/null; echo direct=$?; \
         i=0; while [ $i -lt 80 ]; do \
           if busybox wget -q -O- http://upstream.test:{port}/after 2>/dev/null; then echo; echo approved-after=$i; exit 0; fi; \
           i=$((i+1)); busybox sleep 0.25; done; echo never-approved; exit 3"
    );
    let text = format!(
        "// egress test file: this comment must survive approval\n{IMAGE}\nsandbox \"net\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    egress {{\n        allow \"127.0.0.2\" port={port} reason=\"the test upstream\" // keep me\n    }}\n}}\n"
    );
    std::fs::write(&file, &text).unwrap();
    // warden resolves upstream.test through a hosts file of its own mount namespace.
    let hosts = env.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 upstream.test\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_warden");
    let child = env
        .cmd()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_with_hosts(bin, &hosts, &file);
    // Wait for the refusal to show up as a pending approval.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (_, out, _) = run(env.cmd().args(["approvals", "--json"]).arg(&file));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::json!([]));
        if let Some(a) = v
            .as_array()
            .and_then(|a| a.iter().find(|a| a["host"] == "upstream.test"))
        {
            assert_eq!(a["port"], port);
            assert_eq!(a["sandbox"], "net");
            assert!(a["count"].as_u64().unwrap() >= 1);
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no pending approval appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (code, _, err) = run(env.cmd().arg("approve").arg(&id).arg(&file));
    assert_eq!(code, 0, "{err}");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], "hello-upstream",
        "plain HTTP through the proxy: {stdout}"
    );
    assert!(
        lines[1].ends_with("ping-through-tunnel"),
        "CONNECT tunnel: {stdout}"
    );
    assert_eq!(lines[2], "direct=1", "direct connect must fail: {stdout}");
    assert_eq!(lines[3], "hello-upstream", "{stdout}");
    assert!(lines[4].starts_with("approved-after="), "{stdout}");
    // The sandbox's 127.0.0.2 is its own loopback: the host's upstream is not there.
    assert!(
        stderr.contains("can't connect to remote host (127.0.0.2): Connection refused"),
        "{stderr}"
    );
    assert!(
        stderr.contains("egress policy of `net` reloaded"),
        "{stderr}"
    );
    // The file now carries the rule; everything else is as it was.
    let after = std::fs::read_to_string(&file).unwrap();
    let added: Vec<&str> = after
        .lines()
        .filter(|l| !text.lines().any(|o| o == *l))
        .collect();
    assert_eq!(added.len(), 1, "{after}");
    assert!(
        added[0].trim_start().starts_with(&format!(
            "http \"upstream.test\" port={port} methods=\"GET\" paths=\"/after\" reason=\"approved "
        )),
        "{after}"
    );
    assert!(after.contains("// egress test file: this comment must survive approval"));
    assert!(after.contains("// keep me"));
    // Nothing is pending any more.
    let (_, out, _) = run(env.cmd().args(["approvals", "--json"]).arg(&file));
    assert_eq!(out.trim(), "[]");
}

trait SpawnWithHosts {
    fn spawn_with_hosts(&mut self, bin: &str, hosts: &Path, file: &Path) -> std::process::Child;
}

impl SpawnWithHosts for Command {
    /// Run `warden run FILE` in a private mount namespace whose /etc/hosts is `hosts`.
    fn spawn_with_hosts(&mut self, bin: &str, hosts: &Path, file: &Path) -> std::process::Child {
        let script = format!(
            "mount --bind {} /etc/hosts && exec {} run {}",
            hosts.display(),
            bin,
            file.display()
        );
        let envs: Vec<(std::ffi::OsString, std::ffi::OsString)> = self
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
            .collect();
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .envs(envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare")
    }
}

/// On failure: stop the test's supervisors (found by their launch path).
struct Keep(PathBuf);

impl Drop for Keep {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-TERM", "-f"])
            .arg(format!("supervise {}/", self.0.display()))
            .status();
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The same approval flow for an applied (detached) sandbox: `warden approve` edits the
/// file and reloads the running sandbox's proxy through its supervisor, without a restart.
#[test]
fn approval_reaches_an_applied_sandbox_without_a_restart() {
    let env = Env::new();
    let port = upstream("hello-applied");
    let file = env.file();
    let keep = Keep(env.dir.path().to_path_buf());
    let script = format!(
        "i=0; while [ $i -lt 120 ]; do \
           if busybox wget -q -O- http://upstream.test:{port}/after 2>/dev/null; then echo; echo approved-after=$i; exit 0; fi; \
           i=$((i+1)); busybox sleep 0.25; done; echo never-approved; exit 3"
    );
    std::fs::write(
        &file,
        format!(
            "{IMAGE}\nsandbox \"applied\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    egress {{\n        allow \"127.0.0.2\" port={port}\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let hosts = env.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 upstream.test\n").unwrap();
    // The supervisor inherits the apply's private mount namespace (and its /etc/hosts).
    let apply = format!(
        "mount --bind {} /etc/hosts && exec {} apply --yes {}",
        hosts.display(),
        env!("CARGO_BIN_EXE_warden"),
        file.display()
    );
    let mut unshare = Command::new("unshare");
    unshare.args(["-m", "--propagation", "private", "sh", "-c", &apply]);
    for (k, v) in env.cmd().get_envs() {
        if let Some(v) = v {
            unshare.env(k, v);
        }
    }
    let (code, out, err) = run(&mut unshare);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (_, out, _) = run(env.cmd().args(["approvals", "--json"]).arg(&file));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or(serde_json::json!([]));
        if let Some(a) = v
            .as_array()
            .and_then(|a| a.iter().find(|a| a["host"] == "upstream.test"))
        {
            break a["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no pending approval appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let ps = |env: &Env| -> serde_json::Value {
        let (_, out, _) = run(env.cmd().args(["--json", "ps"]));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
    };
    let pid_before = ps(&env)["pid"].clone();
    assert!(pid_before.is_i64(), "{pid_before}");
    let (code, _, err) = run(env.cmd().arg("approve").arg(&id).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("reloaded the egress policy of the applied sandbox `applied`"),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ps(&env)["state"] != "exited (0)" {
        if Instant::now() > deadline {
            let read =
                |p: &str| std::fs::read_to_string(env.dir.path().join(p)).unwrap_or_default();
            panic!(
                "the sandbox never got through: {}\nstdout: {}\nstderr: {}\nsupervisor: {}\naudit: {}",
                ps(&env),
                read("state/sandboxes/applied/logs/stdout.log"),
                read("state/sandboxes/applied/logs/stderr.log"),
                read("run/supervisors/applied/supervisor.log"),
                read("state/sandboxes/applied/audit.jsonl"),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let row = ps(&env);
    assert_eq!(row["restarts"], 0, "reloaded, not restarted: {row}");
    let (_, logs, _) = run(env.cmd().args(["logs", "applied"]));
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines[0], "hello-applied", "{logs}");
    assert!(lines[1].starts_with("approved-after="), "{logs}");
    // The file and the state agree: nothing left to apply.
    let (code, out, _) = run(env.cmd().arg("plan").arg(&file));
    assert_eq!(code, 0);
    assert!(out.starts_with("No changes."), "{out}");
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    std::mem::forget(keep);
}

/// `warden approvals` lists what the current file refuses: a pending record the file
/// allows now is not listed, and lists again once the rule is gone; an approved record is
/// listed only after the proxy refused it again (and marked it pending).
#[test]
fn approvals_list_what_the_current_file_refuses() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let dir = state.join("sandboxes/s");
    std::fs::create_dir_all(&dir).unwrap();
    let record = |id: &str, host: &str, status: &str| {
        serde_json::json!({
            "id": id, "sandbox": "s", "host": host, "port": 443, "method": null,
            "reason": "no egress rule allows this destination", "order": null,
            "count": 2, "first_seen": 100, "last_seen": 200,
            "sample": format!("CONNECT {host}:443"), "status": status, "status_at": 1
        })
    };
    let store = serde_json::json!({
        "version": 1,
        "approvals": [
            record("aaaaaaaaaaaa", "a.example", "pending"),
            record("bbbbbbbbbbbb", "b.example", "approved"),
        ]
    });
    std::fs::write(dir.join("approvals.json"), store.to_string()).unwrap();
    let file = d.path().join("warden.kdl");
    let listed = |rules: &str| {
        std::fs::write(
            &file,
            format!("{IMAGE}\nsandbox \"s\" {{\n    image \"bb\"\n    command \"/bin/sh\"\n    egress {{\n{rules}    }}\n}}\n"),
        )
        .unwrap();
        let (code, out, err) = run(warden()
            .env("WARDEN_STATE_DIR", &state)
            .args(["approvals", "--json"])
            .arg(&file));
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(""), vec!["aaaaaaaaaaaa"]);
    // The rule is in the file now (written by hand): nothing waits for a human.
    assert_eq!(
        listed("        allow \"a.example\"\n"),
        Vec::<String>::new()
    );
    assert_eq!(
        listed("        allow \"b.example\"\n"),
        vec!["aaaaaaaaaaaa"]
    );
}
