//! Runs the real warden-init binary. Needs root (CI runs as root) for the pid-namespace
//! test, and these Debian tools: `sh` (dash), coreutils, `perl` (perl-base), `unshare` and
//! `script` (util-linux, bsdutils). All are in a minimal Debian 12 install.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use warden_wire::WIRE_VERSION;
use warden_wire::init::{InitConfig, Landlock, LandlockMode};
use warden_wire::seccomp::{SeccompRule, default_rules};

const INIT: &str = env!("CARGO_BIN_EXE_warden-init");
/// No test may hang the suite.
const WATCHDOG: Duration = Duration::from_secs(30);

fn landlock_off() -> Landlock {
    Landlock {
        mode: LandlockMode::Off,
        read_exec: vec![],
        read_write: vec![],
    }
}

fn config(landlock: Landlock, seccomp: Vec<SeccompRule>, grace_period_ms: u64) -> String {
    serde_json::to_string(&InitConfig {
        version: WIRE_VERSION,
        landlock,
        seccomp,
        grace_period_ms,
        files: Vec::new(),
    })
    .unwrap()
}

fn plain() -> String {
    config(landlock_off(), vec![], 10_000)
}

fn init(config: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(INIT);
    cmd.arg("--").args(args).env("WARDEN_INIT_CONFIG", config);
    cmd
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn collect(mut child: Child) -> Out {
    let reader = |r: Option<Box<dyn Read + Send>>| -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                r.read_to_string(&mut s).unwrap();
            }
            s
        })
    };
    let out = reader(child.stdout.take().map(|s| Box::new(s) as _));
    let err = reader(child.stderr.take().map(|s| Box::new(s) as _));
    let status = wait(&mut child);
    Out {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn wait(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > WATCHDOG {
            child.kill().unwrap();
            panic!("warden-init did not exit within {WATCHDOG:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(mut cmd: Command) -> Out {
    collect(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Starts the command and returns once it printed its first line (`ready`).
fn start_ready(mut cmd: Command) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, stdout)
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill with integer arguments; `pid` is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn rest(mut stdout: BufReader<std::process::ChildStdout>) -> String {
    let mut s = String::new();
    stdout.read_to_string(&mut s).unwrap();
    s
}

// ---- exit status ---------------------------------------------------------------------

#[test]
fn exit_code_is_passed_through() {
    let out = run(init(&plain(), &["/bin/sh", "-c", "exit 7"]));
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(7), "", "")
    );
    // Found through PATH.
    let out = run(init(&plain(), &["true"]));
    assert_eq!(out.code, Some(0));
}

#[test]
fn death_by_signal_is_128_plus_signal() {
    let out = run(init(&plain(), &["/bin/sh", "-c", "kill -KILL $$"]));
    assert_eq!(out.code, Some(137));
    let out = run(init(&plain(), &["/bin/sh", "-c", "kill -TERM $$"]));
    assert_eq!(out.code, Some(143));
}

// ---- exec failures and bad input ------------------------------------------------------

#[test]
fn command_not_found_is_127() {
    let out = run(init(&plain(), &["/nonexistent/cmd", "arg"]));
    assert_eq!(out.code, Some(127));
    assert_eq!(
        out.stderr,
        "warden-init: cannot execute `/nonexistent/cmd`: No such file or directory (os error 2)\n"
    );
    let out = run(init(&plain(), &["warden-no-such-command"]));
    assert_eq!(out.code, Some(127));
    assert_eq!(
        out.stderr,
        "warden-init: cannot execute `warden-no-such-command`: No such file or directory (os error 2)\n"
    );
}

#[test]
fn not_executable_is_126() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("script");
    std::fs::write(&file, "#!/bin/sh\necho no\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = file.to_str().unwrap();
    let out = run(init(&plain(), &[path]));
    assert_eq!(out.code, Some(126));
    assert_eq!(
        out.stderr,
        format!("warden-init: cannot execute `{path}`: Permission denied (os error 13)\n")
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn missing_or_bad_config_is_125() {
    let out = run({
        let mut c = Command::new(INIT);
        c.args(["--", "/bin/true"]).env_remove("WARDEN_INIT_CONFIG");
        c
    });
    assert_eq!(out.code, Some(125));
    assert_eq!(
        out.stderr,
        "warden-init: `WARDEN_INIT_CONFIG` is not set; refusing to run without the sandbox's Landlock and seccomp settings\n"
    );

    let out = run(init("{not json", &["/bin/true"]));
    assert_eq!(out.code, Some(125));
    assert_eq!(
        out.stderr,
        "warden-init: invalid `WARDEN_INIT_CONFIG`: key must be a string at line 1 column 2\n"
    );

    let v2 = plain().replace("\"version\":1", "\"version\":2");
    let out = run(init(&v2, &["/bin/true"]));
    assert_eq!(out.code, Some(125));
    assert_eq!(
        out.stderr,
        "warden-init: `WARDEN_INIT_CONFIG` has version 2, this warden-init reads version 1\n"
    );

    let typo = config(
        landlock_off(),
        vec![SeccompRule {
            syscall: "ptrac".into(),
            errno: 1,
            arg: None,
        }],
        10_000,
    );
    let out = run(init(&typo, &["/bin/true"]));
    assert_eq!(out.code, Some(125));
    assert_eq!(
        out.stderr,
        "warden-init: seccomp rule names `ptrac`, which is not a syscall on x86_64 or aarch64\n"
    );

    let out = run({
        let mut c = Command::new(INIT);
        c.arg("--").env("WARDEN_INIT_CONFIG", plain());
        c
    });
    assert_eq!(out.code, Some(125));
    assert_eq!(
        out.stderr,
        "warden-init: no command given; usage: warden-init -- COMMAND [ARG...]\n"
    );
}

#[test]
fn warden_init_variables_are_stripped() {
    let out = run({
        let mut c = init(&plain(), &["env"]);
        c.env("WARDEN_INIT_EXTRA", "x").env("KEEP_ME", "yes");
        c
    });
    assert_eq!(out.code, Some(0));
    assert!(!out.stdout.contains("WARDEN_INIT"), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l == "KEEP_ME=yes"),
        "{}",
        out.stdout
    );
}

// ---- signals -------------------------------------------------------------------------

#[test]
fn sigterm_is_forwarded() {
    let script = r#"trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.02; done"#;
    let (mut child, stdout) = start_ready(init(&plain(), &["/bin/sh", "-c", script]));
    let t0 = Instant::now();
    signal(&child, libc::SIGTERM);
    let status = wait(&mut child);
    assert_eq!(status.code(), Some(3));
    assert_eq!(rest(stdout), "got-term\n");
    // Forwarded at once, not after the 10 s grace period.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn other_signals_are_forwarded_without_a_grace_timer() {
    // SIGUSR1 reaches the command.
    let script = r#"trap 'echo got-usr1; exit 4' USR1; echo ready; while :; do sleep 0.02; done"#;
    let (mut child, stdout) = start_ready(init(&plain(), &["/bin/sh", "-c", script]));
    signal(&child, libc::SIGUSR1);
    assert_eq!(wait(&mut child).code(), Some(4));
    assert_eq!(rest(stdout), "got-usr1\n");

    // SIGHUP reaches it too, but does not start the kill timer (grace 50 ms here).
    let script = r#"trap 'echo got-hup' HUP; echo ready; sleep 0.6; exit 5"#;
    let (mut child, stdout) = start_ready(init(
        &config(landlock_off(), vec![], 50),
        &["/bin/sh", "-c", script],
    ));
    signal(&child, libc::SIGHUP);
    assert_eq!(wait(&mut child).code(), Some(5));
    assert_eq!(rest(stdout), "got-hup\n");
}

fn grace_kill(sig: libc::c_int) {
    // The command and its `sleep` ignore the signal; after 300 ms everything gets SIGKILL.
    let script = r#"trap '' TERM INT; echo ready; sleep 30; echo survived"#;
    let (mut child, stdout) = start_ready(init(
        &config(landlock_off(), vec![], 300),
        &["/bin/sh", "-c", script],
    ));
    let t0 = Instant::now();
    signal(&child, sig);
    let status = wait(&mut child);
    let elapsed = t0.elapsed();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    assert_eq!(rest(stdout), "");
    assert!(
        elapsed >= Duration::from_millis(300),
        "killed before the grace period: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "killed far after the grace period: {elapsed:?}"
    );
}

#[test]
fn sigterm_ignored_means_sigkill_after_grace() {
    grace_kill(libc::SIGTERM);
}

#[test]
fn sigint_ignored_means_sigkill_after_grace() {
    grace_kill(libc::SIGINT);
}

#[test]
fn grace_kill_reaches_the_whole_process_group() {
    // A background grandchild in the same group, also ignoring SIGTERM, must die too: its
    // pid is printed, and after warden-init exits it must be gone.
    let script = r#"trap '' TERM; sleep 30 & echo $!; echo ready; wait"#;
    let mut child = init(
        &config(landlock_off(), vec![], 100),
        &["/bin/sh", "-c", script],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let grandchild: libc::pid_t = line.trim().parse().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    signal(&child, libc::SIGTERM);
    assert_eq!(wait(&mut child).code(), Some(137));
    // Dead: gone, or a zombie waiting for whoever inherited it after warden-init exited.
    std::thread::sleep(Duration::from_millis(50));
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{grandchild}/status")) {
        assert!(
            status.contains("\nState:\tZ (zombie)\n"),
            "grandchild {grandchild} survived: {status}"
        );
    }
}

// ---- terminal ------------------------------------------------------------------------

/// `pgrp tpgid` of the command (fields 5 and 8 of /proc/self/stat).
const PGRP_TPGID: &str = r#"set -- $(cat /proc/$$/stat); echo "$$ $5 $8""#;

#[test]
fn command_gets_its_own_process_group() {
    let out = run(init(&plain(), &["/bin/sh", "-c", PGRP_TPGID]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let f: Vec<&str> = out.stdout.split_whitespace().collect();
    // pid == pgrp: the command leads its group; no terminal: tpgid -1.
    assert_eq!(f[1], f[0], "{}", out.stdout);
    assert_eq!(f[2], "-1", "{}", out.stdout);
}

#[test]
fn command_is_the_terminal_foreground_group() {
    // `script` gives warden-init a pseudo-terminal as stdin and controlling terminal.
    let inner = format!(
        "WARDEN_INIT_CONFIG='{}' {INIT} -- /bin/sh -c '{}'",
        plain(),
        PGRP_TPGID.replace('\'', r"'\''")
    );
    let out = run({
        let mut c = Command::new("script");
        c.args(["-qec", &inner, "/dev/null"]);
        c
    });
    assert_eq!(out.code, Some(0), "{out:?}");
    let f: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{out:?}");
    assert_eq!(f[1], f[0], "{}", out.stdout);
    assert_eq!(
        f[2], f[0],
        "the command's group is not the foreground group: {}",
        out.stdout
    );
}

// ---- seccomp -------------------------------------------------------------------------

#[test]
fn default_seccomp_list_blocks_unshare_user() {
    let cfg = config(landlock_off(), default_rules(), 10_000);
    let out = run(init(&cfg, &["unshare", "-U", "true"]));
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr,
        "unshare: unshare failed: Operation not permitted\n"
    );
    // Control: the same command without the list works (we are root).
    let out = run(init(&plain(), &["unshare", "-U", "true"]));
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""));
}

/// A perl script making raw syscalls and printing `name ok` or `name errno=N` per line.
fn syscall_probe() -> String {
    let clone_newuser = warden_wire::seccomp::CLONE_NEWUSER | libc::SIGCHLD as u64;
    let mut s = format!(
        r#"use POSIX ();
sub t {{ my $name = shift; my $nr = shift; $! = 0; my $r = syscall($nr, @_); my $e = $! + 0;
  if ($name =~ /^clone/ && $r == 0) {{ POSIX::_exit(0); }}
  if ($name =~ /^clone/ && $r > 0) {{ waitpid($r, 0); }}
  print "$name ", ($r == -1 ? "errno=$e" : "ok"), "\n"; }}
t("clone-newuser", {clone}, {clone_newuser}, 0, 0, 0, 0);
t("clone-plain", {clone}, {sigchld}, 0, 0, 0, 0);
t("clone3", {clone3}, 0, 0);
t("unshare", {unshare}, {newuser});
"#,
        clone = libc::SYS_clone,
        clone3 = libc::SYS_clone3,
        unshare = libc::SYS_unshare,
        newuser = warden_wire::seccomp::CLONE_NEWUSER,
        sigchld = libc::SIGCHLD,
    );
    if cfg!(target_arch = "x86_64") {
        // x32 ABI getpid: bit 30 set on the number.
        s.push_str(&format!("t(\"x32-getpid\", {});\n", 0x4000_0000 | 39));
    }
    // Last: when allowed, TRACEME makes warden-init our tracer.
    s.push_str(&format!(
        "t(\"ptrace\", {}, 0, 0, 0, 0);\n",
        libc::SYS_ptrace
    ));
    s
}

#[test]
fn default_seccomp_list_returns_the_listed_errnos() {
    let cfg = config(landlock_off(), default_rules(), 10_000);
    let out = run(init(&cfg, &["perl", "-e", &syscall_probe()]));
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut expected =
        String::from("clone-newuser errno=1\nclone-plain ok\nclone3 errno=38\nunshare errno=1\n");
    if cfg!(target_arch = "x86_64") {
        expected.push_str("x32-getpid errno=1\n");
    }
    expected.push_str("ptrace errno=1\n");
    assert_eq!(out.stdout, expected);
}

#[test]
fn without_seccomp_rules_the_probe_succeeds() {
    // Control for the test above: the errnos come from the filter, not from the kernel.
    let out = run(init(&plain(), &["perl", "-e", &syscall_probe()]));
    assert_eq!(out.code, Some(0), "{out:?}");
    let clone3 = out
        .stdout
        .lines()
        .find(|l| l.starts_with("clone3 "))
        .unwrap()
        .to_string();
    // clone3 with a NULL, zero-sized argument fails on its own, but with EINVAL, not ENOSYS.
    assert_eq!(clone3, format!("clone3 errno={}", libc::EINVAL));
    let mut expected = format!("clone-newuser ok\nclone-plain ok\n{clone3}\nunshare ok\n");
    if cfg!(target_arch = "x86_64") {
        // The x32 wall does not depend on the list (the kernel alone says ENOSYS or runs it).
        expected.push_str("x32-getpid errno=1\n");
    }
    expected.push_str("ptrace ok\n");
    assert_eq!(out.stdout, expected);
}

// ---- Landlock ------------------------------------------------------------------------

fn landlock(mode: LandlockMode, read_write: &[&str]) -> Landlock {
    Landlock {
        mode,
        read_exec: vec!["/".into(), "/does/not/exist".into()],
        read_write: read_write.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn landlock_confines_writes_to_read_write_paths() {
    let allowed = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("readable"), "content\n").unwrap();
    let (a, o) = (
        allowed.path().to_str().unwrap(),
        other.path().to_str().unwrap(),
    );

    for mode in [LandlockMode::Required, LandlockMode::BestEffort] {
        let cfg = config(landlock(mode, &[a]), default_rules(), 10_000);
        let denied = run(init(&cfg, &["/bin/sh", "-c", &format!("echo x > {o}/f")]));
        assert_eq!(denied.code, Some(2), "{mode:?}: {denied:?}");
        assert_eq!(
            denied.stderr,
            format!("/bin/sh: 1: cannot create {o}/f: Permission denied\n")
        );
        assert!(!other.path().join("f").exists());

        let allowed_write = run(init(
            &cfg,
            &[
                "/bin/sh",
                "-c",
                &format!("echo x > {a}/f && cat {a}/f {o}/readable"),
            ],
        ));
        assert_eq!(
            (
                allowed_write.code,
                allowed_write.stdout.as_str(),
                allowed_write.stderr.as_str()
            ),
            (Some(0), "x\ncontent\n", ""),
            "{mode:?}"
        );
        std::fs::remove_file(allowed.path().join("f")).unwrap();

        // Removing and renaming outside are denied too.
        let rm = run(init(&cfg, &["/bin/rm", &format!("{o}/readable")]));
        assert_eq!(rm.code, Some(1), "{mode:?}: {rm:?}");
        assert!(other.path().join("readable").exists());
    }

    // Control: with Landlock off the same write succeeds.
    let cfg = config(landlock(LandlockMode::Off, &[a]), default_rules(), 10_000);
    let out = run(init(&cfg, &["/bin/sh", "-c", &format!("echo x > {o}/f")]));
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""));
    assert!(other.path().join("f").exists());
}

#[test]
fn landlock_read_exec_path_that_is_a_file() {
    // A single file as a rule (ld.so.cache) is readable; an unlisted directory is not.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let cfg = config(
        Landlock {
            mode: LandlockMode::Required,
            read_exec: vec![
                "/usr".into(),
                "/lib".into(),
                "/lib64".into(),
                "/bin".into(),
                "/etc/ld.so.cache".into(),
            ],
            read_write: vec![],
        },
        vec![],
        10_000,
    );
    // (Not `> /dev/null`: /dev is not in the rules either.)
    let script = format!("n=$(cat /etc/ld.so.cache | wc -c); [ $n -gt 0 ] && echo ok; ls {d}");
    let out = run(init(&cfg, &["/bin/sh", "-c", &script]));
    assert_eq!(out.stdout, "ok\n", "{out:?}");
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.ends_with("Permission denied\n"), "{out:?}");
}

// ---- PID 1 ---------------------------------------------------------------------------

#[test]
fn reaps_every_orphan_as_pid1() {
    // Needs root: a new pid namespace (warden-init is its PID 1) with its own /proc.
    // 200 subshells each leave a `sleep` behind and exit, so the sleeps are reparented to
    // PID 1; once they exit, only PID 1 can reap them.
    let script = r#"for i in $(seq 200); do (sleep 0.5 &); done
orphans=$(grep -l '^PPid:[[:space:]]*1$' /proc/[0-9]*/status 2>/dev/null | wc -l)
echo "orphans=$((orphans - 1))"
sleep 1.5
echo "zombies=$(grep -l '^State:[[:space:]]*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)"
echo "pid1=$(cat /proc/1/comm)"
exit 9"#;
    let cfg = config(landlock_off(), default_rules(), 10_000);
    let out = run({
        let mut c = Command::new("unshare");
        c.args([
            "--pid",
            "--fork",
            "--mount-proc",
            INIT,
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .env("WARDEN_INIT_CONFIG", cfg);
        c
    });
    assert_eq!(out.code, Some(9), "{out:?}");
    let value = |key: &str| -> String {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{out:?}"));
        line[key.len()..].to_string()
    };
    assert_eq!(value("pid1="), "warden-init");
    let orphans: usize = value("orphans=").parse().unwrap();
    assert!(
        orphans >= 20,
        "expected sleeps adopted by PID 1, saw {orphans}: {out:?}"
    );
    assert_eq!(value("zombies="), "0", "{out:?}");
    assert_eq!(out.stderr, "");
}

#[test]
fn grace_kill_as_pid1_reaches_other_process_groups() {
    // As PID 1 the grace-period SIGKILL is kill(-1): a process that moved to its own
    // session (so the group kill would miss it) dies too. It writes its pid to a file;
    // after warden-init exits, the namespace and the process are gone.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let script = format!(
        r#"trap '' TERM; setsid /bin/sh -c 'trap "" TERM; echo $$ > {p}; exec sleep 30' & while [ ! -s {p} ]; do sleep 0.01; done; echo ready; wait"#,
        p = pidfile.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        INIT,
        "--",
        "/bin/sh",
        "-c",
        &script,
    ])
    .env("WARDEN_INIT_CONFIG", config(landlock_off(), vec![], 200));
    let (mut unshare, stdout) = start_ready(cmd);
    // unshare forwards nothing; signal warden-init (its only child) directly.
    let init_pid = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        unshare.id(),
        unshare.id()
    ))
    .unwrap()
    .trim()
    .parse::<libc::pid_t>()
    .unwrap();
    // SAFETY: kill with integer arguments.
    assert_eq!(unsafe { libc::kill(init_pid, libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    assert_eq!(wait(&mut unshare).code(), Some(137));
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(rest(stdout), "");
}

/// Children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|c| {
                    c.split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect::<Vec<u32>>()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, None | Some("Z") | Some("X"))
    })
}

#[test]
fn pid1_dies_with_its_parent_and_takes_the_namespace_along() {
    // Needs root. `unshare --fork` is the parent of warden-init, PID 1 of a new pid
    // namespace; unshare itself sets no parent-death signal. SIGKILL it: warden-init gets
    // SIGKILL, and the kernel kills the rest of the namespace.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        INIT,
        "--",
        "/bin/sh",
        "-c",
        "echo ready; exec sleep 30",
    ])
    .env("WARDEN_INIT_CONFIG", plain());
    let (mut unshare, _stdout) = start_ready(cmd);
    let [init_pid] = children(unshare.id())[..] else {
        panic!("unshare has one child: {:?}", children(unshare.id()));
    };
    let [command] = children(init_pid)[..] else {
        panic!("warden-init has one child: {:?}", children(init_pid));
    };
    assert!(alive(init_pid) && alive(command));
    signal(&unshare, libc::SIGKILL);
    assert_eq!(wait(&mut unshare).code(), None);
    let t0 = Instant::now();
    while (alive(init_pid) || alive(command)) && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !alive(init_pid) && !alive(command),
        "warden-init outlived its parent by {:?}",
        t0.elapsed()
    );
}
