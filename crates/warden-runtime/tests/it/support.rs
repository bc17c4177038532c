//! Test fixtures: a busybox rootfs with warden-init and warden-probe, bundles, and a run
//! helper that captures the container's output. These tests need root (CI runs as root)
//! and the `busybox-static` Debian package.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use warden_runtime::{
    ExecOptions, RunOptions, Stdio, exec_in, leftover_cgroups, new_container_id, run_foreground,
};

use crate::spec::{SandboxSpec, sandbox_spec};

/// Runs are serialized: signal handlers are process-wide, and a test that signals the
/// test process must reach only its own run.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "sleep", "true", "false", "ps", "id", "wget", "mkdir", "touch",
    "wc", "grep", "ip", "env", "kill", "mount", "head", "seq", "test", "[", "stty",
];

pub struct Binaries {
    pub init: PathBuf,
    pub probe: PathBuf,
}

/// Builds warden-init and warden-probe as static executables (they run in a rootfs with
/// no libc) in a target dir of their own, so the outer cargo's lock is not in the way.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("static-target");
        let host = rustc_host();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "--release",
                "-p",
                "warden-init",
                "-p",
                "warden-probe",
                "--target",
            ])
            .arg(&host)
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .expect("run cargo build for warden-init and warden-probe");
        assert!(
            status.success(),
            "building warden-init and warden-probe failed"
        );
        let dir = target_dir.join(host).join("release");
        Binaries {
            init: dir.join("warden-init"),
            probe: dir.join("warden-probe"),
        }
    })
}

fn rustc_host() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV prints the host")
        .to_string()
}

/// A bundle directory (mode 0755 all the way, so the container's mapped root can reach
/// the rootfs) with a busybox rootfs, warden-init and warden-probe.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

impl Bundle {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }
}

pub fn rootfs_bundle() -> Bundle {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("busybox is installed (apt-get install -y busybox-static)");
    let dir = tempfile::Builder::new()
        .prefix("warden-rt-")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod bundle");
    let root = dir.path().join("rootfs");
    for d in [
        "bin", "usr/bin", "etc", "proc", "dev", "sys", "tmp", ".warden", "sandbox", "scratch",
    ] {
        fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
    }
    fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).expect("symlink applet");
    }
    let bins = binaries();
    fs::copy(&bins.init, root.join(".warden/init")).expect("copy warden-init");
    fs::copy(&bins.probe, root.join("usr/bin/warden-probe")).expect("copy warden-probe");
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/:/bin/sh\nagent:x:1000:1000::/sandbox:/bin/sh\n",
    )
    .expect("passwd");
    fs::write(
        root.join("etc/group"),
        "root:x:0:\ntty:x:5:\nagent:x:1000:\n",
    )
    .expect("group");
    Bundle { dir }
}

/// Writes `config.json` for `cfg` into the bundle.
pub fn write_config(bundle: &Bundle, cfg: SandboxSpec<'_>) {
    sandbox_spec(cfg)
        .save(bundle.path().join("config.json"))
        .expect("save config.json");
}

pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn state_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("state")
}

/// Runs the bundle with output captured in files; asserts that nothing of the run is left
/// behind (state, bundle copy, cgroups in every hierarchy).
pub fn run(
    bundle: &Bundle,
    args_override: Option<&[&str]>,
    tweak: impl FnOnce(&mut RunOptions),
) -> Outcome {
    let id = new_container_id("it");
    let o = run_with_id(bundle.path(), &id, args_override, tweak);
    assert_clean(&id);
    o
}

fn run_with_id(
    bundle: &Path,
    id: &str,
    args_override: Option<&[&str]>,
    tweak: impl FnOnce(&mut RunOptions),
) -> Outcome {
    let mut opts = RunOptions::new(id, state_root());
    opts.args_override = args_override.map(|a| a.iter().map(|s| s.to_string()).collect());
    let (stdio, out, err) = captured();
    opts.stdio = stdio;
    tweak(&mut opts);
    let code =
        run_foreground(bundle, &opts).unwrap_or_else(|e| panic!("run failed: {}", chain(&e)));
    Outcome {
        code,
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

/// stdout and stderr into files.
fn captured() -> (Stdio, fs::File, fs::File) {
    let out = tempfile::tempfile().expect("stdout file");
    let err = tempfile::tempfile().expect("stderr file");
    let stdio = Stdio {
        stdin: None,
        stdout: Some(out.try_clone().expect("dup").into()),
        stderr: Some(err.try_clone().expect("dup").into()),
    };
    (stdio, out, err)
}

/// A container running in the foreground on a thread of its own.
pub struct Background {
    pub id: String,
    /// Host pid of the container's init (warden-init, PID 1 inside).
    pub init_pid: i32,
    thread: Option<std::thread::JoinHandle<Outcome>>,
}

/// Starts the bundle on a thread and returns once its command runs (state `running`, the
/// init has exec'd, and has a child if it is warden-init).
pub fn start_in_background(bundle: &Bundle, args_override: Option<&[&str]>) -> Background {
    let id = new_container_id("it");
    let (tx, rx) = std::sync::mpsc::channel();
    let path = bundle.path().to_path_buf();
    let args: Option<Vec<String>> =
        args_override.map(|a| a.iter().map(|s| s.to_string()).collect());
    let thread_id = id.clone();
    let thread = std::thread::spawn(move || {
        let args: Option<Vec<&str>> = args
            .as_ref()
            .map(|a| a.iter().map(String::as_str).collect());
        run_with_id(&path, &thread_id, args.as_deref(), |opts| {
            opts.before_start = Some(Box::new(move |ctx| {
                let _ = tx.send(ctx.init_pid);
                Ok(())
            }));
        })
    });
    let init_pid = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the container is created");
    let bg = Background {
        id,
        init_pid,
        thread: Some(thread),
    };
    wait_running(&state_root(), &bg.id, init_pid);
    bg
}

/// Waits until the container `id` under `root` is `running` and its command started.
pub fn wait_running(root: &Path, id: &str, init_pid: i32) {
    use libcontainer::container::{Container, ContainerStatus};
    let dir = root.join("containers").join(id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let running =
            Container::load(dir.clone()).is_ok_and(|c| c.status() == ContainerStatus::Running);
        if running && command_started(init_pid) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container {id} did not start its command"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

impl Background {
    /// SIGTERM to the init (warden-init forwards it); the run's outcome once it has
    /// cleaned up.
    pub fn stop(mut self) -> Outcome {
        // SAFETY: kill(2) to the container's init, a child of the run's thread.
        unsafe { libc::kill(self.init_pid, libc::SIGTERM) };
        let o = self.join();
        assert_clean(&self.id);
        o
    }

    /// The run's outcome after it ended by itself.
    pub fn join(&mut self) -> Outcome {
        let thread = self.thread.take().expect("joined once");
        thread
            .join()
            .unwrap_or_else(|_| panic!("the run of {} failed", self.id))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // A failed test: do not leave the container running.
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.init_pid, libc::SIGKILL) };
            let _ = thread.join();
        }
    }
}

/// The container's init has exec'd (it is no longer a clone of this test binary), and,
/// if it is warden-init, has started the command.
fn command_started(init_pid: i32) -> bool {
    let exe = fs::read_link(format!("/proc/{init_pid}/exe"));
    let me = std::env::current_exe();
    if let (Ok(exe), Ok(me)) = (&exe, &me)
        && exe == me
    {
        return false;
    }
    let runs_init = exe.is_ok_and(|e| e == Path::new(warden_wire::init::INIT_PATH));
    !runs_init || !children(init_pid).is_empty()
}

/// Children of every thread of process `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<i32> = tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    out.sort_unstable();
    out
}

/// The process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Runs `args` in the running container `id` with output captured; asserts that the
/// exec left nothing behind: no file in the container's state directory or bundle copy
/// and no child of this process that was not there before.
pub fn exec(id: &str, args: &[&str], tweak: impl FnOnce(&mut ExecOptions)) -> Outcome {
    let code = try_exec(id, args, tweak);
    match code {
        Ok(o) => o,
        Err(e) => panic!("exec failed: {}", chain(&e)),
    }
}

/// [`exec`] that returns the error instead of panicking on it.
pub fn try_exec(
    id: &str,
    args: &[&str],
    tweak: impl FnOnce(&mut ExecOptions),
) -> Result<Outcome, Box<warden_runtime::RuntimeError>> {
    let root = state_root();
    let dirs = [
        root.join("containers").join(id),
        root.join("bundles").join(id),
    ];
    let before: Vec<Vec<String>> = dirs.iter().map(|d| listing(d)).collect();
    let me = std::process::id() as i32;
    let children_before = children(me);
    let mut opts = ExecOptions::new(args.iter().map(|s| s.to_string()).collect());
    let (stdio, out, err) = captured();
    opts.stdio = stdio;
    tweak(&mut opts);
    let code = exec_in(&root, id, opts);
    // The run may end meanwhile and remove its own files and child: only new ones count.
    let after: Vec<Vec<String>> = dirs.iter().map(|d| listing(d)).collect();
    for (after, before) in after.iter().zip(&before) {
        let new: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
        assert!(new.is_empty(), "the exec left files behind: {new:?}");
    }
    let new: Vec<i32> = children(me)
        .into_iter()
        .filter(|c| !children_before.contains(c))
        .collect();
    assert!(new.is_empty(), "the exec left children behind: {new:?}");
    Ok(Outcome {
        code: code.map_err(Box::new)?,
        stdout: read_all(out),
        stderr: read_all(err),
    })
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn read_all(mut f: fs::File) -> String {
    use std::io::Seek;
    f.rewind().expect("rewind");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read output");
    s
}

pub fn assert_clean(id: &str) {
    let root = state_root();
    assert!(
        !root.join("containers").join(id).exists(),
        "container state of {id} left behind"
    );
    assert!(
        !root.join("bundles").join(id).exists(),
        "bundle copy of {id} left behind"
    );
    let left = leftover_cgroups(&Path::new("/warden").join(id));
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

/// Runs the bundle with `crun run` (Debian package `crun`), output captured; asserts that
/// nothing of the run is left behind (crun's state, cgroups in every hierarchy).
///
/// crun 1.8 refuses a cgroup v1 hybrid host unless it sees the v1 hierarchies only, so it
/// runs in a mount namespace of its own without `/sys/fs/cgroup/unified`.
pub fn run_crun(bundle: &Bundle) -> Outcome {
    let id = new_container_id("it");
    // warden's runtime gives each run the cgroup `<parent of cgroupsPath>/<id>`; crun uses
    // cgroupsPath as it is, so the bundle gets what warden's runtime would make of it:
    // concurrent runs of the same bundle do not share a cgroup, and the cleanup check
    // below finds it.
    let config_path = bundle.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config_path).expect("read config.json"))
            .expect("config.json is json");
    let cgroup = Path::new(
        config["linux"]["cgroupsPath"]
            .as_str()
            .expect("cgroupsPath"),
    )
    .parent()
    .expect("cgroupsPath has a parent")
    .join(&id);
    config["linux"]["cgroupsPath"] = cgroup.to_str().expect("utf-8 cgroup path").into();
    fs::write(&config_path, config.to_string()).expect("write config.json");
    let crun_root = state_root().join("crun");
    fs::create_dir_all(&crun_root).expect("mkdir crun root");
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"umount /sys/fs/cgroup/unified 2>/dev/null; cd "$1" && exec crun --root "$2" run "$3""#)
        .arg("sh")
        .arg(bundle.path())
        .arg(&crun_root)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run unshare and crun (apt-get install -y crun)");
    use std::os::unix::process::ExitStatusExt;
    let code = out
        .status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
        .expect("exit code or signal");
    assert!(
        !crun_root.join(&id).exists(),
        "crun state of {id} left behind"
    );
    let left = leftover_cgroups(&cgroup);
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
