//! A warden process that dies (SIGKILL: no clean-up of its own) takes its sandbox down:
//! warden-init, PID 1 of the sandbox, is killed with its parent, and `remove_stale`
//! removes what is left.

use std::process::Command;

use super::*;

/// `<bundle>\n<state root>\n<container id>` for [`runs_a_sandbox_until_killed`].
const CHILD_ENV: &str = "WARDEN_IT_RUN_UNTIL_KILLED";
const CHILD_TEST: &str = "parent_death::runs_a_sandbox_until_killed";

/// The body of the warden process that [`killed_warden_takes_its_sandbox_down`] starts
/// (this test binary, running only this test) and SIGKILLs: runs the bundle named in
/// `CHILD_ENV` in the foreground. Without `CHILD_ENV` there is no such process to be.
#[test]
fn runs_a_sandbox_until_killed() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('\n').collect();
    let [bundle, root, id] = parts[..] else {
        panic!("{CHILD_ENV}={spec:?}");
    };
    let opts = warden_runtime::RunOptions::new(id, root);
    let result = warden_runtime::run_foreground(Path::new(bundle), &opts);
    panic!("the run ended instead of being killed: {result:?}");
}

#[test]
fn killed_warden_takes_its_sandbox_down() {
    let _g = serial();
    let b = sandbox(&["/bin/sleep", "30"], DEFAULT_LIMITS);
    // A state root of its own: `remove_stale` below must find exactly this run.
    let root = tempfile::Builder::new()
        .prefix("state-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("state root");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod state root");
    let id = warden_runtime::new_container_id("it");
    let log = tempfile::NamedTempFile::new().expect("child log");
    let mut warden = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(
            CHILD_ENV,
            format!("{}\n{}\n{id}", b.path().display(), root.path().display()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(log.reopen().expect("log"))
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("start the child warden");
    let child_log = || std::fs::read_to_string(log.path()).unwrap_or_default();

    // Wait for the sandbox's command: warden-init has set up everything by then.
    let state = root.path().join("containers").join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let init_pid = loop {
        let pid = libcontainer::container::Container::load(state.clone())
            .ok()
            .filter(|c| c.status() == libcontainer::container::ContainerStatus::Running)
            .and_then(|c| c.pid())
            .map(|p| p.as_raw());
        if let Some(pid) = pid.filter(|&p| !children(p).is_empty()) {
            break pid;
        }
        if let Some(status) = warden.try_wait().expect("try_wait") {
            panic!("the child warden exited ({status}): {}", child_log());
        }
        assert!(Instant::now() < deadline, "no sandbox: {}", child_log());
        std::thread::sleep(Duration::from_millis(5));
    };
    let command = children(init_pid);
    assert_eq!(command.len(), 1, "{command:?}");
    let command = command[0];
    assert!(alive(init_pid) && alive(command));

    warden.kill().expect("SIGKILL the child warden");
    warden.wait().expect("reap the child warden");
    let t0 = Instant::now();
    while (alive(init_pid) || alive(command)) && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !alive(init_pid) && !alive(command),
        "the sandbox outlived its warden by {:?}",
        t0.elapsed()
    );

    // The dead warden's cgroups, state and bundle copy.
    let cgroup = Path::new("/warden").join(&id);
    assert!(!warden_runtime::leftover_cgroups(&cgroup).is_empty());
    assert!(state.exists());
    let removed = warden_runtime::remove_stale(root.path()).expect("remove stale");
    assert_eq!(removed, vec![id.clone()]);
    let left = warden_runtime::leftover_cgroups(&cgroup);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    assert!(!state.exists(), "container state left behind");
    assert!(
        !root.path().join("bundles").join(&id).exists(),
        "bundle copy left behind"
    );
}
