//! Releasing the page mappings a supervisor's start-up left behind.
//!
//! Starting a container runs a lot of code once (argument parsing, JSON, libcontainer's
//! create and start paths); the kernel maps each code page the process touches, plus up
//! to 15 neighbours already in the page cache (fault-around). An idle supervisor thus
//! kept ~5.5 MiB of the warden executable and ~1.4 MiB of libc mapped, counted in its
//! RSS although no supervisor owns them: they are clean pages of files, shared with
//! every other warden process through the page cache.
//!
//! After each start the supervisor drops its mappings (`MADV_DONTNEED`) of every private,
//! non-writable file mapping that holds no anonymous page, i.e. whose every page is an
//! unmodified copy of the file: code and read-only data of the executable and its
//! libraries. Nothing is freed from the page cache and nothing is lost: a page that is
//! needed again faults back in from the page cache, exactly as after the kernel reclaims
//! it under memory pressure. Mappings holding anonymous pages (relocated read-only data
//! after RELRO, anything a debugger patched) are left alone, since dropping those would
//! revert them to the file's bytes.

use std::io;

/// One mapping from `/proc/self/smaps` that may be released.
#[derive(Debug, PartialEq)]
struct Candidate {
    start: usize,
    end: usize,
}

/// The private, non-writable, file-backed mappings of `smaps` with no anonymous page.
fn candidates(smaps: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut current: Option<Candidate> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if first.ends_with(':') {
            if first == "Anonymous:"
                && let Some(c) = current.take()
                && fields.next() == Some("0")
            {
                out.push(c);
            }
            continue;
        }
        // A mapping's header: `start-end perms offset dev inode [path]`.
        current = None;
        let Some((start, end)) = first.split_once('-') else {
            continue;
        };
        let perms = fields.next().unwrap_or("");
        let path = line.split_whitespace().nth(5).unwrap_or("");
        let releasable = perms.len() == 4
            && perms.starts_with('r')
            && !perms.contains('w')
            && perms.ends_with('p')
            && path.starts_with('/');
        if let (true, Ok(start), Ok(end)) = (
            releasable,
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) && end > start
        {
            current = Some(Candidate { start, end });
        }
    }
    out
}

/// Drops this process's mappings of clean file pages (see the module docs); returns how
/// many bytes of address space were released (resident or not).
pub fn release_clean_file_pages() -> io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for c in candidates(&smaps) {
        // SAFETY: the range is a whole mapping of this process whose pages are all
        // unmodified copies of its file (no anonymous page): MADV_DONTNEED only unmaps
        // them, and the next access maps the same bytes again from the page cache.
        let rc = unsafe {
            libc::madvise(
                c.start as *mut libc::c_void,
                c.end - c.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += c.end - c.start;
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:01 123 /usr/bin/warden
Size:               1024 kB
Rss:                 512 kB
Anonymous:             0 kB
55d0c0100000-55d0c0900000 r-xp 00100000 fe:01 123 /usr/bin/warden
Size:               8192 kB
Anonymous:             0 kB
55d0c0900000-55d0c0980000 r--p 00900000 fe:01 123 /usr/bin/warden
Size:                512 kB
Anonymous:           512 kB
55d0c0980000-55d0c0990000 rw-p 00980000 fe:01 123 /usr/bin/warden
Anonymous:            24 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:            72 kB
7f0000000000-7f0000010000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000100000-7f0000200000 r--s 00000000 00:05 9 /dev/shm/shared
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000500000-7f0000600000 ---p 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings_are_candidates() {
        assert_eq!(
            candidates(SMAPS),
            vec![
                // The executable's read-only data and code; not its relocated RELRO part
                // (anonymous pages), not its writable data, the heap, the vDSO, a shared
                // mapping or an inaccessible guard.
                Candidate {
                    start: 0x55d0c0000000,
                    end: 0x55d0c0100000
                },
                Candidate {
                    start: 0x55d0c0100000,
                    end: 0x55d0c0900000
                },
                Candidate {
                    start: 0x7f0000300000,
                    end: 0x7f0000400000
                },
            ]
        );
        assert!(candidates("garbage\n-\nAnonymous: x\n").is_empty());
    }

    fn status_kib(key: &str) -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    #[test]
    fn releasing_unmaps_file_pages_and_everything_keeps_working() {
        // Touch plenty of code and read-only data first.
        let text = format!("{:?}", candidates(SMAPS));
        let before = status_kib("RssFile:");
        let released = release_clean_file_pages().unwrap();
        let after = status_kib("RssFile:");
        assert!(released > 0);
        assert!(
            after < before,
            "RssFile {before} kB before, {after} kB after"
        );
        // The same code and data, mapped again from the page cache, give the same result.
        assert_eq!(format!("{:?}", candidates(SMAPS)), text);
        let json: serde_json::Value = serde_json::from_str(r#"{"a":[1,2,3]}"#).unwrap();
        assert_eq!(json["a"][2], 3);
    }
}
