//! Applying layers: to a directory (the bundle's rootfs) or to a set of paths (what a
//! base image contains). Whiteouts are honoured; digests are checked while reading; no
//! entry may leave the root, even through a symlink an earlier entry planted.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::layout::{HashingReader, LayerRef, blob_path, hex};
use crate::tree::components;

const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const MAX_LINKS: usize = 40;

/// One tar entry, reduced to what the appliers need.
pub(crate) enum Item<'a> {
    Dir {
        mode: u32,
        ids: (u64, u64),
    },
    File {
        mode: u32,
        ids: (u64, u64),
        data: &'a mut dyn Read,
    },
    Symlink {
        target: PathBuf,
        ids: (u64, u64),
    },
    Hardlink {
        target: Vec<Vec<u8>>,
    },
    Whiteout,
    Opaque,
    Other,
}

/// Called with each entry's path components and what it is.
pub(crate) type EntryFn<'f> = dyn FnMut(&[Vec<u8>], Item<'_>) -> Result<(), ImageError> + 'f;

fn layer_err(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::BrokenLayer {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Stream the entries of one layer blob to `f` (path components, item), then check the
/// blob's digest. A truncated or corrupt layer is an error.
pub(crate) fn for_each_entry(
    layout: &Path,
    layer: &LayerRef,
    f: &mut EntryFn<'_>,
) -> Result<(), ImageError> {
    let path = blob_path(layout, &layer.digest)?;
    let file = fs::File::open(&path).map_err(|e| layer_err(&path, format!("cannot open: {e}")))?;
    let mut hashing = HashingReader {
        inner: io::BufReader::new(file),
        hasher: Sha256::new(),
    };
    {
        let reader: Box<dyn Read + '_> = if layer.gzip() {
            Box::new(flate2::read::GzDecoder::new(&mut hashing))
        } else {
            Box::new(&mut hashing)
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .map_err(|e| layer_err(&path, e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| layer_err(&path, e.to_string()))?;
            let raw = entry.path_bytes().into_owned();
            if raw.split(|&b| b == b'/').any(|c| c == b"..") {
                return Err(layer_err(
                    &path,
                    format!("entry `{}` leaves the root", String::from_utf8_lossy(&raw)),
                ));
            }
            let comps = components(&raw);
            let Some(name) = comps.last().cloned() else {
                continue; // the root directory itself
            };
            let h = entry.header();
            let mode = h.mode().unwrap_or(0o644) & 0o7777;
            let ids = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
            let kind = h.entry_type();
            if name == WH_OPAQUE {
                f(&comps[..comps.len() - 1], Item::Opaque)?;
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WH_PREFIX) {
                let mut target = comps[..comps.len() - 1].to_vec();
                target.push(hidden.to_vec());
                f(&target, Item::Whiteout)?;
                continue;
            }
            let item = if kind.is_dir() {
                Item::Dir { mode, ids }
            } else if kind.is_symlink() {
                let target = entry
                    .link_name()
                    .map_err(|e| layer_err(&path, e.to_string()))?
                    .ok_or_else(|| layer_err(&path, "symlink without target"))?
                    .into_owned();
                Item::Symlink { target, ids }
            } else if kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| layer_err(&path, "hardlink without target"))?;
                if target.split(|&b| b == b'/').any(|c| c == b"..") {
                    return Err(layer_err(&path, "hardlink target leaves the root"));
                }
                Item::Hardlink {
                    target: components(&target),
                }
            } else if kind.is_file() || kind.is_contiguous() {
                f(
                    &comps,
                    Item::File {
                        mode,
                        ids,
                        data: &mut entry,
                    },
                )?;
                continue;
            } else {
                Item::Other
            };
            f(&comps, item)?;
        }
        // Drain trailing padding so that the digest covers the whole blob.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| layer_err(&path, e.to_string()))?;
    }
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| layer_err(&path, e.to_string()))?;
    let got = format!("sha256:{}", hex(&hashing.hasher.finalize()));
    if got != layer.digest {
        return Err(layer_err(
            &path,
            format!("digest is {got}, expected {}", layer.digest),
        ));
    }
    Ok(())
}

/// The set of paths a stack of layers leaves behind (for "does the base have
/// `/etc/passwd`?").
pub(crate) fn layer_paths(
    layout: &Path,
    layers: &[LayerRef],
) -> Result<BTreeSet<Vec<Vec<u8>>>, ImageError> {
    let mut set: BTreeSet<Vec<Vec<u8>>> = BTreeSet::new();
    for layer in layers {
        let mut this_layer: HashSet<Vec<Vec<u8>>> = HashSet::new();
        for_each_entry(layout, layer, &mut |comps, item| {
            match item {
                Item::Whiteout => {
                    let gone: Vec<_> = set
                        .iter()
                        .filter(|p| p.starts_with(comps))
                        .cloned()
                        .collect();
                    for g in gone {
                        set.remove(&g);
                    }
                }
                Item::Opaque => {
                    let gone: Vec<_> = set
                        .iter()
                        .filter(|p| {
                            p.len() > comps.len()
                                && p.starts_with(comps)
                                && !this_layer.contains(*p)
                        })
                        .cloned()
                        .collect();
                    for g in gone {
                        set.remove(&g);
                    }
                }
                _ => {
                    for i in 1..=comps.len() {
                        set.insert(comps[..i].to_vec());
                    }
                    this_layer.insert(comps.to_vec());
                }
            }
            Ok(())
        })?;
    }
    Ok(set)
}

/// Extracts layers into `root`, which must be a fresh directory.
pub(crate) struct Extractor {
    pub root: PathBuf,
    /// Ownership is applied with `lchown`; when not root that fails and is skipped.
    pub chown: bool,
}

fn os(c: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(c)
}

impl Extractor {
    /// Resolve the parent of `comps` inside the root (symlinks followed, clamped at the
    /// root) and return (real parent dir, final name). Missing parents are created as
    /// `0755` directories with `create`, else the result is `None`.
    fn place(&self, comps: &[Vec<u8>], create: bool) -> Result<Option<(PathBuf, Vec<u8>)>, String> {
        let Some((last, parents)) = comps.split_last() else {
            return Err("empty path".into());
        };
        let mut pending: Vec<Vec<u8>> = parents.iter().rev().cloned().collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            if c == b".." {
                cur.pop();
                continue;
            }
            if c.is_empty() || c == b"." {
                continue;
            }
            let mut p = self.root.clone();
            for x in &cur {
                p.push(os(x));
            }
            p.push(os(&c));
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err("too many levels of symbolic links".into());
                    }
                    let t = fs::read_link(&p).map_err(|e| e.to_string())?;
                    let t = t.as_os_str().as_bytes();
                    if t.starts_with(b"/") {
                        cur.clear();
                    }
                    for part in t.split(|&b| b == b'/').rev() {
                        pending.push(part.to_vec());
                    }
                }
                Ok(m) if m.is_dir() => cur.push(c),
                Ok(_) if !create => return Ok(None),
                Err(_) if !create => return Ok(None),
                found => {
                    if found.is_ok() {
                        // A file where a directory is needed: the layer replaces it.
                        fs::remove_file(&p).map_err(|e| e.to_string())?;
                    }
                    fs::create_dir(&p).map_err(|e| e.to_string())?;
                    fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                        .map_err(|e| e.to_string())?;
                    cur.push(c);
                }
            }
        }
        let mut dir = self.root.clone();
        for x in &cur {
            dir.push(os(x));
        }
        Ok(Some((dir, last.clone())))
    }

    fn owner(&self, p: &Path, ids: (u64, u64)) {
        if self.chown {
            let uid = u32::try_from(ids.0).ok();
            let gid = u32::try_from(ids.1).ok();
            // Not root (a test, a rootless build): ownership is best effort.
            let _ = std::os::unix::fs::lchown(p, uid, gid);
        }
    }

    pub(crate) fn apply(&self, layout: &Path, layer: &LayerRef) -> Result<(), ImageError> {
        let mut this_layer: HashSet<PathBuf> = HashSet::new();
        let blob = blob_path(layout, &layer.digest)?;
        let err = |reason: String| layer_err(&blob, reason);
        for_each_entry(layout, layer, &mut |comps, item| {
            if comps.is_empty() {
                // Only an opaque marker at the top level names the root itself.
                if matches!(item, Item::Opaque) {
                    clear_lower(&self.root, &this_layer).map_err(|e| err(e.to_string()))?;
                }
                return Ok(());
            }
            let create = !matches!(item, Item::Whiteout | Item::Opaque);
            let Some((dir, name)) = self.place(comps, create).map_err(&err)? else {
                return Ok(()); // a whiteout below a directory that does not exist
            };
            let target = dir.join(os(&name));
            let existing = fs::symlink_metadata(&target).ok();
            let remove = |t: &Path| -> Result<(), ImageError> {
                match fs::symlink_metadata(t) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(t),
                    Ok(_) => fs::remove_file(t),
                    Err(_) => Ok(()),
                }
                .map_err(|e| err(format!("cannot remove `{}`: {e}", t.display())))
            };
            match item {
                Item::Whiteout => remove(&target)?,
                Item::Opaque => {
                    // `comps` is the directory itself: clear what lower layers put there.
                    if let Some(m) = &existing
                        && m.is_dir()
                    {
                        clear_lower(&target, &this_layer).map_err(|e| err(e.to_string()))?;
                    }
                }
                Item::Dir { mode, ids } => {
                    if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                        remove(&target)?;
                        fs::create_dir(&target).map_err(|e| {
                            err(format!("cannot create `{}`: {e}", target.display()))
                        })?;
                    }
                    self.owner(&target, ids);
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                        .map_err(|e| err(e.to_string()))?;
                    this_layer.insert(target);
                }
                Item::File { mode, ids, data } => {
                    remove(&target)?;
                    let mut out = fs::File::create(&target)
                        .map_err(|e| err(format!("cannot create `{}`: {e}", target.display())))?;
                    io::copy(data, &mut out).map_err(|e| err(e.to_string()))?;
                    drop(out);
                    self.owner(&target, ids);
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                        .map_err(|e| err(e.to_string()))?;
                    this_layer.insert(target);
                }
                Item::Symlink { target: to, ids } => {
                    remove(&target)?;
                    symlink(&to, &target).map_err(|e| err(e.to_string()))?;
                    self.owner(&target, ids);
                    this_layer.insert(target);
                }
                Item::Hardlink { target: src } => {
                    let (sdir, sname) = self
                        .place(&src, false)
                        .map_err(&err)?
                        .ok_or_else(|| err("hardlink to a missing file".into()))?;
                    let source = sdir.join(os(&sname));
                    remove(&target)?;
                    fs::hard_link(&source, &target).map_err(|e| {
                        err(format!(
                            "cannot link `{}` to `{}`: {e}",
                            target.display(),
                            source.display()
                        ))
                    })?;
                    this_layer.insert(target);
                }
                // Devices and fifos are not created: a runtime provides /dev.
                Item::Other => {}
            }
            Ok(())
        })
    }
}

/// Remove what lower layers left in `dir`, keeping entries this layer already wrote.
fn clear_lower(dir: &Path, keep: &HashSet<PathBuf>) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if keep.contains(&p) {
            if fs::symlink_metadata(&p)?.is_dir() {
                clear_lower(&p, keep)?;
            }
            continue;
        }
        if fs::symlink_metadata(&p)?.is_dir() {
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}
