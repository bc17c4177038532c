//! warden-image: reproducible OCI images and runtime bundles from [`ImagePlan`]s.
//!
//! [`build_image`] turns a plan into a standard OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/`) in a cache directory; [`export_layout`] copies one out
//! (`warden build --out`); [`unpack_bundle`] turns a layout into a runtime bundle
//! (`config.json` + `rootfs/`). The library never prints; progress goes to a callback.
//!
//! # What goes into an image
//!
//! An optional `oci-layout` base (it must be the first source) contributes its layers
//! unchanged, blob for blob. Everything else becomes **one uncompressed layer** on top:
//! `from-host` files with their ELF closure (interpreter and `DT_NEEDED` libraries,
//! resolved through `DT_RPATH`/`DT_RUNPATH` with `$ORIGIN`, the directories of
//! `/etc/ld.so.conf` and the standard multiarch directories; library classes and machines
//! must match), `with-libs` files and directories (recursive; ELF files inside get their
//! closure too; libraries loaded with `dlopen` are the user's to declare), `copy` trees,
//! and Nix store closures (`nix`: `nix-store --query --requisites`; `nix-closure`: an
//! `exportReferencesGraph` file; store paths are copied verbatim, owner 0). Every symlink
//! met on a host path is recreated as a symlink and
//! followed (usrmerge's `/bin -> usr/bin`, `python3 -> python3.11`), so both spellings
//! work in the image. Then: `/.warden/init` (the context's init binary, mode 0755, plus
//! its ELF closure), and, unless the base or the sources already provide them, the mount
//! points `/proc /dev /sys /tmp /etc` (0555/0755/0555/1777/0755), a minimal `/etc/passwd`
//! and `/etc/group` (`root` 0 and `sandbox` 1000, home `/sandbox`).
//!
//! `copy SRC to=DST`: SRC (followed if it is a symlink) lands at DST, or inside DST when
//! DST ends with `/` and SRC is a file; directories are copied recursively with symlinks
//! kept as symlinks; modes are kept, except that `mode=` replaces the mode of every
//! regular file; every entry is owned by the plan's `uid`/`gid`. Relative source paths are
//! relative to [`BuildContext::base_dir`]. The loader's `LD_LIBRARY_PATH`, `glibc-hwcaps`
//! subdirectories and `$LIB`/`$PLATFORM` expansion are not modelled: the baseline
//! library a directory search finds is the one copied.
//!
//! # Determinism rules
//!
//! Same plan and same input bytes give byte-identical layer, config, manifest and index:
//!
//! - the tree is written depth first, children sorted by raw bytes; every parent
//!   directory is an explicit entry (implicit parents are `0755`, owner 0);
//! - every tar header is built here: ustar, with a PAX record only for what ustar cannot
//!   hold (long path or link target, huge uid/gid/size); mtime is `source_date_epoch`;
//!   uid/gid come from the plan (`copy`) or are 0 (host files); uname/gname empty; mode
//!   `& 0o7777`; symlinks `0777`; devices numbers zero; no atime, ctime or xattrs;
//!   hardlinks are stored as separate regular files; no sparse files;
//! - layers are uncompressed (`application/vnd.oci.image.layer.v1.tar`): no compressor
//!   version can change a digest, and it is the fastest to write;
//! - config, manifest and index are compact JSON with keys sorted at every level; the
//!   config's `created` is `source_date_epoch` in RFC 3339; architecture is the build
//!   host's; env is the base's (if any) overridden by the plan's, in order;
//! - nothing depends on the build directory, the time, the umask or listing order.
//!
//! # Cache keying
//!
//! `cache_dir/images/<name>/` holds the layout, `cache_dir/images/<name>.inputs.json`
//! the record of how it was made: a key (SHA-256 of this builder's format version, the
//! plan, the base dir, the init binary path, the epoch, the nix-store command and the
//! host architecture) and the `lstat` fingerprint of every path the build consulted:
//! `(dev, inode, mode, uid, gid, size, mtime ns, ctime ns)`, including directories (an
//! added or removed entry changes their mtime) and library probes that found nothing
//! (a library appearing earlier in the search path is noticed). A warm build re-stats
//! those paths and hashes nothing. Because ctime cannot be set from user space, an edit
//! that restores size and mtime still changes the key. Nix store paths are immutable, so
//! their closure is not re-queried while the store path's fingerprint is unchanged.
//! Files are checked again after they are read, so one that changes during a build fails
//! the build instead of poisoning the cache. (The same trade-off as git's index: an edit
//! that keeps size, mtime and ctime to the nanosecond, and the inode, goes unnoticed.)
//! Layouts are written to a temporary directory beside their final place and renamed
//! in; a crash can leave such a `.<name>.tmp-*` directory behind, never a half layout.

mod elf;
mod error;
mod host;
mod layout;
mod nix;
mod targets;
mod tree;
mod unpack;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use warden_wire::image::{ImagePlan, Source};
use warden_wire::sandbox::BundleFile;

pub use error::ImageError;
pub use layout::export_layout;
pub use nix::parse_closure_file;
pub use targets::{MountPoint, is_below, make_mount_points, mount_points, working_dir};

use host::{HostCopier, Inputs, Owner};
use layout::{
    Hashing, LayerRef, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER, MEDIA_MANIFEST, REF_NAME, blob_path,
    canonical, hex, sha256_digest,
};
use tree::{Content, Kind, Node, TarWriter, Tree};

/// The tag every built layout carries (one image per layout directory).
pub const TAG: &str = "latest";

/// Bumped whenever the bytes this builder writes for the same inputs change.
const FORMAT_VERSION: u32 = 1;

/// Where an image is built and with what.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// Relative source paths in the plan are relative to this directory.
    pub base_dir: PathBuf,
    /// The `warden-init` binary copied to `/.warden/init`.
    pub init_binary: PathBuf,
    /// Holds `images/<name>/` (the layouts) and their input records.
    pub cache_dir: PathBuf,
    /// The mtime of every entry and the config's `created` (the CLI reads
    /// `SOURCE_DATE_EPOCH`; 0 when unset).
    pub source_date_epoch: u64,
    /// The `nix-store` command; `None` looks it up on `PATH`.
    pub nix_store: Option<PathBuf>,
}

/// What the builder reports while it works; the CLI draws it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The inputs are being collected (no cached image could be reused).
    Started { image: String },
    /// The layer is being written: `done` of `total` entries.
    Files {
        image: String,
        done: u64,
        total: u64,
    },
    /// Finished, either freshly built or reused from the cache.
    Done {
        image: String,
        reused: bool,
        manifest_digest: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub name: String,
    /// `sha256:...` of the manifest: the image's identity.
    pub manifest_digest: String,
    /// The OCI image layout directory.
    pub layout_dir: PathBuf,
    pub tag: String,
    /// True when the cached layout was reused without building.
    pub reused: bool,
    /// Total size of the image's blobs (manifest, config, layers).
    pub size_bytes: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    key: String,
    manifest_digest: String,
    size_bytes: u64,
    inputs: std::collections::BTreeMap<String, String>,
}

fn validate_name(name: &str) -> Result<(), ImageError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ImageError::Plan {
            image: name.to_string(),
            reason: "image names use letters, digits, `-`, `_` and `.`, and do not start with `.`"
                .into(),
        })
    }
}

fn plan_key(plan: &ImagePlan, ctx: &BuildContext) -> Result<String, ImageError> {
    let plan_json = serde_json::to_value(plan).map_err(|e| ImageError::Plan {
        image: plan.name.clone(),
        reason: e.to_string(),
    })?;
    let v = json!({
        "format": FORMAT_VERSION,
        "plan": plan_json,
        "base_dir": ctx.base_dir.to_string_lossy(),
        "init": ctx.init_binary.to_string_lossy(),
        "epoch": ctx.source_date_epoch,
        "nix_store": ctx.nix_store.as_ref().map(|p| p.to_string_lossy().into_owned()),
        "arch": layout::arch(),
    });
    Ok(sha256_digest(&canonical(&v)))
}

/// A fresh directory next to `dest` (same filesystem, so it can be renamed into place).
pub(crate) fn temp_sibling(dest: &Path) -> Result<PathBuf, ImageError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| ImageError::io("cannot create", parent, e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for attempt in 0..100u32 {
        let p = parent.join(format!(
            ".{name}.tmp-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(ImageError::io("cannot create", &p, e)),
        }
    }
    Err(ImageError::io(
        "cannot create a temporary directory in",
        parent,
        io::Error::other("too many attempts"),
    ))
}

/// Move `tmp` to `dest`, replacing whatever was there, unless `dest` already holds the
/// same content (`same(dest)`): then `tmp` is removed and `dest` kept, so that a process
/// reading `dest` is not disturbed by another one that made the same tree at the same time
/// (two `warden run`s of a new sandbox, say). An old `dest` is renamed aside first and
/// removed after, so `dest` is always either a complete old or a complete new tree; a
/// concurrent replacement (the old tree already moved by someone else) is retried.
pub(crate) fn publish_dir(
    tmp: &Path,
    dest: &Path,
    same: impl Fn(&Path) -> bool,
) -> Result<(), ImageError> {
    let mut asides = Vec::new();
    let result = (|| {
        for _ in 0..16 {
            if same(dest) {
                let _ = fs::remove_dir_all(tmp);
                return Ok(());
            }
            match fs::rename(tmp, dest) {
                Ok(()) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                    ) => {}
                Err(e) => return Err(ImageError::io("cannot rename into", dest, e)),
            }
            let aside = temp_sibling(dest)?;
            fs::remove_dir(&aside).map_err(|e| ImageError::io("cannot remove", &aside, e))?;
            match fs::rename(dest, &aside) {
                Ok(()) => asides.push(aside),
                // Moved by someone else in the meantime: look again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("cannot move aside", dest, e)),
            }
        }
        Err(ImageError::io(
            "cannot rename into",
            dest,
            io::Error::other("it keeps being replaced by another process"),
        ))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(tmp);
        // Put the old tree back if nothing took its place.
        if let Some(first) = asides.first()
            && fs::symlink_metadata(dest).is_err()
            && fs::rename(first, dest).is_ok()
        {
            asides.remove(0);
        }
    }
    for o in asides {
        let _ = fs::remove_dir_all(o);
    }
    result
}

/// Whether the OCI layout at `dir` is complete and tags the manifest `digest`.
fn layout_holds(dir: &Path, digest: &str) -> bool {
    let Ok(index) = fs::read_to_string(dir.join("index.json")) else {
        return false;
    };
    index.contains(digest) && blob_path(dir, digest).is_ok_and(|p| p.is_file())
}

/// Reuse the cached layout when the key and every input fingerprint still match and the
/// layout's manifest is present.
fn cached(record_path: &Path, layout_dir: &Path, key: &str) -> Option<Record> {
    let bytes = fs::read(record_path).ok()?;
    let rec: Record = serde_json::from_slice(&bytes).ok()?;
    if rec.key != key {
        return None;
    }
    for (p, fp) in &rec.inputs {
        if host::fingerprint(Path::new(p)) != *fp {
            return None;
        }
    }
    let manifest = blob_path(layout_dir, &rec.manifest_digest).ok()?;
    (manifest.is_file() && layout_dir.join("index.json").is_file()).then_some(rec)
}

/// Build `plan` into `ctx.cache_dir/images/<name>/`, or reuse the cached layout when no
/// input changed.
pub fn build_image(
    plan: &ImagePlan,
    ctx: &BuildContext,
    progress: &dyn Fn(Progress),
) -> Result<BuiltImage, ImageError> {
    validate_name(&plan.name)?;
    if plan.version != warden_wire::WIRE_VERSION {
        return Err(plan_err(
            plan,
            format!(
                "plan version {} is not supported (this build reads version {})",
                plan.version,
                warden_wire::WIRE_VERSION
            ),
        ));
    }
    let images = ctx.cache_dir.join("images");
    let layout_dir = images.join(&plan.name);
    let record_path = images.join(format!("{}.inputs.json", plan.name));
    let key = plan_key(plan, ctx)?;
    if let Some(rec) = cached(&record_path, &layout_dir, &key) {
        progress(Progress::Done {
            image: plan.name.clone(),
            reused: true,
            manifest_digest: rec.manifest_digest.clone(),
        });
        return Ok(BuiltImage {
            name: plan.name.clone(),
            manifest_digest: rec.manifest_digest,
            layout_dir,
            tag: TAG.into(),
            reused: true,
            size_bytes: rec.size_bytes,
        });
    }
    progress(Progress::Started {
        image: plan.name.clone(),
    });
    let mut inputs = Inputs::default();
    let staged = stage(plan, ctx, &mut inputs)?;
    let tmp = temp_sibling(&layout_dir)?;
    let written = write_image(plan, ctx, &staged, &tmp, &mut inputs, progress);
    let (manifest_digest, size_bytes) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    publish_dir(&tmp, &layout_dir, |d| layout_holds(d, &manifest_digest))?;
    let rec = Record {
        key,
        manifest_digest: manifest_digest.clone(),
        size_bytes,
        inputs: inputs.map,
    };
    let rec_bytes = serde_json::to_vec(&rec)
        .map_err(|e| ImageError::io("cannot encode", &record_path, io::Error::other(e)))?;
    let rec_tmp = images.join(format!(
        ".{}.inputs.json.tmp-{}",
        plan.name,
        std::process::id()
    ));
    fs::write(&rec_tmp, rec_bytes).map_err(|e| ImageError::io("cannot write", &rec_tmp, e))?;
    fs::rename(&rec_tmp, &record_path)
        .map_err(|e| ImageError::io("cannot write", &record_path, e))?;
    progress(Progress::Done {
        image: plan.name.clone(),
        reused: false,
        manifest_digest: manifest_digest.clone(),
    });
    Ok(BuiltImage {
        name: plan.name.clone(),
        manifest_digest,
        layout_dir,
        tag: TAG.into(),
        reused: false,
        size_bytes,
    })
}

/// Everything gathered before writing: the base image (if any) and our layer's tree.
struct Staged {
    base: Option<(PathBuf, layout::Image)>,
    tree: Tree,
}

fn plan_err(plan: &ImagePlan, reason: impl Into<String>) -> ImageError {
    ImageError::Plan {
        image: plan.name.clone(),
        reason: reason.into(),
    }
}

fn stage(plan: &ImagePlan, ctx: &BuildContext, inputs: &mut Inputs) -> Result<Staged, ImageError> {
    let base_dir = std::path::absolute(&ctx.base_dir)
        .map_err(|e| ImageError::io("cannot resolve", &ctx.base_dir, e))?;
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let mut tree = Tree::default();
    let mut base = None;
    let mut base_paths: BTreeSet<Vec<Vec<u8>>> = BTreeSet::new();
    {
        let mut hc = HostCopier::new(&mut tree, inputs);
        for (i, source) in plan.sources.iter().enumerate() {
            match source {
                Source::OciLayout { dir, tag } => {
                    if i != 0 {
                        return Err(plan_err(plan, "`oci-layout` must be the first source"));
                    }
                    let dir = resolve(dir);
                    let image = layout::read_image(&dir, tag)?;
                    // The blobs are inputs: note them so that a changed base rebuilds.
                    hc.inputs.note(&dir.join("index.json"));
                    for l in &image.layers {
                        hc.inputs.note(&blob_path(&dir, &l.digest)?);
                    }
                    base_paths = unpack::layer_paths(&dir, &image.layers)?;
                    base = Some((dir, image));
                }
                Source::FromHost { paths, with_libs } => {
                    for p in paths.iter().chain(with_libs) {
                        hc.add_path(&resolve(p), true)?;
                    }
                }
                Source::Copy {
                    src,
                    to,
                    uid,
                    gid,
                    mode,
                } => {
                    if !to.starts_with('/') {
                        return Err(plan_err(
                            plan,
                            format!("`copy` destination `{to}` must be absolute"),
                        ));
                    }
                    let src_path = resolve(src);
                    // The source itself is followed if it is a symlink; links inside a
                    // copied directory are kept as links.
                    let meta = fs::metadata(&src_path).map_err(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            ImageError::Missing {
                                path: src_path.clone(),
                            }
                        } else {
                            ImageError::io("cannot inspect", &src_path, e)
                        }
                    })?;
                    // A file copied to `dir/` keeps its name; otherwise `to` is the path.
                    let mut at = to.as_bytes().to_vec();
                    if to.ends_with('/')
                        && !meta.is_dir()
                        && let Some(n) = src_path.file_name()
                    {
                        at.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(n));
                    }
                    let owner = Owner {
                        uid: *uid,
                        gid: *gid,
                        file_mode: *mode,
                    };
                    hc.copy_entry(&src_path, &at, &meta, false, owner)?;
                }
                Source::Nix { paths } => {
                    let cmd = ctx
                        .nix_store
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("nix-store"));
                    for p in nix::query_closure(&cmd, paths)? {
                        hc.add_store_path(Path::new(&p))?;
                    }
                }
                Source::NixClosure { file } => {
                    let f = resolve(file);
                    hc.inputs.note(&f);
                    let text = fs::read_to_string(&f).map_err(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            ImageError::Missing { path: f.clone() }
                        } else {
                            ImageError::io("cannot read", &f, e)
                        }
                    })?;
                    for p in nix::parse_closure_file(&text, &f)? {
                        hc.add_store_path(Path::new(&p))?;
                    }
                }
            }
        }
        // warden-init: always present, always at the same path, with its closure.
        let init = &ctx.init_binary;
        hc.inputs.note(init);
        let meta = fs::metadata(init).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ImageError::Missing { path: init.clone() }
            } else {
                ImageError::io("cannot inspect", init, e)
            }
        })?;
        let mut head = [0u8; 4];
        let n = fs::File::open(init)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| ImageError::io("cannot read", init, e))?;
        if !meta.is_file() || !elf::is_elf(&head[..n]) {
            return Err(ImageError::NotElf { path: init.clone() });
        }
        let real_init =
            fs::canonicalize(init).map_err(|e| ImageError::io("cannot resolve", init, e))?;
        hc.copy_entry(
            &real_init,
            b"/.warden/init",
            &meta,
            true,
            Owner {
                uid: 0,
                gid: 0,
                file_mode: Some(0o755),
            },
        )?;
        hc.resolve_closures()?;
    }
    let has = |tree: &Tree, p: &str| {
        tree.contains(p.as_bytes()) || base_paths.contains(&tree::components(p.as_bytes()))
    };
    let fixed = |r: Result<(), String>| {
        r.map_err(|reason| ImageError::Place {
            path: PathBuf::from("/"),
            reason,
        })
    };
    fixed(tree.ensure_dir(b".warden", 0o755))?;
    for (dir, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("etc", 0o755),
    ] {
        if !has(&tree, dir) {
            fixed(tree.ensure_dir(dir.as_bytes(), mode))?;
        }
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/sandbox:/bin/sh\n";
    let group = "root:x:0:\nsandbox:x:1000:\n";
    for (path, text) in [("etc/passwd", passwd), ("etc/group", group)] {
        if !has(&tree, path) {
            let bytes = text.as_bytes().to_vec();
            fixed(
                tree.insert(
                    path.as_bytes(),
                    Node::File {
                        size: bytes.len() as u64,
                        content: Content::Bytes(bytes),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                    },
                )
                .map(|_| ()),
            )?;
        }
    }
    Ok(Staged { base, tree })
}

/// RFC 3339 UTC for a Unix time (civil-from-days, Howard Hinnant's algorithm).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn write_blob(layout: &Path, bytes: &[u8]) -> Result<(String, u64), ImageError> {
    let digest = sha256_digest(bytes);
    let p = blob_path(layout, &digest)?;
    fs::write(&p, bytes).map_err(|e| ImageError::io("cannot write", &p, e))?;
    Ok((digest, bytes.len() as u64))
}

/// Write the layer from the tree; returns (digest, size). Host files are checked after
/// reading: a file that changed while being copied fails the build.
fn write_layer(
    plan: &ImagePlan,
    tree: &Tree,
    epoch: u64,
    layout: &Path,
    inputs: &Inputs,
    progress: &dyn Fn(Progress),
) -> Result<(String, u64), ImageError> {
    let blobs = layout.join("blobs").join("sha256");
    let tmp_path = blobs.join("layer.tmp");
    let file =
        fs::File::create(&tmp_path).map_err(|e| ImageError::io("cannot create", &tmp_path, e))?;
    let out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        len: 0,
    };
    let werr = |e: io::Error| ImageError::io("cannot write", &tmp_path, e);
    let mut tw = TarWriter::new(out, epoch);
    let total = tree.len() as u64;
    let mut done = 0u64;
    for (path, node) in tree.iter() {
        match node {
            Node::Dir { mode, uid, gid } => {
                tw.entry(&path, Kind::Dir, *mode, (*uid, *gid), 0, b"")
                    .map_err(werr)?;
            }
            Node::Symlink { target, uid, gid } => {
                tw.entry(&path, Kind::Symlink, 0o777, (*uid, *gid), 0, target)
                    .map_err(werr)?;
            }
            Node::File {
                content,
                size,
                mode,
                uid,
                gid,
            } => {
                tw.entry(&path, Kind::File, *mode, (*uid, *gid), *size, b"")
                    .map_err(werr)?;
                match content {
                    Content::Bytes(b) => tw.data().write_all(b).map_err(werr)?,
                    Content::Host(src) => {
                        let f = fs::File::open(src)
                            .map_err(|e| ImageError::io("cannot open", src, e))?;
                        let copied = io::copy(&mut f.take(*size), tw.data())
                            .map_err(|e| ImageError::io("cannot copy", src, e))?;
                        let noted = inputs.map.get(&*src.to_string_lossy());
                        if copied != *size || noted.is_some_and(|fp| *fp != host::fingerprint(src))
                        {
                            return Err(ImageError::Changed { path: src.clone() });
                        }
                    }
                }
                tw.finish_file(*size).map_err(werr)?;
            }
        }
        done += 1;
        if done.is_multiple_of(256) || done == total {
            progress(Progress::Files {
                image: plan.name.clone(),
                done,
                total,
            });
        }
    }
    let out = tw.finish().map_err(werr)?;
    let Hashing { inner, hasher, len } = out;
    inner
        .into_inner()
        .map_err(|e| ImageError::io("cannot write", &tmp_path, e.into_error()))?
        .sync_all()
        .ok();
    let digest = format!("sha256:{}", hex(&hasher.finalize()));
    let final_path = blob_path(layout, &digest)?;
    fs::rename(&tmp_path, &final_path)
        .map_err(|e| ImageError::io("cannot rename", &tmp_path, e))?;
    Ok((digest, len))
}

/// Write the whole layout into `dir`; returns (manifest digest, total blob size).
fn write_image(
    plan: &ImagePlan,
    ctx: &BuildContext,
    staged: &Staged,
    dir: &Path,
    inputs: &mut Inputs,
    progress: &dyn Fn(Progress),
) -> Result<(String, u64), ImageError> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| ImageError::io("cannot create", &blobs, e))?;
    let mut layers: Vec<LayerRef> = Vec::new();
    let mut diff_ids: Vec<String> = Vec::new();
    let mut env: Vec<String> = Vec::new();
    let mut workdir: Option<String> = None;
    let mut total = 0u64;
    if let Some((base_dir, image)) = &staged.base {
        for (l, d) in image.layers.iter().zip(&image.diff_ids) {
            let from = blob_path(base_dir, &l.digest)?;
            let to = blob_path(dir, &l.digest)?;
            // Copy while hashing: a base blob that does not match its digest is refused.
            let mut src =
                fs::File::open(&from).map_err(|e| ImageError::io("cannot open", &from, e))?;
            let dst = fs::File::create(&to).map_err(|e| ImageError::io("cannot create", &to, e))?;
            let mut h = Hashing {
                inner: BufWriter::new(dst),
                hasher: Sha256::new(),
                len: 0,
            };
            io::copy(&mut src, &mut h).map_err(|e| ImageError::io("cannot copy", &from, e))?;
            h.flush()
                .map_err(|e| ImageError::io("cannot write", &to, e))?;
            if format!("sha256:{}", hex(&h.hasher.finalize())) != l.digest {
                return Err(layout::broken(
                    base_dir,
                    format!("blob `{}` does not match its digest", l.digest),
                ));
            }
            total += h.len;
            // Docker media types name the same formats; the manifest we write is OCI.
            let media_type = if l.gzip() {
                layout::MEDIA_LAYER_GZIP
            } else {
                MEDIA_LAYER
            };
            layers.push(LayerRef {
                digest: l.digest.clone(),
                size: h.len,
                media_type: media_type.into(),
            });
            diff_ids.push(d.clone());
        }
        env = image
            .config
            .pointer("/config/Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        workdir = image
            .config
            .pointer("/config/WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .map(str::to_string);
    }
    for (k, v) in &plan.env {
        let entry = format!("{k}={v}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(ek, _)| ek) == Some(k.as_str()))
        {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }
    if let Some(w) = &plan.workdir {
        workdir = Some(w.clone());
    }
    let (layer_digest, layer_size) = write_layer(
        plan,
        &staged.tree,
        ctx.source_date_epoch,
        dir,
        inputs,
        progress,
    )?;
    total += layer_size;
    layers.push(LayerRef {
        digest: layer_digest.clone(),
        size: layer_size,
        media_type: MEDIA_LAYER.into(),
    });
    // Uncompressed: the diff id is the layer digest.
    diff_ids.push(layer_digest);

    let mut cfg = json!({ "Env": env });
    if let Some(w) = workdir {
        cfg["WorkingDir"] = json!(w);
    }
    let config = json!({
        "architecture": layout::arch(),
        "os": "linux",
        "created": rfc3339(ctx.source_date_epoch),
        "config": cfg,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let (config_digest, config_size) = write_blob(dir, &canonical(&config))?;
    total += config_size;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": l.digest, "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let (manifest_digest, manifest_size) = write_blob(dir, &canonical(&manifest))?;
    total += manifest_size;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": { REF_NAME: TAG },
        }],
    });
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        fs::write(&p, bytes).map_err(|e| ImageError::io("cannot write", &p, e))
    };
    write(
        "oci-layout",
        &canonical(&json!({ "imageLayoutVersion": "1.0.0" })),
    )?;
    write("index.json", &canonical(&index))?;
    Ok((manifest_digest, total))
}

/// Unpack the image tagged `tag` in `layout_dir` into a runtime bundle: `rootfs/` from
/// the layers (whiteouts honoured, digests checked), `config_json` as `config.json`, and
/// `files` (the sandbox's [`BundleFile`]s) beside them.
/// Built in a temporary directory beside `bundle_dir` and renamed into place, so a
/// failure leaves nothing half-written (and an existing bundle untouched).
pub fn unpack_bundle(
    layout_dir: &Path,
    tag: &str,
    config_json: &str,
    files: &[BundleFile],
    bundle_dir: &Path,
) -> Result<(), ImageError> {
    let image = layout::read_image(layout_dir, tag)?;
    let tmp = temp_sibling(bundle_dir)?;
    let result = (|| {
        // Before the mount points: a bind of one of these (a source relative to the
        // bundle) needs it in place.
        write_bundle_files(&tmp, files)?;
        let rootfs = tmp.join("rootfs");
        fs::create_dir(&rootfs).map_err(|e| ImageError::io("cannot create", &rootfs, e))?;
        // Not the umask's choice: `/` of the container must be traversable by any user.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))
                .map_err(|e| ImageError::io("cannot chmod", &rootfs, e))?;
        }
        let ex = unpack::Extractor {
            root: rootfs.clone(),
            chown: true,
        };
        for layer in &image.layers {
            ex.apply(layout_dir, layer)?;
        }
        let mounts =
            targets::mount_points(config_json).map_err(|reason| ImageError::BrokenLayout {
                path: bundle_dir.join("config.json"),
                reason,
            })?;
        targets::make_mount_points(
            &rootfs,
            &mounts,
            targets::working_dir(config_json).as_deref(),
        )?;
        let cfg = tmp.join("config.json");
        fs::write(&cfg, config_json).map_err(|e| ImageError::io("cannot write", &cfg, e))?;
        // The temp dir was created with the umask; a bundle is readable like any tree.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .map_err(|e| ImageError::io("cannot chmod", &tmp, e))?;
        Ok(())
    })();
    match result {
        Ok(()) => publish_dir(&tmp, bundle_dir, |d| {
            fs::read(d.join("config.json")).is_ok_and(|c| c == config_json.as_bytes())
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Writes `files` under `bundle` (directories `0755`, files `0644`, owned by the caller):
/// paths are relative and stay inside the bundle, outside `rootfs`.
fn write_bundle_files(bundle: &Path, files: &[BundleFile]) -> Result<(), ImageError> {
    use std::path::Component;
    for f in files {
        let rel = Path::new(&f.path);
        let inside = rel.components().all(|c| matches!(c, Component::Normal(_)))
            && rel.components().next() != Some(Component::Normal("rootfs".as_ref()));
        let path = bundle.join(rel);
        if !inside || f.path.is_empty() {
            return Err(ImageError::io(
                "cannot write",
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a bundle file must be a relative path outside `rootfs`",
                ),
            ));
        }
        if let Some(parent) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| ImageError::io("cannot create", parent, e))?;
        }
        fs::write(&path, &f.content).map_err(|e| ImageError::io("cannot write", &path, e))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(|e| ImageError::io("cannot chmod", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_support {
    /// The smallest ELF file the parser accepts: a 64-bit x86-64 header, no segments.
    pub(crate) fn minimal_elf() -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little endian
        b[6] = 1; // version
        b[16] = 2; // ET_EXEC
        b[18] = 62; // x86-64
        b[20] = 1;
        b[52] = 64; // e_ehsize
        b[54] = 56; // e_phentsize
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(dir: &Path, content: &str) -> PathBuf {
        let tmp = temp_sibling(&dir.join("dest")).expect("temp");
        fs::write(tmp.join("x"), content).expect("write");
        tmp
    }

    fn holds(content: &str) -> impl Fn(&Path) -> bool + '_ {
        move |d| fs::read_to_string(d.join("x")).is_ok_and(|x| x == content)
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publish_keeps_an_equal_tree_and_replaces_a_different_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("dest");
        publish_dir(&tree_with(dir.path(), "a"), &dest, holds("a")).expect("new");
        let before = fs::metadata(dest.join("x"))
            .expect("x")
            .modified()
            .expect("mtime");
        std::thread::sleep(std::time::Duration::from_millis(10));
        // The same content: the tree in place stays (same file), the new one goes.
        publish_dir(&tree_with(dir.path(), "a"), &dest, holds("a")).expect("same");
        let after = fs::metadata(dest.join("x"))
            .expect("x")
            .modified()
            .expect("mtime");
        assert_eq!(before, after);
        // Other content: replaced.
        publish_dir(&tree_with(dir.path(), "b"), &dest, holds("b")).expect("other");
        assert_eq!(fs::read_to_string(dest.join("x")).expect("x"), "b");
        assert_eq!(leftovers(dir.path()), vec!["dest".to_string()]);
    }

    #[test]
    fn concurrent_publishers_of_one_tree_never_hide_it_from_readers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("dest");
        let tmps: Vec<PathBuf> = (0..8).map(|_| tree_with(dir.path(), "same")).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dest, stop) = (dest.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = false;
                let mut missing_after_seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match fs::read_to_string(dest.join("x")) {
                        Ok(_) => seen = true,
                        Err(_) if seen => missing_after_seen += 1,
                        Err(_) => {}
                    }
                }
                missing_after_seen
            })
        };
        let publishers: Vec<_> = tmps
            .into_iter()
            .map(|tmp| {
                let dest = dest.clone();
                std::thread::spawn(move || publish_dir(&tmp, &dest, holds("same")))
            })
            .collect();
        for p in publishers {
            p.join().expect("publisher").expect("publish");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reader.join().expect("reader"), 0);
        assert_eq!(fs::read_to_string(dest.join("x")).expect("x"), "same");
        assert_eq!(leftovers(dir.path()), vec!["dest".to_string()]);
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn canonical_json_sorts_keys_and_is_compact() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": null}});
        assert_eq!(
            String::from_utf8(canonical(&v)).unwrap(),
            r#"{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn names_are_path_safe() {
        for bad in ["", ".", "..", "a/b", ".hidden", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        for good in ["agent", "node-22", "a_b.c"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
    }
}
