//! A terminal for [`crate::exec_in`] with `tty`: a new pseudo-terminal whose slave end
//! becomes the process's standard streams and controlling terminal, and a relay between
//! its master end and the caller's streams.
//!
//! libcontainer only hands a pseudo-terminal's master to a console socket, and only for
//! detached processes, so warden opens the pair itself (host `/dev/ptmx`, the slave taken
//! with `TIOCGPTPEER`, no path lookup) and passes the slave as the process's stdin, stdout
//! and stderr. The tenant's executor makes it the controlling terminal (`setsid`,
//! `TIOCSCTTY`) right before the exec; warden-init then puts the command's process group
//! in the foreground, so Ctrl-C typed by the user reaches the command as `SIGINT` through
//! the terminal's line discipline, not through warden.
//!
//! The relay: the caller's terminal (when stdin is one) is put in raw mode for the
//! relay's lifetime and restored afterwards, also on error; one thread copies input to
//! the master (and the caller's window size on `SIGWINCH`), one copies the master's
//! output to the caller. Both poll a stop pipe; after the process ends, output still
//! buffered in the terminal is drained until every slave is closed (or 100 ms pass
//! without data, when something the command left running still holds one).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread::JoinHandle;

/// `TIOCGPTPEER` (`_IO('T', 0x41)`): opens the slave of a master without a path lookup.
const TIOCGPTPEER: libc::c_ulong = 0x5441;
/// How long the output is drained after the process has ended when a slave stays open.
const DRAIN_IDLE_MS: i32 = 100;
const BUF: usize = 16 * 1024;

/// A new pseudo-terminal pair, both ends close-on-exec.
pub(crate) struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a pair whose window size is the first of `size_from` that is a terminal.
    pub(crate) fn open(size_from: &[RawFd]) -> io::Result<Self> {
        // SAFETY: open(2) with a NUL-terminated path; the fd is owned right away.
        let master = unsafe {
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if master < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nobody else.
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        let unlock: libc::c_int = 0;
        // SAFETY: ioctls on our own master with a pointer to a live int / integer flags.
        let slave = unsafe {
            if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::ioctl(
                master.as_raw_fd(),
                TIOCGPTPEER as _,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nobody else.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        if let Some(size) = size_from.iter().find_map(|&fd| window_size(fd)) {
            set_window_size(master.as_raw_fd(), &size);
        }
        Ok(Self { master, slave })
    }
}

fn window_size(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: all-zero is a valid winsize; TIOCGWINSZ fills it or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above, with a valid out-pointer.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some(ws)
}

fn set_window_size(master: RawFd, ws: &libc::winsize) {
    // SAFETY: TIOCSWINSZ reads a live winsize; the kernel signals the foreground group.
    unsafe { libc::ioctl(master, libc::TIOCSWINSZ, ws) };
}

/// Accepts the container init's connection on `listener` and receives the master of the
/// terminal it opened (`SCM_RIGHTS`); its window size becomes the first of `size_from`
/// that is a terminal. Waits at most 10 s: the init sends it before the container counts
/// as created.
pub(crate) fn receive_master(
    listener: &std::os::unix::net::UnixListener,
    size_from: &[RawFd],
) -> io::Result<OwnedFd> {
    let mut fds = [pfd(listener.as_raw_fd(), libc::POLLIN)];
    if poll(&mut fds, 10_000)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the container did not send its terminal",
        ));
    }
    let (conn, _) = listener.accept()?;
    let mut name = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: name.as_mut_ptr().cast(),
        iov_len: name.len(),
    };
    // Room for one descriptor's control message, 8-aligned.
    let mut cmsg = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer in it refers to a live local buffer.
    let fd = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        if libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("the console socket carried no terminal"));
        }
        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>())
    };
    // SAFETY: received just now, owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(size) = size_from.iter().find_map(|&fd| window_size(fd)) {
        set_window_size(master.as_raw_fd(), &size);
    }
    Ok(master)
}

/// Makes fd 0, the pseudo-terminal's slave, this process's controlling terminal. Runs in
/// the tenant process right before the exec: system calls only.
pub(crate) fn take_controlling_terminal() -> Result<(), String> {
    let sys = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    // SAFETY: integer arguments only.
    unsafe {
        // libcontainer's init already starts a session for every process it starts.
        if libc::getsid(0) != libc::getpid() && libc::setsid() < 0 {
            return Err(sys("setsid"));
        }
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0) != 0 {
            return Err(sys(
                "making the terminal the controlling terminal (TIOCSCTTY)",
            ));
        }
    }
    Ok(())
}

/// The caller's terminal in raw mode until dropped.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: RawFd) -> io::Result<Option<Self>> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(None);
        }
        // SAFETY: all-zero is a valid termios; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to live termios values.
        unsafe {
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(fd, libc::TCSANOW, &raw) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Some(Self { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

/// The write end of the pipe `SIGWINCH` pokes, or -1.
static WINCH: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_winch(_: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot; write(2) of one byte
    // from a live stack variable is async-signal-safe.
    unsafe {
        let saved = *libc::__errno_location();
        let fd = WINCH.load(Ordering::Acquire);
        if fd >= 0 {
            let byte = 0u8;
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
        *libc::__errno_location() = saved;
    }
}

/// A `SIGWINCH` handler writing to a pipe, installed unless another relay of this
/// process has one (that relay keeps its window size; this one keeps its initial one).
struct Winch {
    read: OwnedFd,
    write: OwnedFd,
    previous: Option<libc::sigaction>,
}

impl Winch {
    fn install() -> io::Result<Self> {
        let (read, write) = pipe()?;
        let mut this = Self {
            read,
            write,
            previous: None,
        };
        if WINCH
            .compare_exchange(
                -1,
                this.write.as_raw_fd(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return Ok(this);
        }
        // SAFETY: sigaction with valid pointers; the handler is async-signal-safe.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_winch as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGWINCH, &act, &mut old) != 0 {
                WINCH.store(-1, Ordering::Release);
                return Err(io::Error::last_os_error());
            }
            this.previous = Some(old);
        }
        Ok(this)
    }
}

impl Drop for Winch {
    fn drop(&mut self) {
        if let Some(old) = self.previous.take() {
            // SAFETY: restores the handler saved in `install`.
            unsafe { libc::sigaction(libc::SIGWINCH, &old, std::ptr::null_mut()) };
            WINCH.store(-1, Ordering::Release);
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor the caller keeps open; the copy is owned.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The running relay; [`Relay::finish`] (or dropping it) stops it and restores the
/// caller's terminal.
pub(crate) struct Relay {
    stop: Option<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
    _winch: Option<Winch>,
    _raw: Option<RawMode>,
}

impl Relay {
    /// Relays between `master` and the caller's `input` / `output` descriptors (which
    /// the caller keeps open until the relay has finished).
    pub(crate) fn start(master: OwnedFd, input: RawFd, output: RawFd) -> io::Result<Self> {
        // Non-blocking, so neither thread can be stuck in a read or write past `stop`.
        // SAFETY: fcntl on our own descriptor.
        unsafe {
            let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let (stop_r, stop_w) = pipe()?;
        let raw = RawMode::enter(input)?;
        let winch = Winch::install()?;
        let winch_r = dup(winch.read.as_raw_fd())?;
        let (in_fd, out_fd) = (dup(input)?, dup(output)?);
        let (master_in, master_out) = (dup(master.as_raw_fd())?, master);
        let stop_in = dup(stop_r.as_raw_fd())?;
        let size_fds = [input, output];
        let sizes: Vec<OwnedFd> = size_fds.iter().filter_map(|&fd| dup(fd).ok()).collect();
        let to_terminal = std::thread::Builder::new()
            .name("tty-in".into())
            .spawn(move || copy_in(&in_fd, &master_in, &stop_in, &winch_r, &sizes))?;
        let from_terminal = match std::thread::Builder::new()
            .name("tty-out".into())
            .spawn(move || copy_out(&master_out, &out_fd, &stop_r))
        {
            Ok(t) => t,
            Err(e) => {
                let mut partial = Self {
                    stop: Some(stop_w),
                    threads: vec![to_terminal],
                    _winch: Some(winch),
                    _raw: raw,
                };
                partial.stop();
                return Err(e);
            }
        };
        Ok(Self {
            stop: Some(stop_w),
            threads: vec![to_terminal, from_terminal],
            _winch: Some(winch),
            _raw: raw,
        })
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // Closing the write end makes the read end readable (EOF) for both threads.
            drop(stop);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops the relay once the process has ended: drains its remaining output.
    pub(crate) fn finish(mut self) {
        self.stop();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn poll(fds: &mut [libc::pollfd], timeout: i32) -> io::Result<usize> {
    loop {
        // SAFETY: poll on a live slice of pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// read(2) into `buf`: `Ok(0)` at end of file, `Err(WouldBlock)` when nothing is there.
fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most buf.len() bytes into a live buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: writes at most buf.len() bytes from a live buffer.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Nothing there yet, or interrupted: try again at the next poll.
fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn write_all_blocking(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                poll(&mut [pfd(fd, libc::POLLOUT)], -1)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Caller's input → terminal, and the caller's window size on `SIGWINCH`. At the end of
/// a non-terminal input, the terminal's end-of-file character is sent once.
fn copy_in(input: &OwnedFd, master: &OwnedFd, stop: &OwnedFd, winch: &OwnedFd, sizes: &[OwnedFd]) {
    let mut buf = vec![0u8; BUF];
    let mut pending: Vec<u8> = Vec::new();
    let mut input_open = true;
    loop {
        let mut fds = [
            pfd(stop.as_raw_fd(), libc::POLLIN),
            pfd(winch.as_raw_fd(), libc::POLLIN),
            // Only polled while there is something to write: a closed slave reports
            // POLLHUP whatever the events asked for.
            pfd(-1, 0),
            pfd(-1, 0),
        ];
        if !pending.is_empty() {
            fds[2] = pfd(master.as_raw_fd(), libc::POLLOUT);
        } else if input_open {
            fds[3] = pfd(input.as_raw_fd(), libc::POLLIN);
        }
        if poll(&mut fds, -1).is_err() || fds[0].revents != 0 {
            return;
        }
        if fds[1].revents != 0 {
            while read(winch.as_raw_fd(), &mut buf).is_ok_and(|n| n > 0) {}
            if let Some(size) = sizes.iter().find_map(|fd| window_size(fd.as_raw_fd())) {
                set_window_size(master.as_raw_fd(), &size);
            }
        }
        if fds[2].revents & (libc::POLLERR | libc::POLLHUP) != 0 && !pending.is_empty() {
            return;
        }
        if fds[2].revents & libc::POLLOUT != 0 {
            match write(master.as_raw_fd(), &pending) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) if retry_later(&e) => {}
                Err(_) => return,
            }
        }
        if fds[3].revents != 0 {
            match read(input.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    input_open = false;
                    // SAFETY: isatty only inspects the descriptor.
                    if unsafe { libc::isatty(input.as_raw_fd()) } != 1 {
                        pending.extend_from_slice(&eof_char(master.as_raw_fd()));
                    }
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if retry_later(&e) => {}
                Err(_) => input_open = false,
            }
        }
    }
}

/// The terminal's `VEOF` character (Ctrl-D unless changed).
fn eof_char(master: RawFd) -> [u8; 1] {
    // SAFETY: all-zero is a valid termios; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::tcgetattr(master, &mut t) } == 0 {
        [t.c_cc[libc::VEOF]]
    } else {
        [4]
    }
}

/// Terminal → caller's output, until every slave is closed; after `stop`, until no more
/// output comes for [`DRAIN_IDLE_MS`].
fn copy_out(master: &OwnedFd, output: &OwnedFd, stop: &OwnedFd) {
    let mut buf = vec![0u8; BUF];
    let mut draining = false;
    loop {
        let mut fds = [
            pfd(master.as_raw_fd(), libc::POLLIN),
            pfd(stop.as_raw_fd(), if draining { 0 } else { libc::POLLIN }),
        ];
        let timeout = if draining { DRAIN_IDLE_MS } else { -1 };
        match poll(&mut fds, timeout) {
            Err(_) | Ok(0) => return,
            Ok(_) => {}
        }
        if fds[1].revents != 0 {
            draining = true;
        }
        if fds[0].revents != 0 {
            match read(master.as_raw_fd(), &mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if write_all_blocking(output.as_raw_fd(), &buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if retry_later(&e) => {}
                // EIO: every slave is closed and the buffer is empty.
                Err(_) => return,
            }
        }
    }
}
