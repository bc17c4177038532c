//! Mount points in a bundle's root filesystem: every mount of the bundle's config needs a
//! directory (or, for a bind of a file, a file) at its destination, and the sandbox's own
//! root cannot make them (the tree belongs to the host's root). They are made when the
//! bundle is unpacked, in the bundle only: the image, its layers and its digests never
//! change because of a sandbox's mounts.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::ImageError;

/// One mount of the bundle's config, as far as its mount point is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Absolute path inside the sandbox.
    pub destination: String,
    /// The host path of a bind mount; `None` for every other kind.
    pub bind_source: Option<PathBuf>,
    /// A tenant volume: its directory is made when the sandbox starts.
    pub volume: bool,
}

/// The mounts of a bundle config (`config.json` text).
pub fn mount_points(config_json: &str) -> Result<Vec<MountPoint>, String> {
    let v: serde_json::Value =
        serde_json::from_str(config_json).map_err(|e| format!("invalid config: {e}"))?;
    let Some(mounts) = v.get("mounts").and_then(|m| m.as_array()) else {
        return Ok(Vec::new());
    };
    // Tenant volumes: made by warden when the sandbox starts.
    let volumes: Vec<&str> = v
        .get("annotations")
        .and_then(|a| a.as_object())
        .map(|a| {
            a.keys()
                .filter_map(|k| k.strip_prefix(warden_wire::sandbox::VOLUME_ANNOTATION))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let Some(destination) = m.get("destination").and_then(|d| d.as_str()) else {
            return Err("a mount has no `destination`".into());
        };
        let is_bind = m.get("type").and_then(|t| t.as_str()) == Some("bind")
            || m.get("options")
                .and_then(|o| o.as_array())
                .is_some_and(|o| {
                    o.iter()
                        .any(|o| matches!(o.as_str(), Some("bind" | "rbind")))
                });
        let bind_source = is_bind
            .then(|| m.get("source").and_then(|s| s.as_str()))
            .flatten();
        out.push(MountPoint {
            destination: destination.to_string(),
            bind_source: bind_source.map(PathBuf::from),
            volume: bind_source.is_some_and(|s| volumes.contains(&s)),
        });
    }
    Ok(out)
}

/// The working directory of a bundle config (`process.cwd`), which must exist in the
/// root filesystem too: libcontainer changes into it.
pub fn working_dir(config_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    v.pointer("/process/cwd")
        .and_then(|c| c.as_str())
        .map(str::to_string)
}

/// Whether `path` lies strictly below `dir` (both absolute, normalized).
pub fn is_below(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path.len() > dir.len() + 1 && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// Checks every bind source exists and makes the mount points of `mounts` in `rootfs` that
/// do not lie below another mount (those are made in the mount above them when the
/// sandbox starts). Directories are `0755`, files `0644`, owned by the caller (the
/// host's root, which the sandbox sees as its own root). A symlink on the way is refused:
/// a mount point must be where the file says, not where the image points.
pub fn make_mount_points(
    rootfs: &Path,
    mounts: &[MountPoint],
    working_dir: Option<&str>,
) -> Result<(), ImageError> {
    // A relative bind source is relative to the bundle, the directory holding `rootfs`.
    let bundle = rootfs.parent().unwrap_or(rootfs);
    let source = |src: &Path| bundle.join(src);
    for m in mounts.iter().filter(|m| !m.volume) {
        if let Some(src) = &m.bind_source
            && fs::symlink_metadata(source(src)).is_err()
        {
            return Err(ImageError::BindSource {
                source_path: src.clone(),
                destination: m.destination.clone(),
            });
        }
    }
    for m in mounts {
        if mounts
            .iter()
            .any(|other| is_below(&m.destination, &other.destination))
        {
            continue;
        }
        let file = match &m.bind_source {
            Some(src) => fs::metadata(source(src))
                .map(|md| !md.is_dir())
                .unwrap_or(false),
            None => false,
        };
        make_one(rootfs, &m.destination, file).map_err(|reason| ImageError::MountTarget {
            target: m.destination.clone(),
            reason,
        })?;
    }
    // The working directory, unless a mount provides it.
    if let Some(cwd) = working_dir
        && !mounts
            .iter()
            .any(|m| m.destination == cwd || is_below(cwd, &m.destination))
    {
        make_one(rootfs, cwd, false).map_err(|reason| ImageError::MountTarget {
            target: cwd.to_string(),
            reason,
        })?;
    }
    Ok(())
}

fn make_one(rootfs: &Path, destination: &str, file: bool) -> Result<(), String> {
    let rel = Path::new(destination);
    if !rel.is_absolute() {
        return Err("not an absolute path".into());
    }
    let comps: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            Component::ParentDir | Component::Prefix(_) => Some(Err(())),
        })
        .collect::<Result<_, ()>>()
        .map_err(|()| "`..` is not allowed in a mount point".to_string())?;
    let Some((last, parents)) = comps.split_last() else {
        // `/` itself: the root is there.
        return Ok(());
    };
    let mut cur = rootfs.to_path_buf();
    let mut shown = PathBuf::from("/");
    for c in parents {
        cur.push(c);
        shown.push(c);
        ensure_dir(&cur, &shown)?;
    }
    cur.push(last);
    shown.push(last);
    if !file {
        return ensure_dir(&cur, &shown);
    }
    match fs::symlink_metadata(&cur) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "`{}` is a symbolic link in the image",
            shown.display()
        )),
        Ok(m) if m.is_dir() => Err(format!(
            "a file is bound there, but the image has a directory at `{}`",
            shown.display()
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&cur)
            .map(|_| ())
            .map_err(|e| format!("cannot create `{}`: {e}", shown.display())),
        Err(e) => Err(format!("cannot inspect `{}`: {e}", shown.display())),
    }
}

fn ensure_dir(path: &Path, shown: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(format!(
            "`{}` is a symbolic link in the image",
            shown.display()
        )),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "`{}` is a file in the image, not a directory",
            shown.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(path)
                .map_err(|e| format!("cannot create `{}`: {e}", shown.display()))?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot set the mode of `{}`: {e}", shown.display()))
        }
        Err(e) => Err(format!("cannot inspect `{}`: {e}", shown.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(dest: &str, src: Option<&Path>) -> MountPoint {
        MountPoint {
            destination: dest.into(),
            bind_source: src.map(Path::to_path_buf),
            volume: false,
        }
    }

    #[test]
    fn makes_dirs_and_files_but_not_below_other_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        let host_file = dir.path().join("f.txt");
        fs::write(&host_file, "x").unwrap();
        let host_dir = dir.path().join("ws");
        fs::create_dir(&host_dir).unwrap();
        let mounts = [
            mp("/sandbox", None),
            mp("/sandbox/data", Some(&host_dir)),
            mp("/work/space", Some(&host_dir)),
            mp("/etc/conf.txt", Some(&host_file)),
        ];
        make_mount_points(&root, &mounts, Some("/")).unwrap();
        make_mount_points(&root, &[], Some("/home/agent")).unwrap();
        assert!(root.join("home/agent").is_dir());
        assert!(root.join("sandbox").is_dir());
        assert!(!root.join("sandbox/data").exists());
        assert!(root.join("work/space").is_dir());
        assert!(root.join("etc/conf.txt").is_file());
        let mode = fs::metadata(root.join("work"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn refuses_symlinks_files_in_the_way_and_missing_sources() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        fs::write(root.join("plain"), "").unwrap();
        let e = make_mount_points(&root, &[mp("/escape/x", None)], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot make the mount point `/escape/x` in the sandbox's root: `/escape` is a symbolic link in the image"
        );
        let e = make_mount_points(&root, &[mp("/plain/x", None)], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot make the mount point `/plain/x` in the sandbox's root: `/plain` is a file in the image, not a directory"
        );
        let missing = dir.path().join("nope");
        let e = make_mount_points(&root, &[mp("/w", Some(&missing))], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the bind source `{}` (for `/w`) does not exist on the host",
                missing.display()
            )
        );
        assert!(!root.join("w").exists());
    }

    #[test]
    fn reads_mounts_from_a_config() {
        let c = r#"{"mounts":[{"destination":"/proc","type":"proc","source":"proc"},
            {"destination":"/w","type":"bind","source":"/h","options":["rbind","rw"]}]}"#;
        assert_eq!(
            mount_points(c).unwrap(),
            vec![mp("/proc", None), mp("/w", Some(Path::new("/h")))]
        );
        assert!(is_below("/a/b", "/a"));
        assert!(!is_below("/ab", "/a"));
        assert!(!is_below("/a", "/a"));
        assert!(is_below("/a", "/"));
    }
}
