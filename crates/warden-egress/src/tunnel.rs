//! Byte pumping with an idle timeout (never a total one) and byte counts.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Buffer per direction: large enough that a 1 GiB transfer is not syscall bound.
pub(crate) const COPY_BUF: usize = 128 * 1024;

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// Shared by both directions of one connection.
#[derive(Debug)]
pub(crate) struct Activity {
    last_ms: AtomicU64,
    pub(crate) up: AtomicU64,
    pub(crate) down: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            last_ms: AtomicU64::new(now_ms()),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Resolves once nothing was read in either direction for `idle`. `None` never
    /// resolves (an idle timeout of 0 in the policy disables it).
    pub(crate) async fn idle(&self, idle: Option<Duration>) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let quiet = now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if quiet >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
        }
    }
}

/// Which counter a [`Tracked`] reader adds to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// Read from the sandbox, sent upstream.
    Up,
    /// Read from upstream, sent to the sandbox.
    Down,
}

/// A stream whose reads count bytes and mark activity.
pub(crate) struct Tracked<'a, S> {
    pub(crate) inner: S,
    act: &'a Activity,
    side: Side,
}

impl<'a, S> Tracked<'a, S> {
    pub(crate) fn new(inner: S, act: &'a Activity, side: Side) -> Self {
        Tracked { inner, act, side }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            let c = match this.side {
                Side::Up => &this.act.up,
                Side::Down => &this.act.down,
            };
            c.fetch_add(n, Ordering::Relaxed);
            this.act.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Socket options for both ends of every connection. `TCP_NODELAY`: a proxy that lets
/// Nagle hold small writes adds tens of milliseconds per request (the 44 ms complaint).
pub fn setup_socket(s: &TcpStream) -> io::Result<()> {
    s.set_nodelay(true)
}

/// Copy both ways until both sides are done, an error, or `idle` without traffic.
/// Each direction half-closes its writer when its reader ends, so long streams and
/// WebSockets see exactly what the peer did.
pub(crate) async fn tunnel(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    act: &Activity,
    idle: Option<Duration>,
) -> io::Result<()> {
    // Out of descriptors for pipes: fall back to copying.
    #[cfg(target_os = "linux")]
    if let Ok(pipes) = crate::splice::Pipes::new() {
        return tokio::select! {
            r = crate::splice::tunnel(client, upstream, pipes, act) => r,
            _ = act.idle(idle) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
        };
    }
    copy_tunnel(client, upstream, act, idle).await
}

/// Portable fallback: copy through user-space buffers.
async fn copy_tunnel(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    act: &Activity,
    idle: Option<Duration>,
) -> io::Result<()> {
    let mut a = Tracked::new(client, act, Side::Up);
    let mut b = Tracked::new(upstream, act, Side::Down);
    tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUF, COPY_BUF) => r.map(|_| ()),
        _ = act.idle(idle) => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
    }
}

/// Copy `limit` bytes (`None`: until the end of `r`) of a message body from `r` to `w`,
/// never reading past `limit`; `w` stays open. Returns the bytes copied: fewer than
/// `limit` means `r` ended first. On Linux the bytes go through a pipe with `splice(2)`
/// and never reach user space.
pub(crate) async fn copy_body(
    r: &mut Tracked<'_, OwnedReadHalf>,
    w: &mut OwnedWriteHalf,
    limit: Option<u64>,
) -> io::Result<u64> {
    // Out of descriptors for a pipe: copy instead.
    #[cfg(target_os = "linux")]
    if let Ok(pipe) = crate::splice::pipe() {
        let (from, to) = (r.inner.as_ref(), w.as_ref());
        return crate::splice::relay(from, to, &pipe, limit, r.act, r.side).await;
    }
    let mut buf = vec![0u8; COPY_BUF];
    let mut copied = 0u64;
    while limit != Some(copied) {
        let room = match limit {
            Some(l) => usize::try_from(l - copied).map_or(buf.len(), |left| left.min(buf.len())),
            None => buf.len(),
        };
        let n = r.read(&mut buf[..room]).await?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await?;
        copied += n as u64;
    }
    Ok(copied)
}
