//! One audit event per call, handed to a sink the caller provides.
//!
//! Events carry what was decided and measured, never prompt or completion text. A sink
//! must not block: the router calls it on its own tasks, in the request path. The sinks
//! here hand the event to a channel ([`std::sync::mpsc::Sender`],
//! [`tokio::sync::mpsc::UnboundedSender`]) or to a writer thread ([`JsonLines`]) that
//! drops and counts events when it falls behind, as the egress proxy's audit log does.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// One call through the router.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterEvent {
    /// Unix milliseconds when the request arrived.
    pub ts_ms: u64,
    pub sandbox: String,
    /// `messages`, `count-tokens`, `chat-completions`, `responses`, `models`, or
    /// `unknown`.
    pub endpoint: String,
    /// The model the caller asked for.
    pub requested_model: Option<String>,
    /// The provider that answered (the last one tried).
    pub provider: Option<String>,
    /// The model name sent to that provider (after `model=`).
    pub upstream_model: Option<String>,
    /// Providers tried, in order (more than one when a fallback was used).
    pub attempts: Vec<String>,
    /// Status sent to the caller.
    pub status: u16,
    /// Request arrival to the end of the answer (or to the disconnect).
    pub latency_ms: u64,
    /// Request arrival to the first byte of the upstream's answer body.
    pub ttfb_ms: Option<u64>,
    /// From the upstream's usage report (JSON body or the final stream events).
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Detectors that found something in the request's text.
    pub detectors: Vec<String>,
    /// `route`, `redact`, `reroute`, `block`, `limit`, `invalid`, `no-route`,
    /// `untranslatable`, `estimate`, `upstream-error`, `not-found`, `list`.
    pub decision: String,
    /// The translation the call went through when its provider speaks the other API
    /// (`messages->chat-completions`, `chat-completions->messages`,
    /// `responses->messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<String>,
    /// What a translation dropped on purpose, or a fallback it passed over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What went wrong, if anything: never request or answer text.
    pub error: Option<String>,
}

/// Where events go. Called on the router's tasks: must return at once.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, event: RouterEvent);
}

impl AuditSink for mpsc::Sender<RouterEvent> {
    fn record(&self, event: RouterEvent) {
        let _ = self.send(event);
    }
}

impl AuditSink for tokio::sync::mpsc::UnboundedSender<RouterEvent> {
    fn record(&self, event: RouterEvent) {
        let _ = self.send(event);
    }
}

/// Discards every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(&self, _event: RouterEvent) {}
}

const JSON_LINES_CAPACITY: usize = 16 * 1024;

enum Msg {
    Event(Box<RouterEvent>),
    Flush(mpsc::Sender<()>),
}

/// Writes events as JSON lines from a thread of its own (file IO blocks). A full queue
/// drops the event and counts it ([`JsonLines::dropped`]): auditing never stalls traffic.
pub struct JsonLines {
    tx: mpsc::SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLines")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl JsonLines {
    /// Append to `path` (created if missing).
    pub fn open(path: &std::path::Path) -> io::Result<JsonLines> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        JsonLines::start(f)
    }

    /// Write to any writer; flushed at least every half second and on [`JsonLines::flush`].
    pub fn start(out: impl Write + Send + 'static) -> io::Result<JsonLines> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(JSON_LINES_CAPACITY);
        let mut out = io::BufWriter::with_capacity(64 * 1024, out);
        std::thread::Builder::new()
            .name("warden-router-audit".into())
            .spawn(move || {
                loop {
                    match rx.recv_timeout(Duration::from_millis(500)) {
                        Ok(Msg::Event(ev)) => {
                            if let Ok(mut line) = serde_json::to_vec(&ev) {
                                line.push(b'\n');
                                let _ = out.write_all(&line);
                            }
                        }
                        Ok(Msg::Flush(ack)) => {
                            let _ = out.flush();
                            let _ = ack.send(());
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let _ = out.flush();
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            let _ = out.flush();
                            return;
                        }
                    }
                }
            })?;
        Ok(JsonLines {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Events dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Block until every event recorded so far is written. Call from a plain thread.
    pub fn flush(&self) {
        let (ack, done) = mpsc::channel();
        if self.tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(10));
        }
    }
}

impl AuditSink for JsonLines {
    fn record(&self, event: RouterEvent) {
        if self.tx.try_send(Msg::Event(Box::new(event))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
