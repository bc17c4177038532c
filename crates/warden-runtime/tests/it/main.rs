//! Integration tests of warden-runtime: real containers through libcontainer, with
//! warden-init as PID 1 and warden-probe trying to escape. They need root (CI runs as
//! root) and the Debian package `busybox-static`.

mod cgroups;
mod exec;
mod parent_death;
mod prepared;
mod spec;
mod support;
mod threads;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spec::{HOST_ID_BASE, SandboxSpec, mount};
use support::*;
use warden_wire::init::{INIT_CONFIG_ENV, INIT_PATH, InitConfig, Landlock, LandlockMode};

const GRACE_MS: u64 = 1000;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn init_env() -> String {
    let config = InitConfig {
        version: 1,
        landlock: Landlock {
            mode: LandlockMode::Required,
            read_exec: strings(&["/bin", "/usr", "/etc", "/.warden", "/proc", "/sys"]),
            read_write: strings(&["/tmp", "/dev"]),
        },
        seccomp: warden_wire::seccomp::default_rules(),
        grace_period_ms: GRACE_MS,
        files: Vec::new(),
    };
    format!(
        "{INIT_CONFIG_ENV}={}",
        serde_json::to_string(&config).expect("init config json")
    )
}

struct Limits {
    memory_mib: i64,
    pids: i64,
}

const DEFAULT_LIMITS: Limits = Limits {
    memory_mib: 128,
    pids: 64,
};

/// A strict sandbox running `cmd` under warden-init, with a writable tmpfs at `/scratch`
/// that Landlock does not list.
fn sandbox(cmd: &[&str], limits: Limits) -> Bundle {
    let bundle = rootfs_bundle();
    let rootfs = bundle.rootfs();
    let mut args = strings(&[INIT_PATH, "--"]);
    args.extend(strings(cmd));
    write_config(
        &bundle,
        SandboxSpec {
            rootfs: &rootfs,
            args,
            env: vec!["PATH=/bin:/usr/bin".into(), init_env()],
            memory_bytes: limits.memory_mib << 20,
            pids: limits.pids,
            extra_mounts: vec![mount(
                "/scratch",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=1777"],
            )],
        },
    );
    bundle
}

/// Probe output: name → fields.
fn probe_lines(stdout: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    stdout
        .lines()
        .map(|l| {
            let v: BTreeMap<String, String> =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("probe line {l:?}: {e}"));
            (v["name"].clone(), v)
        })
        .collect()
}

#[test]
fn echo_prints_hello_and_exits_0() {
    let _g = serial();
    let b = sandbox(&["/bin/echo", "hello"], DEFAULT_LIMITS);
    let o = run(&b, None, |_| {});
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (0, "hello\n", "")
    );
}

#[test]
fn a_thread_reading_the_environment_cannot_hang_the_container_start() {
    // Another thread of the caller holds std's environment lock most of the time, as a
    // busy program's `Command::spawn` and `env::var` calls do. The container's process is
    // cloned from the caller and must not take that (inherited, never released) lock.
    let _g = serial();
    let b = sandbox(&["/bin/echo", "hello"], DEFAULT_LIMITS);
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += std::env::vars_os().count() as u64;
            }
            n
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let runs = std::thread::spawn(move || {
        for _ in 0..10 {
            let o = run(&b, None, |_| {});
            let _ = tx.send((o.code, o.stdout));
        }
    });
    for i in 0..10 {
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!("run {i} did not finish: the container's process is stuck on a lock")
            });
        assert_eq!(got, (0, "hello\n".to_string()), "run {i}");
    }
    stop.store(true, Ordering::Relaxed);
    runs.join().unwrap();
    assert!(hammer.join().unwrap() > 0);
}

#[test]
fn args_override_replaces_the_command_and_its_exit_code_comes_back() {
    let _g = serial();
    let b = sandbox(&["/bin/echo", "not me"], DEFAULT_LIMITS);
    let o = run(
        &b,
        Some(&["/bin/sh", "-c", "echo overridden; exit 7"]),
        |_| {},
    );
    assert_eq!((o.code, o.stdout.as_str()), (7, "overridden\n"));
}

#[test]
fn command_killed_by_a_signal_exits_128_plus_signal() {
    let _g = serial();
    let b = sandbox(&["/bin/sh", "-c", "kill -9 $$"], DEFAULT_LIMITS);
    assert_eq!(run(&b, None, |_| {}).code, 128 + 9);
}

#[test]
fn missing_command_exits_127_from_warden_init() {
    let _g = serial();
    let b = sandbox(&["/bin/no-such-command"], DEFAULT_LIMITS);
    assert_eq!(run(&b, None, |_| {}).code, 127);
}

/// Sends `sig` to this test process once the container has started.
fn signal_after_start(opts: &mut warden_runtime::RunOptions, sig: i32, delay: Duration) {
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    opts.before_start = Some(Box::new(move |_| {
        flag.store(true, Ordering::SeqCst);
        Ok(())
    }));
    std::thread::spawn(move || {
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(delay);
        // SAFETY: signals this process; run_foreground has its handlers installed.
        unsafe { libc::kill(libc::getpid(), sig) };
    });
}

#[test]
fn sigterm_to_warden_is_forwarded_and_the_run_ends_cleanly() {
    let _g = serial();
    let b = sandbox(&["/bin/sleep", "100"], DEFAULT_LIMITS);
    let t0 = Instant::now();
    let o = run(&b, None, |opts| {
        signal_after_start(opts, libc::SIGTERM, Duration::from_millis(200))
    });
    // sleep dies of the forwarded SIGTERM at once; well within the grace period.
    assert_eq!(o.code, 128 + libc::SIGTERM);
    assert!(
        t0.elapsed() < Duration::from_millis(200 + GRACE_MS),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn command_ignoring_sigterm_is_killed_after_the_grace_period() {
    let _g = serial();
    let b = sandbox(
        &[
            "/bin/sh",
            "-c",
            "trap '' TERM INT; while :; do sleep 1; done",
        ],
        DEFAULT_LIMITS,
    );
    let t0 = Instant::now();
    let o = run(&b, None, |opts| {
        signal_after_start(opts, libc::SIGINT, Duration::from_millis(200))
    });
    let took = t0.elapsed();
    assert_eq!(o.code, 128 + libc::SIGKILL);
    assert!(
        took >= Duration::from_millis(200 + GRACE_MS),
        "took {took:?}"
    );
    assert!(
        took < Duration::from_millis(200 + GRACE_MS + 1500),
        "took {took:?}"
    );
}

#[test]
fn orphans_are_reaped_no_zombies_remain() {
    let _g = serial();
    let b = sandbox(
        &["/usr/bin/warden-probe", "orphans", "200"],
        Limits {
            memory_mib: 256,
            pids: 512,
        },
    );
    let o = run(&b, None, |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    let l = probe_lines(&o.stdout);
    let orphans = &l["orphans"];
    assert_eq!(
        (
            orphans["spawned"].as_str(),
            orphans["living"].as_str(),
            orphans["zombies"].as_str()
        ),
        ("200", "0", "0")
    );
}

#[test]
fn network_is_loopback_only_and_loopback_is_up() {
    let _g = serial();
    let b = sandbox(&["/usr/bin/warden-probe", "net"], DEFAULT_LIMITS);
    let o = run(&b, None, |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    let l = probe_lines(&o.stdout);
    assert_eq!(l["interfaces"]["detail"], "lo");
    assert_eq!(l["interface_lo"]["detail"], "up");
    assert!(
        l["loopback_connect"]["detail"].starts_with("connected to 127.0.0.1:"),
        "{l:?}"
    );
}

/// Answers one HTTP request on `listener` with `body`, on a thread of its own.
fn serve_one_http(
    listener: std::net::TcpListener,
    body: &'static str,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = s.write_all(format!("{head}{body}").as_bytes());
        }
    })
}

#[test]
fn bind_in_netns_gives_the_host_a_listener_inside_the_sandbox() {
    let _g = serial();
    let b = sandbox(
        &["/bin/wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
        DEFAULT_LIMITS,
    );
    let o = run(&b, None, |opts| {
        opts.before_start = Some(Box::new(|ctx| {
            let listener = warden_runtime::bind_in_netns(ctx.init_pid, "127.0.0.1:8080".parse()?)?;
            // Served from the host side: this thread is in the host's namespaces.
            serve_one_http(listener, "from host\r\n");
            Ok(())
        }));
    });
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "from host\r\n"),
        "stderr: {}",
        o.stderr
    );
}

/// Prepares an escape run in `b`: a host file that is not mounted into the sandbox and a
/// setuid copy of the probe. Returns the secret (kept alive for the run) and the probe's
/// command line.
fn escape_setup(b: &Bundle) -> (tempfile::NamedTempFile, Vec<String>) {
    // A file that exists on the host but is not mounted into the sandbox.
    let secret = tempfile::NamedTempFile::new_in("/var/tmp").expect("host secret");
    std::fs::write(secret.path(), "host secret").expect("write secret");
    // A setuid copy of the probe owned by the sandbox's root (host uid HOST_ID_BASE):
    // without no_new_privs it would run with euid 0 inside the sandbox.
    let suid = b.rootfs().join("usr/bin/warden-probe-suid");
    std::fs::copy(b.rootfs().join("usr/bin/warden-probe"), &suid).expect("copy probe");
    std::os::unix::fs::chown(&suid, Some(HOST_ID_BASE), Some(HOST_ID_BASE)).expect("chown");
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    let secret_path = secret.path().to_str().expect("utf-8 path");
    let cmd = strings(&[
        "/usr/bin/warden-probe",
        "escape",
        secret_path,
        "/scratch",
        "/usr/bin/warden-probe-suid",
    ]);
    (secret, cmd)
}

/// The escape suite's verdict on the probe's output: every attempt blocked with exactly
/// the expected errno, the control attempt allowed, and no attempt unaccounted for.
fn assert_escape_blocked(stdout: &str) {
    // Only the sandbox's own processes are visible: warden-init (1) and the probe (2).
    assert_escape_blocked_seeing(stdout, "1,2", &[]);
}

/// [`assert_escape_blocked`] for a probe that sees the processes `visible_pids`, with the
/// errnos of some attempts replaced by `other_errnos` (still blocked).
fn assert_escape_blocked_seeing(stdout: &str, visible_pids: &str, other_errnos: &[(&str, &str)]) {
    let got = probe_lines(stdout);

    let sysrq = if Path::new("/proc/sysrq-trigger").exists() {
        "EACCES"
    } else {
        "ENOENT"
    };
    let expected: &[(&str, &str)] = &[
        // Read-only root: creating anything is EROFS, writing an existing root-owned file
        // fails the permission check first (the files belong to an unmapped uid).
        ("write_usr", "EROFS"),
        ("write_etc_new", "EROFS"),
        ("write_etc_passwd", "EACCES"),
        ("write_root", "EROFS"),
        ("write_warden_init", "EACCES"),
        // The host's file system is not there at all.
        ("read_host_file", "ENOENT"),
        // Writable tmpfs that Landlock does not list.
        ("write_landlock_denied", "EACCES"),
        ("write_proc_sys_hostname", "EACCES"),
        ("write_proc_drop_caches", "EACCES"),
        // Kernels without CONFIG_MAGIC_SYSRQ (this VM's) have no trigger file at all.
        ("write_sysrq_trigger", sysrq),
        ("write_sys_kernel", "EACCES"),
        // No cgroup file system in the sandbox.
        ("read_cgroup_pids_max", "ENOENT"),
        ("mknod_block_device", "EPERM"),
        // seccomp deny list (EPERM), no capabilities.
        ("mount_tmpfs", "EPERM"),
        ("chroot", "EPERM"),
        ("unshare_user", "EPERM"),
        ("unshare_mount", "EPERM"),
        ("clone_newuser", "EPERM"),
        ("clone3_newuser", "ENOSYS"),
        ("setns_host_net", "EPERM"),
        ("setuid_0", "EPERM"),
        ("setgid_0", "EPERM"),
        ("capset_sys_admin", "EPERM"),
        ("ptrace_traceme", "EPERM"),
        ("ptrace_attach_init", "EPERM"),
        ("init_module", "EPERM"),
        ("finit_module", "EPERM"),
        ("bpf_prog_load", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("keyctl", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("userfaultfd", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("reboot", "EPERM"),
        ("ioctl_tiocsti", "EPERM"),
        ("ioctl_tiocsti_high_bits", "EPERM"),
        ("raw_socket", "EPERM"),
        // Only lo: no route anywhere else.
        ("tcp_connect_1.1.1.1:443", "ENETUNREACH"),
        ("udp_sendto_8.8.8.8:53", "ENETUNREACH"),
    ];
    let mut mismatches = Vec::new();
    for (name, errno) in expected {
        let errno = other_errnos
            .iter()
            .find(|(n, _)| n == name)
            .map_or(errno, |(_, e)| e);
        let line = got.get(*name);
        let ok = line.is_some_and(|l| {
            l["result"] == "blocked" && l.get("errno").map(String::as_str) == Some(errno)
        });
        if !ok {
            mismatches.push(format!("{name}: expected blocked ({errno}), got {line:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\nfull output:\n{}",
        mismatches.join("\n"),
        stdout
    );
    assert!(expected.len() >= 20);
    // no_new_privs: the setuid bit does nothing.
    assert_eq!(got["setuid_binary"]["result"], "blocked");
    assert_eq!(got["setuid_binary"]["detail"], "uid=1000 euid=1000");
    assert_eq!(got["visible_pids"]["detail"], visible_pids);
    // The control attempt succeeds: the suite can tell allowed from blocked.
    assert_eq!(got["write_tmp_allowed"]["result"], "ALLOWED");
    // Every attempt was expected: a new attempt must be added to the table.
    let reported: Vec<&String> = got.keys().collect();
    assert_eq!(
        reported.len(),
        expected.len() + 3,
        "unexpected lines: {reported:?}"
    );
}

#[test]
fn escape_attempts_are_blocked_with_the_expected_errno() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let (_secret, cmd) = escape_setup(&b);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let o = run(&b, Some(&cmd), |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    assert_escape_blocked(&o.stdout);
}

/// What a user writes for a probe sandbox. The image is not built here: the bundle gets
/// the test rootfs, which has the probe at `/usr/bin/warden-probe`.
const COMPILED_KDL: &str = r#"
image "probe" {
    from-host "/bin/true"
}

sandbox "escape" {
    image "probe"
    command "/usr/bin/warden-probe"
    filesystem {
        read-write "/tmp" "/scratch"
    }
    limits memory="256MiB" pids=64
}
"#;

/// The compiler's `config.json` for the `escape` sandbox of [`COMPILED_KDL`], unpatched.
fn compiled_config() -> serde_json::Value {
    let loaded = warden_lang::load(
        &warden_lang::SourceFile::new("escape.kdl", COMPILED_KDL),
        &warden_lang::NoFiles,
    );
    let model = loaded
        .model
        .unwrap_or_else(|| panic!("the file does not load: {:?}", loaded.diagnostics));
    let compiled = warden_compile::compile(
        &model,
        &warden_compile::CompileOptions {
            base_dir: "/".into(),
            state_dir: "/var/lib/warden".into(),
        },
    )
    .expect("compile");
    let sandbox = compiled
        .sandboxes
        .iter()
        .find(|s| s.name == "escape")
        .expect("sandbox escape");
    let config: serde_json::Value =
        serde_json::from_str(&sandbox.config_json()).expect("config.json is json");
    // What the tests below rely on, as the compiler emits it.
    assert_eq!(
        config["root"],
        serde_json::json!({"path": "rootfs", "readonly": true})
    );
    let map = serde_json::json!([{"containerID": 0, "hostID": HOST_ID_BASE, "size": 65536}]);
    assert_eq!(config["linux"]["uidMappings"], map);
    assert_eq!(config["linux"]["gidMappings"], map);
    assert_eq!(
        config["process"]["args"],
        serde_json::json!([INIT_PATH, "--", "/usr/bin/warden-probe"])
    );
    assert!(
        config["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["destination"] == "/scratch" && m["type"] == "tmpfs"),
        "{config:#}"
    );
    config
}

/// The `WARDEN_INIT_CONFIG` entry of `process.env`.
fn init_config_entry(config: &mut serde_json::Value) -> &mut serde_json::Value {
    let prefix = format!("{INIT_CONFIG_ENV}=");
    let env = config["process"]["env"]
        .as_array_mut()
        .expect("process.env");
    let mut entries = env
        .iter_mut()
        .filter(|e| e.as_str().is_some_and(|e| e.starts_with(&prefix)));
    let entry = entries.next().expect("WARDEN_INIT_CONFIG in process.env");
    assert!(entries.next().is_none(), "WARDEN_INIT_CONFIG twice");
    entry
}

/// Writes the compiled config into the bundle (which has the test rootfs) with `cmd` as
/// the command, under warden-init as the compiler has it. Nothing else is changed.
fn write_compiled_config(b: &Bundle, config: &serde_json::Value, cmd: &[String]) {
    let mut config = config.clone();
    let mut args = strings(&[INIT_PATH, "--"]);
    args.extend(cmd.iter().cloned());
    config["process"]["args"] = serde_json::json!(args);
    std::fs::write(b.path().join("config.json"), config.to_string()).expect("write config");
}

/// The compiled config with `/scratch` taken out of Landlock's `read_write`: the file
/// language always lists writable paths for Landlock, so only this way does the suite
/// see Landlock block a write where the mount itself is writable.
fn compiled_escape_config() -> serde_json::Value {
    let mut config = compiled_config();
    let entry = init_config_entry(&mut config);
    let json = entry
        .as_str()
        .and_then(|e| e.split_once('='))
        .expect("NAME=json")
        .1;
    let mut init: InitConfig = serde_json::from_str(json).expect("init config");
    assert_eq!(init.landlock.mode, LandlockMode::Required);
    assert_eq!(
        init.landlock.read_write,
        strings(&[
            "/dev/full",
            "/dev/null",
            "/dev/ptmx",
            "/dev/pts",
            "/dev/random",
            "/dev/tty",
            "/dev/urandom",
            "/dev/zero",
            "/scratch",
            "/tmp"
        ])
    );
    init.landlock.read_write.retain(|p| p != "/scratch");
    *entry = serde_json::json!(format!(
        "{INIT_CONFIG_ENV}={}",
        serde_json::to_string(&init).expect("init config json")
    ));
    config
}

/// The escape suite under the compiler's `config.json`; `tweak` sets the run's options
/// (it gets the bundle, its config written).
fn escape_under_the_compiled_spec(tweak: impl FnOnce(&Bundle, &mut warden_runtime::RunOptions)) {
    let _g = serial();
    let config = compiled_escape_config();
    let b = rootfs_bundle();
    let (_secret, cmd) = escape_setup(&b);
    write_compiled_config(&b, &config, &cmd);
    let o = run(&b, None, |opts| tweak(&b, opts));
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    assert_escape_blocked(&o.stdout);
}

#[test]
fn escape_attempts_under_the_compiled_spec() {
    escape_under_the_compiled_spec(|_, _| {});
}

#[test]
fn escape_attempts_under_crun_with_the_compiled_bundle() {
    let _g = serial();
    let config = compiled_escape_config();
    let b = rootfs_bundle();
    let (_secret, cmd) = escape_setup(&b);
    write_compiled_config(&b, &config, &cmd);
    let o = run_crun(&b);
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    // No attempt differs under crun. crun installs config.json's seccomp profile with
    // libseccomp (one more filter than under warden's runtime: 4 against 3 in
    // /proc/self/status), but that profile is the same deny list with the same errnos
    // (EPERM, ENOSYS for clone3) as warden-init's own filter, and the stricter verdict of
    // stacked filters is therefore the same errno.
    assert_escape_blocked(&o.stdout);
}

/// `linux.resources` of the compiled config: (memory limit in bytes, pids limit).
fn compiled_limits(config: &serde_json::Value) -> (i64, i64) {
    let r = &config["linux"]["resources"];
    (
        r["memory"]["limit"].as_i64().expect("memory limit"),
        r["pids"]["limit"].as_i64().expect("pids limit"),
    )
}

#[test]
fn fork_bomb_under_the_compiled_spec_stops_at_its_pids_limit() {
    let _g = serial();
    let config = compiled_config();
    let (_, pids) = compiled_limits(&config);
    assert_eq!(pids, 64);
    let b = rootfs_bundle();
    write_compiled_config(
        &b,
        &config,
        &strings(&["/usr/bin/warden-probe", "fork-bomb"]),
    );
    let o = run(&b, None, |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    let l = &probe_lines(&o.stdout)["fork_bomb"];
    assert_eq!(
        (l["result"].as_str(), l["errno"].as_str()),
        ("blocked", "EAGAIN")
    );
    let forked: i64 = l["forked"].parse().expect("forked");
    let before: i64 = l["tasks_before"].parse().expect("tasks_before");
    assert_eq!(forked + before, pids, "{l:?}");
}

#[test]
fn memory_bomb_under_the_compiled_spec_is_killed_by_its_memory_limit() {
    let _g = serial();
    let config = compiled_config();
    let (memory, _) = compiled_limits(&config);
    assert_eq!(memory, 256 << 20);
    let b = rootfs_bundle();
    // Twice the limit: swap is limited to the same amount, so this cannot fit.
    let mib = ((memory >> 20) * 2).to_string();
    write_compiled_config(
        &b,
        &config,
        &strings(&["/usr/bin/warden-probe", "memory-bomb", &mib]),
    );
    let o = run(&b, None, |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    let l = &probe_lines(&o.stdout)["memory_bomb"];
    assert_eq!(
        (l["result"].as_str(), l["signal"].as_str()),
        ("blocked", "SIGKILL"),
        "{l:?}"
    );
}

#[test]
fn fork_bomb_stops_at_the_pids_limit_with_eagain() {
    let _g = serial();
    let b = sandbox(&["/usr/bin/warden-probe", "fork-bomb"], DEFAULT_LIMITS);
    let o = run(&b, None, |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    let l = &probe_lines(&o.stdout)["fork_bomb"];
    assert_eq!(
        (l["result"].as_str(), l["errno"].as_str()),
        ("blocked", "EAGAIN")
    );
    let forked: i64 = l["forked"].parse().expect("forked");
    let before: i64 = l["tasks_before"].parse().expect("tasks_before");
    assert_eq!(forked + before, DEFAULT_LIMITS.pids, "{l:?}");
}

#[test]
fn memory_bomb_is_killed_by_the_memory_limit() {
    let _g = serial();
    let b = sandbox(
        &["/usr/bin/warden-probe", "memory-bomb", "512"],
        Limits {
            memory_mib: 64,
            pids: 64,
        },
    );
    let o = run(&b, None, |_| {});
    assert_eq!(o.code, 0, "stderr: {}", o.stderr);
    let l = &probe_lines(&o.stdout)["memory_bomb"];
    assert_eq!(
        (l["result"].as_str(), l["signal"].as_str()),
        ("blocked", "SIGKILL"),
        "{l:?}"
    );
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let _g = serial();
    let b = rootfs_bundle();
    let rootfs = b.rootfs();
    write_config(
        &b,
        SandboxSpec {
            rootfs: &rootfs,
            args: strings(&["/bin/true"]),
            env: vec![],
            memory_bytes: 64 << 20,
            pids: 64,
            extra_mounts: vec![mount("/scratch", "no-such-fs", "none", &[])],
        },
    );
    let id = warden_runtime::new_container_id("it");
    let opts = warden_runtime::RunOptions::new(&id, state_root());
    let err = warden_runtime::run_foreground(b.path(), &opts).expect_err("create must fail");
    assert!(
        matches!(err, warden_runtime::RuntimeError::Create { .. }),
        "{}",
        chain(&err)
    );
    assert_clean(&id);
}

#[test]
fn failing_before_start_hook_aborts_the_run_and_cleans_up() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let id = warden_runtime::new_container_id("it");
    let mut opts = warden_runtime::RunOptions::new(&id, state_root());
    opts.before_start = Some(Box::new(|_| Err("proxy port taken".into())));
    let err = warden_runtime::run_foreground(b.path(), &opts).expect_err("hook must fail");
    assert_eq!(
        chain(&err),
        format!("the before-start hook failed for container `{id}`: proxy port taken")
    );
    assert_clean(&id);
}

#[test]
fn missing_bundle_is_an_error_naming_the_path() {
    let id = warden_runtime::new_container_id("it");
    let opts = warden_runtime::RunOptions::new(&id, state_root());
    let err = warden_runtime::run_foreground(Path::new("/nonexistent/bundle"), &opts)
        .expect_err("no bundle");
    assert!(
        chain(&err).contains("/nonexistent/bundle"),
        "{}",
        chain(&err)
    );
}

#[test]
fn ctrl_c_before_start_does_not_start_the_command() {
    let _g = serial();
    let b = sandbox(&["/bin/echo", "started"], DEFAULT_LIMITS);
    let o = run(&b, None, |opts| {
        opts.before_start = Some(Box::new(|_| {
            // A thread-directed signal: its handler has run when `raise` returns, so the
            // signal has certainly arrived before the start.
            // SAFETY: run_foreground's handlers catch it.
            unsafe { libc::raise(libc::SIGINT) };
            Ok(())
        }));
    });
    assert_eq!((o.code, o.stdout.as_str()), (128 + libc::SIGINT, ""));
}

#[test]
fn signal_dispositions_are_restored_after_a_run() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    assert_eq!(run(&b, None, |_| {}).code, 0);
    for sig in warden_runtime::FORWARDED_SIGNALS {
        // SAFETY: queries the current action into a zeroed struct.
        let handler = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old);
            old.sa_sigaction
        };
        assert_eq!(handler, libc::SIG_DFL, "signal {sig}");
    }
}

#[test]
fn bundle_with_oci_hooks_is_refused() {
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let config = b.path().join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("json");
    json["hooks"] = serde_json::json!({"poststop": [{"path": "/bin/true"}]});
    std::fs::write(&config, json.to_string()).expect("write");
    let id = warden_runtime::new_container_id("it");
    let opts = warden_runtime::RunOptions::new(&id, state_root());
    let err = warden_runtime::run_foreground(b.path(), &opts).expect_err("hooks refused");
    assert_eq!(
        chain(&err),
        format!(
            "invalid bundle config `{}`: OCI `hooks` are not supported by warden's runtime",
            config.display()
        )
    );
    assert_clean(&id);
}

#[test]
fn init_that_ignores_sigterm_is_killed_by_the_runtime_after_kill_after() {
    let _g = serial();
    // No warden-init: `sleep` is PID 1 of its pid namespace and, having no handler, never
    // sees the forwarded SIGTERM. The runtime's own deadline must end the run.
    let b = rootfs_bundle();
    let rootfs = b.rootfs();
    write_config(
        &b,
        SandboxSpec {
            rootfs: &rootfs,
            args: strings(&["/bin/sleep", "100"]),
            env: strings(&["PATH=/bin"]),
            memory_bytes: 64 << 20,
            pids: 64,
            extra_mounts: vec![],
        },
    );
    let t0 = Instant::now();
    let o = run(&b, None, |opts| {
        opts.kill_after = Some(Duration::from_millis(300));
        signal_after_start(opts, libc::SIGTERM, Duration::from_millis(100));
    });
    let took = t0.elapsed();
    assert_eq!(o.code, 128 + libc::SIGKILL);
    assert!(took >= Duration::from_millis(400), "took {took:?}");
    assert!(took < Duration::from_millis(2000), "took {took:?}");
}

#[test]
fn remove_stale_cleans_up_after_a_warden_that_was_killed() {
    let _g = serial();
    // The state a SIGKILLed warden leaves: a created container whose init still waits,
    // cgroups, state and bundle copy, owned by a process that no longer exists.
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let id = warden_runtime::new_container_id("it");
    let root = state_root();
    let copy = root.join("bundles").join(&id);
    std::fs::create_dir_all(&copy).expect("mkdir copy");
    std::fs::create_dir_all(root.join("containers")).expect("mkdir containers");
    let mut spec =
        libcontainer::oci_spec::runtime::Spec::load(b.path().join("config.json")).expect("spec");
    let mut rootfs = spec.root().clone().expect("root");
    rootfs.set_path(b.rootfs());
    spec.set_root(Some(rootfs));
    let mut linux = spec.linux().clone().expect("linux");
    linux.set_cgroups_path(Some(Path::new("/warden").join(&id)));
    spec.set_linux(Some(linux));
    // pid 1 never has start time 0: an owner that is gone.
    spec.set_annotations(Some(
        [(
            warden_runtime::OWNER_ANNOTATION.to_string(),
            "1:0".to_string(),
        )]
        .into(),
    ));
    spec.save(copy.join("config.json")).expect("save");
    let container = libcontainer::container::builder::ContainerBuilder::new(
        id.clone(),
        libcontainer::syscall::syscall::SyscallType::default(),
    )
    .with_root_path(root.join("containers"))
    .expect("root path")
    .as_init(&copy)
    .with_systemd(false)
    .build()
    .expect("create");
    let init = container.pid().expect("init pid").as_raw();
    assert!(!warden_runtime::leftover_cgroups(&Path::new("/warden").join(&id)).is_empty());

    let removed = warden_runtime::remove_stale(&root).expect("remove stale");
    assert_eq!(removed, vec![id.clone()]);
    let mut status = 0;
    // SAFETY: reaps the init, our child.
    assert_eq!(unsafe { libc::waitpid(init, &mut status, 0) }, init);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "{status:#x}"
    );
    assert_clean(&id);
}

#[test]
fn remove_stale_leaves_live_runs_alone() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let o = run(&b, None, |opts| {
        opts.before_start = Some(Box::new(|ctx| {
            let removed = warden_runtime::remove_stale(&state_root())?;
            assert!(
                !removed.iter().any(|r| r == ctx.container_id),
                "{removed:?}"
            );
            Ok(())
        }));
    });
    assert_eq!(o.code, 0);
}
