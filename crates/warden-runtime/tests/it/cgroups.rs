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
