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

use libcontainer::oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

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
    in_netns_file(ns, path, f)
}

/// [`in_netns`] for a namespace already open as `ns` (`path` names it in errors).
fn in_netns_file<T, F>(ns: File, path: String, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
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

/// A user namespace with its id mappings written and a network namespace it owns, with
/// `lo` up, made before the container that will join both (see
/// [`crate::RunOptions::namespaces`]).
///
/// Creating a network namespace is the kernel's slowest step of a container start (~1 ms
/// here), and libcontainer does it on the critical path: in the container's init, after
/// its intermediate process has waited for the user namespace's mappings. Made ahead, on
/// another thread while the run is still being prepared, both come for free; the
/// container joins them by path instead (`setns`, as the OCI spec allows), so the
/// namespaces and their ownership are exactly what libcontainer would have made: the
/// network namespace is owned by the sandbox's user namespace, whose mappings are the
/// spec's. Sockets the host binds in it (the egress proxy) work the same.
#[derive(Debug)]
pub struct PreparedNamespaces {
    user: File,
    net: File,
    /// Killed once the mappings were written, reaped when this is dropped: waiting for
    /// its exit is kept off the run's critical path.
    _holder: Holder,
    /// The mappings written, in `/proc/PID/uid_map` form; a spec joins only if its own
    /// are the same.
    maps: (String, String),
}

impl PreparedNamespaces {
    /// The namespaces `spec` would have libcontainer create, made now; `None` when the
    /// spec does not ask for both a new user and a new network namespace.
    pub fn for_spec(spec: &Spec) -> io::Result<Option<PreparedNamespaces>> {
        if new_user_and_net(spec).is_none() {
            return Ok(None);
        }
        UnmappedNamespaces::new()?.finish(spec)
    }

    /// Whether a container of `spec` can join these namespaces: it asks for new user and
    /// network namespaces with the same id mappings.
    pub(crate) fn fits(&self, spec: &Spec) -> bool {
        new_user_and_net(spec).is_some_and(|maps| maps == self.maps)
    }

    /// Binds a TCP listener on `addr` inside the network namespace.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        in_net(&self.net, addr)
    }

    /// The user namespace (its mappings are the spec's).
    pub(crate) fn user(&self) -> &File {
        &self.user
    }

    /// Paths the container's processes (forks of this one) open to join the user and the
    /// network namespace.
    pub(crate) fn paths(&self) -> (String, String) {
        (
            format!("/proc/self/fd/{}", self.user.as_raw_fd()),
            format!("/proc/self/fd/{}", self.net.as_raw_fd()),
        )
    }
}

/// A new user namespace, not yet mapped, and a new network namespace it owns with `lo`
/// up: the slow part of [`PreparedNamespaces`], which needs no spec and so can start
/// before the file is even read. [`UnmappedNamespaces::finish`] writes the spec's
/// mappings. Until then a child process that shares this process's memory holds the
/// namespaces (the mappings are written through its `/proc/PID/uid_map`); it is killed
/// and reaped by `finish` or on drop, and killed by the kernel if the thread that made it
/// ends first.
#[derive(Debug)]
pub struct UnmappedNamespaces {
    holder: Holder,
    user: File,
    net: File,
}

impl UnmappedNamespaces {
    /// Makes both namespaces and brings `lo` up in the network namespace.
    pub fn new() -> io::Result<UnmappedNamespaces> {
        let holder = Holder::spawn(libc::CLONE_NEWUSER | libc::CLONE_NEWNET)?;
        let at = |what: &str| format!("/proc/{}/ns/{what}", holder.pid);
        let open = |path: String| {
            File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("`{path}`: {e}")))
        };
        let user = open(at("user"))?;
        let net = open(at("net"))?;
        in_netns_file(
            net.try_clone()?,
            "the prepared network namespace".into(),
            loopback_up,
        )?;
        Ok(UnmappedNamespaces { holder, user, net })
    }

    /// Binds a TCP listener on `addr` inside the network namespace.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        in_net(&self.net, addr)
    }

    /// Writes the id mappings of `spec` and lets the holder go; `None` (and the
    /// namespaces dropped) when `spec` does not ask for both a new user and a new network
    /// namespace.
    pub fn finish(self, spec: &Spec) -> io::Result<Option<PreparedNamespaces>> {
        let Some(maps) = new_user_and_net(spec) else {
            return Ok(None);
        };
        let at = |what: &str| format!("/proc/{}/{what}", self.holder.pid);
        let write = |what: &str, map: &str| {
            let path = at(what);
            std::fs::write(&path, map)
                .map_err(|e| io::Error::new(e.kind(), format!("`{path}`: {e}")))
        };
        write("uid_map", &maps.0)?;
        write("gid_map", &maps.1)?;
        // Open namespaces outlive their last process.
        self.holder.kill();
        Ok(Some(PreparedNamespaces {
            user: self.user,
            net: self.net,
            _holder: self.holder,
            maps,
        }))
    }
}

/// A new user namespace with these mappings (`/proc/PID/uid_map` form), held by nothing
/// but the returned file: what an idmapped mount takes its mapping from.
pub(crate) fn user_namespace(uid_map: &str, gid_map: &str) -> io::Result<File> {
    let holder = Holder::spawn(libc::CLONE_NEWUSER)?;
    let at = |what: &str| format!("/proc/{}/{what}", holder.pid);
    let write = |what: &str, map: &str| {
        let path = at(what);
        std::fs::write(&path, map).map_err(|e| io::Error::new(e.kind(), format!("`{path}`: {e}")))
    };
    write("uid_map", uid_map)?;
    write("gid_map", gid_map)?;
    File::open(at("ns/user"))
}

fn in_net(net: &File, addr: SocketAddr) -> io::Result<TcpListener> {
    in_netns_file(
        net.try_clone()?,
        "the prepared network namespace".into(),
        move || TcpListener::bind(addr),
    )
}

/// The id mappings of `spec` when it asks for a new user namespace and a new network
/// namespace (no `path`), in `/proc/PID/uid_map` form.
fn new_user_and_net(spec: &Spec) -> Option<(String, String)> {
    let linux = spec.linux().as_ref()?;
    let list = linux.namespaces().as_ref()?;
    let fresh = |t: LinuxNamespaceType| list.iter().any(|n| n.typ() == t && n.path().is_none());
    if !(fresh(LinuxNamespaceType::User) && fresh(LinuxNamespaceType::Network)) {
        return None;
    }
    let text = |maps: &Option<Vec<LinuxIdMapping>>| -> String {
        maps.iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    Some((text(linux.uid_mappings()), text(linux.gid_mappings())))
}

/// A child in new user and network namespaces that shares this process's memory and does
/// nothing but wait, with every signal but SIGKILL blocked. Killed and reaped on drop; if
/// the thread that spawned it ends first, the kernel kills it (parent-death signal).
struct Holder {
    pid: libc::pid_t,
    /// The child's stack, in this address space; freed only after the child is reaped.
    stack: Vec<u8>,
}

impl Holder {
    fn spawn(flags: libc::c_int) -> io::Result<Holder> {
        extern "C" fn hold(parent: *mut libc::c_void) -> libc::c_int {
            // SAFETY: prctl, getppid and pause are async-signal-safe syscalls with no
            // memory arguments; nothing here allocates or takes a lock.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The spawning thread's process ended before the signal was armed.
                if libc::getppid() != parent as libc::pid_t {
                    libc::_exit(0);
                }
                loop {
                    libc::pause();
                }
            }
        }
        let mut stack = vec![0u8; 64 * 1024];
        // SAFETY: the end of the allocation, aligned down to 16 as the ABI wants.
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
        let top = (top as usize & !15) as *mut libc::c_void;
        // The child starts with this thread's signal mask: all blocked, so no handler of
        // this process ever runs on its stack.
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask fill or read it;
        // the child runs `hold` only, on its own stack.
        let pid = unsafe {
            let parent = libc::getpid();
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = libc::clone(
                hold,
                top,
                libc::CLONE_VM | flags | libc::SIGCHLD,
                parent as usize as *mut libc::c_void,
            );
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            pid
        };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Holder { pid, stack })
    }
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder").field("pid", &self.pid).finish()
    }
}

impl Holder {
    fn kill(&self) {
        // SAFETY: kill(2) to our own child, not reaped before `drop`.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.kill();
        // SAFETY: reap our own child; its stack is freed only after it is gone.
        unsafe {
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, 0) < 0
                && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
        // Only now: the child ran on it until the wait above.
        self.stack = Vec::new();
    }
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
