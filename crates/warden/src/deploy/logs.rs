//! Sandbox output captured to size-rotated files: `stdout.log` and `stderr.log`, each
//! rotated to `.1`, `.2`... when it would grow past the limit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Default size of one log file before it is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated files kept besides the live one.
pub const KEEP: u32 = 2;

pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: u32,
}

impl RotatingLog {
    pub fn open(path: &Path, max: u64, keep: u32) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            max: max.max(1),
            keep,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }

    /// Append `data`, rotating first when the live file would pass the limit (a single
    /// write larger than the limit goes whole into a fresh file).
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + data.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

/// Copy everything from `from` into the rotating log until end of file.
pub fn pump(mut from: File, mut to: RotatingLog) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                // Waiting in `read` is idle; writing is work a clone must not overlap.
                let _busy = crate::services::busy();
                // A full disk must not block the sandbox: output is dropped, not queued.
                let _ = to.write(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The last `n` lines of `text` (all of it when `n` is `None`).
pub fn tail(text: &[u8], n: Option<usize>) -> &[u8] {
    let Some(n) = n else { return text };
    if n == 0 {
        return &text[text.len()..];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_limit_and_keeps_two() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = RotatingLog::open(&path, 10, 2).unwrap();
        for chunk in [&b"aaaaaa"[..], b"bbbbbb", b"cccccc", b"dddddd"] {
            log.write(chunk).unwrap();
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"dddddd");
        assert_eq!(
            std::fs::read(dir.path().join("stdout.log.1")).unwrap(),
            b"cccccc"
        );
        assert_eq!(
            std::fs::read(dir.path().join("stdout.log.2")).unwrap(),
            b"bbbbbb"
        );
        assert!(!dir.path().join("stdout.log.3").exists());
    }

    #[test]
    fn reopening_continues_the_size_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        RotatingLog::open(&path, 8, 1)
            .unwrap()
            .write(b"12345")
            .unwrap();
        RotatingLog::open(&path, 8, 1)
            .unwrap()
            .write(b"6789")
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"6789");
        assert_eq!(std::fs::read(dir.path().join("x.log.1")).unwrap(), b"12345");
    }

    #[test]
    fn tail_counts_lines() {
        assert_eq!(tail(b"a\nb\nc\n", Some(2)), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", Some(2)), b"b\nc");
        assert_eq!(tail(b"a\nb\n", Some(5)), b"a\nb\n");
        assert_eq!(tail(b"a\nb\n", Some(0)), b"");
        assert_eq!(tail(b"a\nb\n", None), b"a\nb\n");
    }
}
