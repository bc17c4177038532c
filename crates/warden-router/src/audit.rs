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
use std::time::{Duration, Instant};

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
/// How long the writer lets events gather after the first of a batch. Waking a blocked
/// thread costs a system call and a context switch; at thousands of calls a second,
/// once per call was a tenth of the router's CPU.
const BATCH_PAUSE: Duration = Duration::from_millis(10);
/// Written events reach the file at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

enum Msg {
    Event(Box<RouterEvent>),
    Flush(mpsc::Sender<()>),
}

/// Writes events as JSON lines from a thread of its own (file IO blocks), in batches
/// (an event is written within about 10 ms, and flushed to the file within half a
/// second). A full queue drops the event and counts it ([`JsonLines::dropped`]):
/// auditing never stalls traffic.
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
                let mut line = Vec::with_capacity(512);
                let mut flushed = Instant::now();
                let mut write = |msg: Msg, out: &mut io::BufWriter<_>| match msg {
                    Msg::Event(ev) => {
                        line.clear();
                        if serde_json::to_writer(&mut line, &ev).is_ok() {
                            line.push(b'\n');
                            let _ = out.write_all(&line);
                        }
                    }
                    Msg::Flush(ack) => {
                        let _ = out.flush();
                        let _ = ack.send(());
                    }
                };
                loop {
                    match rx.recv_timeout(FLUSH_EVERY) {
                        Ok(msg) => {
                            write(msg, &mut out);
                            // Let the events of a busy moment gather, then write them
                            // together: the router's tasks wake this thread once per
                            // batch, not once per call.
                            std::thread::sleep(BATCH_PAUSE);
                            while let Ok(msg) = rx.try_recv() {
                                write(msg, &mut out);
                            }
                            // Steady traffic never leaves the queue idle for half a
                            // second: flush on the clock too.
                            if flushed.elapsed() >= FLUSH_EVERY {
                                let _ = out.flush();
                                flushed = Instant::now();
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let _ = out.flush();
                            flushed = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_writes_every_event_in_order_in_batches() {
        let out = Shared::default();
        let sink = JsonLines::start(out.clone()).unwrap();
        let event = |i: u64| RouterEvent {
            ts_ms: i,
            sandbox: "agent".into(),
            endpoint: "messages".into(),
            status: 200,
            decision: "route".into(),
            ..RouterEvent::default()
        };
        // Bursts with pauses between them: some batches of many, some of one.
        for burst in 0..5u64 {
            for i in 0..1_000 {
                sink.record(event(burst * 1_000 + i));
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        sink.flush();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let got: Vec<RouterEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(sink.dropped(), 0);
        assert_eq!(got, (0..5_000).map(event).collect::<Vec<_>>());
    }
}
