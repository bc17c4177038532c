//! Benchmark: `/bin/true` in a fresh strict sandbox, whole process, warden vs crun vs runc
//! on the same bundle (user namespace, all namespaces, cgroup limits, warden-init as PID 1
//! with Landlock and seccomp), interleaved in one run.
//!
//! Usage: `cargo xtask bench run [--runs N] [--init PATH] [--state DIR]
//! [--warden-cmd "CMD ... {bundle} ... {state}"]`
//!
//! - Default: `warden run examples/quickstart.kdl -- /bin/true` (the release CLI: load,
//!   compile, cached image, egress proxy, container) against crun and runc running the
//!   bundle `warden build` made from the same file.
//! - `--warden-cmd`: instead, a hand-made bundle (the `warden-run` example of
//!   warden-runtime) and this command; `{bundle}` and `{state}` are replaced.
//! - `--init`: with `--warden-cmd`, a static warden-init; default: built here.
//! - `--state`: where every runtime keeps its state (`DIR/warden`, `--root DIR/crun`,
//!   `--root DIR/runc`); default `/run`. Debian's `/run` is a tmpfs; on machines where it is
//!   not, state writes cost every runtime alike.
//!
//! crun 1.8 refuses this cgroup v1 hybrid host unless it sees only the v1 hierarchies, so
//! it runs in a private mount namespace where `/sys/fs/cgroup/unified` is unmounted (set up
//! in the forked child before exec; included in its time, a fraction of a millisecond).
//!
//! Each run starts after a pause of [`SETTLE`], so that no runtime inherits kernel state
//! (the cgroup attach lock's grace period) from the run before it.
//!
//! Needs root, `busybox-static`, and `crun`/`runc` for the comparison (skipped if absent).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench_lang::{arg_value, median};
use anyhow::{Context, bail};

/// Pause before each run; well over an RCU grace period on the dev VM (under 20 ms).
const SETTLE: Duration = Duration::from_millis(50);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn target_dir() -> PathBuf {
    crate::bench_lang::target_dir().join("bench-run")
}

fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("run `rustc -vV`")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("`rustc -vV` printed no host")
}

fn cargo_build(args: &[&str], rustflags: Option<&str>) -> anyhow::Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--quiet", "--release", "--target-dir"])
        .arg(target_dir())
        .args(args);
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    let status = cmd.status().context("run cargo build")?;
    if !status.success() {
        bail!("`cargo build {}` failed", args.join(" "));
    }
    Ok(())
}

struct Runtime {
    name: &'static str,
    /// Builds the command for iteration `i`.
    command: Box<dyn Fn(usize) -> Command>,
    times: Vec<Duration>,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let runs: usize = arg_value(args, "--runs")
        .map(|r| r.parse())
        .transpose()
        .context("--runs takes a number")?
        .unwrap_or(20)
        .max(1);
    let state = PathBuf::from(arg_value(args, "--state").unwrap_or_else(|| "/run".into()));
    let dir = std::env::temp_dir().join(format!("warden-bench-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = if let Some(cmd) = arg_value(args, "--warden-cmd") {
        // A hand-made bundle (the `warden-run` example of warden-runtime) and any command.
        let host = host_triple()?;
        let init = match arg_value(args, "--init") {
            Some(p) => PathBuf::from(p),
            None => {
                cargo_build(
                    &["-p", "warden-init", "--target", &host],
                    Some("-C target-feature=+crt-static"),
                )?;
                target_dir().join(&host).join("release/warden-init")
            }
        };
        cargo_build(&["-p", "warden-runtime", "--example", "warden-run"], None)?;
        let maker = target_dir().join("release/examples/warden-run");
        let status = Command::new(&maker)
            .arg("make-bundle")
            .arg(&dir)
            .arg(&init)
            .status()?;
        if !status.success() {
            bail!("making the bundle in `{}` failed", dir.display());
        }
        measure(&dir, &state, &cmd, runs, &[])
    } else {
        // The real thing: `warden run FILE -- /bin/true` against crun and runc on the
        // bundle `warden build` makes from the same file; for the quickstart example and
        // for a sandbox of the solo layout (workspace bind, tmpfs, Landlock).
        let warden = crate::bench_lang::release_warden()?;
        let example = crate::bench_lang::workspace().join("examples/quickstart.kdl");
        let solo_dir = dir.join("solo");
        std::fs::create_dir_all(solo_dir.join("workspace"))?;
        let solo = solo_dir.join("warden.kdl");
        std::fs::write(
            &solo,
            "layout \"solo\"\n\nimage \"base\" {\n    from-host \"/bin/sh\" \"/bin/true\"\n}\n\nsandbox \"agent\" {\n    image \"base\"\n    command \"/bin/true\"\n}\n",
        )?;
        let mut result = Ok(());
        for (label, file, sandbox) in [
            ("quickstart example", example, "hello"),
            (
                "solo layout (workspace bind, tmpfs, Landlock)",
                solo,
                "agent",
            ),
        ] {
            println!("{label}:");
            result = result.and_then(|()| bench_file(&warden, &file, sandbox, &dir, &state, runs));
        }
        result
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `warden run FILE -- /bin/true` against crun and runc on the bundle `warden build`
/// makes from `file` for `sandbox`.
fn bench_file(
    warden: &Path,
    file: &Path,
    sandbox: &str,
    dir: &Path,
    state: &Path,
    runs: usize,
) -> anyhow::Result<()> {
    let cache = dir.join("cache");
    let out_dir = dir.join("out").join(sandbox);
    let out = Command::new(warden)
        .arg("build")
        .arg(file)
        .arg("--out")
        .arg(&out_dir)
        .env("WARDEN_CACHE_DIR", &cache)
        .output()?;
    if !out.status.success() {
        bail!(
            "warden build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bundle = out_dir.join("bundles").join(sandbox);
    let config = bundle.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&config)?)?;
    v["process"]["args"] = serde_json::json!(["/.warden/init", "--", "/bin/true"]);
    std::fs::write(&config, serde_json::to_vec_pretty(&v)?)?;
    let cmd = format!("{} run {} -- /bin/true", warden.display(), file.display());
    let env = [
        ("WARDEN_CACHE_DIR", cache.display().to_string()),
        ("WARDEN_RUN_DIR", state.join("warden").display().to_string()),
        ("WARDEN_STATE_DIR", dir.join("state").display().to_string()),
    ];
    measure(&bundle, state, &cmd, runs, &env)
}

fn measure(
    bundle: &Path,
    state: &Path,
    warden_cmd: &str,
    runs: usize,
    env: &[(&str, String)],
) -> anyhow::Result<()> {
    let warden_state = state.join("warden").display().to_string();
    let words: Vec<String> = warden_cmd
        .split_whitespace()
        .map(|w| {
            w.replace("{bundle}", &bundle.display().to_string())
                .replace("{state}", &warden_state)
        })
        .collect();
    let (program, rest) = words.split_first().context("--warden-cmd is empty")?;
    let (program, rest) = (program.clone(), rest.to_vec());
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut runtimes = vec![Runtime {
        name: "warden",
        command: Box::new(move |_| {
            let mut c = Command::new(&program);
            c.args(&rest).envs(env.iter().map(|(k, v)| (k, v)));
            c
        }),
        times: Vec::new(),
    }];
    let pid = std::process::id();
    let b = bundle.to_path_buf();
    let crun_root = state.join("crun");
    if which("crun") {
        runtimes.push(Runtime {
            name: "crun",
            command: Box::new(move |i| {
                let mut c = Command::new("crun");
                c.arg("--root")
                    .arg(&crun_root)
                    .arg("run")
                    .arg("--bundle")
                    .arg(&b)
                    .arg(format!("bench-crun-{pid}-{i}"));
                // SAFETY: only async-signal-safe syscalls between fork and exec.
                unsafe { c.pre_exec(hide_cgroup2) };
                c
            }),
            times: Vec::new(),
        });
    }
    let b = bundle.to_path_buf();
    let runc_root = state.join("runc");
    if which("runc") {
        runtimes.push(Runtime {
            name: "runc",
            command: Box::new(move |i| {
                let mut c = Command::new("runc");
                c.arg("--root")
                    .arg(&runc_root)
                    .arg("run")
                    .arg("--bundle")
                    .arg(&b)
                    .arg(format!("bench-runc-{pid}-{i}"));
                c
            }),
            times: Vec::new(),
        });
    }

    // One warm-up round, then interleaved rounds, rotating who goes first.
    for i in 0..=runs {
        for k in 0..runtimes.len() {
            let idx = (i + k) % runtimes.len();
            let rt = &mut runtimes[idx];
            // Each run starts from a settled kernel: a runtime that moves a process into a
            // cgroup within one RCU grace period (milliseconds) of the previous run's last
            // move skips the grace period every first move otherwise waits for, so
            // back-to-back runs would charge part of one runtime's time to the next.
            std::thread::sleep(SETTLE);
            let mut cmd = (rt.command)(i);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let t0 = Instant::now();
            let out = cmd.output().with_context(|| format!("run {}", rt.name))?;
            let took = t0.elapsed();
            if !out.status.success() {
                bail!(
                    "{} failed ({}): {}",
                    rt.name,
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            if i > 0 {
                rt.times.push(took);
            }
        }
    }

    println!(
        "bench run: /bin/true under warden-init in a strict sandbox, {runs} interleaved runs each"
    );
    let warden = median(runtimes[0].times.clone());
    for rt in &runtimes {
        let mut sorted = rt.times.clone();
        sorted.sort();
        let med = median(rt.times.clone());
        println!(
            "  {:<7} median {:>7.2} ms   min {:>7.2} ms   max {:>7.2} ms   warden/{} = {:.2}",
            rt.name,
            ms(med),
            ms(sorted[0]),
            ms(sorted[sorted.len() - 1]),
            rt.name,
            warden.as_secs_f64() / med.as_secs_f64()
        );
    }
    println!("  target: warden median < 30 ms and not slower than crun");
    Ok(())
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// In the forked child: a private mount namespace without the cgroup2 hierarchy, so crun
/// sees a pure cgroup v1 host.
fn hide_cgroup2() -> std::io::Result<()> {
    // SAFETY: unshare/mount/umount2 with static C strings; no allocation.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let unified = c"/sys/fs/cgroup/unified";
        // Absent on pure v1 hosts: nothing to hide then.
        libc::umount2(unified.as_ptr(), libc::MNT_DETACH);
    }
    Ok(())
}
