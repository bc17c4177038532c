//! `warden run` and `warden build` end to end (root): exit codes, signals and cleanup,
//! zombies, the same bundle under crun and runc, reproducible image digests.

use super::egress::Env;
use super::{repo, run};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn quickstart() -> std::path::PathBuf {
    repo().join("examples/quickstart.kdl")
}

/// Per-run cgroups of a sandbox left anywhere under the v1 hierarchies or v2.
fn leftover_cgroups(sandbox: &str) -> Vec<String> {
    let mut left = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for dir in [h.path().join("warden"), h.path()] {
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().to_string();
                    if n.starts_with(&format!("{sandbox}-")) {
                        left.push(e.path().display().to_string());
                    }
                }
            }
        }
    }
    left
}

fn empty_or_missing(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn echo_hello_and_exit_codes() {
    let env = Env::new();
    let (code, out, err) =
        run(env
            .cmd()
            .arg("run")
            .arg(quickstart())
            .args(["--", "/bin/echo", "hello"]));
    assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");
    let (code, _, err) = run(env
        .cmd()
        .arg("run")
        .arg(quickstart())
        .args(["--", "/bin/sh", "-c", "exit 7"]));
    assert_eq!(code, 7, "{err}");
    let (code, _, err) = run(env
        .cmd()
        .arg("run")
        .arg(quickstart())
        .args(["--", "/bin/nonexistent"]));
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("cannot execute `/bin/nonexistent`"), "{err}");
    assert!(leftover_cgroups("hello").is_empty());
    assert!(empty_or_missing(&env.dir.path().join("run/containers")));
}

#[test]
fn sigterm_ends_the_command_and_leaves_nothing_behind() {
    let env = Env::new();
    let file = env.dir.path().join("t.kdl");
    // The command ignores SIGTERM: warden-init kills it when the 1 s grace period is over.
    std::fs::write(
        &file,
        "image \"base\" {\n    from-host \"/bin/sh\" \"/bin/sleep\"\n}\n\nsandbox \"stubborn\" {\n    image \"base\"\n    command \"/bin/sh\" \"-c\" \"trap '' TERM; /bin/sleep 100 & wait; /bin/sleep 100\"\n    init grace=\"1s\"\n}\n",
    )
    .unwrap();
    let mut child = env
        .cmd()
        .arg("run")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the container is running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while leftover_cgroups("stubborn").is_empty() {
        assert!(Instant::now() < deadline, "the sandbox never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "killed before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(status.code(), Some(137), "SIGKILL after the grace period");
    assert_eq!(leftover_cgroups("stubborn"), Vec::<String>::new());
    assert!(
        empty_or_missing(&env.dir.path().join("run/containers")),
        "container state left behind"
    );
    assert!(
        empty_or_missing(&env.dir.path().join("run/bundles")),
        "bundle copy left behind"
    );
    // A command that obeys SIGTERM ends at once with 128+15.
    let mut child = env
        .cmd()
        .arg("run")
        .arg(quickstart())
        .args(["--", "/bin/sleep", "100"])
        .spawn()
        .unwrap();
    while leftover_cgroups("hello").is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above.
    unsafe { libc_kill(child.id() as i32, 15) };
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert!(leftover_cgroups("hello").is_empty());
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn no_zombies_with_warden_init_as_pid_1() {
    let env = Env::new();
    std::fs::write(env.file(), "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n\nsandbox \"reaper\" {\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    limits pids=512\n}\n").unwrap();
    let script = "for i in $(busybox seq 200); do (busybox sleep 0.01 &) ; done; busybox sleep 1; \
                  echo pid1=$(busybox cat /proc/1/comm); \
                  echo zombies=$(busybox grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | busybox wc -l)";
    let (code, out, err) =
        run(env
            .cmd()
            .arg("run")
            .arg(env.file())
            .args(["--", "/bin/busybox", "sh", "-c", script]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "pid1=init\nzombies=0\n");
}

#[test]
fn the_bundle_runs_the_same_under_crun_and_runc() {
    let env = Env::new();
    let out_dir = env.dir.path().join("out");
    let (code, _, err) = run(env
        .cmd()
        .arg("build")
        .arg(quickstart())
        .arg("--out")
        .arg(&out_dir));
    assert_eq!(code, 0, "{err}");
    let (code, ours, err) = run(env.cmd().arg("run").arg(quickstart()));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ours,
        "hello from the sandbox\nuid=1000(sandbox) gid=1000(sandbox) groups=1000(sandbox)\n"
    );
    let bundle = out_dir.join("bundles/hello");
    for runtime in ["crun", "runc"] {
        // crun 1.8 and runc refuse this hybrid cgroup host unless only v1 is visible.
        let script = format!(
            "umount /sys/fs/cgroup/unified 2>/dev/null; cd {} && exec {runtime} run warden-it-{}",
            bundle.display(),
            std::process::id()
        );
        let (code, theirs, err) = run(Command::new("unshare").args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]));
        assert_eq!(code, 0, "{runtime}: {err}");
        assert_eq!(theirs, ours, "{runtime}");
    }
}

#[test]
fn image_digests_are_reproducible_across_caches_umasks_and_time() {
    let env = Env::new();
    let digest = |cache: &Path, umask: &str| {
        let script = format!("umask {umask}; exec \"$0\" --json build \"$1\" --out \"$2\"");
        let out = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_warden")])
            .arg(quickstart())
            .arg(cache.join("out"))
            .env("WARDEN_CACHE_DIR", cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["images"][0]["reused"], false, "a fresh cache builds");
        v["images"][0]["digest"].as_str().unwrap().to_string()
    };
    let a = digest(&env.dir.path().join("a"), "022");
    std::thread::sleep(Duration::from_millis(1100));
    let b = digest(&env.dir.path().join("b"), "077");
    assert_eq!(a, b);
    assert!(a.starts_with("sha256:") && a.len() == 71);
}

#[test]
fn images_take_the_warden_init_beside_warden_else_warden_itself() {
    let env = Env::new();
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(
        &file,
        "image \"one\" {\n    from-host \"/bin/true\"\n}\n\nsandbox \"pair\" {\n    image \"one\"\n    command \"/bin/true\"\n}\n",
    )
    .unwrap();
    for (dir, sibling) in [("alone", None), ("paired", Some("/bin/true"))] {
        let bin = env.dir.path().join(dir);
        std::fs::create_dir_all(&bin).unwrap();
        let warden = bin.join("warden");
        std::fs::copy(env!("CARGO_BIN_EXE_warden"), &warden).unwrap();
        if let Some(s) = sibling {
            std::fs::copy(s, bin.join("warden-init")).unwrap();
        }
        let out = Command::new(&warden)
            .arg("build")
            .arg(&file)
            .arg("--out")
            .arg(bin.join("out"))
            .env("WARDEN_CACHE_DIR", bin.join("cache"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let init = std::fs::read(bin.join("out/bundles/pair/rootfs/.warden/init")).unwrap();
        let expected = std::fs::read(sibling.map_or(warden.clone(), Into::into)).unwrap();
        assert!(
            init == expected,
            "{dir}: /.warden/init is not {} ({} bytes, expected {})",
            sibling.unwrap_or("warden itself"),
            init.len(),
            expected.len()
        );
    }
}
