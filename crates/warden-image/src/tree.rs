//! The image's file tree before it becomes a layer, and the deterministic tar writer.
//!
//! Paths are stored without a leading `/`, keyed by their components joined with NUL so
//! that the map's byte order is exactly "depth first, children sorted by raw bytes"
//! (`a/b` sorts before `a-c`, which plain byte order of `a/b` and `a-c` would not give).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// Read from this host path when the layer is written.
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    File {
        content: Content,
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: Vec<u8>,
        uid: u32,
        gid: u32,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<Vec<u8>, Node>,
}

/// Split an image path into normal components; `.` is dropped and `..` pops (never above
/// the root).
pub(crate) fn components(path: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

fn key(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&0u8)
}

fn unkey(key: &[u8]) -> Vec<u8> {
    key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect()
}

/// Loop bound for symlink resolution inside the tree, like the kernel's `MAXSYMLINKS`.
const MAX_LINKS: usize = 40;

impl Tree {
    pub(crate) fn get(&self, path: &[u8]) -> Option<&Node> {
        self.nodes.get(&key(&components(path)))
    }

    pub(crate) fn contains(&self, path: &[u8]) -> bool {
        self.get(path).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Resolve every component but the last through the tree's own symlinks, so that a
    /// `copy ... to="/bin/x"` lands in `usr/bin/x` when `bin` is the usrmerge symlink.
    fn resolve_parent(&self, path: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut pending: Vec<Vec<u8>> = components(path);
        pending.reverse();
        let Some(last) = pending.first().cloned() else {
            return Ok(Vec::new());
        };
        pending.remove(0);
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            if c == b".." {
                cur.pop();
                continue;
            }
            cur.push(c);
            match self.nodes.get(&key(&cur)) {
                Some(Node::Symlink { target, .. }) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err("too many levels of symbolic links".into());
                    }
                    cur.pop();
                    if target.starts_with(b"/") {
                        cur.clear();
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        if !t.is_empty() && t != b"." {
                            pending.push(t.to_vec());
                        }
                    }
                }
                Some(Node::File { .. }) => {
                    return Err(format!(
                        "`/{}` is a file, not a directory",
                        String::from_utf8_lossy(&unkey(&key(&cur)))
                    ));
                }
                Some(Node::Dir { .. }) | None => {}
            }
        }
        cur.push(last);
        Ok(cur)
    }

    /// Insert a node (later sources win); missing parents become `0755` root directories.
    /// Returns the path where the node actually landed.
    pub(crate) fn insert(&mut self, path: &[u8], node: Node) -> Result<Vec<u8>, String> {
        let comps = self.resolve_parent(path)?;
        if comps.is_empty() {
            return Ok(Vec::new()); // the root itself: not a tar entry
        }
        for i in 1..comps.len() {
            self.nodes.entry(key(&comps[..i])).or_insert(Node::Dir {
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        let k = key(&comps);
        if matches!(node, Node::Dir { .. })
            && matches!(self.nodes.get(&k), Some(Node::Symlink { .. }))
        {
            // A directory over a symlink (a tree copied to `/bin` after `bin -> usr/bin`)
            // goes through the link, as `mkdir -p` would.
            let mut probe = unkey(&k);
            probe.extend_from_slice(b"/x");
            let mut real = self.resolve_parent(&probe)?;
            real.pop();
            if real != comps {
                return self.insert(&unkey(&key(&real)), node);
            }
        }
        let mut moved = Vec::new();
        if !matches!(node, Node::Dir { .. }) {
            // A non-directory replaces a directory together with everything below it...
            let mut prefix = k.clone();
            prefix.push(0);
            let below: Vec<Vec<u8>> = self
                .nodes
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .map(|(p, _)| p.clone())
                .collect();
            for p in below {
                if let Some(n) = self.nodes.remove(&p) {
                    moved.push((p[prefix.len()..].to_vec(), n));
                }
            }
        }
        let is_link = matches!(node, Node::Symlink { .. });
        self.nodes.insert(k.clone(), node);
        if is_link {
            // ...except that a symlink to a directory keeps it: what was placed under
            // `bin/` before the usrmerge link `bin -> usr/bin` arrived moves to `usr/bin/`.
            let mut base = unkey(&k);
            base.push(b'/');
            for (rel, n) in moved {
                let mut p = base.clone();
                p.extend_from_slice(&unkey(&rel));
                self.insert(&p, n)?;
            }
        }
        Ok(unkey(&k))
    }

    /// Insert a directory unless something already exists at that path.
    pub(crate) fn ensure_dir(&mut self, path: &[u8], mode: u32) -> Result<(), String> {
        if !self.contains(path) {
            self.insert(
                path,
                Node::Dir {
                    mode,
                    uid: 0,
                    gid: 0,
                },
            )?;
        }
        Ok(())
    }

    /// Entries in layer order: `(path without leading slash, node)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Vec<u8>, &Node)> {
        self.nodes.iter().map(|(k, n)| (unkey(k), n))
    }
}

/// A tar stream whose every header byte is decided here: ustar headers, PAX records for
/// what ustar cannot hold, fixed mtime, empty uname/gname, zero device numbers.
pub(crate) struct TarWriter<W: Write> {
    w: W,
    mtime: u64,
}

pub(crate) enum Kind {
    File,
    Symlink,
    Dir,
}

const USTAR_MAX_OCTAL_7: u64 = 0o7777777;
const USTAR_MAX_OCTAL_11: u64 = 0o77777777777;

fn octal(field: &mut [u8], value: u64) {
    // `len - 1` octal digits, zero padded, then NUL.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "<len> <key>=<value>\n" where len counts the whole record including its own digits.
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(w: W, mtime: u64) -> Self {
        TarWriter { w, mtime }
    }

    fn header(
        &self,
        name: &[u8],
        kind: u8,
        mode: u32,
        ids: (u64, u64),
        size: u64,
        link: &[u8],
    ) -> [u8; 512] {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], ids.0.min(USTAR_MAX_OCTAL_7));
        octal(&mut h[116..124], ids.1.min(USTAR_MAX_OCTAL_7));
        octal(&mut h[124..136], size.min(USTAR_MAX_OCTAL_11));
        octal(&mut h[136..148], self.mtime.min(USTAR_MAX_OCTAL_11));
        h[156] = kind;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], 0);
        octal(&mut h[337..345], 0);
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        octal(&mut h[148..155], sum);
        h[155] = b' ';
        h
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.w.write_all(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    /// Write one entry's header (plus a PAX header when needed). For files the caller
    /// then writes exactly `size` bytes and calls [`TarWriter::finish_file`].
    pub(crate) fn entry(
        &mut self,
        path: &[u8],
        kind: Kind,
        mode: u32,
        ids: (u32, u32),
        size: u64,
        link: &[u8],
    ) -> io::Result<()> {
        let (flag, mode, size) = match kind {
            Kind::File => (b'0', mode, size),
            Kind::Symlink => (b'2', 0o777, 0),
            Kind::Dir => (b'5', mode, 0),
        };
        let mut name = path.to_vec();
        if matches!(kind, Kind::Dir) {
            name.push(b'/');
        }
        let (uid, gid) = (u64::from(ids.0), u64::from(ids.1));
        let mut pax = Vec::new();
        if name.len() > 100 {
            pax_record(&mut pax, "path", &name);
        }
        if link.len() > 100 {
            pax_record(&mut pax, "linkpath", link);
        }
        if uid > USTAR_MAX_OCTAL_7 {
            pax_record(&mut pax, "uid", uid.to_string().as_bytes());
        }
        if gid > USTAR_MAX_OCTAL_7 {
            pax_record(&mut pax, "gid", gid.to_string().as_bytes());
        }
        if size > USTAR_MAX_OCTAL_11 {
            pax_record(&mut pax, "size", size.to_string().as_bytes());
        }
        if !pax.is_empty() {
            let h = self.header(
                b"././@PaxHeader",
                b'x',
                0o644,
                (0, 0),
                pax.len() as u64,
                b"",
            );
            self.w.write_all(&h)?;
            self.w.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let h = self.header(&name, flag, mode, (uid, gid), size, link);
        self.w.write_all(&h)
    }

    pub(crate) fn data(&mut self) -> &mut W {
        &mut self.w
    }

    pub(crate) fn finish_file(&mut self, size: u64) -> io::Result<()> {
        self.pad(size)
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.w.write_all(&[0u8; 1024])?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> Node {
        Node::Dir {
            mode: 0o755,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn order_is_depth_first_by_raw_bytes() {
        let mut t = Tree::default();
        for p in ["a-c", "a/b", "B", "a/b/z", "a/a"] {
            t.insert(p.as_bytes(), dir()).unwrap();
        }
        let order: Vec<String> = t
            .iter()
            .map(|(p, _)| String::from_utf8(p).unwrap())
            .collect();
        assert_eq!(order, ["B", "a", "a/a", "a/b", "a/b/z", "a-c"]);
    }

    #[test]
    fn inserts_follow_tree_symlinks_in_parents() {
        let mut t = Tree::default();
        t.insert(b"usr/bin", dir()).unwrap();
        t.insert(
            b"bin",
            Node::Symlink {
                target: b"usr/bin".to_vec(),
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        let at = t
            .insert(
                b"/bin/tool",
                Node::File {
                    content: Content::Bytes(vec![]),
                    size: 0,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                },
            )
            .unwrap();
        assert_eq!(at, b"usr/bin/tool");
        assert!(!t.contains(b"bin/tool") || t.contains(b"usr/bin/tool"));
    }

    #[test]
    fn usrmerge_link_arriving_late_keeps_what_was_below() {
        let mut t = Tree::default();
        let file = Node::File {
            content: Content::Bytes(b"x".to_vec()),
            size: 1,
            mode: 0o755,
            uid: 1,
            gid: 1,
        };
        t.insert(b"/bin/tool", file.clone()).unwrap();
        t.insert(
            b"bin",
            Node::Symlink {
                target: b"usr/bin".to_vec(),
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        let paths: Vec<String> = t
            .iter()
            .map(|(p, _)| String::from_utf8(p).unwrap())
            .collect();
        assert_eq!(paths, ["bin", "usr", "usr/bin", "usr/bin/tool"]);
        assert_eq!(t.get(b"usr/bin/tool"), Some(&file));
    }

    #[test]
    fn directory_over_a_symlink_goes_through_it() {
        let mut t = Tree::default();
        t.insert(
            b"bin",
            Node::Symlink {
                target: b"usr/bin".to_vec(),
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        let at = t
            .insert(
                b"/bin",
                Node::Dir {
                    mode: 0o700,
                    uid: 5,
                    gid: 5,
                },
            )
            .unwrap();
        assert_eq!(at, b"usr/bin");
        assert!(matches!(t.get(b"bin"), Some(Node::Symlink { .. })));
    }

    #[test]
    fn file_replaces_directory_subtree() {
        let mut t = Tree::default();
        t.insert(b"x/y/z", dir()).unwrap();
        t.insert(
            b"x",
            Node::File {
                content: Content::Bytes(vec![]),
                size: 0,
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'a'; 95]);
        // "103 path=" + 95 + "\n" = 4 + 5 + 95 + 1 = 105? the length must match the bytes.
        let text = String::from_utf8(v.clone()).unwrap();
        let n: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, v.len());
    }

    #[test]
    fn header_bytes_are_fixed() {
        let mut w = TarWriter::new(Vec::new(), 0);
        w.entry(b"etc", Kind::Dir, 0o40755, (0, 0), 0, b"").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 512 + 1024);
        assert_eq!(&out[..4], b"etc/");
        assert_eq!(&out[100..108], b"0000755\0");
        assert_eq!(&out[136..148], b"00000000000\0");
        assert_eq!(out[156], b'5');
        // Readable by an independent tar implementation.
        let mut a = tar::Archive::new(&out[..]);
        let e: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().into_owned())
            .collect();
        assert_eq!(e, [PathBuf::from("etc/")]);
    }

    #[test]
    fn long_names_use_pax() {
        let long = "d/".repeat(80) + "file";
        let mut w = TarWriter::new(Vec::new(), 7);
        w.entry(long.as_bytes(), Kind::File, 0o644, (0, 3_000_000), 3, b"")
            .unwrap();
        w.data().write_all(b"abc").unwrap();
        w.finish_file(3).unwrap();
        let out = w.finish().unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut es = a.entries().unwrap();
        let mut e = es.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap().to_str().unwrap(), long);
        assert_eq!(e.header().gid().unwrap(), 3_000_000);
        assert_eq!(e.pax_extensions().unwrap().unwrap().count(), 2);
    }
}
