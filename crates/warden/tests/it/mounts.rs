//! The sandbox's mounts (root): workspace binds keep host ownership, read-only binds stay
//! read-only for root inside too, tenant volumes are sized and private, mount points the
//! image lacks are made, failures name the path; `/` belongs to root inside; `warden run`
//! from a terminal gives the sandbox a terminal of its own.

use super::egress::Env;
use super::run;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

const IMAGE: &str = "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n";

fn sh(env: &Env, file: &Path, sandbox: &str, script: &str) -> (i32, String, String) {
    run(env.cmd().arg("run").arg(file).args([
        "--sandbox",
        sandbox,
        "--",
        "/bin/busybox",
        "sh",
        "-c",
        script,
    ]))
}

/// A tmpfs mounted at `dir` for the guard's life.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn at(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn workspace_binds_keep_host_ownership_and_read_only_binds_hold_for_root_too() {
    let env = Env::new();
    let dir = env.dir.path();
    // One workspace on the state directory's filesystem, one on a tmpfs.
    let disk = dir.join("disk-ws");
    std::fs::create_dir(&disk).unwrap();
    let _tmpfs = Tmpfs::at(&dir.join("tmpfs-ws"));
    let ro = dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("keep.txt"), "keep").unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o777)).unwrap();
    for ws in [&disk, &dir.join("tmpfs-ws")] {
        std::os::unix::fs::chown(ws, Some(4242), Some(4343)).unwrap();
    }
    let file = dir.join("warden.kdl");
    std::fs::write(
        &file,
        format!(
            "{IMAGE}\nsandbox \"agent\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    filesystem {{\n        bind \"./disk-ws\" at=\"/sandbox/disk\" writable=#true\n        bind \"./tmpfs-ws\" at=\"/sandbox/tmpfs\" writable=#true\n        bind \"./ro\" at=\"/sandbox/ro\"\n    }}\n}}\n\nsandbox \"root\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    user 0\n    filesystem {{\n        bind \"./ro\" at=\"/sandbox/ro\"\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = sh(
        &env,
        &file,
        "agent",
        "for d in disk tmpfs; do echo a > /sandbox/$d/a.txt && echo b > /sandbox/$d/b.txt && \
         echo edited >> /sandbox/$d/a.txt && rm /sandbox/$d/b.txt && busybox stat -c \"$d %u:%g\" /sandbox/$d/a.txt; done; \
         echo x > /sandbox/ro/new.txt 2>/dev/null || echo ro-refused; busybox stat -c '/ %u:%g' /",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "disk 1000:1000\ntmpfs 1000:1000\nro-refused\n/ 0:0\n"),
        "{err}"
    );
    for ws in [&disk, &dir.join("tmpfs-ws")] {
        let md = std::fs::metadata(ws.join("a.txt")).unwrap();
        assert_eq!((md.uid(), md.gid()), (4242, 4343), "{}", ws.display());
        assert_eq!(
            std::fs::read_to_string(ws.join("a.txt")).unwrap(),
            "a\nedited\n"
        );
        assert!(!ws.join("b.txt").exists());
    }
    // Root in the sandbox's namespace can neither write the read-only bind nor lift it.
    let (code, out, err) = sh(
        &env,
        &file,
        "root",
        "busybox touch /sandbox/ro/new.txt 2>&1 | busybox grep -o 'Read-only file system'; \
         busybox mount -o remount,rw /sandbox/ro 2>/dev/null && echo remounted || echo remount-refused; \
         echo x > /sandbox/ro/new.txt 2>/dev/null || echo still-ro",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "Read-only file system\nremount-refused\nstill-ro\n"),
        "{err}"
    );
    assert!(!ro.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(ro.join("keep.txt")).unwrap(),
        "keep"
    );
}

#[test]
fn tenant_volumes_are_sized_private_and_owned_by_the_tenant() {
    let env = Env::new();
    let file = env.dir.path().join("warden.kdl");
    let sandbox = |name: &str| {
        format!(
            "sandbox \"{name}\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    filesystem {{\n        read-write \"/sandbox\"\n        volume \"data\" at=\"/sandbox/data\" writable=#true\n    }}\n}}\n"
        )
    };
    std::fs::write(
        &file,
        format!(
            "{IMAGE}\n{}\n{}\ntenant \"ta\" {{\n    sandboxes \"va\"\n    users uid=500000 count=65536\n    volume \"data\" size=\"16MiB\"\n}}\n\ntenant \"tb\" {{\n    sandboxes \"vb\"\n    users uid=600000 count=65536\n    volume \"data\" size=\"16MiB\"\n}}\n",
            sandbox("va"),
            sandbox("vb")
        ),
    )
    .unwrap();
    let (code, out, err) = sh(
        &env,
        &file,
        "va",
        "busybox stat -c '%a %u' /sandbox/data; \
         busybox dd if=/dev/zero of=/sandbox/data/big bs=1M count=17 2>&1 | busybox grep -o 'No space left on device'; \
         echo mine > /sandbox/data/a.txt && echo wrote",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "700 1000\nNo space left on device\nwrote\n"),
        "{err}"
    );
    let state = env.dir.path().join("state/tenants");
    let a_dir = state.join("ta/volumes/data");
    let md = std::fs::metadata(&a_dir).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o700, 501_000));
    let img = std::fs::metadata(state.join("ta/volumes/data.img")).unwrap();
    assert_eq!((img.mode() & 0o777, img.len()), (0o600, 16 << 20));
    // The host's disk took only what the image holds: the data went into the image, not
    // into the volume's directory on the host.
    assert!(!a_dir.join("big").exists());
    // The other tenant sees its own, empty volume; the first tenant's paths do not exist
    // in its sandbox.
    let (code, out, err) = sh(
        &env,
        &file,
        "vb",
        &format!(
            "busybox ls -A /sandbox/data | busybox wc -l; busybox stat -c '%u' /sandbox/data; \
             busybox ls {} 2>/dev/null || echo no-such-path",
            a_dir.display()
        ),
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "1\n1000\nno-such-path\n"),
        "{err}"
    );
    let b = std::fs::metadata(state.join("tb/volumes/data")).unwrap();
    assert_eq!(b.uid(), 601_000);
}

#[test]
fn mount_points_that_cannot_be_made_and_missing_binds_exit_1_naming_the_path() {
    let env = Env::new();
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(
        &file,
        format!(
            "{IMAGE}\nsandbox \"s\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    filesystem {{\n        bind \"./missing\" at=\"/sandbox/w\" writable=#true\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run(env.cmd().arg("run").arg(&file));
    assert_eq!(code, 1, "{err}");
    let missing = env.dir.path().join("missing");
    assert!(
        err.contains(&format!(
            "the bind source `{}` (for `/sandbox/w`) does not exist on the host",
            missing.display()
        )),
        "{err}"
    );
    std::fs::create_dir(env.dir.path().join("w")).unwrap();
    std::fs::write(
        &file,
        format!(
            "{IMAGE}\nsandbox \"s\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    filesystem {{\n        bind \"./w\" at=\"/etc/passwd/w\"\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run(env.cmd().arg("run").arg(&file));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "cannot make the mount point `/etc/passwd/w` in the sandbox's root: `/etc/passwd` is a file in the image, not a directory"
        ),
        "{err}"
    );
    // A filesystem that cannot idmap (sysfs): read-only works with the host's owners, a
    // writable bind is refused with what to do.
    let bind_sysfs = |writable: bool| {
        std::fs::write(
            &file,
            format!(
                "{IMAGE}\nsandbox \"s\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    filesystem {{\n        bind \"/sys/kernel/mm\" at=\"/sandbox/mm\" writable=#{writable}\n    }}\n}}\n"
            ),
        )
        .unwrap();
        run(env.cmd().arg("run").arg(&file).args([
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            "busybox ls /sandbox/mm | busybox grep -c . ",
        ]))
    };
    let (code, out, err) = bind_sysfs(false);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().parse::<u32>().unwrap() > 0, "{out}");
    let (code, _, err) = bind_sysfs(true);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "the filesystem of `/sys/kernel/mm` cannot idmap, so the writable bind at `/sandbox/mm`"
        ),
        "{err}"
    );
    // A cache the sandbox's root cannot reach: refused before anything starts.
    let closed = env.dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = env.cmd();
    cmd.env("WARDEN_CACHE_DIR", closed.join("cache"));
    let (code, _, err) = run(cmd
        .arg("run")
        .arg(super::repo().join("examples/quickstart.kdl"))
        .args(["--", "/bin/true"]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach its root filesystem `{}",
            closed.join("cache/bundles").display()
        )) && err.contains(&format!(
            "`{}` has mode 0700; give it `o+x`",
            closed.display()
        )),
        "{err}"
    );
}

/// A warden process on a new pseudo-terminal that is its controlling terminal, as from a
/// user's shell.
struct Terminal {
    master: std::fs::File,
    child: std::process::Child,
    seen: Vec<u8>,
    /// The terminal's settings before warden started.
    initial: Vec<u8>,
}

impl Terminal {
    fn spawn(cmd: &mut std::process::Command, size: (u16, u16)) -> Terminal {
        let (master, slave) = super::openpty(size.0, size.1);
        cmd.stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave);
        // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let initial = settings(&master);
        let child = cmd.spawn().expect("spawn warden");
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: fcntl on our own fd.
        unsafe {
            let fl = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Terminal {
            master,
            child,
            seen: Vec::new(),
            initial,
        }
    }

    fn settings(&self) -> Vec<u8> {
        settings(&self.master)
    }

    fn wait_for(&mut self, text: &str) {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&self.seen).contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {text:?} on the terminal: {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => self.seen.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: ioctl with a live winsize.
        assert_eq!(
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
            0
        );
    }
}

fn settings(master: &std::fs::File) -> Vec<u8> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let t = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(master.as_raw_fd(), &mut t), 0);
        t
    };
    format!(
        "{:o} {:o} {:o} {:o} {:?}",
        t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc
    )
    .into_bytes()
}

#[test]
fn run_from_a_terminal_gives_the_sandbox_a_terminal_of_its_own() {
    let env = Env::new();
    let file = env.dir.path().join("warden.kdl");
    std::fs::write(
        &file,
        format!(
            "{IMAGE}\nsandbox \"t\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n}}\n"
        ),
    )
    .unwrap();
    let script = "busybox tty; busybox stty size; echo ready; read x; busybox stty size; \
                  trap 'echo got-int; exit 3' INT; echo waiting; while true; do busybox sleep 0.1; done";
    let mut cmd = env.cmd();
    cmd.arg("run")
        .arg(&file)
        .args(["--", "/bin/busybox", "sh", "-c", script]);
    let mut term = Terminal::spawn(&mut cmd, (30, 90));
    term.wait_for("ready");
    term.resize(40, 120);
    // The relay learns of the resize from SIGWINCH; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    term.master.write_all(b"go\r").unwrap();
    term.wait_for("waiting");
    // Ctrl-C reaches the sandbox's foreground job.
    term.master.write_all(b"\x03").unwrap();
    term.wait_for("got-int");
    let seen = String::from_utf8_lossy(&term.seen).replace("\r\n", "\n");
    let code = term.child.wait().unwrap().code().unwrap_or(-1);
    assert_eq!(code, 3, "{seen}");
    let seen = &seen[seen.find("/dev/pts/").unwrap_or(0)..];
    assert!(
        seen.starts_with("/dev/pts/0\n30 90\nready\n"),
        "the sandbox's own terminal, of the caller's size: {seen:?}"
    );
    assert!(seen.contains("\n40 120\n"), "the resize followed: {seen:?}");
    // The caller's terminal is as it was before (warden had it in raw mode meanwhile).
    assert_eq!(term.settings(), term.initial);
}

/// Every directory of the sandbox (each mount point of `/proc/self/mountinfo` and every
/// directory below `/` outside `/proc` and `/sys`) where the sandbox's user can create a
/// file, found from inside.
fn writable_dirs(env: &Env, file: &Path, sandbox: &str) -> Vec<String> {
    let script = "{ busybox find / \\( -path /proc -o -path /sys \\) -prune -o -type d -print 2>/dev/null; \
                  busybox cut -d' ' -f5 /proc/self/mountinfo; echo /proc; echo /sys; } | busybox sort -u | \
                  while read d; do if busybox touch \"$d/.warden-w\" 2>/dev/null; then echo \"$d\"; busybox rm -f \"$d/.warden-w\"; fi; done";
    let (code, out, err) = sh(env, file, sandbox, script);
    assert_eq!(
        code,
        0,
        "{err} {} {script}",
        std::fs::read_to_string(file).unwrap()
    );
    out.lines().map(str::to_string).collect()
}

#[test]
fn the_writable_places_of_strict_and_solo_sandboxes_are_exactly_the_declared_ones() {
    let env = Env::new();
    std::fs::create_dir(env.dir.path().join("workspace")).unwrap();
    std::os::unix::fs::chown(env.dir.path().join("workspace"), Some(4242), Some(4242)).unwrap();
    for (layout, want) in [
        ("strict", vec!["/sandbox", "/tmp"]),
        // In HOME, the directories of the agents' instructions (where the standing
        // orders are bound read-only) are made, writable like the rest of HOME.
        (
            "solo",
            vec![
                "/sandbox/home",
                "/sandbox/home/.claude",
                "/sandbox/home/.codex",
                "/sandbox/workspace",
                "/tmp",
            ],
        ),
    ] {
        let file = env.dir.path().join(format!("{layout}.kdl"));
        std::fs::write(
            &file,
            format!(
                "layout \"{layout}\"\n\n{IMAGE}\nsandbox \"w\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n}}\n"
            ),
        )
        .unwrap();
        assert_eq!(writable_dirs(&env, &file, "w"), want, "layout {layout}");
    }
    // `/dev/shm` exists and is writable only when the file asks for it.
    let file = env.dir.path().join("shm.kdl");
    std::fs::write(
        &file,
        format!(
            "layout \"strict\"\n\n{IMAGE}\nsandbox \"w\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"true\"\n    filesystem {{\n        read-write \"/tmp\"\n        shm \"8MiB\"\n    }}\n}}\n"
        ),
    )
    .unwrap();
    assert_eq!(writable_dirs(&env, &file, "w"), vec!["/dev/shm", "/tmp"]);
    // The device nodes programs need are still writable.
    let strict = env.dir.path().join("strict.kdl");
    let (code, out, err) = sh(
        &env,
        &strict,
        "w",
        "for d in null zero full random urandom; do echo x > /dev/$d 2>/dev/null && echo $d; done; \
         busybox ls /dev/shm /dev/mqueue 2>/dev/null || echo no-shm-no-mqueue",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "null\nzero\nrandom\nurandom\nno-shm-no-mqueue\n"),
        "{err}"
    );
}

#[test]
fn a_sandboxs_state_and_audit_are_readable_by_root_only() {
    let env = Env::new();
    let (code, _, err) = run(env
        .cmd()
        .arg("run")
        .arg(super::repo().join("examples/quickstart.kdl"))
        .args(["--", "/bin/true"]));
    assert_eq!(code, 0, "{err}");
    let dir = env.dir.path().join("state/sandboxes/hello");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&env.dir.path().join("state/sandboxes")), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(
        files.iter().any(|f| f.file_name() == "audit.jsonl"),
        "{files:?}"
    );
    for f in files {
        assert_eq!(mode(&f.path()) & 0o077, 0, "{}", f.path().display());
    }
}
