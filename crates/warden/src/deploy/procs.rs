//! Reading `/proc`: process identity, liveness, and the supervisors that exist.

use std::path::Path;

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field 22 of `/proc/<pid>/stat` (clock ticks after boot).
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

pub fn is_zombie(pid: i32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|s| s == "Z" || s == "X")
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Every live `warden supervise <launch>` process whose launch file lies under
/// `supervisors` (one run directory's supervisors), as `(pid, sandbox name)`.
pub fn supervisors_under(supervisors: &Path) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some(args) = cmdline(pid) else { continue };
        if args.get(1).map(String::as_str) != Some(super::supervisor::SUBCOMMAND) {
            continue;
        }
        let Some(launch) = args.get(2).map(Path::new) else {
            continue;
        };
        let Ok(rel) = launch.strip_prefix(supervisors) else {
            continue;
        };
        let Some(name) = rel.parent().and_then(|p| p.to_str()) else {
            continue;
        };
        if !name.is_empty() && !name.contains('/') && !is_zombie(pid) {
            out.push((pid, name.to_string()));
        }
    }
    out.sort();
    out
}

/// Wait until `pid` is gone (or a zombie) for at most `patience`.
pub fn wait_gone(proc: super::state::Proc, patience: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + patience;
    while proc.alive() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, sig) };
}
