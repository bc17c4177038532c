//! Shared helpers: plans, contexts, source trees, commands.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use warden_image::BuildContext;
use warden_wire::image::{ImagePlan, Source};

/// The smallest ELF file the builder accepts as an init binary: a 64-bit x86-64 header
/// with no segments. Host-independent, so golden digests do not depend on this machine.
pub fn minimal_elf() -> Vec<u8> {
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

pub fn write(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A work area: base dir, cache dir and a test-made init binary.
pub struct Area {
    pub tmp: tempfile::TempDir,
}

impl Area {
    pub fn new() -> Area {
        let tmp = tempfile::tempdir().unwrap();
        write(&tmp.path().join("init"), &minimal_elf(), 0o755);
        mkdir(&tmp.path().join("src"), 0o755);
        Area { tmp }
    }
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
    pub fn src(&self) -> PathBuf {
        self.path().join("src")
    }
    pub fn ctx(&self) -> BuildContext {
        BuildContext {
            base_dir: self.src(),
            init_binary: self.path().join("init"),
            cache_dir: self.path().join("cache"),
            source_date_epoch: 0,
            nix_store: None,
        }
    }
}

pub fn plan(name: &str, sources: Vec<Source>) -> ImagePlan {
    ImagePlan {
        version: 1,
        name: name.into(),
        sources,
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        workdir: Some("/sandbox".into()),
    }
}

pub fn copy(src: &str, to: &str, uid: u32) -> Source {
    Source::Copy {
        src: src.into(),
        to: to.into(),
        uid,
        gid: uid,
        mode: None,
    }
}

pub fn from_host(paths: &[&str], with_libs: &[&str]) -> Source {
    Source::FromHost {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        with_libs: with_libs.iter().map(|s| s.to_string()).collect(),
    }
}

/// Run a tool the tests rely on; a missing tool fails with the Debian package to install.
pub fn tool(program: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not installed: this test needs the Debian package `{package}` (apt-get install -y {package})"
    );
    Command::new(program)
}

pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Entries of an uncompressed layer as `type mode uid:gid path [-> target | size]`.
pub fn listing(layer: &Path) -> Vec<String> {
    let f = fs::File::open(layer).unwrap();
    let mut a = tar::Archive::new(f);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => "d",
                tar::EntryType::Symlink => "l",
                tar::EntryType::Regular => "f",
                other => panic!("unexpected entry type {other:?}"),
            };
            let mut s = format!(
                "{kind} {:04o} {}:{} {}",
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                String::from_utf8_lossy(&e.path_bytes())
            );
            if kind == "l" {
                s += &format!(" -> {}", e.link_name().unwrap().unwrap().display());
            } else if kind == "f" {
                s += &format!(" ({} bytes)", h.size().unwrap());
            }
            s
        })
        .collect()
}

pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The manifest of a built layout (single image) and the path of its last layer.
pub fn top_layer(layout: &Path, manifest_digest: &str) -> PathBuf {
    let m = json(&blob(layout, manifest_digest));
    let layers = m["layers"].as_array().unwrap();
    blob(layout, layers.last().unwrap()["digest"].as_str().unwrap())
}

pub fn no_progress(_: warden_image::Progress) {}
