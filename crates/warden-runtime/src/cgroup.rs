//! Cgroup clean-up that does not trust libcontainer to have removed everything.
//!
//! On a cgroup v1 (or hybrid) host every controller is a hierarchy of its own, and a
//! run's cgroup path exists once per hierarchy. libcontainer's delete removes the
//! directories it knows about and gives up on busy ones after a few retries; whatever is
//! left is removed here, leaf first, in every mounted hierarchy (v1 and v2).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Mount points of every cgroup hierarchy (v1 controllers, named v1 and v2).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    parse_hierarchies(&mountinfo)
}

fn parse_hierarchies(mountinfo: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype> ..."
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mount_point) = left.split(' ').nth(4) {
            out.push(PathBuf::from(unescape_octal(mount_point)));
        }
    }
    out
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/sys/fs/cgroup/memory` + `/warden/x` → `/sys/fs/cgroup/memory/warden/x`; `None` for a
/// path that would leave the hierarchy.
fn in_hierarchy(mount: &Path, cgroup_path: &Path) -> Option<PathBuf> {
    let mut out = mount.to_path_buf();
    for c in cgroup_path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (out != mount).then_some(out)
}

/// The directories of `cgroup_path` that still exist, in any hierarchy. Empty after a
/// clean run; used by the clean-up and by tests.
pub fn leftover_cgroups(cgroup_path: &Path) -> Vec<PathBuf> {
    hierarchies()
        .iter()
        .filter_map(|m| in_hierarchy(m, cgroup_path))
        .filter(|p| p.exists())
        .collect()
}

/// Whether process `pid` is in `cgroup_path` in at least one hierarchy (as this process
/// sees the paths in `/proc/<pid>/cgroup`). Tells a container's init from a process that
/// reused its pid.
pub(crate) fn process_in_cgroup(pid: i32, cgroup_path: &Path) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|text| lists_cgroup(&text, cgroup_path))
}

fn lists_cgroup(proc_cgroup: &str, cgroup_path: &Path) -> bool {
    // "<hierarchy id>:<controllers>:<path>"; the path may itself contain `:`.
    proc_cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|p| Path::new(p) == cgroup_path)
}

/// Removes `cgroup_path` in every hierarchy, children before parents. Cgroups that still
/// hold processes (exiting after their pid namespace's init died) are retried until
/// `patience` runs out; any process still listed then is killed first.
pub(crate) fn remove(cgroup_path: &Path, patience: Duration) -> Result<(), String> {
    let deadline = Instant::now() + patience;
    let mut failures = Vec::new();
    for dir in leftover_cgroups(cgroup_path) {
        if let Err(e) = remove_tree(&dir, deadline) {
            failures.push(format!("`{}`: {e}", dir.display()));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn remove_tree(dir: &Path, deadline: Instant) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path(), deadline)?;
        }
    }
    let mut delay = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                kill_members(dir);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

fn kill_members(dir: &Path) {
    let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        // SAFETY: kill(2) with a pid read from the cgroup; a stale pid just fails.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v1_and_v2_hierarchies_only() {
        let mountinfo = "\
25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw
35 31 0:30 / /sys/fs/cgroup/memory rw shared:14 - cgroup cgroup rw,memory
36 31 0:31 / /sys/fs/cgroup/cpu\\040x rw shared:15 - cgroup cgroup rw,cpu
";
        assert_eq!(
            parse_hierarchies(mountinfo),
            vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/cpu x"),
            ]
        );
    }

    #[test]
    fn membership_is_read_from_any_hierarchy_line() {
        let text = "12:pids:/warden/a-1\n11:memory:/warden/a-1\n0::/user.slice\n";
        assert!(lists_cgroup(text, Path::new("/warden/a-1")));
        assert!(!lists_cgroup(text, Path::new("/warden/a")));
        assert!(!lists_cgroup(text, Path::new("/warden/a-1/sub")));
        assert!(lists_cgroup("0::/x:y\n", Path::new("/x:y")));
        assert!(!lists_cgroup("", Path::new("/warden/a-1")));
    }

    #[test]
    fn cgroup_path_stays_inside_the_hierarchy() {
        let m = Path::new("/sys/fs/cgroup/pids");
        assert_eq!(
            in_hierarchy(m, Path::new("/warden/a-1")),
            Some(PathBuf::from("/sys/fs/cgroup/pids/warden/a-1"))
        );
        assert_eq!(in_hierarchy(m, Path::new("/warden/../..")), None);
        assert_eq!(in_hierarchy(m, Path::new("/")), None);
    }
}
