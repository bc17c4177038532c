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
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const AUDIT_FILE: &str = "audit.jsonl";
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// One decision, as a JSON line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
///
/// The channel is unbounded and grows block by block as events queue up (a bounded one
/// allocates and writes all its slots when made: ~400 KB and a tenth of a millisecond on
/// every proxy start); `queued` caps it at [`CHANNEL_CAPACITY`] events all the same.
#[derive(Debug)]
pub(crate) struct Recorder {
    tx: Sender<Msg>,
    /// Events sent and not yet taken by the writer thread.
    queued: Arc<AtomicUsize>,
    dropped: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    pub(crate) fn start(
        dir: &Path,
        limits: AuditLimits,
        approvals: Arc<ApprovalStore>,
    ) -> io::Result<Recorder> {
        crate::private_dir(dir)?;
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut log = AuditFile::open(dir.to_path_buf(), limits)?;
        let taken = queued.clone();
        let thread = std::thread::Builder::new()
            .name("warden-egress-audit".into())
            .spawn(move || run(rx, &taken, &mut log, &approvals, limits.debounce))?;
        Ok(Recorder {
            tx,
            queued,
            dropped: AtomicU64::new(0),
            thread: Some(thread),
        })
    }

    /// Never blocks: with [`CHANNEL_CAPACITY`] events already queued (or the writer
    /// gone) the event is dropped and counted.
    pub(crate) fn send(&self, ev: AuditEvent) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= CHANNEL_CAPACITY {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.tx.send(Msg::Event(Box::new(ev))).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
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

/// `m`, taken off the channel: an event no longer counts towards the cap.
fn taken(queued: &AtomicUsize, m: Msg) -> Msg {
    if let Msg::Event(_) = m {
        queued.fetch_sub(1, Ordering::AcqRel);
    }
    m
}

fn run(
    rx: Receiver<Msg>,
    queued: &AtomicUsize,
    log: &mut AuditFile,
    approvals: &ApprovalStore,
    debounce: Duration,
) {
    let mut last_flush = Instant::now();
    let recv = |m| taken(queued, m);
    loop {
        let msg = rx.recv_timeout(debounce).map(recv);
        let mut stop = false;
        let mut ack = None;
        match msg {
            Ok(Msg::Event(ev)) => {
                // Errors are counted, not raised: the audit log cannot stop traffic.
                let _ = log.append(&ev);
                // Drain what else is queued before touching the disk again.
                while let Ok(m) = rx.try_recv().map(recv) {
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
            .mode(0o600)
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
            .mode(0o600)
            .open(self.dir.join(AUDIT_FILE))?;
        self.out = BufWriter::with_capacity(64 * 1024, f);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            sandbox: "s".into(),
            ..AuditEvent::default()
        }
    }

    #[test]
    fn events_past_the_cap_are_dropped_and_counted_until_the_writer_takes_some() {
        let (tx, rx) = mpsc::channel();
        let recorder = Recorder {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
            thread: None,
        };
        for _ in 0..CHANNEL_CAPACITY + 5 {
            recorder.send(event());
        }
        assert_eq!(recorder.dropped(), 5);
        // The writer takes two: two more fit, the third does not.
        for _ in 0..2 {
            let m = rx.try_recv().expect("queued event");
            assert!(matches!(taken(&recorder.queued, m), Msg::Event(_)));
        }
        for _ in 0..3 {
            recorder.send(event());
        }
        assert_eq!(recorder.dropped(), 6);
        assert_eq!(rx.try_iter().count(), CHANNEL_CAPACITY);
    }
}
