//! Pending approvals: destinations a sandbox tried to reach and a human may allow.
//!
//! One record per distinct destination (sandbox, host, port, and the method for plain
//! HTTP; none for tunnels). The proxy keeps them in memory and writes
//! `state_dir/approvals.json` (temp file + rename, debounced). A record is `pending`
//! whenever the current policy refuses its destination: an `approved` one is pending
//! again at its next refusal (its rule was removed); only a human's `denied` stays. Each
//! status records the count it was set at, and a flush adopts a status another process
//! wrote to the file (under an advisory lock) unless a refusal counted since is newer,
//! so the CLI and the proxy never lose each other's work.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub const APPROVALS_FILE: &str = "approvals.json";
const LOCK_FILE: &str = "approvals.lock";
const STORE_VERSION: u32 = 1;
/// Distinct destinations kept per state directory.
pub const MAX_RECORDS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalStatus {
    Pending,
    /// A human said no: no longer surfaced, still counted.
    Denied,
    /// The policy now allows it (seen at a reload); for a tool call, a human let the
    /// next identical call through.
    Approved,
    /// A tool call's approval was used by the call it let through.
    Used,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Short stable hash of sandbox, host, port (and method for plain HTTP).
    pub id: String,
    pub sandbox: String,
    /// Normalized host name or address (IPv6 in brackets).
    pub host: String,
    pub port: u16,
    /// `None` for CONNECT tunnels; the method for plain HTTP.
    pub method: Option<String>,
    /// Why it was refused (`DenyReason::describe()` or the standing order that asks).
    pub reason: String,
    /// The standing order that needs a human, for `ask` rules.
    pub order: Option<String>,
    pub count: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    /// One request line that caused it, e.g. `CONNECT example.com:443`.
    pub sample: String,
    pub status: ApprovalStatus,
    /// `count` when `status` was set: a refusal counted later is newer than the status.
    #[serde(default)]
    pub status_at: u64,
    /// An agent's tool call held by an `ask` order (`Bash(git push origin main)`), asked
    /// through the orders endpoint; `host` and `port` are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// What became of a tool call asked through [`ask_tool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolAsk {
    /// A human approved it: this call goes through (the approval is used up).
    Proceed,
    Pending,
    Denied,
}

/// The ID of a sandbox's tool call.
pub fn tool_approval_id(sandbox: &str, call: &str) -> String {
    approval_id(sandbox, &format!("tool:{call}"), 0, None)
}

/// Asks for tool call `call` of `sandbox` (held by `order`): lets it through when a human
/// approved it since it was last used, otherwise counts it and leaves it pending (or
/// denied, if a human said no). Works on the file under its lock, so any number of
/// sandboxes' endpoints, proxies and the CLI share the queue; approvals are per sandbox.
pub fn ask_tool(
    state_dir: &Path,
    sandbox: &str,
    call: &str,
    order: Option<&str>,
    reason: &str,
    now: u64,
) -> io::Result<(String, ToolAsk)> {
    crate::private_dir(state_dir)?;
    let _lock = lock(state_dir)?;
    let mut map = read_file(state_dir);
    let id = tool_approval_id(sandbox, call);
    if map.len() >= MAX_RECORDS && !map.contains_key(&id) {
        return Err(io::Error::other("the approvals queue is full"));
    }
    let rec = map.entry(id.clone()).or_insert_with(|| Approval {
        id: id.clone(),
        sandbox: sandbox.to_string(),
        host: String::new(),
        port: 0,
        method: None,
        reason: reason.to_string(),
        order: order.map(str::to_string),
        count: 0,
        first_seen: now,
        last_seen: now,
        sample: call.to_string(),
        status: ApprovalStatus::Pending,
        status_at: 0,
        tool: Some(call.to_string()),
    });
    // Each change of status moves past every status set before (the proxies adopt the
    // newer word from the file by this count).
    rec.count = rec.count.max(rec.status_at) + 1;
    rec.last_seen = now;
    rec.reason = reason.to_string();
    let outcome = match rec.status {
        ApprovalStatus::Approved => {
            rec.status = ApprovalStatus::Used;
            ToolAsk::Proceed
        }
        ApprovalStatus::Denied => ToolAsk::Denied,
        ApprovalStatus::Pending | ApprovalStatus::Used => {
            rec.status = ApprovalStatus::Pending;
            ToolAsk::Pending
        }
    };
    if outcome != ToolAsk::Denied {
        rec.status_at = rec.count;
    }
    write_file(state_dir, &map)?;
    Ok((id, outcome))
}

/// The status of record `id`, read from the file.
pub fn approval_status(state_dir: &Path, id: &str) -> Option<ApprovalStatus> {
    read_file(state_dir).get(id).map(|a| a.status)
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    approvals: Vec<Approval>,
}

/// The stable ID of a destination: 12 hex digits of SHA-256 over its parts.
pub fn approval_id(sandbox: &str, host: &str, port: u16, method: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(sandbox.as_bytes());
    h.update([0]);
    h.update(host.as_bytes());
    h.update([0]);
    h.update(port.to_string().as_bytes());
    if let Some(m) = method {
        h.update([0]);
        h.update(m.as_bytes());
    }
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pending approvals in `state_dir`, oldest first. A missing or unreadable file is an
/// empty list (the CLI shows nothing rather than failing).
pub fn load_approvals(state_dir: &Path) -> Vec<Approval> {
    let mut all = load_all_approvals(state_dir);
    all.retain(|a| a.status == ApprovalStatus::Pending);
    all
}

/// Every record, whatever its status, oldest first.
pub fn load_all_approvals(state_dir: &Path) -> Vec<Approval> {
    let mut v: Vec<Approval> = read_file(state_dir).into_values().collect();
    v.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
    v
}

/// Mark a record denied in the file, for when no proxy is running (a running proxy
/// adopts the change at its next flush). `Ok(false)` when no record has that ID.
pub fn deny_approval(state_dir: &Path, id: &str) -> io::Result<bool> {
    set_status_in_file(state_dir, id, ApprovalStatus::Denied)
}

/// Mark a record approved in the file (after `warden approve` wrote the rule).
pub fn mark_approved(state_dir: &Path, id: &str) -> io::Result<bool> {
    set_status_in_file(state_dir, id, ApprovalStatus::Approved)
}

fn set_status_in_file(state_dir: &Path, id: &str, status: ApprovalStatus) -> io::Result<bool> {
    let _lock = lock(state_dir)?;
    let mut map = read_file(state_dir);
    let Some(rec) = map.get_mut(id) else {
        return Ok(false);
    };
    rec.status = status;
    rec.status_at = rec.count;
    write_file(state_dir, &map)?;
    Ok(true)
}

fn read_file(state_dir: &Path) -> BTreeMap<String, Approval> {
    let Ok(text) = fs::read_to_string(state_dir.join(APPROVALS_FILE)) else {
        return BTreeMap::new();
    };
    match serde_json::from_str::<StoreFile>(&text) {
        Ok(f) if f.version == STORE_VERSION => {
            f.approvals.into_iter().map(|a| (a.id.clone(), a)).collect()
        }
        _ => BTreeMap::new(),
    }
}

fn write_file(state_dir: &Path, map: &BTreeMap<String, Approval>) -> io::Result<()> {
    let file = StoreFile {
        version: STORE_VERSION,
        approvals: map.values().cloned().collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).map_err(io::Error::other)?;
    text.push('\n');
    let tmp: PathBuf = state_dir.join(format!(".{APPROVALS_FILE}.{}.tmp", std::process::id()));
    {
        let mut f = private_file(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, state_dir.join(APPROVALS_FILE))
}

/// A new file readable by root only (truncated if it exists).
fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// An exclusive advisory lock on `approvals.lock`, released on drop.
fn lock(state_dir: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(state_dir.join(LOCK_FILE))?;
    f.lock()?;
    Ok(f)
}

/// What one refusal contributes to the store.
#[derive(Debug, Clone)]
pub(crate) struct Sighting<'a> {
    pub sandbox: &'a str,
    pub host: String,
    pub port: u16,
    pub method: Option<&'a str>,
    pub reason: String,
    pub order: Option<String>,
    pub sample: String,
    pub now: u64,
}

/// The proxy's in-memory view, flushed by the recorder thread.
#[derive(Debug)]
pub(crate) struct ApprovalStore {
    dir: PathBuf,
    map: Mutex<BTreeMap<String, Approval>>,
    dirty: AtomicBool,
    /// A destination was refused for the first time: written without the debounce, so
    /// `warden approvals` lists it as soon as the sandbox has seen the refusal.
    fresh: AtomicBool,
}

impl ApprovalStore {
    pub(crate) fn open(dir: &Path) -> ApprovalStore {
        ApprovalStore {
            dir: dir.to_path_buf(),
            map: Mutex::new(read_file(dir)),
            dirty: AtomicBool::new(false),
            fresh: AtomicBool::new(false),
        }
    }

    /// Count one refusal; returns the record's ID, or `None` when the store is full.
    pub(crate) fn record(&self, s: Sighting<'_>) -> Option<String> {
        let id = approval_id(s.sandbox, &s.host, s.port, s.method);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_RECORDS && !map.contains_key(&id) {
            // A sandbox spraying random names must not grow the file without bound; the
            // audit log still has every attempt.
            return None;
        }
        if !map.contains_key(&id) {
            self.fresh.store(true, Ordering::Release);
        }
        let rec = map.entry(id.clone()).or_insert_with(|| Approval {
            id: id.clone(),
            sandbox: s.sandbox.to_string(),
            host: s.host.clone(),
            port: s.port,
            method: s.method.map(str::to_string),
            reason: s.reason.clone(),
            order: s.order.clone(),
            count: 0,
            first_seen: s.now,
            last_seen: s.now,
            sample: s.sample.clone(),
            status: ApprovalStatus::Pending,
            status_at: 0,
            tool: None,
        });
        rec.count += 1;
        rec.last_seen = s.now;
        rec.reason = s.reason;
        if rec.status == ApprovalStatus::Approved {
            // Approved once, refused now: the rule that allowed it is gone, so a human
            // must look again (listed at once, like a first refusal).
            rec.status = ApprovalStatus::Pending;
            rec.status_at = rec.count;
            self.fresh.store(true, Ordering::Release);
        }
        drop(map);
        self.dirty.store(true, Ordering::Release);
        Some(id)
    }

    /// Whether a destination was refused for the first time since the last call.
    pub(crate) fn take_fresh(&self) -> bool {
        self.fresh.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn snapshot(&self) -> Vec<Approval> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    pub(crate) fn set_status(&self, id: &str, status: ApprovalStatus) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rec) = map.get_mut(id) else {
            return false;
        };
        rec.status = status;
        rec.status_at = rec.count;
        drop(map);
        self.dirty.store(true, Ordering::Release);
        true
    }

    /// Re-evaluate pending records against a new policy; `allowed` says whether the
    /// destination is now allowed.
    pub(crate) fn settle(&self, allowed: impl Fn(&Approval) -> bool) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for rec in map.values_mut() {
            if rec.status == ApprovalStatus::Pending && rec.tool.is_none() && allowed(rec) {
                rec.status = ApprovalStatus::Approved;
                rec.status_at = rec.count;
                changed = true;
            }
        }
        drop(map);
        if changed {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Write the file if anything changed. Adopts status changes made on disk.
    pub(crate) fn flush(&self, force: bool) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) && !force {
            return Ok(());
        }
        crate::private_dir(&self.dir)?;
        let _lock = lock(&self.dir)?;
        let disk = read_file(&self.dir);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (id, d) in disk {
            match map.get_mut(&id) {
                // Set on disk no earlier than the memory's status: the newer word.
                Some(m) if d.status != m.status && d.status_at >= m.status_at => {
                    m.status = d.status;
                    m.status_at = d.status_at;
                }
                Some(_) => {}
                None => {
                    map.insert(id, d);
                }
            }
        }
        let copy = map.clone();
        drop(map);
        write_file(&self.dir, &copy).inspect_err(|_| self.dirty.store(true, Ordering::Release))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(host: &str, now: u64) -> Sighting<'static> {
        Sighting {
            sandbox: "agent",
            host: host.to_string(),
            port: 443,
            method: None,
            reason: "no egress rule allows this destination".into(),
            order: None,
            sample: format!("CONNECT {host}:443"),
            now,
        }
    }

    #[test]
    fn id_is_stable_and_separates_methods() {
        let id = approval_id("agent", "example.com", 443, None);
        assert_eq!(id.len(), 12);
        assert_eq!(id, approval_id("agent", "example.com", 443, None));
        assert_ne!(id, approval_id("agent", "example.com", 443, Some("GET")));
        assert_ne!(id, approval_id("other", "example.com", 443, None));
        assert_ne!(id, approval_id("agent", "example.com", 80, None));
    }

    #[test]
    fn counts_flushes_and_adopts_denials_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = ApprovalStore::open(dir.path());
        let id = store.record(sighting("a.test", 100)).unwrap();
        store.record(sighting("a.test", 105));
        store.flush(false).unwrap();
        let on_disk = load_approvals(dir.path());
        assert_eq!(on_disk.len(), 1);
        assert_eq!(
            (
                on_disk[0].count,
                on_disk[0].first_seen,
                on_disk[0].last_seen
            ),
            (2, 100, 105)
        );

        // The CLI denies in the file while the proxy keeps counting in memory.
        assert!(deny_approval(dir.path(), &id).unwrap());
        assert!(!deny_approval(dir.path(), "nope").unwrap());
        store.record(sighting("a.test", 110));
        store.flush(false).unwrap();
        let all = load_all_approvals(dir.path());
        assert_eq!((all[0].status, all[0].count), (ApprovalStatus::Denied, 3));
        assert!(load_approvals(dir.path()).is_empty());
        // No temp files left behind.
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn an_approved_destination_refused_again_is_pending_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ApprovalStore::open(dir.path());
        let id = store.record(sighting("a.test", 100)).unwrap();
        store.flush(false).unwrap();
        assert!(store.take_fresh());
        // `warden approve` marks it in the file; the proxy adopts that at its next flush.
        assert!(mark_approved(dir.path(), &id).unwrap());
        store.flush(true).unwrap();
        assert!(load_approvals(dir.path()).is_empty());
        assert_eq!(store.snapshot()[0].status, ApprovalStatus::Approved);
        // The rule is removed from the file and the destination refused again: pending,
        // written at once, and the approval still in the file does not win over it.
        store.record(sighting("a.test", 200));
        assert!(store.take_fresh());
        store.flush(false).unwrap();
        let pending = load_approvals(dir.path());
        assert_eq!(
            pending
                .iter()
                .map(|a| (a.id.as_str(), a.count))
                .collect::<Vec<_>>(),
            vec![(id.as_str(), 2)]
        );
        // Approved again after that refusal: adopted again.
        assert!(mark_approved(dir.path(), &id).unwrap());
        store.flush(true).unwrap();
        assert!(load_approvals(dir.path()).is_empty());
        assert_eq!(store.snapshot()[0].status, ApprovalStatus::Approved);
        // A human's denial stays whatever is refused after it.
        assert!(deny_approval(dir.path(), &id).unwrap());
        store.flush(true).unwrap();
        store.record(sighting("a.test", 300));
        store.flush(true).unwrap();
        let all = load_all_approvals(dir.path());
        assert_eq!((all[0].status, all[0].count), (ApprovalStatus::Denied, 3));
    }

    #[test]
    fn store_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = ApprovalStore::open(dir.path());
        for i in 0..MAX_RECORDS {
            assert!(store.record(sighting(&format!("h{i}.test"), 1)).is_some());
        }
        assert_eq!(store.record(sighting("one-more.test", 1)), None);
        // Known destinations still count.
        assert!(store.record(sighting("h0.test", 2)).is_some());
        assert_eq!(store.snapshot().len(), MAX_RECORDS);
    }

    #[test]
    fn unreadable_file_is_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(APPROVALS_FILE), "{not json").unwrap();
        assert!(load_approvals(dir.path()).is_empty());
        assert!(load_approvals(&dir.path().join("missing")).is_empty());
    }
}
