//! The audit log and the thread that writes it.
//!
//! Connection tasks hand events to a bounded channel with `try_send`: a full channel
//! drops the event and counts it, so disk trouble never stalls traffic. One plain thread
//! (not a tokio task: file IO blocks) appends JSON lines to `state_dir/audit.jsonl`,
//! rotates it at a size limit (`audit.jsonl.1` is the newest old file), and flushes the
//! approvals store when it changed (debounced).

use crate::approvals::ApprovalStore;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const AUDIT_FILE: &str = "audit.jsonl";
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// One decision, as a JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unix milliseconds when the connection was accepted.
    pub ts_ms: u64,
    pub sandbox: String,
    /// `connect`, `http` or `invalid` (no usable request head).
    pub kind: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// `allow`, `deny` (policy or validation) or `ask` (denied, pending a human).
    pub decision: String,
    /// Index of the rule that decided, when one did.
    pub rule: Option<usize>,
    pub reason: Option<String>,
    /// Status code sent to the client by the proxy (200 for an opened tunnel).
    pub status: u16,
    /// The address dialled.
    pub addr: Option<String>,
    /// Payload bytes read from the sandbox side and from the upstream side.
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    /// Approval record this refusal counted towards.
    pub approval: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditLimits {
    pub max_bytes: u64,
    pub keep: usize,
    pub debounce: Duration,
}

enum Msg {
    Event(Box<AuditEvent>),
    Flush(mpsc::Sender<()>),
    Stop,
}

/// Sending side, owned by `ProxyState`.
#[derive(Debug)]
pub(crate) struct Recorder {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    pub(crate) fn start(
        dir: &Path,
        limits: AuditLimits,
        approvals: Arc<ApprovalStore>,
    ) -> io::Result<Recorder> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let mut log = AuditFile::open(dir.to_path_buf(), limits)?;
        let thread = std::thread::Builder::new()
            .name("warden-egress-audit".into())
            .spawn(move || run(rx, &mut log, &approvals, limits.debounce))?;
        Ok(Recorder {
            tx,
            dropped: AtomicU64::new(0),
            thread: Some(thread),
        })
    }

    /// Never blocks: a full channel drops the event and counts it.
    pub(crate) fn send(&self, ev: AuditEvent) {
        match self.tx.try_send(Msg::Event(Box::new(ev))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Block until everything sent so far is on disk (audit and approvals).
    pub(crate) fn flush(&self) {
        let (ack_tx, ack_rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Msg>, log: &mut AuditFile, approvals: &ApprovalStore, debounce: Duration) {
    let mut last_flush = Instant::now();
    loop {
        let msg = rx.recv_timeout(debounce);
        let mut stop = false;
        let mut ack = None;
        match msg {
            Ok(Msg::Event(ev)) => {
                // Errors are counted, not raised: the audit log cannot stop traffic.
                let _ = log.append(&ev);
                // Drain what else is queued before touching the disk again.
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Event(ev) => {
                            let _ = log.append(&ev);
                        }
                        Msg::Flush(a) => ack = Some(a),
                        Msg::Stop => stop = true,
                    }
                }
            }
            Ok(Msg::Flush(a)) => ack = Some(a),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let due = last_flush.elapsed() >= debounce || approvals.take_fresh();
        if due || ack.is_some() || stop {
            let _ = log.flush();
            let _ = approvals.flush(false);
            last_flush = Instant::now();
        }
        if let Some(a) = ack {
            let _ = a.send(());
        }
        if stop {
            return;
        }
    }
}

struct AuditFile {
    dir: PathBuf,
    limits: AuditLimits,
    out: BufWriter<File>,
    size: u64,
}

impl AuditFile {
    fn open(dir: PathBuf, limits: AuditLimits) -> io::Result<AuditFile> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(AUDIT_FILE))?;
        let size = f.metadata()?.len();
        Ok(AuditFile {
            dir,
            limits,
            out: BufWriter::with_capacity(64 * 1024, f),
            size,
        })
    }

    fn append(&mut self, ev: &AuditEvent) -> io::Result<()> {
        let mut line = serde_json::to_vec(ev).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.limits.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// `audit.jsonl` becomes `.1`, `.1` becomes `.2`, ...; the oldest beyond `keep` goes.
    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let name = |i: usize| self.dir.join(format!("{AUDIT_FILE}.{i}"));
        if self.limits.keep == 0 {
            fs::remove_file(self.dir.join(AUDIT_FILE))?;
        } else {
            let _ = fs::remove_file(name(self.limits.keep));
            for i in (1..self.limits.keep).rev() {
                if name(i).exists() {
                    fs::rename(name(i), name(i + 1))?;
                }
            }
            fs::rename(self.dir.join(AUDIT_FILE), name(1))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(AUDIT_FILE))?;
        self.out = BufWriter::with_capacity(64 * 1024, f);
        self.size = 0;
        Ok(())
    }
}
