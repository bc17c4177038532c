//! Work inside a container's network namespace from the host side.
//!
//! A socket belongs to the network namespace it was created in, whatever thread uses it
//! later. So a short-lived thread joins the namespace (network namespaces are per thread),
//! creates the socket and ends; the socket keeps working from the host namespace. That is
//! how the egress proxy listens on the sandbox's `127.0.0.1` while dialling out from the
//! host, and how `lo` is brought up without an `ip` binary.

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

/// Runs `f` on a thread that has joined the network namespace of `pid`.
fn in_netns<T, F>(pid: i32, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = format!("/proc/{pid}/ns/net");
    let ns = File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open `{path}`: {e}")))?;
    std::thread::Builder::new()
        .name("warden-netns".into())
        .spawn(move || {
            let home = File::open("/proc/thread-self/ns/net")?;
            // SAFETY: setns on namespace fds we own; only this thread changes namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot join `{path}`: {e}"),
                ));
            }
            let result = f();
            // Not needed for correctness (the thread ends here), but a thread that exits
            // inside another network namespace makes `join` wait milliseconds longer
            // (measured on the dev VM: ~3.5 ms against ~0.15 ms).
            // SAFETY: as above; if it failed, the thread ends anyway.
            unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
            result
        })?
        .join()
        .map_err(|_| io::Error::other("the network namespace thread panicked"))?
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
