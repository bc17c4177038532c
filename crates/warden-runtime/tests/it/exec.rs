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
fn exec_without_a_command_or_with_a_bad_variable_is_refused() {
    let root = state_root();
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

/// A pseudo-terminal pair standing in for the user's terminal.
fn user_terminal(rows: u16, cols: u16) -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds; the winsize pointer is live.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both were just opened and are owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

/// Reads `terminal` until what was read ends with `want`; panics after 20 s.
fn read_until(terminal: &mut std::fs::File, seen: &mut String, want: &str) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.ends_with(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want:?} on the terminal; so far {seen:?}"
        );
        let mut fds = [libc::pollfd {
            fd: terminal.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one live pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, left.as_millis() as i32) };
        if fds[0].revents & libc::POLLIN != 0 {
            let n = terminal.read(&mut buf).expect("read the terminal");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

fn local_flags(fd: &std::os::fd::OwnedFd) -> libc::tcflag_t {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid termios; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

#[test]
fn exec_with_a_terminal_relays_input_output_window_size_and_ctrl_c() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let _g = serial();
    let b = sandbox(&["/bin/sleep", "30"], DEFAULT_LIMITS);
    let bg = start_in_background(&b, None);
    let (mut user, user_side) = user_terminal(33, 101);
    let cooked = local_flags(&user_side);
    assert_ne!(cooked & libc::ICANON, 0);
    let script = "test -t 0 && test -t 1 && test -t 2 && echo all-terminal; stty size; \
                  read line; echo \"got:$line\"; \
                  trap 'stty size' WINCH; trap 'echo INT; exit 3' INT; \
                  echo ready; while :; do sleep 0.05; done";
    let mut opts = ExecOptions::new(strings(&["/bin/sh", "-c", script]));
    opts.tty = true;
    opts.stdio.stdin = Some(user_side.try_clone().expect("dup"));
    opts.stdio.stdout = Some(user_side.try_clone().expect("dup"));
    let id = bg.id.clone();
    let exec = std::thread::spawn(move || exec_in(&state_root(), &id, opts).map_err(Box::new));

    let mut seen = String::new();
    read_until(&mut user, &mut seen, "all-terminal\r\n33 101\r\n");
    // The relay put the user's terminal in raw mode.
    assert_eq!(
        local_flags(&user_side) & (libc::ICANON | libc::ECHO | libc::ISIG),
        0
    );
    user.write_all(b"hello\r").expect("type");
    read_until(&mut user, &mut seen, "hello\r\ngot:hello\r\nready\r\n");
    // The user resizes the terminal: warden gets SIGWINCH (from the test here, since this
    // terminal is nobody's controlling terminal) and passes the size on.
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a live winsize; kill(2) to ourselves.
    unsafe {
        assert_eq!(libc::ioctl(user.as_raw_fd(), libc::TIOCSWINSZ, &ws), 0);
        libc::kill(libc::getpid(), libc::SIGWINCH);
    }
    read_until(&mut user, &mut seen, "40 120\r\n");
    // Ctrl-C is a byte on the way in, and SIGINT to the command's foreground group.
    user.write_all(b"\x03").expect("type Ctrl-C");
    let code = exec.join().expect("exec thread").expect("exec");
    read_until(&mut user, &mut seen, "^CINT\r\n");
    assert_eq!(
        (code, seen.as_str()),
        (
            3,
            "all-terminal\r\n33 101\r\nhello\r\ngot:hello\r\nready\r\n40 120\r\n^CINT\r\n"
        )
    );
    // The user's terminal is back in the mode it had.
    assert_eq!(local_flags(&user_side), cooked);
    // The container's own command was not disturbed.
    assert_eq!(bg.stop().code, 128 + libc::SIGTERM);
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
