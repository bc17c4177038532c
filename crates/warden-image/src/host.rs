//! Copying from the host: files, directories, symlink chains and ELF closures, recording
//! a fingerprint of every path consulted (the cache key's inputs).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::elf;
use crate::error::ImageError;
use crate::tree::{Content, Node, Tree};

/// `lstat` fingerprints of every path the build consulted, including probes that found
/// nothing (`absent`), so that a library appearing earlier in the search path, a file
/// edited in place or a directory gaining an entry all invalidate the cache.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    pub map: BTreeMap<String, String>,
}

pub(crate) fn fingerprint(path: &Path) -> String {
    match fs::symlink_metadata(path) {
        Ok(m) => format!(
            "{}:{}:{:o}:{}:{}:{}:{}.{}:{}.{}",
            m.dev(),
            m.ino(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "absent".into(),
        Err(e) => format!("error:{:?}", e.kind()),
    }
}

impl Inputs {
    pub(crate) fn note(&mut self, path: &Path) {
        let key = path.to_string_lossy().into_owned();
        self.map.entry(key).or_insert_with(|| fingerprint(path));
    }
}

/// Ownership and mode policy for a copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Overrides the mode of every regular file when set.
    pub file_mode: Option<u32>,
}

pub(crate) const ROOT: Owner = Owner {
    uid: 0,
    gid: 0,
    file_mode: None,
};

/// Where the loader looks when neither RPATH nor RUNPATH names the library: the
/// directories of `/etc/ld.so.conf` (what `ldconfig` puts in `/etc/ld.so.cache`) and then
/// the built-in trusted directories.
const DEFAULT_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Loop bound for symlink chains on the host, like the kernel's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

pub(crate) struct HostCopier<'a> {
    pub tree: &'a mut Tree,
    pub inputs: &'a mut Inputs,
    /// Real host paths already added (loops, repeated libraries).
    seen: HashSet<PathBuf>,
    /// ELF files whose closure is still to be resolved.
    elf_queue: VecDeque<PathBuf>,
    elf_done: HashSet<PathBuf>,
    ld_dirs: Option<Vec<PathBuf>>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |e| {
        if e.kind() == io::ErrorKind::NotFound {
            ImageError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ImageError::io(op, path, e)
        }
    }
}

fn image_path(host: &Path) -> Vec<u8> {
    host.as_os_str().as_bytes().to_vec()
}

fn read_head(path: &Path, n: usize) -> Result<Vec<u8>, ImageError> {
    let f = fs::File::open(path).map_err(io_err("cannot open", path))?;
    let mut buf = Vec::with_capacity(n);
    f.take(n as u64)
        .read_to_end(&mut buf)
        .map_err(io_err("cannot read", path))?;
    Ok(buf)
}

impl<'a> HostCopier<'a> {
    pub(crate) fn new(tree: &'a mut Tree, inputs: &'a mut Inputs) -> Self {
        HostCopier {
            tree,
            inputs,
            seen: HashSet::new(),
            elf_queue: VecDeque::new(),
            elf_done: HashSet::new(),
            ld_dirs: None,
        }
    }

    fn insert(&mut self, at: &[u8], node: Node, host: &Path) -> Result<(), ImageError> {
        self.tree
            .insert(at, node)
            .map(|_| ())
            .map_err(|reason| ImageError::Place {
                path: host.to_path_buf(),
                reason,
            })
    }

    /// Add an absolute host path at the same path in the image: every symlink met on the
    /// way (usrmerge's `/bin -> usr/bin`, `python3 -> python3.11`) is recreated as a
    /// symlink and followed. Directories are copied recursively. With `closure`, ELF files
    /// get their interpreter and libraries added too.
    pub(crate) fn add_path(&mut self, path: &Path, closure: bool) -> Result<(), ImageError> {
        if !path.is_absolute() {
            return Err(ImageError::Place {
                path: path.to_path_buf(),
                reason: "host paths must be absolute".into(),
            });
        }
        let mut pending: Vec<std::ffi::OsString> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect();
        pending.reverse();
        let mut cur = PathBuf::from("/");
        let mut links = 0;
        while let Some(c) = pending.pop() {
            if c == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&c);
            self.inputs.note(&next);
            let meta = fs::symlink_metadata(&next).map_err(io_err("cannot inspect", &next))?;
            let last = pending.is_empty();
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ImageError::io(
                        "cannot resolve",
                        path,
                        io::Error::other("too many levels of symbolic links"),
                    ));
                }
                let target = fs::read_link(&next).map_err(io_err("cannot read link", &next))?;
                self.insert(
                    &image_path(&next),
                    Node::Symlink {
                        target: target.as_os_str().as_bytes().to_vec(),
                        uid: 0,
                        gid: 0,
                    },
                    &next,
                )?;
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                let mut parts: Vec<std::ffi::OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                parts.reverse();
                pending.extend(parts);
                continue;
            }
            if last {
                return self.add_resolved(&next, &meta, closure, ROOT);
            }
            if !meta.is_dir() {
                return Err(ImageError::io(
                    "cannot resolve",
                    path,
                    io::Error::other(format!("`{}` is not a directory", next.display())),
                ));
            }
            cur = next;
        }
        Ok(()) // `/` itself: nothing to add
    }

    /// A Nix store path, copied as it is at the same path. Unlike [`Self::add_path`] its
    /// parents are not fingerprinted: `/nix/store` changes with every build on the
    /// machine, while a store path, once valid, never changes.
    pub(crate) fn add_store_path(&mut self, path: &Path) -> Result<(), ImageError> {
        let ok = path.starts_with("/") && !path.components().any(|c| c == Component::ParentDir);
        if !ok {
            return Err(ImageError::Place {
                path: path.to_path_buf(),
                reason: "store paths must be absolute".into(),
            });
        }
        let meta = fs::symlink_metadata(path).map_err(io_err("cannot inspect", path))?;
        if !self.seen.insert(path.to_path_buf()) {
            return Ok(());
        }
        self.copy_entry(path, &image_path(path), &meta, false, ROOT)
    }

    /// `real` has no symlink in its parents; add it (recursively for a directory).
    fn add_resolved(
        &mut self,
        real: &Path,
        meta: &fs::Metadata,
        closure: bool,
        owner: Owner,
    ) -> Result<(), ImageError> {
        if !self.seen.insert(real.to_path_buf()) {
            return Ok(());
        }
        self.copy_entry(real, &image_path(real), meta, closure, owner)
    }

    /// Copy `host` (not followed if a symlink) to `at` in the image.
    pub(crate) fn copy_entry(
        &mut self,
        host: &Path,
        at: &[u8],
        meta: &fs::Metadata,
        closure: bool,
        owner: Owner,
    ) -> Result<(), ImageError> {
        self.inputs.note(host);
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(host).map_err(io_err("cannot read link", host))?;
            self.insert(
                at,
                Node::Symlink {
                    target: target.as_os_str().as_bytes().to_vec(),
                    uid: owner.uid,
                    gid: owner.gid,
                },
                host,
            )?;
            // From the host, a symlink inside a copied directory brings its target along
            // (Debian's `sitecustomize.py -> /etc/python3.11/...`), unless the target is a
            // directory (a link to `/` must not copy the machine). Dangling links stay.
            if closure {
                let dest = host.parent().unwrap_or(Path::new("/")).join(&target);
                if let Ok(m) = fs::metadata(&dest)
                    && !m.is_dir()
                {
                    self.add_path(&dest, closure)?;
                }
            }
            return Ok(());
        }
        if ft.is_dir() {
            self.insert(
                at,
                Node::Dir {
                    mode: meta.mode() & 0o7777,
                    uid: owner.uid,
                    gid: owner.gid,
                },
                host,
            )?;
            let mut names: Vec<std::ffi::OsString> = fs::read_dir(host)
                .map_err(io_err("cannot list", host))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(io_err("cannot list", host))?;
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            for name in names {
                let child = host.join(&name);
                let m = fs::symlink_metadata(&child).map_err(io_err("cannot inspect", &child))?;
                let mut child_at = at.to_vec();
                child_at.push(b'/');
                child_at.extend_from_slice(name.as_bytes());
                if closure {
                    self.seen.insert(child.clone());
                }
                self.copy_entry(&child, &child_at, &m, closure, owner)?;
            }
            return Ok(());
        }
        if ft.is_file() {
            self.insert(
                at,
                Node::File {
                    content: Content::Host(host.to_path_buf()),
                    size: meta.size(),
                    mode: owner.file_mode.unwrap_or(meta.mode()) & 0o7777,
                    uid: owner.uid,
                    gid: owner.gid,
                },
                host,
            )?;
            if closure && elf::is_elf(&read_head(host, 4)?) {
                self.elf_queue.push_back(host.to_path_buf());
            }
            return Ok(());
        }
        Err(ImageError::Unsupported {
            path: host.to_path_buf(),
        })
    }

    /// Resolve the ELF closure of everything queued so far.
    pub(crate) fn resolve_closures(&mut self) -> Result<(), ImageError> {
        while let Some(file) = self.elf_queue.pop_front() {
            let real = fs::canonicalize(&file).map_err(io_err("cannot resolve", &file))?;
            if !self.elf_done.insert(real.clone()) {
                continue;
            }
            let bytes = fs::read(&real).map_err(io_err("cannot read", &real))?;
            let info = elf::parse(&bytes).map_err(|reason| ImageError::BadElf {
                path: real.clone(),
                reason,
            })?;
            if let Some(interp) = &info.interp {
                self.add_path(Path::new(interp), true)?;
            }
            let origin = real.parent().unwrap_or(Path::new("/")).to_path_buf();
            for lib in &info.needed {
                let found = self.find_library(lib, &info, &origin)?;
                match found {
                    Some(p) => self.add_path(&p, true)?,
                    None => {
                        return Err(ImageError::LibraryNotFound {
                            path: real.clone(),
                            lib: lib.clone(),
                            searched: self
                                .search_dirs(&info, &origin)?
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn ld_conf_dirs(&mut self) -> Result<Vec<PathBuf>, ImageError> {
        if let Some(d) = &self.ld_dirs {
            return Ok(d.clone());
        }
        let mut dirs = Vec::new();
        let mut seen_files = HashSet::new();
        self.read_ld_conf(Path::new("/etc/ld.so.conf"), &mut dirs, &mut seen_files)?;
        for d in DEFAULT_LIB_DIRS {
            dirs.push(PathBuf::from(d));
        }
        self.ld_dirs = Some(dirs.clone());
        Ok(dirs)
    }

    fn read_ld_conf(
        &mut self,
        file: &Path,
        dirs: &mut Vec<PathBuf>,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<(), ImageError> {
        if !seen.insert(file.to_path_buf()) {
            return Ok(());
        }
        self.inputs.note(file);
        let Ok(text) = fs::read_to_string(file) else {
            return Ok(()); // no ld.so.conf: only the default directories
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(pattern) = line.strip_prefix("include") {
                for f in glob_files(pattern.trim(), file, self.inputs) {
                    self.read_ld_conf(&f, dirs, seen)?;
                }
            } else if line.starts_with('/') {
                dirs.push(PathBuf::from(line));
            }
        }
        Ok(())
    }

    fn search_dirs(
        &mut self,
        info: &elf::ElfInfo,
        origin: &Path,
    ) -> Result<Vec<PathBuf>, ImageError> {
        let expand = |d: &str| -> PathBuf {
            let o = origin.to_string_lossy();
            PathBuf::from(d.replace("${ORIGIN}", &o).replace("$ORIGIN", &o))
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        if info.runpath.is_empty() {
            dirs.extend(
                info.rpath
                    .iter()
                    .filter(|d| !d.is_empty())
                    .map(|d| expand(d)),
            );
        }
        dirs.extend(
            info.runpath
                .iter()
                .filter(|d| !d.is_empty())
                .map(|d| expand(d)),
        );
        dirs.extend(self.ld_conf_dirs()?);
        Ok(dirs)
    }

    fn find_library(
        &mut self,
        lib: &str,
        info: &elf::ElfInfo,
        origin: &Path,
    ) -> Result<Option<PathBuf>, ImageError> {
        if lib.contains('/') {
            let p = origin.join(lib);
            self.inputs.note(&p);
            return Ok(p.exists().then_some(p));
        }
        for dir in self.search_dirs(info, origin)? {
            let cand = dir.join(lib);
            self.inputs.note(&cand);
            let Ok(m) = fs::metadata(&cand) else { continue };
            if !m.is_file() {
                continue;
            }
            // Skip a library of another class or machine, as the loader does.
            let head = read_head(&cand, 20)?;
            if elf::class_machine(&head) == Some((info.class, info.machine)) {
                return Ok(Some(cand));
            }
        }
        Ok(None)
    }
}

/// `include` patterns of ld.so.conf: a directory and a file-name pattern with one `*`.
fn glob_files(pattern: &str, from: &Path, inputs: &mut Inputs) -> Vec<PathBuf> {
    let pattern = if pattern.starts_with('/') {
        PathBuf::from(pattern)
    } else {
        from.parent().unwrap_or(Path::new("/")).join(pattern)
    };
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let (pre, post) = name.split_once('*').unwrap_or((&name, ""));
    let exact = !name.contains('*');
    inputs.note(dir);
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            if exact {
                *n == name
            } else {
                n.len() >= pre.len() + post.len() && n.starts_with(pre) && n.ends_with(post)
            }
        })
        .map(|n| dir.join(n))
        .collect();
    out.sort();
    out
}
