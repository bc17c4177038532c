//! `warden plan` / `apply` / `destroy` / `ps` / `logs` end to end (root): convergence,
//! exact plans, pids kept across reloads, crash safety at every journaled step, restart
//! policy, concurrent applies.

use super::egress::Env;
use super::run;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Long-running sandboxes `<p>-<name>` for each of `names`: `a` (64 MiB), `b` (`mem`
/// MiB), `c` (egress to `host`), `d` (defaults).
fn sandboxes(p: &str, mem: u32, host: &str, names: &[&str]) -> String {
    let mut s = String::from(
        "image \"base\" {\n    from-host \"/bin/sh\" \"/bin/sleep\" \"/bin/echo\"\n}\n",
    );
    for name in names {
        let extra = match *name {
            "a" => "    limits memory=\"64MiB\" pids=16\n".to_string(),
            "b" => format!("    limits memory=\"{mem}MiB\" pids=16\n"),
            "c" => format!("    egress {{\n        allow \"{host}\" port=443\n    }}\n"),
            _ => String::new(),
        };
        s += &format!(
            "\nsandbox \"{p}-{name}\" {{\n    image \"base\"\n    command \"/bin/sleep\" \"1000\"\n    init grace=\"1s\"\n{extra}}}\n"
        );
    }
    s
}

fn three(p: &str, mem: u32, host: &str) -> String {
    sandboxes(p, mem, host, &["a", "b", "c"])
}

/// Stops this environment's supervisors when a test ends, passed or not, so a failed
/// assertion leaves no sandbox running (each supervisor cleans up its container).
struct Guard<'a>(&'a Env);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let sups = supervisors(self.0);
        for (pid, _) in &sups {
            // SAFETY: signalling a process.
            unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
        }
        let start = Instant::now();
        while !supervisors(self.0).is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn ps(env: &Env) -> Vec<Value> {
    let (code, out, err) = run(env.cmd().args(["--json", "ps"]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn ps_by_name(env: &Env) -> std::collections::BTreeMap<String, Value> {
    ps(env)
        .into_iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r))
        .collect()
}

fn plan_json(env: &Env, file: &Path) -> Value {
    let (code, out, err) = run(env.cmd().args(["--json", "plan"]).arg(file));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn actions(plan: &Value) -> Vec<(String, String, Vec<String>)> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["sandbox"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
                a["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

fn apply(env: &Env, file: &Path) -> (i32, String, String) {
    run(env.cmd().args(["apply", "--yes"]).arg(file))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_of(rows: &std::collections::BTreeMap<String, Value>, name: &str) -> i64 {
    rows[name]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} has no pid: {}", rows[name]))
}

fn dir_names(p: &Path) -> BTreeSet<String> {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every cgroup directory under `<hierarchy>/warden/` whose name starts with `prefix-`.
fn cgroups_with_prefix(prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for dir in [h.path().join("warden"), h.path()] {
            for n in dir_names(&dir) {
                if n.starts_with(&format!("{prefix}-")) {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// `(pid, launch path)` of every supervisor process of this environment.
fn supervisors(env: &Env) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let base = env.dir.path().join("run/supervisors");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if args.get(1).map(String::as_str) == Some("supervise")
            && args.get(2).is_some_and(|l| Path::new(l).starts_with(&base))
            && !zombie
        {
            out.push((pid, args[2].clone()));
        }
    }
    out.sort();
    out
}

/// Pids of every process in a cgroup of one of these containers.
fn processes_in(ids: &BTreeSet<String>, prefix: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        if let Some(id) = cg
            .lines()
            .filter_map(|l| l.rsplit_once("/warden/").map(|(_, id)| id.to_string()))
            .find(|id| id.starts_with(&format!("{prefix}-")))
        {
            assert!(
                ids.contains(&id),
                "process {pid} is in cgroup `{id}`, which belongs to no running sandbox"
            );
            out.push((pid, id));
        }
    }
    out
}

fn netns(pid: i64) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The machine matches the file: every sandbox running under a supervisor the state
/// records, a second plan empty, and nothing else of this environment's left anywhere:
/// supervisors, containers, bundle copies, cgroups, processes, network namespaces, mounts.
fn assert_converged(env: &Env, file: &Path, prefix: &str, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|n| format!("{prefix}-{n}")).collect();
    let rows = ps_by_name(env);
    assert_eq!(rows.keys().cloned().collect::<BTreeSet<_>>(), want);
    for r in rows.values() {
        assert_eq!(r["state"], "running", "{r}");
    }
    assert_eq!(actions(&plan_json(env, file)), vec![]);

    let sup_pids: BTreeSet<i64> = supervisors(env).into_iter().map(|(p, _)| p).collect();
    let recorded: BTreeSet<i64> = rows
        .values()
        .map(|r| r["supervisor_pid"].as_i64().unwrap())
        .collect();
    assert_eq!(sup_pids, recorded, "supervisor processes vs state");
    assert_eq!(dir_names(&env.dir.path().join("run/supervisors")), want);

    let ids: BTreeSet<String> = rows
        .values()
        .map(|r| r["container_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dir_names(&env.dir.path().join("run/containers")), ids);
    assert_eq!(dir_names(&env.dir.path().join("run/bundles")), ids);
    assert_eq!(cgroups_with_prefix(prefix), ids, "cgroups");

    let procs = processes_in(&ids, prefix);
    let inits: BTreeSet<String> = rows
        .values()
        .map(|r| netns(r["pid"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        inits.len(),
        names.len(),
        "one network namespace per sandbox"
    );
    let seen: BTreeSet<String> = procs.iter().map(|(p, _)| netns(*p)).collect();
    assert!(seen.is_subset(&inits), "{seen:?} vs {inits:?}");

    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = env.dir.path().display().to_string();
    assert!(
        !mounts.lines().any(|l| l.contains(&dir)),
        "host mounts left under {dir}"
    );
    let state: Value = serde_json::from_slice(
        &std::fs::read(env.dir.path().join("state/apply/state.json")).unwrap(),
    )
    .unwrap();
    let recorded: BTreeSet<String> = state["sandboxes"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(recorded, want);
    assert!(!env.dir.path().join("state/apply/journal.jsonl").exists());
}

/// Nothing of the prefix left after a destroy.
fn assert_all_gone(env: &Env, prefix: &str) {
    assert!(ps(env).is_empty());
    assert!(supervisors(env).is_empty());
    assert!(dir_names(&env.dir.path().join("run/containers")).is_empty());
    assert!(dir_names(&env.dir.path().join("run/supervisors")).is_empty());
    assert!(cgroups_with_prefix(prefix).is_empty());
}

#[test]
fn apply_replace_reload_destroy() {
    let env = Env::new();
    let _guard = Guard(&env);
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(&file, three("ap", 64, "example.org")).unwrap();

    let (code, out, err) = apply(&env, &file);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Plan: 3 to create, 0 to replace, 0 to reload, 0 to destroy."),
        "{out}"
    );
    assert_converged(&env, &file, "ap", &["a", "b", "c"]);
    let (code, out, _) = apply(&env, &file);
    assert_eq!(code, 0);
    assert!(out.starts_with("No changes."), "{out}");
    let before = ps_by_name(&env);

    // Limits of one sandbox: exactly one replace, naming the change.
    std::fs::write(&file, three("ap", 96, "example.org")).unwrap();
    let (code, out, _) = run(env.cmd().arg("plan").arg(&file));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "-/+ replace  ap-b  (limits)\n\nPlan: 0 to create, 1 to replace, 0 to reload, 0 to destroy.\n"
    );
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    let after = ps_by_name(&env);
    assert_eq!(pid_of(&after, "ap-a"), pid_of(&before, "ap-a"));
    assert_eq!(pid_of(&after, "ap-c"), pid_of(&before, "ap-c"));
    assert_ne!(pid_of(&after, "ap-b"), pid_of(&before, "ap-b"));
    assert_converged(&env, &file, "ap", &["a", "b", "c"]);

    // An egress rule only: reload, same pid.
    std::fs::write(&file, three("ap", 96, "example.net")).unwrap();
    assert_eq!(
        actions(&plan_json(&env, &file)),
        vec![("ap-c".into(), "reload".into(), vec!["egress".into()])]
    );
    let (code, out, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("~ reload   ap-c  (egress)"), "{out}");
    let reloaded = ps_by_name(&env);
    assert_eq!(pid_of(&reloaded, "ap-c"), pid_of(&after, "ap-c"));
    assert_converged(&env, &file, "ap", &["a", "b", "c"]);

    // Removing a sandbox: exactly one destroy.
    std::fs::write(&file, sandboxes("ap", 96, "example.net", &["b", "c"])).unwrap();
    assert_eq!(
        actions(&plan_json(&env, &file)),
        vec![(
            "ap-a".into(),
            "destroy".into(),
            vec!["no longer in the file".into()]
        )]
    );
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    assert_converged(&env, &file, "ap", &["b", "c"]);

    let (code, out, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Plan: 0 to create, 0 to replace, 0 to reload, 2 to destroy."),
        "{out}"
    );
    assert_all_gone(&env, "ap");
}

#[test]
fn a_killed_apply_is_completed_by_the_next_one_at_every_step() {
    let env = Env::new();
    let _guard = Guard(&env);
    let before = env.dir.path().join("before.kdl");
    let after = env.dir.path().join("after.kdl");
    let file = env.dir.path().join("warden.kdl");
    // The same file path for both versions: state records sandboxes by file.
    std::fs::write(&before, three("kt", 64, "example.org")).unwrap();
    // a destroyed, b replaced, c reloaded, d created.
    std::fs::write(&after, sandboxes("kt", 96, "example.net", &["b", "c", "d"])).unwrap();
    let use_file = |which: &Path| std::fs::copy(which, &file).unwrap();

    use_file(&before);
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    use_file(&after);
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    let records = std::fs::read_to_string(env.dir.path().join("state/apply/last-apply.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert!(records >= 12, "{records} journal records");
    assert_converged(&env, &file, "kt", &["b", "c", "d"]);

    for n in 1..=records {
        use_file(&before);
        let (code, _, err) = apply(&env, &file);
        assert_eq!(code, 0, "{err}");
        assert_converged(&env, &file, "kt", &["a", "b", "c"]);
        use_file(&after);
        let status = env
            .cmd()
            .args(["apply", "--yes"])
            .arg(&file)
            .env("WARDEN_APPLY_CRASH_AFTER", n.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9), "apply killed after record {n}");
        }
        let (code, out, err) = apply(&env, &file);
        assert_eq!(code, 0, "after a kill at record {n}: {out}{err}");
        assert!(
            err.contains("was interrupted after"),
            "the recovery names the interrupted apply (kill at {n}): {err}"
        );
        assert_converged(&env, &file, "kt", &["b", "c", "d"]);
    }
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_all_gone(&env, "kt");
}

#[test]
fn on_failure_restarts_exactly_max_times_with_backoff() {
    let env = Env::new();
    let _guard = Guard(&env);
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(
        &file,
        "image \"base\" {\n    from-host \"/bin/sh\" \"/bin/echo\"\n}\n\nsandbox \"rs-fail\" {\n    image \"base\"\n    command \"/bin/sh\" \"-c\" \"echo attempt; exit 1\"\n    restart \"on-failure\" max=3 backoff=\"100ms\"\n}\n",
    )
    .unwrap();
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    wait_until("the sandbox to give up", Duration::from_secs(30), || {
        ps(&env)[0]["state"] == "exited (1)"
    });
    std::thread::sleep(Duration::from_millis(1500));
    let row = &ps(&env)[0];
    assert_eq!(row["state"], "exited (1)");
    assert_eq!(row["restarts"], 3);
    assert_eq!(row["last_exit"], 1);
    let (code, out, _) = run(env.cmd().args(["logs", "rs-fail"]));
    assert_eq!(code, 0);
    assert_eq!(out, "attempt\n".repeat(4));
    let (_, out, _) = run(env.cmd().args(["logs", "rs-fail", "--tail", "1"]));
    assert_eq!(out, "attempt\n");
    let sup = std::fs::read_to_string(
        env.dir
            .path()
            .join("run/supervisors/rs-fail/supervisor.log"),
    )
    .unwrap();
    let delays: Vec<&str> = sup
        .lines()
        .filter_map(|l| l.split("restarting in ").nth(1))
        .collect();
    assert_eq!(delays, vec!["100 ms", "200 ms", "400 ms"], "{sup}");
    // `ps` in text says so too.
    let (_, out, _) = run(env.cmd().arg("ps"));
    let line = out.lines().find(|l| l.starts_with("rs-fail")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cols[..5], &["rs-fail", "-", "exited", "(1)", "-"], "{out}");
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_all_gone(&env, "rs");
}

#[test]
fn concurrent_applies_do_not_interleave() {
    let env = Env::new();
    let _guard = Guard(&env);
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(&file, three("cc", 64, "example.org")).unwrap();
    let spawn = || {
        env.cmd()
            .args(["apply", "--yes"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn(), spawn());
    let outs: Vec<(i32, String)> = [one, two]
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            )
        })
        .collect();
    assert!(outs.iter().all(|(c, _)| *c == 0), "{outs:?}");
    let applied = outs
        .iter()
        .filter(|(_, o)| o.contains("Apply complete: 3 created"))
        .count();
    let nothing = outs
        .iter()
        .filter(|(_, o)| o.starts_with("No changes."))
        .count();
    assert_eq!((applied, nothing), (1, 1), "{outs:?}");
    assert_converged(&env, &file, "cc", &["a", "b", "c"]);
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_all_gone(&env, "cc");
}

#[test]
fn apply_needs_confirmation_and_a_saved_plan_is_applied_exactly() {
    let env = Env::new();
    let _guard = Guard(&env);
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(&file, three("sp", 64, "example.org")).unwrap();
    // Not a terminal and no --yes: refused, nothing created.
    let (code, _, err) = run(env.cmd().arg("apply").arg(&file).stdin(Stdio::null()));
    assert_eq!(code, 1);
    assert!(err.contains("stdin is not a terminal; pass --yes"), "{err}");
    assert!(ps(&env).is_empty());

    let saved = env.dir.path().join("plan.json");
    let (code, _, err) = run(env.cmd().arg("plan").arg(&file).arg("--out").arg(&saved));
    assert_eq!(code, 0, "{err}");
    // The file changes after the plan was made: the saved plan is refused.
    std::fs::write(&file, three("sp", 80, "example.org")).unwrap();
    let (code, _, err) = run(env.cmd().arg("apply").arg(&saved));
    assert_eq!(code, 1);
    assert!(err.contains("changed since the plan was made"), "{err}");
    assert!(ps(&env).is_empty());

    let (code, _, _) = run(env.cmd().arg("plan").arg(&file).arg("--out").arg(&saved));
    assert_eq!(code, 0);
    let (code, out, err) = run(env.cmd().arg("apply").arg(&saved));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Apply complete: 3 created"), "{out}");
    // Applied once: the same plan is now stale.
    let (code, _, err) = run(env.cmd().arg("apply").arg(&saved));
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_all_gone(&env, "sp");
}

/// Runs `cmd` with a new pseudo-terminal of `size` (rows, columns) as its stdin, stdout
/// and stderr, like a user's; returns its exit code and everything it wrote there.
fn in_terminal(cmd: &mut std::process::Command, size: (u16, u16)) -> (i32, String) {
    use std::io::Read;
    let (mut master, slave) = super::openpty(size.0, size.1);
    let mut child = cmd
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .expect("spawn warden");
    // Drop the parent's copies (held by `cmd`) so the master sees the end of output.
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let status = child.wait().expect("wait for warden");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Reads until EIO: every slave is closed once warden has exited.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

#[test]
fn exec_joins_the_running_sandbox_with_its_isolation() {
    let env = Env::new();
    let _guard = Guard(&env);
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(
        &file,
        "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n\nsandbox \"ex-box\" {\n    image \"bb\"\n    command \"/bin/busybox\" \"sleep\" \"1000\"\n}\n",
    )
    .unwrap();
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    let init = pid_of(&ps_by_name(&env), "ex-box");
    let exec = |args: &[&str]| run(env.cmd().args(["exec", "ex-box", "--"]).args(args));
    let (code, out, err) = exec(&[
        "/bin/busybox",
        "sh",
        "-c",
        "for n in net mnt user pid; do busybox readlink /proc/self/ns/$n; done; busybox id -u; busybox touch /etc/x 2>&1; exit 5",
    ]);
    assert_eq!(code, 5, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    for (i, ns) in ["net", "mnt", "user", "pid"].iter().enumerate() {
        let host = std::fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap();
        assert_eq!(lines[i], host.display().to_string(), "{ns}: {out}");
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(
            lines[i],
            mine.display().to_string(),
            "{ns} is not the host's"
        );
    }
    assert_eq!(lines[4], "1000");
    assert!(lines[5].contains("Read-only file system"), "{out}");
    let (code, _, err) = exec(&["/bin/nonexistent"]);
    assert_eq!(code, 127, "{err}");
    // With a terminal: the command sees one on all three streams, of the user's size.
    let (code, out) = in_terminal(
        env.cmd().args([
            "exec",
            "-t",
            "ex-box",
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "test -t 0 && test -t 1 && test -t 2 && echo all-terminal; busybox stty size; exit 4",
        ]),
        (30, 90),
    );
    assert_eq!((code, out.as_str()), (4, "all-terminal\r\n30 90\r\n"));
    let (code, _, err) = run(env
        .cmd()
        .args(["exec", "nope", "--", "/bin/busybox", "true"]));
    assert_eq!(code, 1);
    assert!(err.contains("no sandbox named `nope` was applied"), "{err}");
    // The exec left nothing: the sandbox still converged, its container dirs unchanged.
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_all_gone(&env, "ex");
}

#[test]
fn two_states_cannot_share_one_run_directory() {
    let env = Env::new();
    let _guard = Guard(&env);
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(&file, three("rd", 64, "example.org")).unwrap();
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    let before = ps_by_name(&env);
    // Another state, the same run directory: refused before anything is touched.
    let other = tempfile::tempdir().unwrap();
    let other_file = other.path().join("warden.kdl");
    std::fs::write(&other_file, three("ro", 64, "example.org")).unwrap();
    let mut cmd = env.cmd();
    cmd.env("WARDEN_STATE_DIR", other.path().join("state"))
        .args(["apply", "--yes"])
        .arg(&other_file);
    let (code, _, err) = run(&mut cmd);
    assert_eq!(code, 1, "{err}");
    let state = std::fs::canonicalize(env.dir.path().join("state")).unwrap();
    assert!(
        err.contains(&format!(
            "holds the supervisors of the state in `{}`",
            state.display()
        )) && err.contains("needs a run directory of its own (set WARDEN_RUN_DIR)"),
        "{err}"
    );
    assert!(!other.path().join("state/apply/state.json").exists());
    // The first state's sandboxes kept running, with the same supervisors.
    let after = ps_by_name(&env);
    for name in ["rd-a", "rd-b", "rd-c"] {
        assert_eq!(after[name]["state"], "running", "{name}");
        assert_eq!(
            after[name]["supervisor_pid"], before[name]["supervisor_pid"],
            "{name}"
        );
    }
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_all_gone(&env, "rd");
}

#[test]
fn a_dead_supervisor_takes_its_sandbox_down_and_apply_restores_it() {
    let env = Env::new();
    let _guard = Guard(&env);
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(&file, three("sd", 64, "example.org")).unwrap();
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    let rows = ps_by_name(&env);
    let sup = rows["sd-b"]["supervisor_pid"].as_i64().unwrap();
    let init = pid_of(&rows, "sd-b");
    // SAFETY: signalling a process.
    unsafe { libc::kill(sup as i32, libc::SIGKILL) };
    wait_until(
        "the sandbox to die with its supervisor",
        Duration::from_secs(3),
        || {
            !Path::new(&format!("/proc/{init}")).exists()
                || std::fs::read_to_string(format!("/proc/{init}/stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
        },
    );
    let rows = ps_by_name(&env);
    assert_eq!(rows["sd-b"]["state"], "dead (supervisor gone)");
    assert_eq!(rows["sd-a"]["state"], "running");
    assert_eq!(
        actions(&plan_json(&env, &file)),
        vec![(
            "sd-b".into(),
            "create".into(),
            vec!["not running: its supervisor is gone".into()]
        )]
    );
    let (code, _, err) = apply(&env, &file);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("removed the leftover container `sd-b-"),
        "{err}"
    );
    assert_converged(&env, &file, "sd", &["a", "b", "c"]);
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_all_gone(&env, "sd");
}
