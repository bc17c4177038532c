//! warden-init: PID 1 inside every warden sandbox.
//!
//! The OCI config runs `/.warden/init -- CMD ARGS...` with the JSON
//! [`warden_wire::init::InitConfig`] in `WARDEN_INIT_CONFIG`. In this order, warden-init:
//!
//! 0. as PID 1, asks the kernel for `SIGKILL` when its parent dies
//!    (`prctl(PR_SET_PDEATHSIG)`), so the sandbox never runs unsupervised;
//! 1. blocks every signal (so nothing arriving during setup can kill or confuse it; they are
//!    handled later by `sigtimedwait`, never by a signal handler);
//! 2. parses the config and compiles the seccomp filter, before touching the kernel, so a bad
//!    config fails with exit 125 and changes nothing;
//! 3. writes the files the sandbox starts with ([`seed`]) where they are missing (an
//!    agent's state, such as Claude Code's `.claude.json`);
//! 4. applies **Landlock** ([`landlock`]): `read_exec` beneath read+execute, `read_write`
//!    beneath everything;
//! 5. sets **no_new_privs**;
//! 6. installs the **seccomp** deny list ([`seccomp`]);
//! 7. forks and execs the command in its own process group, foreground on the terminal;
//! 8. supervises ([`supervise`]): reaps every zombie, forwards signals, enforces the grace
//!    period, and exits with the command's status (128+N if killed by signal N).
//!
//! Exit codes of its own: 125 when warden-init itself fails (bad arguments or config,
//! a file it could not seed, Landlock `required` but not enforceable, seccomp or fork
//! failure), 126 when the command exists but cannot be executed, 127 when it is not found.
//!
//! # Design decisions
//!
//! - **seccomp is installed here, in pure Rust** (`seccompiler`), not by the runtime.
//!   libcontainer only installs seccomp when built with its `libseccomp` feature, which links
//!   the C library (`libseccomp-dev` on Debian); without the feature it *silently ignores*
//!   the profile. Compiling the BPF here keeps warden free of C libraries (`cargo install`
//!   and Nix just work) and makes the filter impossible to drop by accident: no init, no
//!   sandbox. The same list stays in config.json for runtimes that install it themselves
//!   (two identical deny filters are harmless).
//! - **Order: Landlock → no_new_privs → seccomp → fork/exec.** Landlock first because its
//!   setup needs syscalls (`open` of every rule path, `landlock_*`) that a future deny list
//!   might block, and it needs no_new_privs (the `landlock` crate sets it itself, so step 4
//!   is a no-op after it unless Landlock is off). seccomp needs no_new_privs to be
//!   installable without `CAP_SYS_ADMIN`, and comes last so nothing of ours runs under a
//!   filter we did not test against. Both are installed in init *before* the fork, so init
//!   itself is confined too: the sandbox has no unconfined process.
//! - **Signals** are all blocked in init and consumed with `sigtimedwait`, which also gives
//!   the grace timer for free (its timeout); there are no signal handlers, so no
//!   async-signal-safety questions. The child gets back the mask init started with, and
//!   `SIGPIPE` reset to default (Rust's runtime ignores it, and exec keeps ignored signals).
//! - **Exec errors** travel from the child to init over a close-on-exec pipe, so init (not
//!   the half-set-up child) prints the message and chooses 126/127.
//! - **Parent death.** The container's PID 1 is a child of the runtime thread that created
//!   it (libcontainer clones it with `CLONE_PARENT` from an intermediate process). If that
//!   runtime dies (SIGKILL, OOM kill, crash), PID 1 gets `SIGKILL`, and the kernel kills the
//!   rest of the pid namespace with it; the runtime's stale-run clean-up removes the
//!   cgroups and state. The setting is made here, first thing, because the kernel clears it
//!   whenever the credentials change, which the runtime does right before the exec; a
//!   parent that dies in the instant between that exec and this `prctl` is not noticed
//!   (its stale-run clean-up still kills the sandbox). Not set when warden-init is not
//!   PID 1: a process `exec`'d into a running sandbox whose parent dies keeps running,
//!   confined, and ends with the sandbox (the kernel kills every process of a pid
//!   namespace when its PID 1 dies).
//! - **Not PID 1?** (tests, `warden run` without a pid namespace) warden-init makes itself
//!   a child subreaper so orphans still come to it, and the grace-period SIGKILL goes to the
//!   command's process group instead of `kill(-1)`, which outside a pid namespace would
//!   mean "every process this user may signal".

pub mod ask;
pub mod config;
pub mod landlock;
pub mod seccomp;
pub mod seed;
pub mod supervise;
pub mod syscalls;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};

/// Exit status when warden-init itself fails (the convention of `docker run`, `chroot`).
pub const EXIT_INIT_FAILED: i32 = 125;
/// Exit status when the command was found but could not be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit status when the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Everything that stops warden-init from running the command.
#[derive(Debug)]
pub enum Error {
    /// Bad command line.
    Usage(String),
    /// Missing or invalid `WARDEN_INIT_CONFIG`.
    Config(String),
    /// Landlock could not be applied as the config demands.
    Landlock(String),
    /// The seccomp filter could not be compiled or installed.
    Seccomp(String),
    /// A file the sandbox starts with could not be written.
    Seed(String),
    /// A system call warden-init needs failed.
    Sys {
        what: &'static str,
        source: io::Error,
    },
    /// The command could not be executed.
    Exec { program: String, source: io::Error },
}

impl Error {
    /// The exit status warden-init ends with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => EXIT_NOT_FOUND,
                _ => EXIT_CANNOT_EXECUTE,
            },
            _ => EXIT_INIT_FAILED,
        }
    }

    pub(crate) fn sys(what: &'static str) -> Error {
        Error::Sys {
            what,
            source: io::Error::last_os_error(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg)
            | Error::Config(msg)
            | Error::Landlock(msg)
            | Error::Seccomp(msg)
            | Error::Seed(msg) => f.write_str(msg),
            Error::Sys { what, source } => write!(f, "{what} failed: {source}"),
            Error::Exec { program, source } => write!(f, "cannot execute `{program}`: {source}"),
        }
    }
}

impl std::error::Error for Error {}

/// Runs warden-init: `args` without the program name, `env` the process environment.
/// Warnings (Landlock best-effort gaps) go to `diag`. Returns the exit status to end with.
pub fn run(
    args: impl IntoIterator<Item = OsString>,
    env: Vec<(OsString, OsString)>,
    diag: &mut dyn Write,
) -> Result<i32, Error> {
    let args: Vec<OsString> = args.into_iter().collect();
    if args.first().is_some_and(|a| a == "ask-orders") {
        return Ok(ask::main(
            &args[1..],
            &env,
            &mut io::stdin().lock(),
            &mut io::stdout().lock(),
            diag,
        ));
    }
    let pid1 = supervise::is_pid1();
    if pid1 {
        supervise::die_with_parent()?;
    }
    let signals = supervise::Signals::block_all()?;
    let command = config::command(args)?;
    let raw = env
        .iter()
        .find(|(k, _)| k == warden_wire::init::INIT_CONFIG_ENV)
        .map(|(_, v)| v.clone());
    let config = config::parse(raw.as_deref())?;
    let arch = syscalls::Arch::host().ok_or_else(|| {
        Error::Seccomp(format!(
            "unsupported architecture `{}`",
            std::env::consts::ARCH
        ))
    })?;
    let filters = seccomp::compile(&config.seccomp, arch)?;
    let command = supervise::Command::new(&command, config::child_env(env))?;

    seed::write(&config.files)?;
    if let Some(report) = landlock::apply(&config.landlock)? {
        // With stderr gone there is nobody to warn; the sandbox still starts.
        let _ = writeln!(diag, "warden-init: {report}");
    }
    seccomp::set_no_new_privs()?;
    seccomp::install(&filters)?;

    if !pid1 {
        supervise::become_subreaper()?;
    }
    let child = supervise::spawn(&command, &signals)?;
    let grace = std::time::Duration::from_millis(config.grace_period_ms);
    supervise::supervise(child, &signals, grace, pid1)
}
