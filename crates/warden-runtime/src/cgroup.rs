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

/// How long a priming keeps paying off: about one grace period on a slow machine.
const PRIME_FRESH: Duration = Duration::from_millis(20);

/// Starts, on a short-lived thread, the kernel work the next container creation of this
/// process would otherwise wait for, and returns at once.
///
/// Moving a process into a cgroup (what libcontainer does once per hierarchy before the
/// container's init exists) takes the kernel's cgroup attach lock for writing. Unless the
/// hierarchies are mounted with `favordynmods`, the first writer after a quiet spell waits
/// for an RCU grace period (measured on the 2-core dev VM: 7-16 ms, a quarter of a whole
/// run); writers within about one grace period of the last one do not wait. The thread
/// moves itself into the cgroup it is already in, which changes nothing but starts that
/// grace period early, so it overlaps with reading, compiling and preparing the run
/// instead of delaying the container. Only the thread is named in the move (a `tasks` /
/// `cgroup.threads` write, not `cgroup.procs`), so a process moved by someone else in the
/// meantime stays where it was put. Any failure is ignored: this is only about speed.
///
/// [`crate::run_foreground`] calls it too; a call within [`PRIME_FRESH`] of the previous
/// one does nothing, so a caller that primes early (before reading its files) does not
/// pay for a second thread.
pub fn prime_attach() {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < PRIME_FRESH) {
            return;
        }
        *last = Some(Instant::now());
    }
    let _ = crate::spawn_elsewhere("warden-cgprime", || {
        let _ = attach_self_in_place();
    });
}

fn attach_self_in_place() -> io::Result<()> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let own = fs::read_to_string("/proc/thread-self/cgroup")?;
    let file = own_thread_file(&mountinfo, &own)
        .ok_or_else(|| io::Error::other("no cgroup hierarchy to prime"))?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let mut f = fs::OpenOptions::new().write(true).open(file)?;
    io::Write::write_all(&mut f, tid.to_string().as_bytes())
}

/// The file that moves one thread into the cgroup the calling thread is in: `tasks` of
/// the first v1 hierarchy found, else `cgroup.threads` of the v2 one. `own` is
/// `/proc/thread-self/cgroup`.
fn own_thread_file(mountinfo: &str, own: &str) -> Option<PathBuf> {
    let mut v2 = None;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = cgroup_mounts(mountinfo).find(|m| {
            if controllers.is_empty() {
                m.fstype == "cgroup2"
            } else {
                m.fstype == "cgroup"
                    && controllers
                        .split(',')
                        .all(|c| m.super_options.split(',').any(|o| o == c))
            }
        });
        let Some(m) = mount else {
            continue;
        };
        // A mount of a subtree (`root` other than `/`) shows paths relative to it.
        let rel = if m.root == "/" {
            path
        } else {
            match path.strip_prefix(m.root.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
                _ => continue,
            }
        };
        let Some(dir) = in_hierarchy_or_root(Path::new(&m.mount_point), Path::new(rel)) else {
            continue;
        };
        if controllers.is_empty() {
            v2.get_or_insert(dir.join("cgroup.threads"));
        } else {
            return Some(dir.join("tasks"));
        }
    }
    v2
}

struct CgroupMount {
    root: String,
    mount_point: String,
    fstype: String,
    super_options: String,
}

fn cgroup_mounts(mountinfo: &str) -> impl Iterator<Item = CgroupMount> + '_ {
    mountinfo.lines().filter_map(|line| {
        // "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - <fstype>
        // <source> <super options>"
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        if fstype != "cgroup" && fstype != "cgroup2" {
            return None;
        }
        let super_options = right.nth(1).unwrap_or_default();
        let mut left = left.split(' ');
        let root = left.nth(3)?;
        let mount_point = left.next()?;
        Some(CgroupMount {
            root: unescape_octal(root),
            mount_point: unescape_octal(mount_point),
            fstype: fstype.to_string(),
            super_options: super_options.to_string(),
        })
    })
}

/// Like `in_hierarchy`, but the hierarchy's root itself is a valid answer.
fn in_hierarchy_or_root(mount: &Path, cgroup_path: &Path) -> Option<PathBuf> {
    if cgroup_path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::CurDir))
    {
        return Some(mount.to_path_buf());
    }
    in_hierarchy(mount, cgroup_path)
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
    // Not `leftover_cgroups`: `remove_tree` tells a missing directory itself, one syscall
    // per hierarchy for a run that ended cleanly.
    for dir in hierarchies()
        .iter()
        .filter_map(|m| in_hierarchy(m, cgroup_path))
    {
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
    // The common case first: an empty leaf (or none at all). The kernel refuses a cgroup
    // with members or children with EBUSY; those take the walk below.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOTEMPTY)) => {}
        Err(e) => return Err(e),
    }
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
    // Members still exiting usually go within microseconds: poll finely at first.
    let mut delay = Duration::from_micros(100);
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
    fn primes_through_the_own_cgroup_of_a_v1_hierarchy_first() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        let own = "4:memory:/a/b\n2:cpu,cpuacct:/\n1:name=systemd:/user.slice\n0::/x\n";
        assert_eq!(
            own_thread_file(mountinfo, own),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b/tasks"))
        );
        assert_eq!(
            own_thread_file(mountinfo, "0::/x\n2:cpu,cpuacct:/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/tasks"))
        );
        // Pure v2.
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            own_thread_file(v2, "0::/user.slice/s.scope\n"),
            Some(PathBuf::from(
                "/sys/fs/cgroup/user.slice/s.scope/cgroup.threads"
            ))
        );
        assert_eq!(
            own_thread_file(v2, "0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/cgroup.threads"))
        );
        // A mount of a subtree the thread is not under, a path leaving the hierarchy,
        // no cgroup mounts at all: nothing to prime.
        let sub = "30 23 0:26 /lxc/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(own_thread_file(sub, "0::/other\n"), None);
        assert_eq!(
            own_thread_file(sub, "0::/lxc/c1/x\n"),
            Some(PathBuf::from("/sys/fs/cgroup/x/cgroup.threads"))
        );
        assert_eq!(own_thread_file(v2, "0::/../etc\n"), None);
        assert_eq!(own_thread_file("", "0::/\n"), None);
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
