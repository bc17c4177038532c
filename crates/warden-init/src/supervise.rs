//! Fork/exec the command, then be a proper PID 1: reap every zombie, forward signals,
//! enforce the grace period, exit with the command's status.
//!
//! All signals stay blocked in warden-init and are taken with `sigtimedwait`; there are no
//! handlers. The child restores the signal mask warden-init started with before it execs.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::{Duration, Instant};

use libc::{c_char, c_int, pid_t, sigset_t};

use crate::Error;

/// Signals passed on to the command's process group.
pub const FORWARDED: [c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// `PATH` when the command's environment has none (glibc's `execvp` default).
const DEFAULT_PATH: &[u8] = b"/bin:/usr/bin";

/// The signal state: everything blocked, and what to wait for.
pub struct Signals {
    /// The mask warden-init started with; the command gets it back.
    original: sigset_t,
    /// `SIGCHLD` and [`FORWARDED`].
    wait: sigset_t,
}

impl Signals {
    /// Blocks every signal, and resets the dispositions warden-init relies on or passes on:
    /// `SIGCHLD` inherited as ignored would make the kernel reap children behind our back,
    /// and `SIGPIPE` (ignored by Rust's runtime) or an inherited ignored `SIGTERM` would
    /// survive the exec into the command.
    pub fn block_all() -> Result<Signals, Error> {
        let mut all = empty_set();
        let mut original = empty_set();
        // SAFETY: both sets are valid, initialised sigset_t values we own.
        let rc = unsafe {
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, &mut original)
        };
        if rc != 0 {
            return Err(Error::sys("sigprocmask"));
        }
        let mut wait = empty_set();
        for sig in FORWARDED.into_iter().chain([libc::SIGCHLD]) {
            // SAFETY: `wait` is an initialised sigset_t and `sig` a valid signal number.
            unsafe { libc::sigaddset(&mut wait, sig) };
        }
        for sig in FORWARDED.into_iter().chain([libc::SIGCHLD, libc::SIGPIPE]) {
            // SAFETY: installing SIG_DFL runs no code of ours; the signals are blocked.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        Ok(Signals { original, wait })
    }
}

fn empty_set() -> sigset_t {
    // SAFETY: sigset_t is plain data for which all-zero is a valid value; sigemptyset then
    // makes it the empty set whatever the libc's representation.
    let mut set: sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t we own.
    unsafe { libc::sigemptyset(&mut set) };
    set
}

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// As a sandbox's PID 1: be killed when the parent dies. The parent is the runtime thread
/// that created the container; without it nobody forwards signals to the sandbox or
/// cleans up after it, so the sandbox must not outlive it. The kernel tears down the whole
/// pid namespace when its PID 1 dies. Set here and not by the runtime because the setting
/// is cleared when the credentials change, which the runtime does right before the exec.
pub fn die_with_parent() -> Result<(), Error> {
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::sys("prctl(PR_SET_PDEATHSIG)"));
    }
    Ok(())
}

/// Outside a pid namespace, orphans of the command should still come to us.
pub fn become_subreaper() -> Result<(), Error> {
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::sys("prctl(PR_SET_CHILD_SUBREAPER)"));
    }
    Ok(())
}

/// The command, ready to exec without allocating after fork.
pub struct Command {
    /// As given, for messages.
    program: String,
    /// Paths to try, in order (one unless `PATH` is searched).
    candidates: Vec<CString>,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
}

impl Command {
    /// `args[0]` is looked up in the `PATH` of `env` unless it contains a `/`, like `execvp`
    /// (but a file without `#!` is not retried with `/bin/sh`).
    pub fn new(args: &[OsString], env: Vec<(OsString, OsString)>) -> Result<Command, Error> {
        let nul = |what: &str| Error::Usage(format!("{what} contains a NUL byte"));
        let program = args
            .first()
            .ok_or_else(|| Error::Usage("no command given".into()))?;
        let argv = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| nul("an argument"))?;
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_bytes().to_vec());
        let envp = env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| nul("an environment variable"))?;

        let name = program.as_bytes();
        let candidates = if name.contains(&b'/') {
            vec![argv[0].clone()]
        } else if name.is_empty() {
            Vec::new()
        } else {
            path.as_deref()
                .unwrap_or(DEFAULT_PATH)
                .split(|&b| b == b':')
                .map(|dir| {
                    let mut full = dir.to_vec();
                    if !dir.is_empty() {
                        full.push(b'/');
                    }
                    full.extend_from_slice(name);
                    CString::new(full)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| nul("`PATH`"))?
        };
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        Ok(Command {
            program: program.to_string_lossy().into_owned(),
            candidates,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
        })
    }
}

/// Forks the command into its own process group (the terminal's foreground group when
/// stdin is a terminal) and execs it. Returns its pid once the exec has succeeded.
pub fn spawn(command: &Command, signals: &Signals) -> Result<pid_t, Error> {
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::sys("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors nobody else owns.
    let (report_rx, report_tx) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // SAFETY: warden-init is single-threaded, so the child may run any code; it still only
    // makes async-signal-safe calls (exec_child) and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork"));
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child.
        unsafe { exec_child(command, signals, tty, report_tx.as_raw_fd()) }
    }
    drop(report_tx);
    // Also from the parent, so the group exists whichever side runs first. Failures mean
    // the child already exec'd or exited, which the child's own call covers.
    // SAFETY: integer arguments only; SIGTTOU is blocked, so tcsetpgrp cannot stop us.
    unsafe {
        libc::setpgid(pid, pid);
        if tty {
            libc::tcsetpgrp(libc::STDIN_FILENO, pid);
        }
    }

    // EOF: the exec succeeded (close-on-exec). Four bytes: the errno it failed with.
    let mut report = File::from(report_rx);
    let mut buf = [0u8; 4];
    let n = loop {
        match report.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::Sys {
                    what: "reading the exec report",
                    source,
                });
            }
            Ok(n) => break n,
        }
    };
    if n == 0 {
        return Ok(pid);
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; the child is ours and about to exit.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Err(Error::Exec {
        program: command.program.clone(),
        source: io::Error::from_raw_os_error(i32::from_ne_bytes(buf)),
    })
}

/// The child side of [`spawn`]. Only async-signal-safe calls, no allocation.
///
/// # Safety
/// Must be called only in the child right after `fork`.
unsafe fn exec_child(command: &Command, signals: &Signals, tty: bool, report: c_int) -> ! {
    // SAFETY: plain system calls on integers and on pointers into `command`/`signals`, which
    // outlive the exec; the argv/envp arrays are NULL-terminated.
    unsafe {
        libc::setpgid(0, 0);
        if tty {
            // We are still in the background here; SIGTTOU is blocked, so this succeeds
            // instead of stopping us.
            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
        }
        libc::sigprocmask(libc::SIG_SETMASK, &signals.original, std::ptr::null_mut());

        // execvp's rules: try each PATH entry, remember EACCES, stop at other real errors.
        let mut errno = libc::ENOENT;
        let mut denied = false;
        for candidate in &command.candidates {
            libc::execve(
                candidate.as_ptr(),
                command.argv_ptrs.as_ptr(),
                command.envp_ptrs.as_ptr(),
            );
            match io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::ENOENT)
            {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                other => {
                    errno = other;
                    denied = false;
                    break;
                }
            }
        }
        if denied {
            errno = libc::EACCES;
        }
        let bytes = errno.to_ne_bytes();
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(crate::EXIT_NOT_FOUND)
    }
}

/// Supervises `child` until it exits; returns the status to exit with. Reaps every
/// zombie on the way; forwards [`FORWARDED`] signals to the child's process group; on the
/// first SIGTERM or SIGINT starts the `grace` timer, after which everything is SIGKILLed
/// (`kill(-1)` as PID 1, the child's group otherwise).
pub fn supervise(
    child: pid_t,
    signals: &Signals,
    grace: Duration,
    pid1: bool,
) -> Result<i32, Error> {
    let mut deadline: Option<Instant> = None;
    let mut killed = false;
    loop {
        if let Some(status) = reap(child) {
            return Ok(exit_code(status));
        }
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match wait_signal(&signals.wait, timeout)? {
            Wait::Signal(libc::SIGCHLD) | Wait::Interrupted => {}
            Wait::Signal(sig) => {
                forward(child, sig);
                if matches!(sig, libc::SIGTERM | libc::SIGINT) && deadline.is_none() && !killed {
                    // An unrepresentable deadline (a grace of centuries) means "never".
                    deadline = Instant::now().checked_add(grace);
                }
            }
            Wait::Timeout => {
                kill_everything(child, pid1);
                deadline = None;
                killed = true;
            }
        }
    }
}

/// Reaps every exited child; returns `child`'s wait status if it was among them.
fn reap(child: pid_t) -> Option<c_int> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            if libc::WIFSTOPPED(status) {
                // Only a tracee reports stops to a waitpid without WUNTRACED: something did
                // PTRACE_TRACEME with us as its tracer. We are no debugger; let it go.
                detach(pid, status);
            } else if pid == child {
                found = Some(status);
            }
            continue;
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // 0: children left but none exited; ECHILD: no children at all.
        return found;
    }
}

fn detach(pid: pid_t, status: c_int) {
    // The stop signal is passed on, except the SIGTRAP a tracee gets after exec, which would
    // kill it.
    let sig = match libc::WSTOPSIG(status) {
        libc::SIGTRAP => 0,
        sig => sig,
    };
    // SAFETY: PTRACE_DETACH reads no memory; the signal travels in the data argument.
    unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as usize as *mut libc::c_void,
        )
    };
}

enum Wait {
    Signal(c_int),
    Timeout,
    Interrupted,
}

fn wait_signal(set: &sigset_t, timeout: Option<Duration>) -> Result<Wait, Error> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 10^9, so it fits whatever the width of c_long.
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `set` is an initialised sigset_t, `ts_ptr` NULL or a valid timespec, and a
    // NULL siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), ts_ptr) };
    if sig > 0 {
        return Ok(Wait::Signal(sig));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) => Ok(Wait::Timeout),
        Some(libc::EINTR) => Ok(Wait::Interrupted),
        _ => Err(Error::Sys {
            what: "sigtimedwait",
            source: err,
        }),
    }
}

fn forward(child: pid_t, sig: c_int) {
    // SAFETY: kill takes integers only.
    unsafe {
        // The child may have left its group (a shell with job control); then at least it.
        if libc::kill(-child, sig) != 0 {
            libc::kill(child, sig);
        }
    }
}

fn kill_everything(child: pid_t, pid1: bool) {
    // SAFETY: kill takes integers only. `kill(-1)` from a pid namespace's init reaches every
    // process of that namespace but init itself; it is never used outside one.
    unsafe {
        if pid1 {
            libc::kill(-1, libc::SIGKILL);
        } else {
            libc::kill(-child, libc::SIGKILL);
            libc::kill(child, libc::SIGKILL);
        }
    }
}

/// The shell convention: the exit code, or 128+N for death by signal N.
pub fn exit_code(status: c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        crate::EXIT_INIT_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn env(v: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        v.iter()
            .map(|(k, val)| (OsString::from(k), OsString::from(val)))
            .collect()
    }

    fn candidates(c: &Command) -> Vec<&str> {
        c.candidates.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn path_search() {
        let c = Command::new(&os(&["sh", "-c", "x"]), env(&[("PATH", "/usr/bin::/bin")])).unwrap();
        assert_eq!(candidates(&c), ["/usr/bin/sh", "sh", "/bin/sh"]);
        let c = Command::new(&os(&["sh"]), vec![]).unwrap();
        assert_eq!(candidates(&c), ["/bin/sh", "/usr/bin/sh"]);
        let c = Command::new(&os(&["./run.sh"]), env(&[("PATH", "/bin")])).unwrap();
        assert_eq!(candidates(&c), ["./run.sh"]);
        let c = Command::new(&os(&[""]), vec![]).unwrap();
        assert!(candidates(&c).is_empty());
    }

    #[test]
    fn argv_and_envp_are_null_terminated() {
        let c = Command::new(&os(&["/bin/echo", "a b"]), env(&[("A", "1"), ("B", "x=y")])).unwrap();
        assert_eq!(c.argv_ptrs.len(), 3);
        assert!(c.argv_ptrs[2].is_null());
        assert_eq!(c.envp_ptrs.len(), 3);
        assert!(c.envp_ptrs[2].is_null());
        let envp: Vec<_> = c._envp.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(envp, ["A=1", "B=x=y"]);
    }

    #[test]
    fn nul_bytes_are_errors() {
        let err = Command::new(&os(&["/bin/echo"]), env(&[("A", "x\0y")]))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "an environment variable contains a NUL byte"
        );
        assert_eq!(err.exit_code(), 125);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(7 << 8), 7);
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM | 0x80), 143); // core dumped
    }

    #[test]
    fn exec_errors_map_to_126_and_127() {
        let exec = |errno| Error::Exec {
            program: "/x".into(),
            source: io::Error::from_raw_os_error(errno),
        };
        assert_eq!(exec(libc::ENOENT).exit_code(), 127);
        assert_eq!(exec(libc::ENOTDIR).exit_code(), 127);
        assert_eq!(exec(libc::EACCES).exit_code(), 126);
        assert_eq!(exec(libc::ENOEXEC).exit_code(), 126);
        assert_eq!(
            exec(libc::ENOENT).to_string(),
            "cannot execute `/x`: No such file or directory (os error 2)"
        );
    }
}
