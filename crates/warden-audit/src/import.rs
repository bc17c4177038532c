//! Egress decisions, imported from a sandbox's `audit.jsonl` (written by its proxy) from
//! where the last import stopped.

use crate::error::AuditError;
use crate::event::{Detail, EVENT_VERSION, Event};
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const FILE: &str = "audit.jsonl";

/// Imports what the proxy of `sandbox` wrote to `<sandbox_dir>/audit.jsonl` since the
/// last import (following one rotation to `audit.jsonl.1`), as [`Detail::Egress`]
/// events of `tenant`. Returns how many were added. Each event's id derives from the
/// file and offset, so a line is never imported twice.
pub fn import_egress(
    store: &mut Store,
    sandbox: &str,
    tenant: Option<&str>,
    sandbox_dir: &Path,
) -> Result<usize, AuditError> {
    let key = format!("egress:{}", sandbox_dir.display());
    let current = sandbox_dir.join(FILE);
    let Ok(meta) = std::fs::metadata(&current) else {
        return Ok(0);
    };
    let cursor = store.cursor(&key)?;
    let mut events = Vec::new();
    let start = match cursor {
        Some((ino, off)) if ino == meta.ino() => off,
        Some((ino, off)) => {
            // Rotated since: finish the old file first when it is still there.
            let old = sandbox_dir.join(format!("{FILE}.1"));
            if std::fs::metadata(&old).is_ok_and(|m| m.ino() == ino) {
                read_lines(&old, ino, off, &key, sandbox, tenant, &mut events)?;
            }
            0
        }
        None => 0,
    };
    let end = read_lines(
        &current,
        meta.ino(),
        start,
        &key,
        sandbox,
        tenant,
        &mut events,
    )?;
    let added = events.len();
    if added > 0 || cursor != Some((meta.ino(), end)) {
        store.import(&key, (meta.ino(), end), &events)?;
    }
    Ok(added)
}

/// Reads the complete lines of `path` from `offset`; returns the offset after the last
/// complete one.
fn read_lines(
    path: &Path,
    ino: u64,
    offset: u64,
    key: &str,
    sandbox: &str,
    tenant: Option<&str>,
    out: &mut Vec<Event>,
) -> Result<u64, AuditError> {
    let io = |op| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { op, path, source }
    };
    let mut f = std::fs::File::open(path).map_err(io("open"))?;
    let len = f.metadata().map_err(io("read"))?.len();
    // A file shorter than the cursor was replaced in place: start again.
    let offset = if offset > len { 0 } else { offset };
    f.seek(SeekFrom::Start(offset)).map_err(io("read"))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io("read"))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut at = offset;
    for line in bytes[..complete].split_inclusive(|&b| b == b'\n') {
        let here = at;
        at += line.len() as u64;
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update([0]);
        h.update(ino.to_le_bytes());
        h.update(here.to_le_bytes());
        let id: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push(Event {
            version: EVENT_VERSION,
            id,
            at_ms: n("ts_ms").unwrap_or(0),
            tenant: tenant.map(str::to_string),
            sandbox: Some(sandbox.to_string()),
            actor: "proxy".into(),
            detail: Detail::Egress {
                decision: s("decision").unwrap_or_default(),
                host: s("host"),
                port: n("port").and_then(|p| u16::try_from(p).ok()),
                method: s("method"),
                status: n("status").and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                reason: s("reason"),
            },
        });
    }
    Ok(offset + complete as u64)
}
