//! `from-host`: ELF closures from this machine, run in a real container.

use std::fs;
use std::path::Path;
use std::process::Command;

use warden_image::{build_image, unpack_bundle};

use crate::support::*;

/// A minimal strict config: read-only root, new pid/mount/ipc/uts/network namespaces.
fn config(args: &[&str]) -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "warden-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "mount" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "network" }
            ]
        }
    })
    .to_string()
}

/// `crun run` the bundle. crun 1.8 refuses a cgroup v1/v2 hybrid host unless it sees only
/// the v1 hierarchies, so it runs in a private mount namespace without `unified`.
fn crun(bundle: &Path, id: &str) -> String {
    tool("crun", "crun");
    let script = format!(
        "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun run --bundle '{}' '{id}'",
        bundle.display()
    );
    ok(
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .output()
            .unwrap(),
        "crun run",
    )
}

#[test]
fn python_from_host_runs_under_crun() {
    let area = Area::new();
    let p = plan(
        "python",
        vec![from_host(&["/usr/bin/python3"], &["/usr/lib/python3.11"])],
    );
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    let bundle = area.path().join("bundle");
    unpack_bundle(
        &built.layout_dir,
        &built.tag,
        &config(&["/usr/bin/python3", "-c", "print(1)"]),
        &[],
        &bundle,
    )
    .unwrap();
    let root = bundle.join("rootfs");
    // The symlink chain is kept as symlinks, usrmerge parents included.
    assert_eq!(
        fs::read_link(root.join("usr/bin/python3"))
            .unwrap()
            .to_str(),
        Some("python3.11")
    );
    assert_eq!(
        fs::read_link(root.join("lib")).unwrap().to_str(),
        Some("usr/lib")
    );
    assert!(root.join("usr/lib/x86_64-linux-gnu/libc.so.6").is_file());
    assert!(root.join("lib64/ld-linux-x86-64.so.2").exists());
    assert!(root.join("usr/lib/python3.11/os.py").is_file());
    let id = format!("warden-image-test-{}", std::process::id());
    assert_eq!(crun(&bundle, &id), "1\n");
}

#[test]
fn static_busybox_needs_no_libraries() {
    tool("busybox", "busybox-static");
    let area = Area::new();
    let p = plan("busybox", vec![from_host(&["/bin/busybox"], &[])]);
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    let entries = listing(&top_layer(&built.layout_dir, &built.manifest_digest));
    let size = fs::metadata("/usr/bin/busybox").unwrap().len();
    let busybox: Vec<_> = entries
        .iter()
        .filter(|e| e.contains("bin"))
        .cloned()
        .collect();
    assert_eq!(
        busybox,
        [
            "l 0777 0:0 bin -> usr/bin".to_string(),
            "d 0755 0:0 usr/bin/".to_string(),
            format!("f 0755 0:0 usr/bin/busybox ({size} bytes)"),
        ]
    );
    assert!(!entries.iter().any(|e| e.contains("lib")), "{entries:#?}");

    let bundle = area.path().join("bundle");
    unpack_bundle(
        &built.layout_dir,
        &built.tag,
        &config(&["/bin/busybox", "echo", "hi"]),
        &[],
        &bundle,
    )
    .unwrap();
    let id = format!("warden-image-bb-{}", std::process::id());
    assert_eq!(crun(&bundle, &id), "hi\n");
}

#[test]
fn quickstart_shell_and_coreutils() {
    let area = Area::new();
    let p = plan(
        "quickstart",
        vec![from_host(
            &["/bin/sh", "/bin/ls", "/bin/cat", "/bin/echo"],
            &[],
        )],
    );
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    let bundle = area.path().join("bundle");
    unpack_bundle(
        &built.layout_dir,
        &built.tag,
        &config(&["/bin/sh", "-c", "echo hi; ls /etc"]),
        &[],
        &bundle,
    )
    .unwrap();
    let out = Command::new("chroot")
        .arg(bundle.join("rootfs"))
        .args(["/bin/sh", "-c", "echo hi | cat; ls /etc"])
        .output()
        .unwrap();
    assert_eq!(ok(out, "chroot"), "hi\ngroup\npasswd\n");
}
