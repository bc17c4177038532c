//! Zero-copy relaying on Linux: `splice(2)` moves bytes socket → pipe → socket inside
//! the kernel, so the proxy never copies tunnel payload, or a plain-HTTP body delimited
//! by `Content-Length` or by the end of the connection, through user space. What is
//! left is the kernel's work for the second TCP connection; `cargo xtask bench egress`
//! compares it with a minimal blocking splice relay, the floor for any proxy that ends
//! TCP.

use crate::tunnel::{Activity, Side};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for; the kernel may give less (checked with `F_GETPIPE_SZ`).
const PIPE_SIZE: libc::c_int = 1 << 20;

pub(crate) struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
}

pub(crate) fn pipe() -> io::Result<Pipe> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // A bigger pipe means fewer wakeups; failure (pipe-max-size) keeps the default.
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    // SAFETY: as above.
    let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
    let cap = if cap > 0 { cap as usize } else { 64 * 1024 };
    Ok(Pipe { r, w, cap })
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and null offsets (both ends are sockets or pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One pipe per direction.
pub(crate) struct Pipes(Pipe, Pipe);

impl Pipes {
    pub(crate) fn new() -> io::Result<Pipes> {
        Ok(Pipes(pipe()?, pipe()?))
    }
}

/// Both directions, each half-closing its writer at the end of its reader.
pub(crate) async fn tunnel(
    a: &TcpStream,
    b: &TcpStream,
    pipes: Pipes,
    act: &Activity,
) -> io::Result<()> {
    let Pipes(p1, p2) = pipes;
    tokio::try_join!(
        one_way(a, b, p1, act, Side::Up),
        one_way(b, a, p2, act, Side::Down)
    )?;
    Ok(())
}

async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    pipe: Pipe,
    act: &Activity,
    side: Side,
) -> io::Result<()> {
    relay(from, to, &pipe, None, act, side).await?;
    // SAFETY: shutdown on a socket descriptor we borrow for the call.
    unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
    Ok(())
}

/// Move up to `limit` bytes (`None`: until the end of `from`) from `from` to `to`
/// through `pipe`, which is empty again on success. Never reads past `limit` from
/// `from`. Returns the bytes moved: fewer than `limit` means `from` ended first. `to` is
/// left open.
pub(crate) async fn relay(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    limit: Option<u64>,
    act: &Activity,
    side: Side,
) -> io::Result<u64> {
    let counter = match side {
        Side::Up => &act.up,
        Side::Down => &act.down,
    };
    let mut moved = 0u64;
    let mut in_pipe = 0usize;
    let mut eof = limit == Some(0);
    loop {
        let mut progress = false;
        if !eof && in_pipe < pipe.cap {
            let room = pipe.cap - in_pipe;
            let want = match limit {
                Some(l) => usize::try_from(l - moved).map_or(room, |left| left.min(room)),
                None => room,
            };
            // EAGAIN here can only come from the socket: the pipe has room.
            match from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.w.as_raw_fd(), want)
            }) {
                Ok(0) => eof = true,
                Ok(n) => {
                    in_pipe += n;
                    moved += n as u64;
                    eof = limit == Some(moved);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    act.touch();
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if in_pipe > 0 {
            // EAGAIN here can only come from the socket: the pipe holds data.
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.r.as_raw_fd(), to.as_raw_fd(), in_pipe)
            }) {
                Ok(n) => {
                    in_pipe -= n;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if eof && in_pipe == 0 {
            return Ok(moved);
        }
        if progress {
            continue;
        }
        let want_read = !eof && in_pipe < pipe.cap;
        let want_write = in_pipe > 0;
        tokio::select! {
            r = from.readable(), if want_read => r?,
            w = to.writable(), if want_write => w?,
        }
    }
}
