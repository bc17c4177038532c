//! Benchmark: `warden check` (parse, resolve layouts, validate, compile) on the largest
//! example and on a generated file with 1,000 sandboxes. Whole-process wall time of the
//! release binary, median of 20 runs. Target: under 50 ms for the 1,000-sandbox file.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub fn release_warden() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "warden",
            "-p",
            "warden-init",
            "--bins",
        ])
        .status()
        .context("cargo build --release")?;
    if !st.success() {
        bail!("cargo build --release -p warden -p warden-init failed");
    }
    Ok(target_dir().join("release/warden"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo writes build output: `CARGO_TARGET_DIR` (a relative one is relative to
/// the working directory, as cargo reads it), else the workspace's `target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        _ => workspace().join("target"),
    }
}

/// The value after `name` in `args` (`--runs 7`).
pub fn arg_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn generated(n: usize) -> String {
    let mut s =
        String::from("layout \"strict\"\n\nimage \"base\" {\n    from-host \"/bin/sh\"\n}\n");
    for i in 0..n {
        s.push_str(&format!(
            "\nsandbox \"agent-{i}\" {{\n    image \"base\"\n    command \"/bin/sh\" \"-c\" \"echo {i}\"\n    limits memory=\"512MiB\" pids=128 cpus=0.5\n    egress {{\n        allow \"api-{i}.example.com\" port=443 reason=\"its api\"\n        http \"mirror-{i}.example.com\" methods=\"GET\" paths=\"/simple/**\"\n        test \"https://api-{i}.example.com/\" expect=\"allow\"\n        test \"http://169.254.169.254/\" expect=\"deny\"\n    }}\n}}\n"
        ));
    }
    s
}

fn time_check(warden: &Path, file: &Path, runs: usize) -> anyhow::Result<Duration> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(warden).arg("check").arg(file).output()?;
        v.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "warden check {} failed: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(median(v))
}

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let warden = release_warden()?;
    let mut examples: Vec<PathBuf> = std::fs::read_dir(workspace().join("examples"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
        .collect();
    examples.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let largest = examples.last().context("no examples")?;
    let dir = std::env::temp_dir().join(format!("warden-bench-lang-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let big = dir.join("1000.kdl");
    std::fs::write(&big, generated(1000))?;
    // The floor: starting the same binary to print its version.
    let mut floor = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        Command::new(&warden).arg("--version").output()?;
        floor.push(t.elapsed());
    }
    let floor = median(floor);
    let a = time_check(&warden, largest, 20)?;
    let b = time_check(&warden, &big, 20)?;
    println!("lang: check+compile, whole process, median of 20");
    println!("  warden --version (process floor)      {}", ms(floor));
    println!(
        "  {:<38} {}",
        format!(
            "{} ({} B)",
            largest.file_name().unwrap_or_default().to_string_lossy(),
            std::fs::metadata(largest)?.len()
        ),
        ms(a)
    );
    println!(
        "  {:<38} {}  (target < 50 ms: {})",
        format!("1,000 sandboxes ({} B)", std::fs::metadata(&big)?.len()),
        ms(b),
        if b < Duration::from_millis(50) {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
