//! Signals warden forwards to the container instead of dying from them.
//!
//! Why handlers and not a blocked mask with `sigwait`: the container's processes are
//! forked from the calling thread and inherit its signal mask through `execve`, so a
//! blocked mask would leak into the sandboxed command. Handlers, in contrast, are reset to
//! the default by `execve`. The handler only writes the signal number into a non-blocking
//! pipe per run (the self-pipe trick); the run's wait loop polls that pipe beside a pidfd
//! of the container's init.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// The signals a foreground run forwards to the container's init (warden-init passes them
/// on to the command and enforces the grace period).
pub const FORWARDED_SIGNALS: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Signals that ask the run to end; after forwarding one, the runtime kills the init if it
/// has not exited when the grace period is over.
pub(crate) fn is_terminating(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT
    )
}

/// The shell convention for a process killed by `sig`.
pub fn exit_code_for_signal(sig: i32) -> i32 {
    128 + sig
}

// One slot per concurrent run in this process; the handler writes to every open slot.
const SLOTS: usize = 32;
static PIPES: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];

struct Installed {
    runs: usize,
    previous: Vec<(i32, libc::sigaction)>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    runs: 0,
    previous: Vec::new(),
});

/// How many terminating signals the runs of this process have caught (and forwarded).
static TERMINATING_CAUGHT: AtomicU64 = AtomicU64::new(0);

/// How many terminating signals (`SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`) foreground runs
/// of this process have caught and forwarded so far. A supervisor compares the count
/// before and after a run to tell "asked to stop" from "the command failed".
pub fn terminating_signals_caught() -> u64 {
    TERMINATING_CAUGHT.load(Ordering::Acquire)
}

extern "C" fn on_signal(sig: libc::c_int) {
    if is_terminating(sig) {
        TERMINATING_CAUGHT.fetch_add(1, Ordering::AcqRel);
    }
    // Async-signal-safe: atomic loads and write(2) only; errno is preserved.
    // SAFETY: __errno_location returns this thread's errno slot.
    let saved = unsafe { *libc::__errno_location() };
    let byte = sig as u8;
    for slot in &PIPES {
        let fd = slot.load(Ordering::Acquire);
        if fd >= 0 {
            // SAFETY: writes one byte from a live stack variable; a full pipe just drops it
            // (the run has enough wake-ups queued to notice).
            unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Handlers installed for the lifetime of one run; dropping it uninstalls them when it is
/// the last run of the process.
pub(crate) struct SignalGuard {
    slot: usize,
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalGuard {
    pub(crate) fn install() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        let slot = PIPES
            .iter()
            .position(|s| {
                s.compare_exchange(-1, write.as_raw_fd(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other("too many concurrent runs in one process"))?;
        if installed.runs == 0 {
            let mut previous = Vec::with_capacity(FORWARDED_SIGNALS.len());
            for sig in FORWARDED_SIGNALS {
                match set_handler(sig, on_signal as *const () as libc::sighandler_t) {
                    Ok(old) => previous.push((sig, old)),
                    Err(e) => {
                        restore(&previous);
                        PIPES[slot].store(-1, Ordering::Release);
                        return Err(e);
                    }
                }
            }
            installed.previous = previous;
        }
        installed.runs += 1;
        Ok(Self {
            slot,
            read,
            _write: write,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals received since the last call, in order.
    pub(crate) fn drain(&self) -> Vec<i32> {
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live buffer of the given length.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            out.extend(buf[..n as usize].iter().map(|&b| i32::from(b)));
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        PIPES[self.slot].store(-1, Ordering::Release);
        installed.runs -= 1;
        if installed.runs == 0 {
            let previous = std::mem::take(&mut installed.previous);
            restore(&previous);
        }
    }
}

fn set_handler(sig: i32, handler: libc::sighandler_t) -> io::Result<libc::sigaction> {
    // SAFETY: zeroed sigaction is a valid "no flags, empty mask" value; sigaction reads
    // `new` and writes `old`.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = handler;
        libc::sigemptyset(&mut new.sa_mask);
        new.sa_flags = libc::SA_RESTART;
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, &new, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(old)
    }
}

fn restore(previous: &[(i32, libc::sigaction)]) {
    for (sig, old) in previous {
        // SAFETY: `old` was filled in by sigaction for this signal.
        unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
    }
}
