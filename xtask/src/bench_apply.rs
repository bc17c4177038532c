//! Benchmark: `warden apply` of 50 small sandboxes from an empty state, then a no-op
//! `warden plan` on them (median of 10; target under 100 ms), and the resident memory of
//! one idle supervisor (target under 5 MiB). Needs root (containers).

use crate::bench_lang::{median, ms, release_warden};
use anyhow::{Context, bail};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const SANDBOXES: usize = 50;

fn generated(n: usize) -> String {
    let mut s = String::from("image \"base\" {\n    from-host \"/bin/sleep\"\n}\n");
    for i in 0..n {
        // Every fifth one serves an egress proxy (a tokio runtime in its supervisor).
        let egress = if with_egress(i) {
            "    egress {\n        allow \"example.org\" port=443\n    }\n"
        } else {
            ""
        };
        s.push_str(&format!(
            "\nsandbox \"bench-{i}\" {{\n    image \"base\"\n    command \"/bin/sleep\" \"100000\"\n    limits memory=\"32MiB\" pids=8\n{egress}}}\n"
        ));
    }
    s
}

fn with_egress(i: usize) -> bool {
    i.is_multiple_of(5)
}

fn warden(bin: &Path, dir: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env("WARDEN_STATE_DIR", dir.join("state"))
        .env("WARDEN_RUN_DIR", dir.join("run"))
        .env("WARDEN_CACHE_DIR", dir.join("cache"));
    c
}

fn ok(c: &mut Command, what: &str) -> anyhow::Result<Vec<u8>> {
    let out = c.output().with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let bin = release_warden()?;
    let dir = std::env::temp_dir().join(format!("warden-bench-apply-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("warden.kdl");
    std::fs::write(&file, generated(SANDBOXES))?;
    let result = measure(&bin, &dir, &file);
    // Always tear down, even when a measurement failed.
    let _ = warden(&bin, &dir)
        .args(["destroy", "--yes"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(bin: &Path, dir: &Path, file: &Path) -> anyhow::Result<()> {
    // Build the image first so the apply measures supervisors and containers.
    ok(
        warden(bin, dir)
            .args(["build"])
            .arg(file)
            .arg("--out")
            .arg(dir.join("out")),
        "warden build",
    )?;
    let t = Instant::now();
    ok(
        warden(bin, dir).args(["apply", "--yes"]).arg(file),
        "warden apply",
    )?;
    let apply = t.elapsed();
    let mut plans = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let out = ok(warden(bin, dir).arg("plan").arg(file), "warden plan")?;
        plans.push(t.elapsed());
        if !String::from_utf8_lossy(&out).starts_with("No changes.") {
            bail!(
                "the plan after apply is not empty:\n{}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    let plan = median(plans);
    let ps = ok(warden(bin, dir).args(["--json", "ps"]), "warden ps")?;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&ps)?;
    let reporting = rows
        .iter()
        .filter(|r| r["supervisor_rss_bytes"].as_u64().is_some())
        .count();
    if reporting != SANDBOXES {
        bail!("{reporting} of {SANDBOXES} supervisors report their memory");
    }
    let running = rows.iter().filter(|r| r["state"] == "running").count();
    println!(
        "apply: {SANDBOXES} sandboxes from empty: {} ({running} running)",
        ms(apply)
    );
    println!(
        "apply: no-op plan on {SANDBOXES} sandboxes: {} (target < 100 ms: {})",
        ms(plan),
        if plan.as_millis() < 100 {
            "met"
        } else {
            "NOT met"
        }
    );
    let egress_row = |r: &serde_json::Value| {
        r["name"]
            .as_str()
            .and_then(|n| n.strip_prefix("bench-"))
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(with_egress)
    };
    let (with, without): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        rows.iter().partition(|r| egress_row(r));
    let mut met = true;
    for (what, group) in [
        ("without egress", &without),
        ("with an egress proxy", &with),
    ] {
        let m = memory(group);
        met &= m.rss_median < 5.0;
        println!(
            "apply: idle supervisor {what} ({} of them): RSS median {:.2} MiB, max {:.2} MiB; \
             Pss median {:.2} MiB; private median {:.2} MiB",
            group.len(),
            m.rss_median,
            m.rss_max,
            m.pss_median,
            m.private_median
        );
    }
    println!(
        "apply: idle supervisor RSS target < 5 MiB: {}",
        if met { "met" } else { "NOT met" }
    );
    let t = Instant::now();
    ok(
        warden(bin, dir).args(["destroy", "--yes"]).arg(file),
        "warden destroy",
    )?;
    println!(
        "apply: destroy of {SANDBOXES} sandboxes: {}",
        ms(t.elapsed())
    );
    Ok(())
}

/// Memory of a group of supervisors, in MiB. RSS counts clean file pages that every
/// supervisor shares; Pss (shared pages divided among their users) and private memory
/// say what one more supervisor costs.
struct Memory {
    rss_median: f64,
    rss_max: f64,
    pss_median: f64,
    private_median: f64,
}

fn memory(rows: &[&serde_json::Value]) -> Memory {
    let rollup = |pid: u64, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        text.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    let pids: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["supervisor_pid"].as_u64())
        .collect();
    let mut rss: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["supervisor_rss_bytes"].as_u64())
        .collect();
    let mut pss: Vec<u64> = pids.iter().filter_map(|p| rollup(*p, "Pss:")).collect();
    let mut private: Vec<u64> = pids
        .iter()
        .filter_map(|p| Some(rollup(*p, "Private_Clean:")? + rollup(*p, "Private_Dirty:")?))
        .collect();
    let mid = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64 / (1024.0 * 1024.0)
    };
    Memory {
        rss_max: rss.iter().max().copied().unwrap_or(0) as f64 / (1024.0 * 1024.0),
        rss_median: mid(&mut rss),
        pss_median: mid(&mut pss),
        private_median: mid(&mut private),
    }
}
