//! Reproducibility across build directory, time, umask, creation order and hardlinks.
//!
//! A test binary of its own: it changes the process umask, which would race with the
//! tests of the `it` binary that run on other threads.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use warden_image::{BuildContext, build_image};
use warden_wire::image::{ImagePlan, Source};

fn minimal_elf() -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16] = 2;
    b[18] = 62;
    b[20] = 1;
    b[52] = 64;
    b[54] = 56;
    b
}

const FILES: &[(&str, &str, u32)] = &[
    ("a.txt", "same content\n", 0o644),
    ("b/c.sh", "#!/bin/sh\n", 0o755),
    ("b/d.txt", "same content\n", 0o600),
    ("e/f/g.txt", "g\n", 0o644),
];

/// Create the source tree in `order`; with `hardlinks`, `b/d.txt` is a hardlink to
/// `a.txt` (same content) and gets its mode through the shared inode at the end.
fn tree(root: &Path, reverse: bool, hardlinks: bool) {
    let mut files: Vec<_> = FILES.to_vec();
    if reverse {
        files.reverse();
    }
    for (path, content, mode) in &files {
        let p = root.join("tree").join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if hardlinks && *path == "b/d.txt" {
            continue;
        }
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    if hardlinks {
        // A hardlinked pair must still become two regular files; modes differ per
        // path, so give the link its own content copy's mode via a second pair instead.
        let a = root.join("tree/a.txt");
        let extra = root.join("tree/a-link.txt");
        fs::hard_link(&a, &extra).unwrap();
        fs::write(root.join("tree/b/d.txt"), "same content\n").unwrap();
        fs::set_permissions(root.join("tree/b/d.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    } else {
        fs::write(root.join("tree/a-link.txt"), "same content\n").unwrap();
        fs::set_permissions(
            root.join("tree/a-link.txt"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    symlink("../a.txt", root.join("tree/b/link")).unwrap();
    for d in ["tree", "tree/b", "tree/e", "tree/e/f"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(root.join("init"), minimal_elf()).unwrap();
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
}

fn plan() -> ImagePlan {
    ImagePlan {
        version: 1,
        name: "repro".into(),
        sources: vec![
            Source::FromHost {
                paths: vec!["/bin/sh".into()],
                with_libs: vec![],
            },
            Source::Copy {
                src: "tree".into(),
                to: "/opt/tree".into(),
                uid: 1000,
                gid: 1000,
                mode: None,
            },
        ],
        env: vec![("A".into(), "1".into())],
        workdir: None,
    }
}

fn ctx(root: &Path) -> BuildContext {
    BuildContext {
        base_dir: root.to_path_buf(),
        init_binary: root.join("init"),
        cache_dir: root.join("cache"),
        source_date_epoch: 1_600_000_000,
        nix_store: None,
    }
}

fn build(root: &Path, umask: u32) -> (String, Vec<(PathBuf, Vec<u8>)>) {
    // SAFETY: umask only swaps the process file-creation mask; this binary runs one test.
    let old = unsafe { libc::umask(umask as libc::mode_t) };
    let built = build_image(&plan(), &ctx(root), &|_| {});
    unsafe { libc::umask(old) };
    let built = built.unwrap();
    let mut blobs: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(built.layout_dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (PathBuf::from(p.file_name().unwrap()), fs::read(&p).unwrap())
        })
        .collect();
    blobs.push((
        "index.json".into(),
        fs::read(built.layout_dir.join("index.json")).unwrap(),
    ));
    blobs.sort();
    (built.manifest_digest, blobs)
}

#[test]
fn same_inputs_same_bytes() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::Builder::new()
        .prefix("elsewhere-")
        .tempdir()
        .unwrap();
    // SAFETY: as above.
    let old = unsafe { libc::umask(0o022) };
    tree(one.path(), false, false);
    unsafe { libc::umask(0o077) };
    std::thread::sleep(std::time::Duration::from_millis(1100));
    tree(two.path(), true, true);
    unsafe { libc::umask(old) };

    let (d1, b1) = build(one.path(), 0o022);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (d2, b2) = build(two.path(), 0o077);
    assert_eq!(d1, d2);
    assert_eq!(b1.len(), b2.len());
    for ((n1, c1), (n2, c2)) in b1.iter().zip(&b2) {
        assert_eq!(n1, n2);
        assert!(c1 == c2, "{} differs", n1.display());
    }

    // The test can fail: a one-byte change changes the digest.
    fs::write(two.path().join("tree/e/f/g.txt"), "G\n").unwrap();
    let (d3, _) = build(two.path(), 0o022);
    assert_ne!(d3, d1);
}
