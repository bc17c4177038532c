//! One foreground run: create, set up, start, wait, clean up.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;

use crate::error::RuntimeError;
use crate::signals::{SignalGuard, exit_code_for_signal, is_terminating};
use crate::{cgroup, netns, spec, stale};

/// How long the runtime waits for the init after forwarding a terminating signal when the
/// bundle does not run warden-init (whose grace period is used otherwise).
pub(crate) const DEFAULT_KILL_AFTER: Duration = Duration::from_secs(10);
/// Extra time on top of warden-init's grace period: warden-init kills the command when
/// the grace period is over and needs a moment to exit itself.
pub(crate) const KILL_MARGIN: Duration = Duration::from_secs(2);
/// How long clean-up waits for the cgroups' last processes to exit.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(5);

/// Held around every libcontainer create, start and exec of this process. libcontainer
/// briefly changes the process-wide working directory to bind and connect its notify
/// sockets by relative name, and the processes it clones inherit every open descriptor
/// (its exec error pipe among them) until they exec: two of these at once in one process
/// could bind a socket in the wrong directory or keep each other's pipe open.
pub(crate) fn libcontainer_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the network namespace gets before the command starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkSetup {
    /// Bring `lo` up (a new network namespace starts with it down). Only `lo` exists, so
    /// the sandbox's one way out is whatever the `before_start` hook binds there.
    #[default]
    LoopbackUp,
    /// Leave the namespace as the kernel created it.
    Untouched,
}

/// The container's standard streams; `None` inherits the caller's.
#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    /// The input and output a terminal is relayed to: the given ones, else the caller's
    /// own stdin and stdout.
    pub(crate) fn terminal_ends(&self) -> (std::os::fd::RawFd, std::os::fd::RawFd) {
        let raw = |fd: &Option<OwnedFd>, default| fd.as_ref().map_or(default, |f| f.as_raw_fd());
        (
            raw(&self.stdin, libc::STDIN_FILENO),
            raw(&self.stdout, libc::STDOUT_FILENO),
        )
    }
}

/// What a `before_start` hook learns about the created (not yet started) container.
#[derive(Debug, Clone, Copy)]
pub struct StartContext<'a> {
    pub container_id: &'a str,
    /// Host pid of the container's init; `/proc/<pid>/ns/*` are its namespaces, e.g. for
    /// [`crate::bind_in_netns`].
    pub init_pid: i32,
}

/// Runs between create and start, after the network setup. An error aborts the run (the
/// container is deleted). The egress proxy binds its listener in the sandbox here.
pub type BeforeStart = Box<
    dyn Fn(&StartContext<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync,
>;

/// Runs once the container's command has started, before the run waits for it, on the
/// calling thread. It cannot fail the run.
pub type AfterStart = Box<dyn Fn(&StartContext<'_>) + Send + Sync>;

/// Runs once the container's init has exited and been reaped, before the run's clean-up,
/// on the calling thread. Work that only has to be over when [`run_foreground`] returns
/// (shutting down what served the sandbox) can start here, on a thread of its own, and
/// overlap with the clean-up.
pub type AfterExit = Box<dyn Fn() + Send + Sync>;

/// Called on the calling thread right before libcontainer clones it into the container's
/// first process; what it returns is dropped once the container is created. A caller with
/// other threads holds them still with it: a lock one of them held at the clone would
/// stay held in the copy.
pub type HoldForClone = Box<dyn Fn() -> Box<dyn std::any::Any> + Send + Sync>;

/// How to run a bundle.
pub struct RunOptions {
    /// Unique among the runs under `state_root`; also the last component of the run's
    /// cgroup path. See [`new_container_id`].
    pub container_id: String,
    /// Holds `containers/<id>` (libcontainer's state) and `bundles/<id>` (the run's
    /// config); e.g. `/run/warden`.
    pub state_root: PathBuf,
    /// Replaces the command (what follows `--` in `/.warden/init -- CMD...`).
    pub args_override: Option<Vec<String>>,
    /// The bundle's `config.json` when the caller holds it already (it must be what the
    /// file holds): it is then neither read nor parsed.
    pub spec: Option<Spec>,
    pub stdio: Stdio,
    pub network: NetworkSetup,
    pub before_start: Option<BeforeStart>,
    pub after_start: Option<AfterStart>,
    pub after_exit: Option<AfterExit>,
    pub hold_for_clone: Option<HoldForClone>,
    /// The user and network namespaces to join instead of creating them (and `lo`,
    /// already up, is not brought up again). Used only when the spec asks for a new user
    /// namespace and a new network namespace.
    pub namespaces: Option<crate::PreparedNamespaces>,
    /// After forwarding a terminating signal, kill the init if it is still running after
    /// this long. Default: warden-init's grace period plus 2 s, or 10 s without warden-init.
    pub kill_after: Option<Duration>,
    /// Give the sandbox a new pseudo-terminal as its stdin, stdout, stderr and
    /// controlling terminal, relayed to `stdio.stdin` / `stdio.stdout` (the caller's own
    /// when `None`), as [`crate::ExecOptions::tty`] does: the caller's terminal is in raw
    /// mode while the sandbox runs and restored on every way out, and window size
    /// changes follow.
    pub tty: bool,
    /// `NAME=value` entries added to the process's environment in the spec handed to
    /// libcontainer only: never in the `config.json` copy of the run or any other file.
    /// For secrets read when the sandbox starts; `Debug` shows their names.
    pub secret_env: Vec<String>,
}

impl RunOptions {
    pub fn new(container_id: impl Into<String>, state_root: impl Into<PathBuf>) -> Self {
        Self {
            container_id: container_id.into(),
            state_root: state_root.into(),
            args_override: None,
            spec: None,
            stdio: Stdio::default(),
            network: NetworkSetup::default(),
            before_start: None,
            after_start: None,
            after_exit: None,
            hold_for_clone: None,
            namespaces: None,
            kill_after: None,
            tty: false,
            secret_env: Vec::new(),
        }
    }
}

impl fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunOptions")
            .field("container_id", &self.container_id)
            .field("state_root", &self.state_root)
            .field("args_override", &self.args_override)
            .field("spec", &self.spec.as_ref().map(|_| "<in memory>"))
            .field("stdio", &self.stdio)
            .field("network", &self.network)
            .field(
                "before_start",
                &self.before_start.as_ref().map(|_| "<hook>"),
            )
            .field("after_start", &self.after_start.as_ref().map(|_| "<hook>"))
            .field("after_exit", &self.after_exit.as_ref().map(|_| "<hook>"))
            .field(
                "hold_for_clone",
                &self.hold_for_clone.as_ref().map(|_| "<hook>"),
            )
            .field("namespaces", &self.namespaces)
            .field("kill_after", &self.kill_after)
            .field("tty", &self.tty)
            .field(
                "secret_env",
                &self
                    .secret_env
                    .iter()
                    .map(|e| e.split('=').next().unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `<sandbox>-<12 random hex digits>`: a container id (and cgroup name) for one run.
pub fn new_container_id(sandbox: &str) -> String {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy source: pid and clock still make collisions on one host unlikely.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        bytes[..4].copy_from_slice(&nanos.to_le_bytes());
        bytes[4..].copy_from_slice(&(std::process::id() as u16).to_le_bytes());
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{sandbox}-{hex}")
}

pub(crate) fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let bad = |reason| {
        Err(RuntimeError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.is_empty() || id.len() > 128 {
        return bad("must be 1 to 128 characters long");
    }
    if id.starts_with('.') || id.starts_with('-') {
        return bad("must not start with `.` or `-`");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return bad("may only contain ASCII letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}

/// Runs the bundle at `bundle` in the foreground and returns the command's exit code
/// (`128 + n` when it was killed by signal `n`). The container, its state and its cgroups
/// are removed before this returns, whatever happened.
pub fn run_foreground(bundle: &Path, opts: &RunOptions) -> Result<i32, RuntimeError> {
    let id = opts.container_id.as_str();
    validate_id(id)?;
    cgroup::prime_attach();
    let config_path = bundle.join("config.json");
    let bundle = fs::canonicalize(bundle).map_err(|source| RuntimeError::OpenBundle {
        path: bundle.to_path_buf(),
        source,
    })?;
    let spec = match &opts.spec {
        Some(spec) => spec.clone(),
        None => Spec::load(&config_path).map_err(|source| RuntimeError::ReadBundle {
            path: config_path.clone(),
            source,
        })?,
    };
    let run =
        spec::for_run(spec, &bundle, id, opts.args_override.as_deref()).map_err(|reason| {
            RuntimeError::InvalidBundle {
                path: config_path.clone(),
                reason,
            }
        })?;

    let containers = opts.state_root.join("containers");
    let copy = opts.state_root.join("bundles").join(id);
    let state_dir = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RuntimeError::StateDir { path, source }
    };
    fs::create_dir_all(&containers).map_err(state_dir(&containers))?;
    fs::create_dir_all(copy.parent().unwrap_or(&opts.state_root)).map_err(state_dir(&copy))?;
    // create_dir (not _all): an existing copy means the id is taken.
    fs::create_dir(&copy).map_err(state_dir(&copy))?;

    let mut cleanup = Cleanup {
        id: id.to_string(),
        container_dir: containers.join(id),
        bundle_copy: copy.clone(),
        cgroup_path: run.cgroup_path.clone(),
        init_pid: None,
        done: false,
    };
    let copy_config = copy.join("config.json");
    let mut annotations = run.spec.annotations().clone().unwrap_or_default();
    annotations.insert(stale::OWNER_ANNOTATION.to_string(), stale::self_owner());
    let mut run = run;
    run.spec.set_annotations(Some(annotations));
    let prepared_user = opts
        .namespaces
        .as_ref()
        .filter(|ns| ns.fits(&run.spec))
        .map(|ns| ns.user());
    if let Some(ns) = &opts.namespaces {
        join_prepared(&mut run, ns);
    }
    // The sandbox's own mounts, made here in a private mount namespace of this thread,
    // which the container's is cloned from; back to the thread's own once it is created.
    let private_mounts = match crate::mounts::prepare(&mut run.spec, id, prepared_user) {
        Ok(m) => m,
        Err(e) => {
            let _ = cleanup.finish();
            return Err(e);
        }
    };
    let rootless =
        libcontainer::utils::rootless_required(&*libcontainer::syscall::syscall::create_syscall())
            .unwrap_or(true);
    if !rootless {
        spec::pin_supplementary_groups(&mut run.spec);
    }
    run.spec
        .save(&copy_config)
        .map_err(|source| RuntimeError::WriteBundle {
            path: copy_config,
            source,
        })?;

    let kill_after = opts.kill_after.unwrap_or_else(|| {
        run.grace_period
            .map_or(DEFAULT_KILL_AFTER, |g| g + KILL_MARGIN)
    });
    let signals = match SignalGuard::install() {
        Ok(s) => s,
        Err(source) => {
            let _ = cleanup.finish();
            return Err(RuntimeError::Signals {
                id: id.to_string(),
                source,
            });
        }
    };
    let result = create_start_wait(
        &mut cleanup,
        &containers,
        &copy,
        &run,
        opts,
        &signals,
        kill_after,
        private_mounts,
    );
    // Signals keep being caught (and ignored) until clean-up is over.
    let cleaned = cleanup.finish();
    drop(signals);
    match (result, cleaned) {
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        (Ok(code), Ok(())) => Ok(code),
    }
}

/// Points the spec's new user and network namespaces at `ns` when it asks for both with
/// the mappings `ns` has; `lo` is up there already, so the run no longer sets up a new
/// network namespace.
fn join_prepared(run: &mut spec::RunSpec, ns: &crate::PreparedNamespaces) {
    use libcontainer::oci_spec::runtime::LinuxNamespaceType as T;
    if !ns.fits(&run.spec) {
        return;
    }
    let (user, net) = ns.paths();
    let list = run
        .spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut());
    for n in list.into_iter().flatten() {
        match n.typ() {
            T::User => n.set_path(Some(user.clone().into())),
            T::Network => n.set_path(Some(net.clone().into())),
            _ => continue,
        };
    }
    run.new_netns = false;
}

#[allow(clippy::too_many_arguments)]
fn create_start_wait(
    cleanup: &mut Cleanup,
    containers: &Path,
    copy: &Path,
    run: &spec::RunSpec,
    opts: &RunOptions,
    signals: &SignalGuard,
    kill_after: Duration,
    private_mounts: Option<crate::mounts::PrivateMounts>,
) -> Result<i32, RuntimeError> {
    let id = opts.container_id.as_str();
    let create_err = |source| RuntimeError::Create {
        id: id.to_string(),
        source,
    };
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(containers)
        .map_err(create_err)?;
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| create_err(libcontainer::error::LibcontainerError::OtherIO(e)))
    };
    let (input, output) = opts.stdio.terminal_ends();
    let term_err = |source| RuntimeError::Terminal {
        id: id.to_string(),
        source,
    };
    // With a terminal, the container's init opens one in the sandbox's own `/dev/pts`
    // (so `tty` inside names it) and sends its master here over a console socket, as
    // runc and crun do.
    let mut console = None;
    if opts.tty {
        let path = copy.join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).map_err(term_err)?;
        builder = builder.with_console_socket(Some(&path));
        console = Some(listener);
    } else {
        if let Some(fd) = &opts.stdio.stdin {
            builder = builder.with_stdin(dup(fd)?);
        }
        if let Some(fd) = &opts.stdio.stdout {
            builder = builder.with_stdout(dup(fd)?);
        }
        if let Some(fd) = &opts.stdio.stderr {
            builder = builder.with_stderr(dup(fd)?);
        }
    }
    // Nothing to do between create and start (namespaces prepared, `lo` up, no hook):
    // the init runs the command as soon as it is set up, without waiting for a start
    // message from here, as `crun run` does.
    let loopback = run.new_netns && opts.network == NetworkSetup::LoopbackUp;
    let at_once = !loopback && opts.before_start.is_none();
    let built = {
        let _lock = libcontainer_lock();
        let _held = opts.hold_for_clone.as_ref().map(|hold| hold());
        builder
            .with_executor(InitExecutor)
            .as_init(copy)
            .with_systemd(false)
            .with_start_at_once(at_once)
            .with_spec(with_secret_env(
                if opts.tty {
                    with_terminal(run.spec.clone())
                } else {
                    run.spec.clone()
                },
                &opts.secret_env,
            ))
            .build()
    };
    // The container's mount namespace holds the sandbox's mounts now.
    drop(private_mounts);
    let mut container = built.map_err(create_err)?;
    let init_pid = container.pid().map(|p| p.as_raw());
    cleanup.init_pid = init_pid;
    let Some(init_pid) = init_pid else {
        return Err(create_err(libcontainer::error::LibcontainerError::Other(
            "the created container has no init pid".into(),
        )));
    };

    let early = if at_once {
        // Already running: what arrived during creation is forwarded like the rest.
        signals.drain()
    } else {
        if loopback {
            netns::loopback_up_in_netns(init_pid).map_err(|source| RuntimeError::Network {
                id: id.to_string(),
                source,
            })?;
        }
        if let Some(hook) = &opts.before_start {
            hook(&StartContext {
                container_id: id,
                init_pid,
            })
            .map_err(|source| RuntimeError::BeforeStart {
                id: id.to_string(),
                source,
            })?;
        }
        // A Ctrl-C during creation means: do not start at all.
        let early = signals.drain();
        if let Some(&sig) = early.iter().find(|&&s| is_terminating(s)) {
            return Ok(exit_code_for_signal(sig));
        }
        let started = {
            let _lock = libcontainer_lock();
            container.start()
        };
        started.map_err(|source| RuntimeError::Start {
            id: id.to_string(),
            source,
        })?;
        early
    };
    for sig in early {
        // SAFETY: kill(2) to our own child, which we have not reaped yet.
        unsafe { libc::kill(init_pid, sig) };
    }
    if let Some(hook) = &opts.after_start {
        hook(&StartContext {
            container_id: id,
            init_pid,
        });
    }
    let relay = match console {
        Some(listener) => {
            let master =
                crate::tty::receive_master(&listener, &[input, output]).map_err(term_err)?;
            Some(crate::tty::Relay::start(master, input, output).map_err(term_err)?)
        }
        None => None,
    };
    let code = wait_forwarding(id, init_pid, signals, kill_after);
    if let Some(relay) = relay {
        relay.finish();
    }
    let code = code?;
    cleanup.init_pid = None;
    if let Some(hook) = &opts.after_exit {
        hook();
    }
    Ok(code)
}

/// Waits for the init to exit, forwarding signals; returns its exit code.
pub(crate) fn wait_forwarding(
    id: &str,
    init_pid: i32,
    signals: &SignalGuard,
    kill_after: Duration,
) -> Result<i32, RuntimeError> {
    let wait_err = |source| RuntimeError::Wait {
        id: id.to_string(),
        source,
    };
    let pidfd = pidfd_open(init_pid).map_err(wait_err)?;
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // SAFETY: kill(2) to our own unreaped child.
                    unsafe { libc::kill(init_pid, libc::SIGKILL) };
                    deadline = None;
                    -1
                } else {
                    i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1)
                }
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(wait_err(e));
        }
        if fds[1].revents != 0 {
            for sig in signals.drain() {
                // SAFETY: kill(2) to our own unreaped child.
                unsafe { libc::kill(init_pid, sig) };
                if is_terminating(sig) && deadline.is_none() {
                    deadline = Some(Instant::now() + kill_after);
                }
            }
        }
        if fds[0].revents != 0 {
            break;
        }
    }
    reap(init_pid).map_err(wait_err)
}

/// waitpid for `pid`; exit code or 128 + signal.
pub(crate) fn reap(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, writing into a live int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(exit_code_for_signal(libc::WTERMSIG(status)))
    } else {
        Err(io::Error::other(format!(
            "unexpected wait status {status:#x}"
        )))
    }
}

pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Everything a run leaves behind, removed exactly once, on every path out.
struct Cleanup {
    id: String,
    container_dir: PathBuf,
    bundle_copy: PathBuf,
    cgroup_path: PathBuf,
    /// Set while the init may still be running and unreaped.
    init_pid: Option<i32>,
    done: bool,
}

impl Cleanup {
    fn finish(&mut self) -> Result<(), RuntimeError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut failures = Vec::new();
        if let Some(pid) = self.init_pid.take() {
            // The run failed between create and exit: the init is our child, kill and
            // reap it so it does not stay a zombie.
            // SAFETY: kill(2) to our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = reap(pid);
        }
        // Not libcontainer's `delete`: it would only kill what is left in the cgroups,
        // remove them (rebuilding its cgroup manager from /proc/self/mountinfo once per
        // controller, milliseconds on a v1 host), run poststop hooks (refused in
        // `spec::for_run`) and remove the state directory. The init is dead by now, so
        // the kernel has killed the rest of its pid namespace; `cgroup::remove` kills
        // any straggler it finds and removes every hierarchy's directory, leaf first.
        // One thread, in sequence: a helper thread would save a few hundred microseconds
        // of syscalls on an idle machine and can cost milliseconds waiting for a CPU on a
        // busy one.
        if let Err(e) = cgroup::remove(&self.cgroup_path, CLEANUP_PATIENCE) {
            failures.push(format!("cgroups: {e}"));
        }
        for dir in [&self.container_dir, &self.bundle_copy] {
            match fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!("`{}`: {e}", dir.display())),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Cleanup {
                id: self.id.clone(),
                what: failures.join("; "),
            })
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Only reached without `finish` on a panic; best effort.
        let _ = self.finish();
    }
}

/// libcontainer's default executor, except that the environment is replaced through libc
/// directly (see [`replace_env`]).
#[derive(Clone)]
struct InitExecutor;

/// The spec with `process.terminal` set: libcontainer's init then opens a terminal in the
/// container and sends its master over the console socket.
fn with_terminal(mut spec: Spec) -> Spec {
    if let Some(mut p) = spec.process().clone() {
        p.set_terminal(Some(true));
        spec.set_process(Some(p));
    }
    spec
}

/// The spec with `secret_env` appended to the process's environment (replacing entries
/// of the same name). Only ever handed to libcontainer in memory.
fn with_secret_env(mut spec: Spec, secret_env: &[String]) -> Spec {
    if secret_env.is_empty() {
        return spec;
    }
    if let Some(mut p) = spec.process().clone() {
        let names: Vec<&str> = secret_env
            .iter()
            .map(|e| e.split('=').next().unwrap_or_default())
            .collect();
        let mut env = p.env().clone().unwrap_or_default();
        env.retain(|e| !names.contains(&e.split('=').next().unwrap_or_default()));
        env.extend(secret_env.iter().cloned());
        p.set_env(Some(env));
        spec.set_process(Some(p));
    }
    spec
}

impl libcontainer::workload::Executor for InitExecutor {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(
        &self,
        envs: std::collections::HashMap<String, String>,
    ) -> Result<(), libcontainer::workload::ExecutorSetEnvsError> {
        replace_env(envs)
    }
}

/// Replaces the whole environment of the container's process (a single-threaded child
/// that libcontainer cloned from the caller) with `envs`, through libc's `clearenv` and
/// `setenv`. std's environment functions take a process-wide lock; when another thread
/// of the caller held it at the moment of the clone (any `Command::spawn` or `env::var`
/// does), the child inherits it held, nobody is left to release it, and the child waits
/// forever. libc's own environment lock is taken only by `setenv`-family calls.
pub(crate) fn replace_env(
    envs: std::collections::HashMap<String, String>,
) -> Result<(), libcontainer::workload::ExecutorSetEnvsError> {
    use libcontainer::workload::ExecutorSetEnvsError;
    // SAFETY: the process is single-threaded (a fresh clone) and holds no pointer into
    // its environment.
    if unsafe { libc::clearenv() } != 0 {
        return Err(ExecutorSetEnvsError::Other("clearenv failed".into()));
    }
    let mut envs: Vec<(String, String)> = envs.into_iter().collect();
    envs.sort();
    for (key, value) in envs {
        let (Ok(k), Ok(v)) = (
            std::ffi::CString::new(key.as_str()),
            std::ffi::CString::new(value),
        ) else {
            return Err(ExecutorSetEnvsError::Other(format!(
                "environment variable `{key}` contains a NUL byte"
            )));
        };
        if key.is_empty() || key.contains('=') {
            return Err(ExecutorSetEnvsError::Other(format!(
                "invalid environment variable name `{key}`"
            )));
        }
        // SAFETY: both are valid C strings; setenv copies them; single-threaded as above.
        if unsafe { libc::setenv(k.as_ptr(), v.as_ptr(), 1) } != 0 {
            return Err(ExecutorSetEnvsError::Other(format!(
                "setenv({key}): {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}
