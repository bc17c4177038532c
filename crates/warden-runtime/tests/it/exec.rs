//! `exec_in`: one more command in a running container, in its namespaces and cgroups,
//! confined like the container's own command.

use std::collections::BTreeSet;

use warden_runtime::{ExecOptions, RuntimeError, exec_in};

use super::*;

const NAMESPACES: [&str; 7] = ["pid", "net", "mnt", "user", "ipc", "uts", "cgroup"];

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{ns}: {e}"))
        .to_string_lossy()
        .into_owned()
}

#[test]
fn exec_joins_every_namespace_of_the_container() {
    let _g = serial();
    let b = sandbox(&["/bin/sleep", "30"], DEFAULT_LIMITS);
    let bg = start_in_background(&b, None);
    let script = format!(
        "for n in {}; do busybox readlink /proc/self/ns/$n; done",
        NAMESPACES.join(" ")
    );
    let o = exec(&bg.id, &["/bin/sh", "-c", &script], |_| {});
    let init = bg.init_pid.to_string();
    let expected: String = NAMESPACES
        .iter()
        .map(|ns| format!("{}\n", ns_link(&init, ns)))
        .collect();
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (0, expected.as_str(), "")
    );
    // The container has namespaces of its own: joining them is not staying at home.
    for ns in NAMESPACES {
        assert_ne!(ns_link(&init, ns), ns_link("self", ns), "{ns}");
    }
    assert_eq!(bg.stop().code, 128 + libc::SIGTERM);
}

#[test]
fn exec_returns_the_exit_code_of_its_command() {
    let _g = serial();
    let b = sandbox(&["/bin/sleep", "30"], DEFAULT_LIMITS);
    let bg = start_in_background(&b, None);
    let o = exec(
        &bg.id,
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 5"],
        |_| {},
    );
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (5, "out\n", "err\n")
    );
    let o = exec(&bg.id, &["/bin/sh", "-c", "kill -9 $$"], |_| {});
    assert_eq!(o.code, 128 + libc::SIGKILL);
    // warden-init's own verdict on a command that does not exist.
    let o = exec(&bg.id, &["/bin/no-such-command"], |_| {});
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (
            127,
            "warden-init: cannot execute `/bin/no-such-command`: No such file or directory (os error 2)\n"
        )
    );
    // The container's own command was not disturbed.
    assert_eq!(bg.stop().code, 128 + libc::SIGTERM);
}

/// `/proc/self/status` fields that make up a process's privileges and confinement.
const STATUS_FIELDS: [&str; 11] = [
    "Uid:",
    "Gid:",
    "Groups:",
    "CapInh:",
    "CapPrm:",
    "CapEff:",
    "CapBnd:",
    "CapAmb:",
    "NoNewPrivs:",
    "Seccomp:",
    "Seccomp_filters:",
];

fn status_fields(status: &str) -> Vec<String> {
    STATUS_FIELDS
        .iter()
        .map(|f| {
            status
                .lines()
                .find(|l| l.starts_with(f))
                .unwrap_or_else(|| panic!("no {f} in {status}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn exec_has_the_identity_and_confinement_of_the_main_command() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    // The container's command records what it is, then sleeps.
    let main = "cat /proc/self/status > /tmp/main-status; cat /proc/self/cgroup > /tmp/main-cgroup; \
                env > /tmp/main-env; pwd > /tmp/main-pwd; touch /tmp/ready; exec sleep 30";
    let bg = start_in_background(&b, Some(&["/bin/sh", "-c", main]));
    let script = "while [ ! -e /tmp/ready ]; do sleep 0.05; done; \
                  for f in status cgroup env pwd; do cat /tmp/main-$f; echo ===; done; \
                  cat /proc/self/status; echo ===; cat /proc/self/cgroup; echo ===; env; echo ===; pwd";
    let o = exec(&bg.id, &["/bin/sh", "-c", script], |_| {});
    assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{}", o.stdout);
    let parts: Vec<&str> = o.stdout.split("===\n").collect();
    assert_eq!(parts.len(), 8, "{}", o.stdout);
    let (main, exec) = (&parts[..4], &parts[4..]);

    let fields = status_fields(exec[0]);
    assert_eq!(fields, status_fields(main[0]));
    // What both are: the sandbox user and its group only (none of the host's groups of
    // the warden process), no capabilities at all, no_new_privs, and warden-init's
    // seccomp filter.
    let zero = "0000000000000000";
    assert_eq!(
        fields[..10],
        [
            "Uid: 1000 1000 1000 1000".to_string(),
            "Gid: 1000 1000 1000 1000".into(),
            "Groups: 1000".into(),
            format!("CapInh: {zero}"),
            format!("CapPrm: {zero}"),
            format!("CapEff: {zero}"),
            format!("CapBnd: {zero}"),
            format!("CapAmb: {zero}"),
            "NoNewPrivs: 1".into(),
            "Seccomp: 2".into(),
        ]
    );
    // The same cgroups (the root of the container's cgroup namespace).
    assert_eq!(exec[1], main[1]);
    assert!(exec[1].lines().all(|l| l.ends_with(":/")), "{}", exec[1]);
    // The same environment (HOME from the sandbox user's passwd entry) and directory.
    let env = |s: &str| s.lines().map(str::to_string).collect::<BTreeSet<_>>();
    assert_eq!(env(exec[2]), env(main[2]));
    assert!(env(exec[2]).contains("HOME=/sandbox"), "{}", exec[2]);
    assert!(!exec[2].contains(INIT_CONFIG_ENV), "{}", exec[2]);
    assert_eq!((exec[3], main[3]), ("/\n", "/\n"));
    assert_eq!(bg.stop().code, 128 + libc::SIGTERM);
}

#[test]
fn exec_env_is_added_to_the_container_env() {
    let _g = serial();
    let b = sandbox(&["/bin/sleep", "30"], DEFAULT_LIMITS);
    let bg = start_in_background(&b, None);
    let o = exec(
        &bg.id,
        &["/bin/sh", "-c", "echo \"$EXTRA|$PATH|$HOME\""],
        |opts| {
            opts.env = vec![
                ("EXTRA".into(), "a b".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), "/tmp".into()),
            ]
        },
    );
    assert_eq!((o.code, o.stdout.as_str()), (0, "a b|/usr/bin:/bin|/tmp\n"));
    let err = try_exec(&bg.id, &["/bin/true"], |opts| {
        opts.env = vec![(INIT_CONFIG_ENV.into(), "{}".into())];
    })
    .err()
    .expect("replacing the init config is refused");
    assert_eq!(
        chain(&err),
        format!(
            "cannot exec in container `{}`: `{INIT_CONFIG_ENV}` is the container's confinement \
             and cannot be replaced",
            bg.id
        )
    );
    assert_eq!(bg.stop().code, 128 + libc::SIGTERM);
}

#[test]
fn escape_attempts_from_an_exec_are_blocked_like_from_the_main_command() {
    let _g = serial();
    let b = sandbox(&["/bin/sleep", "30"], DEFAULT_LIMITS);
    let (_secret, cmd) = escape_setup(&b);
    let bg = start_in_background(&b, None);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let o = exec(&bg.id, &cmd, |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    // The probe sees the container's processes: its warden-init (1) and sleep (2), then
    // the exec's warden-init (3) and itself (4). No host process. One attempt is blocked
    // earlier than from the main command: the exec's warden-init enforces Landlock in a
    // domain of its own, and Landlock refuses ptrace-mode access (here opening
    // `/proc/1/ns/net`) to processes outside the caller's domain, so the open fails with
    // EACCES before seccomp refuses the `setns` with EPERM.
    assert_escape_blocked_seeing(&o.stdout, "1,2,3,4", &[("setns_host_net", "EACCES")]);
    assert_eq!(bg.stop().code, 128 + libc::SIGTERM);
}

#[test]
fn exec_in_a_container_without_warden_init_runs_the_command_directly() {
    let _g = serial();
    let b = rootfs_bundle();
    let rootfs = b.rootfs();
    write_config(
        &b,
        SandboxSpec {
            rootfs: &rootfs,
            args: strings(&["/bin/sleep", "30"]),
            env: strings(&["PATH=/bin"]),
            memory_bytes: 64 << 20,
            pids: 64,
            extra_mounts: vec![],
        },
    );
    let bg = start_in_background(&b, None);
    // No warden-init in between: the shell's parent is outside the pid namespace, and
    // there is no seccomp filter (libcontainer has none to install).
    let o = exec(
        &bg.id,
        &[
            "/bin/sh",
            "-c",
            "echo $PPID; grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
        ],
        |_| {},
    );
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (
            0,
            "0\nUid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n",
            ""
        )
    );
    // sleep is PID 1 there and has no handler for the forwarded SIGTERM.
    // SAFETY: kill(2) to the container's init.
    unsafe { libc::kill(bg.init_pid, libc::SIGKILL) };
    let mut bg = bg;
    assert_eq!(bg.join().code, 128 + libc::SIGKILL);
    assert_clean(&bg.id);
}

#[test]
fn sigterm_during_an_exec_ends_the_exec_and_the_run() {
    let _g = serial();
    // The container's command ignores SIGTERM, so the container outlives the exec by the
    // grace period: its PID 1 exiting would SIGKILL the exec (a process of its pid
    // namespace) too.
    let b = sandbox(
        &["/bin/sh", "-c", "trap '' TERM; exec sleep 30"],
        DEFAULT_LIMITS,
    );
    let bg = start_in_background(&b, None);
    let started = format!("/proc/{}/root/tmp/exec-started", bg.init_pid);
    let signaller = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Path::new(&started).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: signals this process; the run and the exec have their handlers
        // installed and forward it.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    });
    let t0 = Instant::now();
    let o = exec(
        &bg.id,
        &["/bin/sh", "-c", "touch /tmp/exec-started; exec sleep 100"],
        |_| {},
    );
    signaller.join().expect("signaller");
    // sleep dies of the forwarded SIGTERM at once, well within the grace period.
    assert_eq!(o.code, 128 + libc::SIGTERM);
    assert!(
        t0.elapsed() < Duration::from_millis(GRACE_MS),
        "took {:?}",
        t0.elapsed()
    );
    // The run forwarded it too; warden-init killed its command after the grace period.
    let mut bg = bg;
    assert_eq!(bg.join().code, 128 + libc::SIGKILL);
    assert_clean(&bg.id);
}

#[test]
fn exec_into_a_container_that_does_not_run_is_refused() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let tried: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let slot = tried.clone();
    let o = run(&b, None, |opts| {
        opts.before_start = Some(Box::new(move |ctx| {
            // Created, not started yet.
            let err = exec_in(
                &state_root(),
                ctx.container_id,
                ExecOptions::new(strings(&["/bin/true"])),
            )
            .err()
            .map(|e| chain(&e));
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = err;
            Ok(())
        }));
    });
    assert_eq!(o.code, 0);
    let err = tried
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("exec into a created container fails");
    assert!(
        err.starts_with("container `it-")
            && err.ends_with("` is not running: its state is Created"),
        "{err}"
    );
}

#[test]
fn exec_into_an_unknown_container_is_not_found() {
    let root = state_root();
    let err = exec_in(
        &root,
        "it-nothing",
        ExecOptions::new(strings(&["/bin/true"])),
    )
    .expect_err("no such container");
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
    assert_eq!(
        chain(&err),
        format!("no container `it-nothing` under `{}`", root.display())
    );
    let err =
        exec_in(&root, "../x", ExecOptions::new(strings(&["/bin/true"]))).expect_err("bad id");
    assert!(matches!(err, RuntimeError::InvalidId { .. }), "{err:?}");
}

#[test]
fn exec_with_a_terminal_or_without_a_command_is_refused() {
    let root = state_root();
    let mut opts = ExecOptions::new(strings(&["/bin/sh"]));
    opts.tty = true;
    let err = exec_in(&root, "it-any", opts).expect_err("tty");
    assert_eq!(
        chain(&err),
        "cannot exec in container `it-any`: a terminal is not supported: libcontainer passes a \
         new pseudo-terminal only to a console socket (and only for detached processes), and \
         warden-runtime has no relay between one and the caller's terminal"
    );
    let err = exec_in(&root, "it-any", ExecOptions::new(vec![])).expect_err("no command");
    assert_eq!(
        chain(&err),
        "cannot exec in container `it-any`: no command given"
    );
    let mut opts = ExecOptions::new(strings(&["/bin/true"]));
    opts.env = vec![("A=B".into(), "c".into())];
    let err = exec_in(&root, "it-any", opts).expect_err("bad env name");
    assert_eq!(
        chain(&err),
        "cannot exec in container `it-any`: invalid environment variable name `A=B`"
    );
}

#[test]
fn exec_refuses_a_state_whose_init_pid_is_another_process() {
    // What a warden killed before its clean-up leaves once the sandbox died: a `running`
    // state whose init pid a host process may have reused. Joining that process's
    // namespaces would run the command on the host.
    let b = sandbox(&["/bin/sleep", "30"], DEFAULT_LIMITS);
    let root = tempfile::Builder::new()
        .prefix("state-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("state root");
    let id = warden_runtime::new_container_id("it");
    let copy = root.path().join("bundles").join(&id);
    let state = root.path().join("containers").join(&id);
    std::fs::create_dir_all(&copy).expect("mkdir copy");
    std::fs::create_dir_all(&state).expect("mkdir state");
    let mut spec =
        libcontainer::oci_spec::runtime::Spec::load(b.path().join("config.json")).expect("spec");
    let mut linux = spec.linux().clone().expect("linux");
    linux.set_cgroups_path(Some(Path::new("/warden").join(&id)));
    spec.set_linux(Some(linux));
    spec.save(copy.join("config.json")).expect("save config");
    let mut host = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("a host process");
    let pid = host.id() as i32;
    libcontainer::container::State::new(
        &id,
        libcontainer::container::ContainerStatus::Running,
        Some(pid),
        copy.clone(),
    )
    .save(&state)
    .expect("save state");
    let err = exec_in(root.path(), &id, ExecOptions::new(strings(&["/bin/true"])))
        .expect_err("not the container's init");
    host.kill().expect("kill");
    host.wait().expect("reap");
    assert_eq!(
        chain(&err),
        format!("container `{id}` is not running: its init (pid {pid}) has exited")
    );
    assert_eq!(
        std::fs::read_dir(&copy).expect("copy").count(),
        1,
        "the exec left files in the bundle copy"
    );
}
