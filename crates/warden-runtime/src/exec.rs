//! One more command in a running container: join, run under the same confinement, wait.
//!
//! libcontainer's tenant builder does most of the joining: it moves the new process into
//! the container's cgroups, enters the container's pid, mount, network, IPC, UTS, cgroup
//! and time namespaces (those its config lists), applies the config's rlimits, cwd and
//! `no_new_privileges`, and reports exec failures. It does not enter the container's
//! **user namespace** (0.7 leaves `user` out of the namespaces a tenant joins, and would
//! run the process as the mapped uid in the host's user namespace). So, for a container
//! with a user namespace of its own, the tenant starts as host root keeping only
//! `CAP_SYS_ADMIN` and `CAP_SETGID`, and a small executor, run right before the exec,
//! finishes the job the way libcontainer's own init does for the container's first
//! process: drop the host's supplementary groups, `setns` into the user namespace, set
//! the config's groups, gid and uid, then cut every capability set (bounding included:
//! joining a user namespace grants all of them inside it) down to the config's.
//!
//! The command runs as `/.warden/init -- CMD...` with the container's environment
//! (`WARDEN_INIT_CONFIG` included) when the container runs warden-init, so Landlock,
//! no_new_privs and the seccomp filter are applied to it exactly as to the container's
//! own command; warden-init is not PID 1 there and supervises as a subreaper.
//!
//! What libcontainer leaves behind, and where it goes instead: the tenant's notify socket
//! (`tenant-notify-<random>.sock`, bound in the container's state directory and never
//! removed) and the pid file. Both are kept out of the container's state directory by
//! giving libcontainer a private root, `<state_root>/bundles/<id>/exec-<random>/`, with a
//! copy of the container's `state.json`; it is removed as soon as the process has
//! started, and in any case with the run's bundle copy. A process that fails to start is
//! a child of the caller: its pid comes from the pid file and it is reaped.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libcontainer::capabilities;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxNamespaceType, Spec,
};
use libcontainer::syscall::syscall::{SyscallType, create_syscall};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use warden_wire::init::{INIT_CONFIG_ENV, INIT_PATH};

use crate::error::RuntimeError;
use crate::run::{
    DEFAULT_KILL_AFTER, KILL_MARGIN, Stdio, libcontainer_lock, reap, validate_id, wait_forwarding,
};
use crate::signals::SignalGuard;
use crate::{cgroup, run, spec, tty};

/// How often a `state.json` that does not parse is read again: libcontainer rewrites it
/// in place (truncate, then write), so a read racing a write sees a prefix.
const STATE_READ_ATTEMPTS: u32 = 4;

/// What to run in a container and how.
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// The command and its arguments: what follows `--` in `/.warden/init -- CMD...`.
    pub args: Vec<String>,
    /// Added to the container's `process.env`; a variable of the same name is replaced.
    /// `WARDEN_INIT_CONFIG` cannot be replaced.
    pub env: Vec<(String, String)>,
    /// The process's standard streams; `None` inherits the caller's.
    pub stdio: Stdio,
    /// Give the process a new pseudo-terminal as its stdin, stdout, stderr and
    /// controlling terminal, relayed to `stdio.stdin` / `stdio.stdout` (the caller's
    /// own when `None`; `stdio.stderr` is not used: the terminal carries both outputs).
    /// A caller's input that is a terminal is in raw mode while the process runs, its
    /// window size follows `SIGWINCH`, and Ctrl-C reaches the command as `SIGINT`.
    pub tty: bool,
    /// After forwarding a terminating signal, kill the process if it is still running
    /// after this long. Default: warden-init's grace period plus 2 s, or 10 s when the
    /// container does not run warden-init.
    pub kill_after: Option<Duration>,
}

impl ExecOptions {
    pub fn new(args: Vec<String>) -> Self {
        Self {
            args,
            ..Self::default()
        }
    }
}

/// Runs `opts.args` in the running container `container_id` (created by
/// [`crate::run_foreground`] under `state_root`, usually by another process) and returns
/// its exit code (`128 + n` when killed by signal `n`).
///
/// The process gets the container's isolation: its cgroups and namespaces (user
/// namespace included), the user, groups, capabilities, rlimits, cwd and environment of
/// the container's `process`, plus `opts.env`. When the container's command line starts
/// with `/.warden/init`, the process runs as `/.warden/init -- CMD...`, so warden-init
/// applies the container's Landlock rules, no_new_privs and seccomp filter to it.
/// Terminating signals to the caller are forwarded as in a foreground run. Nothing of the
/// exec is left in the state root when this returns.
///
/// Errors: [`RuntimeError::NotFound`] (no such container under `state_root`),
/// [`RuntimeError::NotRunning`] (created but not started, stopped, or its init pid no
/// longer in its cgroup), [`RuntimeError::InvalidExec`] (no command, a malformed variable,
/// replacing `WARDEN_INIT_CONFIG`), [`RuntimeError::Terminal`] (no pseudo-terminal
/// could be opened or relayed), [`RuntimeError::Exec`] (libcontainer
/// could not start the process, e.g. a command that does not exist when the container
/// does not run warden-init; under warden-init that is exit code 127 instead).
///
/// The caller must be root (the process is set up as root before it joins the
/// container's user namespace). The process is a child of the calling thread.
pub fn exec_in(
    state_root: &Path,
    container_id: &str,
    opts: ExecOptions,
) -> Result<i32, RuntimeError> {
    let id = container_id;
    validate_id(id)?;
    let invalid = |reason: String| RuntimeError::InvalidExec {
        id: id.to_string(),
        reason,
    };
    validate_command(&opts).map_err(invalid)?;

    let container_dir = state_root.join("containers").join(id);
    let bundle_copy = state_root.join("bundles").join(id);
    if !container_dir.is_dir() || !bundle_copy.is_dir() {
        return Err(RuntimeError::NotFound {
            id: id.to_string(),
            state_root: state_root.to_path_buf(),
        });
    }
    let exec_dir = ExecDir::create(&bundle_copy)?;
    exec_with_dir(id, &container_dir, exec_dir, opts)
}

fn validate_command(opts: &ExecOptions) -> Result<(), String> {
    if opts.args.is_empty() {
        return Err("no command given".into());
    }
    if opts.args.iter().any(|a| a.contains('\0')) {
        return Err("an argument contains a NUL byte".into());
    }
    for (key, value) in &opts.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!("invalid environment variable name `{key}`"));
        }
        if value.contains('\0') {
            return Err(format!("the value of `{key}` contains a NUL byte"));
        }
    }
    Ok(())
}

fn exec_with_dir(
    id: &str,
    container_dir: &Path,
    exec_dir: ExecDir,
    opts: ExecOptions,
) -> Result<i32, RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidExec {
        id: id.to_string(),
        reason,
    };
    let not_running = |reason: String| RuntimeError::NotRunning {
        id: id.to_string(),
        reason,
    };
    let tenant_dir = exec_dir.path.join(id);
    fs::create_dir(&tenant_dir).map_err(|source| RuntimeError::StateDir {
        path: tenant_dir.clone(),
        source,
    })?;
    let container = load_state(id, container_dir, &tenant_dir)?;
    if container.status() != ContainerStatus::Running {
        return Err(not_running(format!("its state is {}", container.status())));
    }
    let init_pid = container
        .pid()
        .ok_or_else(|| not_running("it has no init process".into()))?
        .as_raw();

    let config_path = container.bundle().join("config.json");
    let spec = Spec::load(&config_path).map_err(|source| RuntimeError::ReadBundle {
        path: config_path.clone(),
        source,
    })?;
    let bad_bundle = |reason: &str| RuntimeError::InvalidBundle {
        path: config_path.clone(),
        reason: reason.to_string(),
    };
    let process = spec
        .process()
        .clone()
        .ok_or_else(|| bad_bundle("no `process` section"))?;
    let linux = spec
        .linux()
        .clone()
        .ok_or_else(|| bad_bundle("no `linux` section"))?;
    if let Some(path) = linux.cgroups_path()
        && !cgroup::process_in_cgroup(init_pid, path)
    {
        // The init exited and its pid now belongs to another process: joining that
        // process's namespaces would run the command outside the sandbox.
        return Err(not_running(format!("its init (pid {init_pid}) has exited")));
    }

    let container_args = process.args().clone().unwrap_or_default();
    let runs_init = container_args.first().is_some_and(|a| a == INIT_PATH);
    let args = if runs_init {
        let sep = container_args
            .iter()
            .position(|a| a == "--")
            .ok_or_else(|| invalid(format!("the container runs `{INIT_PATH}` without `--`")))?;
        container_args[..=sep]
            .iter()
            .chain(&opts.args)
            .cloned()
            .collect()
    } else {
        opts.args.clone()
    };
    if runs_init && opts.env.iter().any(|(k, _)| k == INIT_CONFIG_ENV) {
        return Err(invalid(format!(
            "`{INIT_CONFIG_ENV}` is the container's confinement and cannot be replaced"
        )));
    }
    let container_env = process.env().clone().unwrap_or_default();
    let mut env: Vec<String> = container_env
        .iter()
        .filter(|e| {
            let key = e.split('=').next().unwrap_or_default();
            !opts.env.iter().any(|(k, _)| k == key)
        })
        .cloned()
        .collect();
    env.extend(opts.env.iter().map(|(k, v)| format!("{k}={v}")));
    let home_from_passwd = !env
        .iter()
        .any(|e| e.strip_prefix("HOME=").is_some_and(|v| !v.is_empty()));
    let kill_after = match opts.kill_after {
        Some(d) => d,
        None if runs_init => spec::init_grace_period(&container_env)
            .map_err(|reason| bad_bundle(&reason))?
            .map_or(DEFAULT_KILL_AFTER, |g| g + KILL_MARGIN),
        None => DEFAULT_KILL_AFTER,
    };

    let mut tenant = process.clone();
    tenant.set_args(Some(args));
    tenant.set_env(Some(env));
    tenant.set_terminal(Some(false));
    tenant.set_console_size(None);
    let has_userns = linux
        .namespaces()
        .as_ref()
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let userns = if has_userns {
        foreign_user_ns(init_pid).map_err(|e| {
            not_running(format!(
                "cannot open the user namespace of its init (pid {init_pid}): {e}"
            ))
        })?
    } else {
        None
    };
    let executor = match &userns {
        Some(fd) => {
            let user = process.user();
            let join = UserNsJoin {
                fd: fd.as_raw_fd(),
                uid: user.uid(),
                gid: user.gid(),
                additional_gids: user.additional_gids().clone().unwrap_or_default(),
                capabilities: process.capabilities().clone(),
                no_new_privileges: process.no_new_privileges() == Some(true),
                home_from_passwd,
            };
            let mut setup_user = user.clone();
            setup_user.set_uid(0);
            setup_user.set_gid(0);
            setup_user.set_additional_gids(None);
            tenant.set_user(setup_user);
            tenant.set_capabilities(Some(setup_capabilities()));
            TenantExecutor {
                join: Some(join),
                terminal: opts.tty,
            }
        }
        None => TenantExecutor {
            join: None,
            terminal: opts.tty,
        },
    };
    let process_path = exec_dir.path.join("process.json");
    let json = serde_json::to_vec(&tenant).map_err(|e| RuntimeError::StateDir {
        path: process_path.clone(),
        source: io::Error::other(e),
    })?;
    fs::write(&process_path, json).map_err(|source| RuntimeError::StateDir {
        path: process_path.clone(),
        source,
    })?;

    let signals = SignalGuard::install().map_err(|source| RuntimeError::Signals {
        id: id.to_string(),
        source,
    })?;
    let exec_err = |source| RuntimeError::Exec {
        id: id.to_string(),
        source,
    };
    let pid_file = exec_dir.path.join("pid");
    let mut base = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(&exec_dir.path)
        .map_err(exec_err)?
        .with_pid_file(Some(&pid_file))
        .map_err(exec_err)?
        .with_executor(executor);
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| exec_err(LibcontainerError::OtherIO(e)))
    };
    let (input, output) = opts.stdio.terminal_ends();
    let mut pty = None;
    if opts.tty {
        let pair = tty::Pty::open(&[input, output]).map_err(|e| RuntimeError::Terminal {
            id: id.to_string(),
            source: e,
        })?;
        base = base
            .with_stdin(dup(&pair.slave)?)
            .with_stdout(dup(&pair.slave)?)
            .with_stderr(dup(&pair.slave)?);
        pty = Some(pair.master);
    } else {
        if let Some(fd) = &opts.stdio.stdin {
            base = base.with_stdin(dup(fd)?);
        }
        if let Some(fd) = &opts.stdio.stdout {
            base = base.with_stdout(dup(fd)?);
        }
        if let Some(fd) = &opts.stdio.stderr {
            base = base.with_stderr(dup(fd)?);
        }
    }
    let tenant_builder = base
        .as_tenant()
        .with_process(Some(&process_path))
        .with_detach(false);
    let built = {
        let _lock = libcontainer_lock();
        tenant_builder.build()
    };
    drop(userns);
    let pid = match built {
        Ok(pid) => pid.as_raw(),
        Err(e) => {
            reap_failed_start(&pid_file);
            return Err(exec_err(e));
        }
    };
    let child = Child::new(pid);
    // The process runs: nothing in the private root is needed any more.
    let removed = exec_dir.remove(id);
    let relay = match pty {
        Some(master) => match tty::Relay::start(master, input, output) {
            Ok(r) => Some(r),
            Err(source) => {
                return Err(RuntimeError::Terminal {
                    id: id.to_string(),
                    source,
                });
            }
        },
        None => None,
    };
    let code = wait_forwarding(id, pid, &signals, kill_after);
    if let Some(relay) = relay {
        relay.finish();
    }
    if code.is_ok() {
        child.reaped();
    }
    drop(signals);
    let code = code?;
    removed?;
    Ok(code)
}

/// Copies the container's `state.json` into the tenant's private root and loads it.
fn load_state(
    id: &str,
    container_dir: &Path,
    tenant_dir: &Path,
) -> Result<Container, RuntimeError> {
    let src = container_dir.join("state.json");
    let dst = tenant_dir.join("state.json");
    let mut attempt = 1;
    loop {
        let bytes = match fs::read(&src) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotRunning {
                    id: id.to_string(),
                    reason: "it is still being created".into(),
                });
            }
            Err(e) => {
                return Err(RuntimeError::State {
                    id: id.to_string(),
                    source: LibcontainerError::OtherIO(e),
                });
            }
        };
        fs::write(&dst, &bytes).map_err(|source| RuntimeError::StateDir {
            path: dst.clone(),
            source,
        })?;
        match Container::load(tenant_dir.to_path_buf()) {
            Ok(c) => return Ok(c),
            Err(_) if attempt < STATE_READ_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => {
                return Err(RuntimeError::State {
                    id: id.to_string(),
                    source,
                });
            }
        }
    }
}

/// The user namespace of `pid`, unless it is this process's own.
fn foreign_user_ns(pid: i32) -> io::Result<Option<OwnedFd>> {
    let theirs = fs::File::open(format!("/proc/{pid}/ns/user"))?;
    let ours = fs::metadata("/proc/self/ns/user")?;
    let meta = theirs.metadata()?;
    if (meta.dev(), meta.ino()) == (ours.dev(), ours.ino()) {
        return Ok(None);
    }
    Ok(Some(theirs.into()))
}

/// What the tenant keeps until it has joined the user namespace: `CAP_SYS_ADMIN` for
/// `setns`, `CAP_SETGID` to drop the host's supplementary groups before it.
fn setup_capabilities() -> LinuxCapabilities {
    let set: Capabilities = [Capability::SysAdmin, Capability::Setgid]
        .into_iter()
        .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set))
        .set_inheritable(None)
        .set_ambient(None);
    caps
}

/// Reaps the tenant process after a failed start (it is a child of the caller and
/// exits after reporting its error); its pid is in the pid file once it was forked.
fn reap_failed_start(pid_file: &Path) {
    let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
    else {
        return;
    };
    // SAFETY: kill(2) to our own child, which is not reaped yet (only we reap it).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = reap(pid);
}

/// The started process until it is reaped: killed and reaped if the wait fails. Held
/// through a pidfd, so a process already reaped (whose pid may be reused) is never hit.
struct Child(Option<OwnedFd>);

impl Child {
    fn new(pid: i32) -> Self {
        Self(run::pidfd_open(pid).ok())
    }

    fn reaped(mut self) {
        self.0 = None;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            // SAFETY: pidfd_send_signal(2) and waitid(2) on a pidfd we own; both fail
            // harmlessly for a process that was reaped already.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PIDFD,
                    fd.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED,
                );
            }
        }
    }
}

/// `<bundle copy>/exec-<random>`: libcontainer's root for one exec (mode 0700).
struct ExecDir {
    path: PathBuf,
    removed: bool,
}

impl ExecDir {
    fn create(bundle_copy: &Path) -> Result<Self, RuntimeError> {
        let path = bundle_copy.join(run::new_container_id("exec"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| RuntimeError::StateDir {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            removed: false,
        })
    }

    fn remove(mut self, id: &str) -> Result<(), RuntimeError> {
        self.removed = true;
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Cleanup {
                id: id.to_string(),
                what: format!("`{}`: {e}", self.path.display()),
            }),
        }
    }
}

impl Drop for ExecDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs in the tenant process right before the exec (see the module docs).
#[derive(Clone)]
struct TenantExecutor {
    join: Option<UserNsJoin>,
    /// fd 0 is a new pseudo-terminal's slave: make it the controlling terminal.
    terminal: bool,
}

#[derive(Clone)]
struct UserNsJoin {
    /// The container's user namespace, opened by the caller (inherited, close-on-exec).
    fd: RawFd,
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    capabilities: Option<LinuxCapabilities>,
    no_new_privileges: bool,
    /// `HOME` is not in the environment: set it from the user's passwd entry (as
    /// libcontainer does for the container's first process), not from root's.
    home_from_passwd: bool,
}

impl UserNsJoin {
    /// The credential changes are raw system calls, not libc's wrappers: the tenant is a
    /// raw `clone3` of a multi-threaded caller, and glibc's `setgroups`/`setres[ug]id`
    /// would apply the change to the caller's other threads too, which glibc still lists
    /// in the clone, and wait for them forever.
    fn enter(&self) -> Result<(), String> {
        let sys = |what: &str| format!("{what}: {}", io::Error::last_os_error());
        // SAFETY: plain system calls on integers and on a live slice; the process is
        // single-threaded (a fresh clone that execs next).
        unsafe {
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0 {
                return Err(sys("dropping the host's supplementary groups"));
            }
            if libc::setns(self.fd, libc::CLONE_NEWUSER) != 0 {
                return Err(sys("joining the container's user namespace"));
            }
            if !self.additional_gids.is_empty()
                && libc::syscall(
                    libc::SYS_setgroups,
                    self.additional_gids.len(),
                    self.additional_gids.as_ptr(),
                ) != 0
            {
                return Err(sys("setting the supplementary groups"));
            }
            // libcontainer's `set_id`, which it runs for the container's first process.
            if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
                return Err(sys("prctl(PR_SET_KEEPCAPS)"));
            }
            if libc::syscall(libc::SYS_setresgid, self.gid, self.gid, self.gid) != 0 {
                return Err(sys("setting the gid"));
            }
            if libc::syscall(libc::SYS_setresuid, self.uid, self.uid, self.uid) != 0 {
                return Err(sys("setting the uid"));
            }
        }
        let syscall = create_syscall();
        if self.uid != 0 {
            capabilities::reset_effective(&*syscall)
                .map_err(|e| format!("resetting the effective capabilities: {e}"))?;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) } != 0 {
            return Err(sys("prctl(PR_SET_KEEPCAPS)"));
        }
        if let Some(caps) = &self.capabilities {
            capabilities::drop_privileges(caps, &*syscall)
                .map_err(|e| format!("dropping capabilities: {e}"))?;
        }
        // SAFETY: prctl with integer arguments.
        if self.no_new_privileges
            && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0
        {
            return Err(sys("prctl(PR_SET_NO_NEW_PRIVS)"));
        }
        Ok(())
    }
}

impl Executor for TenantExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if self.terminal {
            tty::take_controlling_terminal().map_err(ExecutorError::Other)?;
        }
        if let Some(join) = &self.join {
            join.enter().map_err(ExecutorError::Other)?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(&self, mut envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        if let Some(join) = self.join.as_ref().filter(|j| j.home_from_passwd) {
            envs.remove("HOME");
            let home = libcontainer::utils::get_user_home(join.uid);
            if let Some(home) = home.as_deref().and_then(Path::to_str) {
                envs.insert("HOME".into(), home.into());
            }
        }
        run::replace_env(envs)
    }
}
