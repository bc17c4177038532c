//! The answer on its way back: each upstream frame is passed on as it arrives (no
//! buffering), an idle timer cuts a stream that stopped moving, usage is read on the
//! fly, and the audit event is written when the answer ends, fails, or is abandoned.
//!
//! A stream from a provider of the other API goes through a [`StreamTranslator`] on
//! the way: each upstream frame becomes the caller's events it completes, at once.

use crate::api::Usage;
use crate::audit::RouterEvent;
use crate::translate::StreamTranslator;
use crate::upstream::{Sender, Upstream};
use crate::{Router, unix_ms};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// JSON answers are read for usage up to this size (they are relayed whole regardless).
const MAX_USAGE_JSON: usize = 8 << 20;
/// Longest stream line kept while looking for usage.
const MAX_SSE_LINE: usize = 1 << 20;

/// The body of every answer the router sends.
pub enum RouterBody {
    /// Written by the router itself (errors, the model list).
    Full(Option<Bytes>),
    /// Relayed from a provider.
    Relay(Box<Relay>),
}

impl std::fmt::Debug for RouterBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouterBody::Full(_) => f.write_str("RouterBody::Full"),
            RouterBody::Relay(_) => f.write_str("RouterBody::Relay"),
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RouterBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RouterBody::Relay(r) => r.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RouterBody::Full(b) => b.is_none(),
            RouterBody::Relay(r) => r.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RouterBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            RouterBody::Full(None) => SizeHint::with_exact(0),
            RouterBody::Relay(r) if r.translate.is_none() => r.inner.size_hint(),
            RouterBody::Relay(_) => SizeHint::default(),
        }
    }
}

enum Scan {
    /// `text/event-stream`: look at `data:` lines that mention usage.
    Sse(Vec<u8>),
    /// A JSON answer, kept until the end (up to a cap).
    Json(Vec<u8>),
}

pub struct Relay {
    inner: Incoming,
    /// The connection, back to the pool if the answer is read to its end.
    conn: Option<(Sender, Arc<Upstream>)>,
    idle_after: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    scan: Scan,
    usage: Usage,
    router: Arc<Router>,
    event: Option<RouterEvent>,
    start: Instant,
    finished: bool,
    /// Set when the provider speaks the other API.
    translate: Option<Box<StreamTranslator>>,
}

impl Relay {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: Incoming,
        conn: (Sender, Arc<Upstream>),
        sse: bool,
        idle_after: Duration,
        router: Arc<Router>,
        event: RouterEvent,
        start: Instant,
    ) -> Relay {
        Relay {
            inner,
            conn: Some(conn),
            idle_after,
            idle: Box::pin(tokio::time::sleep(idle_after)),
            scan: if sse {
                Scan::Sse(Vec::new())
            } else {
                Scan::Json(Vec::new())
            },
            usage: Usage::default(),
            router,
            event: Some(event),
            start,
            finished: false,
            translate: None,
        }
    }

    /// Translate the provider's stream into the caller's API on the way.
    pub(crate) fn translating(mut self, t: StreamTranslator) -> Relay {
        self.translate = Some(Box::new(t));
        self
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if frame.is_data() {
                        if let Some(ev) = &mut self.event
                            && ev.ttfb_ms.is_none()
                        {
                            ev.ttfb_ms = Some(self.start.elapsed().as_millis() as u64);
                        }
                        let deadline = tokio::time::Instant::now() + self.idle_after;
                        self.idle.as_mut().reset(deadline);
                    }
                    let Some(t) = &mut self.translate else {
                        if let Some(data) = frame.data_ref() {
                            self.observe(data);
                        }
                        // A body of known length may be dropped by the server as soon
                        // as its last byte is out, without asking for the end: complete
                        // it now.
                        if self.inner.is_end_stream() {
                            self.complete();
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    };
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers of the provider's API mean nothing here
                    };
                    let mut out = t.feed(&data);
                    if self.inner.is_end_stream() {
                        out.extend(t.end());
                    }
                    let out = Bytes::from(out);
                    self.observe(&out);
                    if self.inner.is_end_stream() {
                        self.complete();
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    // Nothing complete yet: poll the provider again.
                }
                Poll::Ready(None) => {
                    let tail = match &mut self.translate {
                        Some(t) => Bytes::from(t.end()),
                        None => Bytes::new(),
                    };
                    self.observe(&tail);
                    self.complete();
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.conn = None;
                    self.finish(Some(format!("upstream failed during the answer: {e}")));
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending => {
                    if self.idle.as_mut().poll(cx).is_ready() {
                        self.conn = None;
                        let msg = format!(
                            "no byte from the provider for {} s, answer cut",
                            self.idle_after.as_secs()
                        );
                        self.finish(Some(msg.clone()));
                        return Poll::Ready(Some(Err(msg.into())));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// The answer was read to its end: usage, connection back to the pool, event.
    fn complete(&mut self) {
        if self.finished {
            return;
        }
        if let Scan::Json(buf) = &self.scan
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(buf)
        {
            self.usage.take(&v);
        }
        if let Some((sender, up)) = self.conn.take() {
            up.release(sender);
        }
        self.finish(None);
    }

    fn observe(&mut self, data: &Bytes) {
        match &mut self.scan {
            Scan::Json(buf) => {
                if buf.len() + data.len() <= MAX_USAGE_JSON {
                    buf.extend_from_slice(data);
                }
            }
            Scan::Sse(line) => {
                for chunk in data.split_inclusive(|b| *b == b'\n') {
                    if line.len() + chunk.len() <= MAX_SSE_LINE {
                        line.extend_from_slice(chunk);
                    }
                    if chunk.ends_with(b"\n") {
                        let l = std::mem::take(line);
                        if let Some(json) = l.strip_prefix(b"data:")
                            && memchr(json, b"usage")
                            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(json)
                        {
                            self.usage.take(&v);
                        }
                    }
                }
            }
        }
    }

    /// Write the event and count the tokens, once.
    fn finish(&mut self, error: Option<String>) {
        self.finished = true;
        let Some(mut ev) = self.event.take() else {
            return;
        };
        ev.latency_ms = self.start.elapsed().as_millis() as u64;
        ev.input_tokens = self.usage.input;
        ev.output_tokens = self.usage.output;
        if let Some(t) = &self.translate {
            if t.notes.dropped_thinking > 0 {
                ev.notes.push(format!(
                    "dropped {} thinking block(s) of the answer: the caller's API has none",
                    t.notes.dropped_thinking
                ));
            }
            if let Some(e) = &t.failed
                && error.is_none()
                && ev.error.is_none()
            {
                ev.error = Some(format!(
                    "the provider's stream could not be translated: {e}"
                ));
            }
        }
        if ev.error.is_none() {
            ev.error = error;
        }
        let tokens = self.usage.total();
        if tokens > 0 {
            self.router.limits.add_tokens(Instant::now(), tokens);
        }
        if ev.ts_ms == 0 {
            ev.ts_ms = unix_ms();
        }
        self.router.audit.record(ev);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.finished {
            // Dropping `inner` and the connection here closes the upstream socket.
            self.conn = None;
            self.finish(Some("caller went away before the answer ended".into()));
        }
    }
}

fn memchr(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
