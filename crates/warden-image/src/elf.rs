//! The few ELF facts the closure needs: class, machine, `PT_INTERP`, and the `DT_NEEDED`,
//! `DT_RPATH` and `DT_RUNPATH` entries of the dynamic section. Hand-written so that every
//! read is bounds-checked (a malformed file is an error, never a panic) and so that the
//! builder pulls in no ELF crate for four fields.

pub(crate) const MAGIC: &[u8; 4] = b"\x7fELF";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// 1 = 32-bit, 2 = 64-bit.
    pub class: u8,
    pub machine: u16,
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

pub(crate) fn is_elf(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Class and machine from the first 20 bytes, to reject a library of the wrong kind the
/// way the dynamic loader does.
pub(crate) fn class_machine(head: &[u8]) -> Option<(u8, u16)> {
    if !is_elf(head) || head.len() < 20 {
        return None;
    }
    let le = match head[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let m = [head[18], head[19]];
    Some((
        head[4],
        if le {
            u16::from_le_bytes(m)
        } else {
            u16::from_be_bytes(m)
        },
    ))
}

struct Reader<'a> {
    b: &'a [u8],
    le: bool,
    wide: bool,
}

impl Reader<'_> {
    fn bytes(&self, off: u64, n: usize) -> Result<&[u8], String> {
        let start = usize::try_from(off).map_err(|_| "offset out of range".to_string())?;
        let end = start
            .checked_add(n)
            .ok_or_else(|| "offset out of range".to_string())?;
        self.b
            .get(start..end)
            .ok_or_else(|| format!("truncated at offset {off}"))
    }
    fn u16(&self, off: u64) -> Result<u16, String> {
        let s = self.bytes(off, 2)?;
        let a = [s[0], s[1]];
        Ok(if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        })
    }
    fn u32(&self, off: u64) -> Result<u32, String> {
        let s = self.bytes(off, 4)?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }
    fn u64(&self, off: u64) -> Result<u64, String> {
        let s = self.bytes(off, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        })
    }
    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, off: u64) -> Result<u64, String> {
        if self.wide {
            self.u64(off)
        } else {
            self.u32(off).map(u64::from)
        }
    }
    fn cstr(&self, off: u64) -> Result<String, String> {
        let start = usize::try_from(off).map_err(|_| "string out of range".to_string())?;
        let rest = self
            .b
            .get(start..)
            .ok_or_else(|| format!("string at {off} out of range"))?;
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or_else(|| format!("unterminated string at {off}"))?;
        String::from_utf8(rest[..end].to_vec()).map_err(|_| format!("non-UTF-8 string at {off}"))
    }
}

struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;
/// More dynamic entries than any real object has; bounds the loop on garbage input.
const MAX_DYN: u64 = 1 << 16;

pub(crate) fn parse(b: &[u8]) -> Result<ElfInfo, String> {
    if !is_elf(b) {
        return Err("no ELF magic".into());
    }
    if b.len() < 52 {
        return Err("truncated header".into());
    }
    let wide = match b[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown class {c}")),
    };
    let le = match b[5] {
        1 => true,
        2 => false,
        d => return Err(format!("unknown data encoding {d}")),
    };
    let r = Reader { b, le, wide };
    let machine = r.u16(18)?;
    let (phoff, phentsize, phnum) = if wide {
        (r.u64(32)?, r.u16(54)?, r.u16(56)?)
    } else {
        (u64::from(r.u32(28)?), r.u16(42)?, r.u16(44)?)
    };
    let mut phdrs = Vec::new();
    for i in 0..u64::from(phnum) {
        let base = phoff
            .checked_add(i * u64::from(phentsize))
            .ok_or("program header offset overflows")?;
        let ph = if wide {
            Phdr {
                kind: r.u32(base)?,
                offset: r.u64(base.saturating_add(8))?,
                vaddr: r.u64(base.saturating_add(16))?,
                filesz: r.u64(base.saturating_add(32))?,
            }
        } else {
            Phdr {
                kind: r.u32(base)?,
                offset: u64::from(r.u32(base.saturating_add(4))?),
                vaddr: u64::from(r.u32(base.saturating_add(8))?),
                filesz: u64::from(r.u32(base.saturating_add(16))?),
            }
        };
        phdrs.push(ph);
    }
    let mut info = ElfInfo {
        class: b[4],
        machine,
        ..ElfInfo::default()
    };
    if let Some(p) = phdrs.iter().find(|p| p.kind == PT_INTERP) {
        let raw = r.bytes(
            p.offset,
            usize::try_from(p.filesz).map_err(|_| "PT_INTERP too large")?,
        )?;
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        let s = String::from_utf8(raw[..end].to_vec()).map_err(|_| "non-UTF-8 PT_INTERP")?;
        info.interp = Some(s);
    }
    let Some(dynamic) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) else {
        return Ok(info);
    };
    let entsize: u64 = if wide { 16 } else { 8 };
    let count = (dynamic.filesz / entsize).min(MAX_DYN);
    let mut strtab = None;
    let mut entries = Vec::new();
    for i in 0..count {
        let off = dynamic
            .offset
            .checked_add(i * entsize)
            .ok_or("dynamic offset overflows")?;
        let tag = r.word(off)?;
        let val = r.word(off.saturating_add(entsize / 2))?;
        if tag == DT_NULL {
            break;
        }
        if tag == DT_STRTAB {
            strtab = Some(val);
        }
        entries.push((tag, val));
    }
    let needs_strings = entries
        .iter()
        .any(|(t, _)| matches!(*t, DT_NEEDED | DT_RPATH | DT_RUNPATH));
    if !needs_strings {
        return Ok(info);
    }
    let strtab_vaddr = strtab.ok_or("dynamic section has no DT_STRTAB")?;
    // DT_STRTAB is a virtual address: map it to a file offset through the PT_LOADs.
    let strtab_off = phdrs
        .iter()
        .filter(|p| p.kind == PT_LOAD)
        .find(|p| strtab_vaddr >= p.vaddr && strtab_vaddr - p.vaddr < p.filesz)
        .map(|p| (strtab_vaddr - p.vaddr).saturating_add(p.offset))
        .ok_or("DT_STRTAB is outside every PT_LOAD segment")?;
    for (tag, val) in entries {
        let at = strtab_off
            .checked_add(val)
            .ok_or("string offset overflows")?;
        match tag {
            DT_NEEDED => info.needed.push(r.cstr(at)?),
            DT_RPATH => info
                .rpath
                .extend(r.cstr(at)?.split(':').map(str::to_string)),
            DT_RUNPATH => info
                .runpath
                .extend(r.cstr(at)?.split(':').map(str::to_string)),
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_host_binary() {
        let b = std::fs::read("/bin/ls").unwrap();
        let info = parse(&b).unwrap();
        assert_eq!(info.class, 2);
        assert!(info.needed.contains(&"libc.so.6".to_string()), "{info:?}");
        assert!(
            info.interp.as_deref().unwrap().contains("ld-linux"),
            "{info:?}"
        );
    }

    #[test]
    fn minimal_static_header_has_no_deps() {
        let b = crate::test_support::minimal_elf();
        let info = parse(&b).unwrap();
        assert_eq!(
            info,
            ElfInfo {
                class: 2,
                machine: 62,
                ..ElfInfo::default()
            }
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(parse(b"hello").unwrap_err(), "no ELF magic");
        assert_eq!(parse(b"\x7fELF").unwrap_err(), "truncated header");
        let host = std::fs::read("/bin/ls").unwrap();
        // Every truncation and a few corruptions of a real binary: errors or partial
        // results, never a panic.
        for len in (0..host.len().min(16384)).step_by(7) {
            let _ = parse(&host[..len]);
        }
        for i in (0..2048).step_by(3) {
            let mut b = host.clone();
            b[i] ^= 0xff;
            let _ = parse(&b);
        }
        let mut huge = crate::test_support::minimal_elf();
        // phnum = 0xffff at a wild offset.
        huge[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        huge[56..58].copy_from_slice(&[0xff, 0xff]);
        huge[54..56].copy_from_slice(&[0x38, 0]);
        assert!(parse(&huge).is_err());
    }
}
