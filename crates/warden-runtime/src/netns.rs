//! Work inside a container's network namespace from the host side.
//!
//! A socket belongs to the network namespace it was created in, whatever thread uses it
//! later. So the calling thread joins the namespace (network namespaces are per thread),
//! creates the socket and returns to its own namespace; the socket keeps working from the
//! host namespace. That is how the egress proxy listens on the sandbox's `127.0.0.1` while
//! dialling out from the host, and how `lo` is brought up without an `ip` binary.
//!
//! The way back is checked before leaving: re-entering the thread's own namespace needs
//! the same rights as returning to it later, so a thread that could not come back never
//! leaves (a short-lived thread does the work instead). Doing it on the calling thread
//! keeps a thread start and a `join` off the run's critical path: on a busy machine a new
//! thread can wait milliseconds for a CPU.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Binds a TCP listener on `addr` inside the network namespace of process `pid` (the
/// container's init). The listener can be served from any thread of the host.
pub fn bind_in_netns(pid: i32, addr: SocketAddr) -> io::Result<TcpListener> {
    in_netns(pid, move || TcpListener::bind(addr))
}

/// Sets `IFF_UP` on `lo` in the network namespace of process `pid`. A new network
/// namespace starts with `lo` down, so even `127.0.0.1` is unreachable until this runs.
pub fn loopback_up_in_netns(pid: i32) -> io::Result<()> {
    in_netns(pid, loopback_up)
}

/// Runs `f` inside the network namespace of `pid`: on the calling thread when it can
/// return to its own namespace afterwards, else on a short-lived thread.
fn in_netns<T, F>(pid: i32, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open `{path}`: {e}")))?;
    let home = File::open("/proc/thread-self/ns/net")?;
    // Joining the namespace the thread is already in checks exactly what the way back
    // will check (CAP_SYS_ADMIN over the namespace and in the thread's user namespace).
    if setns_net(&home).is_err() {
        return on_thread(ns, path, f);
    }
    setns_net(&ns).map_err(|e| io::Error::new(e.kind(), format!("cannot join `{path}`: {e}")))?;
    let result = f();
    if setns_net(&home).is_err() {
        // Cannot happen after the check above short of the kernel running out of memory;
        // a thread stuck in the sandbox's namespace must not go on (its next socket would
        // be the sandbox's).
        std::process::abort();
    }
    result
}

/// `in_netns` for a thread that could not come back: a thread of its own joins the
/// namespace, does the work and ends.
fn on_thread<T, F>(ns: File, path: String, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    std::thread::Builder::new()
        .name("warden-netns".into())
        .spawn(move || {
            setns_net(&ns)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot join `{path}`: {e}")))?;
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace fd we own; it changes only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid; the name fits in IFNAMSIZ with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
