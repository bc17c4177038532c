//! The patched libcgroups (third_party/libcgroups) finds every cgroup v1 controller where
//! the kernel says it is mounted, reading mountinfo once.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Controller name → mount point, from `/proc/self/mountinfo`'s super options (an
/// independent reading: libcgroups matches on the mount point's name instead).
fn mounted_controllers() -> BTreeMap<String, PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let (left, right) = line.split_once(" - ").expect("mountinfo separator");
        let mut right = right.split(' ');
        if right.next() != Some("cgroup") {
            continue;
        }
        let options = right.nth(1).unwrap_or_default();
        let mount_point = left.split(' ').nth(4).expect("mount point");
        for option in options.split(',') {
            out.insert(option.to_string(), PathBuf::from(mount_point));
        }
    }
    out
}

/// The controllers libcgroups 0.7 manages (`v1::ControllerType`).
const SUPPORTED: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "pids",
    "perf_event",
    "memory",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

#[test]
fn the_cgroup_v1_manager_finds_every_mounted_controller() {
    let mounted = mounted_controllers();
    let found = libcgroups::v1::util::list_supported_mount_points().expect("mount points");
    let found: BTreeMap<String, PathBuf> =
        found.into_iter().map(|(c, p)| (c.to_string(), p)).collect();
    // Every controller libcgroups supports and the kernel has mounted, at that mount.
    let expected: BTreeMap<String, PathBuf> = mounted
        .into_iter()
        .filter(|(name, _)| SUPPORTED.contains(&name.as_str()))
        .collect();
    assert_eq!(found, expected);
    if std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(
            found.get("memory").map(PathBuf::as_path),
            Some(std::path::Path::new("/sys/fs/cgroup/memory"))
        );
    }
}

/// The patched cpuset controller finds its hierarchy's root by `stat` (not mountinfo) and
/// fills a new nested cpuset cgroup's empty `cpuset.cpus` and `cpuset.mems` from its
/// ancestors, as the released crate did: a task added to `/<top>/a/b` can run.
#[test]
fn cpuset_cgroups_nested_below_new_parents_get_the_root_cpus_and_mems() {
    use libcgroups::common::CgroupManager;
    let root = std::path::Path::new("/sys/fs/cgroup/cpuset");
    if !root.join("cpuset.cpus").exists() {
        // Not a cgroup v1 host with cpuset mounted: nothing to check.
        return;
    }
    let top = format!("warden-it-cpuset-{}", std::process::id());
    let rel = PathBuf::from(format!("/{top}/a/b"));
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let manager = libcgroups::v1::manager::Manager::new(&rel).expect("manager");
    let added = manager.add_task(nix::unistd::Pid::from_raw(child.id() as i32));
    let read = |p: &std::path::Path, f: &str| {
        std::fs::read_to_string(p.join(f))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let leaf = root.join(&top).join("a/b");
    let got = (read(&leaf, "cpuset.cpus"), read(&leaf, "cpuset.mems"));
    let _ = child.kill();
    let _ = child.wait();
    let _ = manager.remove();
    // The manager made `/<top>/a/b` in every hierarchy.
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let h = h.path();
        for d in [
            h.join(&top).join("a/b"),
            h.join(&top).join("a"),
            h.join(&top),
        ] {
            let _ = std::fs::remove_dir(d);
        }
    }
    added.expect("add the task");
    let want = (read(root, "cpuset.cpus"), read(root, "cpuset.mems"));
    assert!(!want.0.is_empty() && !want.1.is_empty());
    assert_eq!(got, want);
}
