//! The sandbox's own mounts, made by warden before the container exists.
//!
//! libcontainer makes every mount of the spec inside the container, as the sandbox's
//! mapped root; that root cannot create a missing mount point in a tree the host's root
//! owns, binds show the host's owners (the workspace's files belong to nobody inside),
//! and the root filesystem itself shows as `65534`. So warden makes these mounts itself,
//! as the host's root, in a private mount namespace of the thread that creates the
//! container (libcontainer clones the container's mount namespace from it):
//!
//! - the root filesystem, as an idmapped mount through the sandbox's user namespace: the
//!   host's root owns the bundle, the sandbox sees its own root own `/`;
//! - tenant volumes with a size: an ext4 image on a loop device at the volume's
//!   directory (writing past the size fails with `ENOSPC`, the host's disk is untouched);
//! - `tmpfs` mounts (the file's `read-write` directories), owned by the sandbox's root;
//! - binds, idmapped so that the owner of the bound host directory is the sandbox's user
//!   (files the agent makes belong on the host to the directory's owner, not to a uid of
//!   the sandbox's range), with `nosuid`, `nodev` and, unless writable, `ro` set on the
//!   mount before the sandbox's user namespace owns it: root inside cannot lift them.
//!
//! Parents before children, whatever their kind; a mount point below a `tmpfs` is made in
//! it (the directories on the way owned by the sandbox's user). libcontainer then gets
//! the spec without these mounts and makes only the kernel's (`/proc`, `/dev`, `/sys`,
//! ...). The thread returns to its own mount namespace once the container is created;
//! the private one lives on in the container's copy only.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{LinuxIdMapping, Mount, Spec};
use warden_wire::sandbox::VOLUME_ANNOTATION;

use crate::error::RuntimeError;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The thread's way back to the mount namespace it came from.
#[derive(Debug)]
pub(crate) struct PrivateMounts {
    home: File,
    /// The thread's working directory, which `setns` resets.
    cwd: Option<File>,
}

impl Drop for PrivateMounts {
    fn drop(&mut self) {
        // SAFETY: setns on a namespace fd we opened; the thread's fs is unshared.
        if unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNS) } != 0 {
            // A thread left in a private namespace would make the next container's
            // mounts on top of this one's: stop rather than go on.
            std::process::abort();
        }
        if let Some(cwd) = &self.cwd {
            // SAFETY: fchdir to a directory fd we opened.
            unsafe { libc::fchdir(cwd.as_raw_fd()) };
        }
    }
}

/// One mount warden makes.
enum Planned {
    Tmpfs {
        at: String,
        data: String,
        flags: libc::c_ulong,
    },
    Bind {
        at: String,
        source: PathBuf,
        attrs: u64,
        recursive: bool,
        volume_image: Option<PathBuf>,
    },
}

impl Planned {
    fn at(&self) -> &str {
        match self {
            Planned::Tmpfs { at, .. } | Planned::Bind { at, .. } => at,
        }
    }
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// Whether warden makes this mount (and libcontainer not): binds, and `tmpfs` mounts
/// outside `/dev`.
fn warden_makes(m: &Mount) -> bool {
    let dest = m.destination().to_string_lossy();
    is_bind(m)
        || (m.typ().as_deref() == Some("tmpfs") && dest != "/dev" && !dest.starts_with("/dev/"))
}

/// Whether `path` lies strictly below `dir` (both absolute).
fn is_below(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path.len() > dir.len() + 1 && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

fn host_id(maps: &Option<Vec<LinuxIdMapping>>, id: u32) -> Option<u32> {
    maps.iter().flatten().find_map(|m| {
        let off = id.checked_sub(m.container_id())?;
        (off < m.size()).then(|| m.host_id() + off)
    })
}

fn map_text(maps: &Option<Vec<LinuxIdMapping>>) -> String {
    maps.iter()
        .flatten()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Makes the mounts warden owns (see the module docs) in a private mount namespace of the
/// calling thread and removes them from `spec`. `None` when the spec has no user
/// namespace of its own (the runtime's mounts then work as they are). `userns`: the
/// sandbox's user namespace when it exists already.
pub(crate) fn prepare(
    spec: &mut Spec,
    id: &str,
    userns: Option<&File>,
) -> Result<Option<PrivateMounts>, RuntimeError> {
    let Some(linux) = spec.linux().clone() else {
        return Ok(None);
    };
    let has_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == libcontainer::oci_spec::runtime::LinuxNamespaceType::User);
    if !has_userns || linux.uid_mappings().is_none() {
        return Ok(None);
    }
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| invalid(id, "no `root` section"))?;
    let (uid, gid) = spec
        .process()
        .as_ref()
        .map(|p| (p.user().uid(), p.user().gid()))
        .unwrap_or((0, 0));
    let root_uid = host_id(linux.uid_mappings(), 0);
    let root_gid = host_id(linux.gid_mappings(), 0);
    let (Some(host_uid), Some(host_gid), Some(root_uid), Some(root_gid)) = (
        host_id(linux.uid_mappings(), uid),
        host_id(linux.gid_mappings(), gid),
        root_uid,
        root_gid,
    ) else {
        return Err(invalid(
            id,
            "the process's user, or root, is not mapped in the user namespace",
        ));
    };
    reachable(id, &root, root_uid, root_gid)?;

    let volumes: Vec<(String, PathBuf)> = spec
        .annotations()
        .iter()
        .flatten()
        .filter_map(|(k, v)| {
            let dir = k.strip_prefix(VOLUME_ANNOTATION)?;
            (!v.is_empty()).then(|| (dir.to_string(), PathBuf::from(v)))
        })
        .collect();
    let mut planned = Vec::new();
    let mut keep = Vec::new();
    for m in spec.mounts().iter().flatten() {
        if !warden_makes(m) {
            keep.push(m.clone());
            continue;
        }
        let at = m.destination().to_string_lossy().into_owned();
        let options = m.options().clone().unwrap_or_default();
        if is_bind(m) {
            let source = m
                .source()
                .clone()
                .ok_or_else(|| invalid(id, &format!("the bind at `{at}` has no source")))?;
            let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
            if options.iter().any(|o| o == "ro") {
                attrs |= MOUNT_ATTR_RDONLY;
            }
            if options.iter().any(|o| o == "noexec") {
                attrs |= MOUNT_ATTR_NOEXEC;
            }
            let volume_image = volumes
                .iter()
                .find(|(dir, _)| Path::new(dir) == source)
                .map(|(_, img)| img.clone());
            planned.push(Planned::Bind {
                at,
                source,
                attrs,
                recursive: options.iter().any(|o| o == "rbind"),
                volume_image,
            });
        } else {
            let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
            let mut data = vec![format!("uid={root_uid}"), format!("gid={root_gid}")];
            for o in &options {
                match o.as_str() {
                    "nosuid" | "nodev" | "rw" => {}
                    "noexec" => flags |= libc::MS_NOEXEC,
                    "ro" => flags |= libc::MS_RDONLY,
                    o if o.starts_with("mode=") || o.starts_with("size=") => data.push(o.into()),
                    other => {
                        return Err(invalid(
                            id,
                            &format!("unsupported option `{other}` of the tmpfs at `{at}`"),
                        ));
                    }
                }
            }
            planned.push(Planned::Tmpfs {
                at,
                data: data.join(","),
                flags,
            });
        }
    }
    // Parents before children (a path sorts before every path below it).
    planned.sort_by(|a, b| a.at().cmp(b.at()));

    for p in &planned {
        if let Planned::Bind { at, source, .. } = p
            && std::fs::symlink_metadata(source).is_err()
        {
            return Err(RuntimeError::BindSource {
                source_path: source.clone(),
                destination: at.clone(),
            });
        }
    }

    let home = File::open("/proc/thread-self/ns/mnt")
        .map_err(|e| mount_err(id, "open", "/proc/thread-self/ns/mnt", e))?;
    // SAFETY: unshare of the calling thread's mount namespace (and, implied, its fs).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(mount_err(
            id,
            "make a private mount namespace for",
            &root.to_string_lossy(),
            io::Error::last_os_error(),
        ));
    }
    let back = PrivateMounts {
        home,
        cwd: File::open(".").ok(),
    };
    // Nothing made here propagates to the host; the host's mounts still reach here.
    sys_mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )
    .map_err(|e| mount_err(id, "make private", "/", e))?;

    // The root filesystem, idmapped: the host's root owns it, the sandbox's root sees it
    // as its own. A filesystem that cannot idmap keeps the host's owners (files then
    // show as 65534 inside, and the sandbox can write none of them either way).
    let sandbox_ns;
    let userns = match userns {
        Some(f) => f,
        None => {
            sandbox_ns = crate::netns::user_namespace(
                &map_text(linux.uid_mappings()),
                &map_text(linux.gid_mappings()),
            )
            .map_err(|e| {
                mount_err(
                    id,
                    "make a user namespace for the mounts of",
                    &root.to_string_lossy(),
                    e,
                )
            })?;
            &sandbox_ns
        }
    };
    match clone_tree(&root, false).and_then(|fd| {
        set_attrs(&fd, MOUNT_ATTR_IDMAP, Some(userns), false)?;
        Ok(fd)
    }) {
        Ok(fd) => attach(&fd, &root).map_err(|e| {
            mount_err(
                id,
                "attach the root filesystem at",
                &root.to_string_lossy(),
                e,
            )
        })?,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => {
            return Err(mount_err(
                id,
                "idmap the root filesystem",
                &root.to_string_lossy(),
                e,
            ));
        }
    }

    let in_root = |at: &str| root.join(at.trim_start_matches('/'));
    let mut tmpfs_dirs: Vec<&str> = Vec::new();
    for p in &planned {
        let target = in_root(p.at());
        // A mount point below a tmpfs of this sandbox is made there, owned by its root;
        // directories made on the way belong to the sandbox's user, who may write beside
        // the mount (Codex's sessions beside its read-only `config.toml`).
        if tmpfs_dirs.iter().any(|t| is_below(p.at(), t)) {
            let file = matches!(p, Planned::Bind { source, .. } if !source.is_dir());
            let owners = Owners {
                dirs: (host_uid, host_gid),
                point: (root_uid, root_gid),
            };
            make_point(&target, file, owners).map_err(|e| RuntimeError::MountPoint {
                id: id.to_string(),
                target: p.at().to_string(),
                reason: e.to_string(),
            })?;
        }
        match p {
            Planned::Tmpfs { at, data, flags } => {
                sys_mount(Some("tmpfs"), &target, Some("tmpfs"), *flags, Some(data))
                    .map_err(|e| mount_point_err(id, at, "mount a tmpfs", e))?;
                tmpfs_dirs.push(at);
            }
            Planned::Bind {
                at,
                source,
                attrs,
                recursive,
                volume_image,
            } => {
                if let Some(img) = volume_image {
                    mount_volume(img, source, host_uid, host_gid).map_err(|e| {
                        RuntimeError::Volume {
                            id: id.to_string(),
                            image: img.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                }
                bind(
                    id,
                    at,
                    source,
                    &target,
                    *attrs,
                    *recursive,
                    (host_uid, host_gid),
                )?;
            }
        }
    }
    spec.set_mounts(Some(keep));
    Ok(Some(back))
}

/// Binds `source` at `target`, idmapped so that the owner of `source` is the sandbox's
/// user (`sandbox`: its host uid and gid).
fn bind(
    id: &str,
    at: &str,
    source: &Path,
    target: &Path,
    attrs: u64,
    recursive: bool,
    sandbox: (u32, u32),
) -> Result<(), RuntimeError> {
    let md = std::fs::metadata(source)
        .map_err(|e| mount_point_err(id, at, "inspect the bind source", e))?;
    let ns = crate::netns::user_namespace(
        &format!("{} {} 1\n", md.uid(), sandbox.0),
        &format!("{} {} 1\n", md.gid(), sandbox.1),
    )
    .map_err(|e| mount_point_err(id, at, "make the id mapping of the bind", e))?;
    let fd = clone_tree(source, recursive).map_err(|e| {
        mount_point_err(
            id,
            at,
            &format!("clone `{}` for the bind", source.display()),
            e,
        )
    })?;
    match set_attrs(&fd, attrs | MOUNT_ATTR_IDMAP, Some(&ns), recursive) {
        Ok(()) => {}
        // A filesystem that cannot idmap: a read-only bind keeps the host's owners (the
        // sandbox reads what others may read); a writable one is refused, never made
        // world-writable or chowned.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && attrs & MOUNT_ATTR_RDONLY != 0 => {
            set_attrs(&fd, attrs, None, recursive)
                .map_err(|e| mount_point_err(id, at, "set the attributes of the bind", e))?;
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(RuntimeError::CannotIdmap {
                id: id.to_string(),
                source_path: source.to_path_buf(),
                destination: at.to_string(),
            });
        }
        Err(e) => return Err(mount_point_err(id, at, "set the attributes of the bind", e)),
    }
    attach(&fd, target).map_err(|e| mount_point_err(id, at, "attach the bind", e))
}

fn invalid(id: &str, reason: &str) -> RuntimeError {
    RuntimeError::InvalidBundle {
        path: PathBuf::from(format!("<container {id}>")),
        reason: reason.to_string(),
    }
}

fn mount_err(id: &str, what: &str, path: &str, source: io::Error) -> RuntimeError {
    RuntimeError::Mount {
        id: id.to_string(),
        what: format!("{what} `{path}`"),
        source,
    }
}

fn mount_point_err(id: &str, at: &str, what: &str, source: io::Error) -> RuntimeError {
    RuntimeError::Mount {
        id: id.to_string(),
        what: format!("{what} (mount at `{at}`)"),
        source,
    }
}

/// Every directory on the way to `root` must let the sandbox's root (host uid `uid`)
/// pass: libcontainer reaches the root filesystem from inside the user namespace.
fn reachable(id: &str, root: &Path, uid: u32, gid: u32) -> Result<(), RuntimeError> {
    let mut dir = Some(root);
    while let Some(d) = dir {
        if let Ok(md) = std::fs::metadata(d) {
            let mode = md.mode();
            let ok = if md.uid() == uid {
                mode & 0o100 != 0
            } else if md.gid() == gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                return Err(RuntimeError::Unreachable {
                    id: id.to_string(),
                    root: root.to_path_buf(),
                    dir: d.to_path_buf(),
                    mode: mode & 0o7777,
                    uid,
                });
            }
        }
        dir = d.parent();
    }
    Ok(())
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn sys_mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c = |s: Option<&str>| s.map(CString::new).transpose().map_err(io::Error::other);
    let (source, fstype, data) = (c(source)?, c(fstype)?, c(data)?);
    let target = cstr(target)?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings alive for the call, or null.
    let r = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A detached copy of the mount tree at `path` (only the mount at `path` unless
/// `recursive`).
fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree(2) with a valid path; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_attrs(fd: &OwnedFd, attrs: u64, userns: Option<&File>, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |f| f.as_raw_fd() as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: mount_setattr(2) on our detached tree with a live, correctly sized struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn attach(fd: &OwnedFd, target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: move_mount(2) of our detached tree onto a path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Host uids and gids of what [`make_point`] makes.
struct Owners {
    /// Missing directories on the way to the mount point.
    dirs: (u32, u32),
    /// The mount point itself.
    point: (u32, u32),
}

/// A mount point made in a tmpfs of the sandbox.
fn make_point(target: &Path, file: bool, owners: Owners) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        let mut missing = Vec::new();
        let mut d = parent;
        while std::fs::symlink_metadata(d).is_err() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        for m in missing.iter().rev() {
            std::fs::create_dir(m)?;
            std::os::unix::fs::chown(m, Some(owners.dirs.0), Some(owners.dirs.1))?;
        }
    }
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(io::Error::other("a symbolic link is in the way"));
        }
        Ok(_) => return Ok(()),
        Err(_) => {}
    }
    if file {
        File::create(target)?;
    } else {
        std::fs::create_dir(target)?;
    }
    std::os::unix::fs::chown(target, Some(owners.point.0), Some(owners.point.1))
}

/// Mounts the ext4 image `image` at `dir` through a loop device that goes away with the
/// last mount (`LO_FLAGS_AUTOCLEAR`); its root is made `0700`, owned by the sandbox's
/// user.
fn mount_volume(image: &Path, dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    let mut tries = 0;
    let (device, _loop_fd) = loop {
        // SAFETY: ioctl on /dev/loop-control, no argument.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let device = format!("/dev/loop{n}");
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&device)?;
        let mut config = [0u8; 304];
        config[..4].copy_from_slice(&(backing.as_raw_fd() as u32).to_ne_bytes());
        // loop_config: fd u32, block_size u32, then loop_info64 (lo_flags at offset 52).
        config[8 + 52..8 + 56].copy_from_slice(&LO_FLAGS_AUTOCLEAR.to_ne_bytes());
        // SAFETY: LOOP_CONFIGURE with a struct loop_config of the kernel's size.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, config.as_ptr()) };
        if r == 0 {
            break (device, dev);
        }
        let e = io::Error::last_os_error();
        tries += 1;
        // Another process took the device between the two calls.
        if e.raw_os_error() != Some(libc::EBUSY) || tries > 20 {
            return Err(e);
        }
    };
    sys_mount(
        Some(&device),
        dir,
        Some("ext4"),
        libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::LinuxIdMappingBuilder;

    #[test]
    fn host_ids_follow_the_mappings() {
        let maps = Some(vec![
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(100_000u32)
                .size(65_536u32)
                .build()
                .unwrap(),
        ]);
        assert_eq!(host_id(&maps, 0), Some(100_000));
        assert_eq!(host_id(&maps, 1000), Some(101_000));
        assert_eq!(host_id(&maps, 65_536), None);
        assert_eq!(map_text(&maps), "0 100000 65536\n");
    }
}
