//! `warden supervise <launch.json>`: the one small process that owns one running sandbox
//! (the conmon/shim model, no daemon for all).
//!
//! It creates the container through libcontainer from its main thread and waits on it,
//! captures the command's stdout and stderr to size-rotated files, applies the restart
//! policy, serves the sandbox's egress proxy and inference router inside the sandbox's
//! network namespace ([`crate::services`]), and answers on a unix control socket
//! (`status`, `reload`, `stop`). The services, the log pumps and the control thread live
//! as long as the supervisor; before each container is created they are held still
//! ([`crate::services::hold`]), so no other thread is at work when libcontainer clones.
//! The container's init is its child and dies with it (warden-init sets
//! `PR_SET_PDEATHSIG`), so a sandbox never outlives its supervisor; the next apply
//! removes what is left (cgroups, state).
//! Once a container has started, the supervisor drops its mappings of the clean file
//! pages start-up touched (`trim`), so an idle one keeps only what it uses mapped.
//!
//! Start-up handshake: the apply that spawns it reads one line on the supervisor's
//! stdout: `ready <init pid>` once the first container is created, or `error: <why>`.
//! Then stdout is `/dev/null`; the supervisor's own messages go to stderr
//! (`supervisor.log`).

use super::control::{self, Phase, Request, Response, Status};
use super::logs::{self, RotatingLog};
use crate::services::{self, Services};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_wire::sandbox::Restart;

pub const SUBCOMMAND: &str = "supervise";
pub const LAUNCH_VERSION: u32 = 1;
/// The longest wait between restarts, however many failures came before.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The policies a running sandbox takes without a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Policies {
    pub egress: Option<warden_wire::egress::EgressPolicy>,
    pub inference: Option<warden_wire::inference::InferencePolicy>,
    pub orders: warden_wire::orders::OrdersPolicy,
}

/// Everything a supervisor needs, written by the apply that spawns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub version: u32,
    pub name: String,
    pub file: String,
    pub bundle: PathBuf,
    pub run_dir: PathBuf,
    /// Approvals and the audit logs of the egress proxy and the inference router.
    pub sandbox_state: PathBuf,
    pub logs_dir: PathBuf,
    pub log_max_bytes: u64,
    pub restart: Restart,
    pub image_digest: String,
    pub policies: Policies,
    /// The sandbox's tenant, whose store `secret_env` is read from.
    #[serde(default)]
    pub tenant: Option<String>,
    /// `env NAME secret=SECRET`: read at each start, never written down in the clear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<warden_wire::sandbox::SecretEnv>,
    /// The state directory (the secret store lives under it).
    #[serde(default)]
    pub state_dir: PathBuf,
    /// Serve the standing orders endpoint (the sandbox runs an agent).
    #[serde(default)]
    pub orders_endpoint: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);
/// Write end of the wake-up pipe (the signal handler and the control thread write to it).
static WAKE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    wake();
}

fn wake() {
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) on a non-blocking pipe is async-signal-safe.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

fn pipe() -> std::io::Result<(File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sleep up to `d`, returning early when a stop is requested.
fn wait_or_stop(wake_read: &File, d: Option<Duration>) {
    let mut pfd = libc::pollfd {
        fd: wake_read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = d.map_or(-1, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX));
    if !STOP.load(Ordering::SeqCst) {
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) };
    }
    let mut buf = [0u8; 64];
    // SAFETY: the pipe is non-blocking; draining it cannot block.
    while unsafe { libc::read(wake_read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

struct Shared {
    launch: Launch,
    status: Mutex<Status>,
    services: Option<Arc<Services>>,
    memory_file: Mutex<Option<PathBuf>>,
}

impl Shared {
    fn set(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    }
}

/// The supervisor process. Returns its exit code.
pub fn main(launch_path: &Path) -> i32 {
    // The handshake channel is stdout; take it and point fd 1 at /dev/null.
    // SAFETY: F_DUPFD_CLOEXEC duplicates fd 1 (or fails with -1).
    let ready_fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    let mut ready = (ready_fd >= 0).then(|| {
        // SAFETY: a fresh descriptor owned from here on.
        unsafe { File::from_raw_fd(ready_fd) }
    });
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: both descriptors are valid.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    match supervise(launch_path, &mut ready) {
        Ok(()) => 0,
        Err(e) => {
            if let Some(mut r) = ready.take() {
                let _ = writeln!(r, "error: {e}");
            }
            eprintln!("warden supervise: {e}");
            1
        }
    }
}

fn supervise(launch_path: &Path, ready: &mut Option<File>) -> Result<(), String> {
    let launch: Launch = std::fs::read(launch_path)
        .map_err(|e| format!("cannot read `{}`: {e}", launch_path.display()))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| format!("`{}` is invalid: {e}", launch_path.display()))
        })?;
    if launch.version != LAUNCH_VERSION {
        return Err(format!(
            "`{}` has version {}, expected {LAUNCH_VERSION}",
            launch_path.display(),
            launch.version
        ));
    }
    let (wake_read, wake_write) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    for fd in [wake_read.as_raw_fd(), wake_write.as_raw_fd()] {
        // SAFETY: valid descriptors.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    }
    WAKE.store(wake_write.as_raw_fd(), Ordering::SeqCst);
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing a handler that only touches atomics and write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }

    let socket = launch_path.with_file_name("control.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on `{}`: {e}", socket.display()))?;

    // Keys are read here: a missing one is the apply's error, before any container.
    let services = Services::start(services::Setup {
        sandbox: launch.name.clone(),
        egress: launch.policies.egress.clone(),
        inference: launch.policies.inference.clone(),
        orders: launch
            .orders_endpoint
            .then(|| launch.policies.orders.clone()),
        state_dir: launch.sandbox_state.clone(),
        workers: 1,
        keys: services::KeyStore {
            tenant: launch.tenant.clone(),
            state_dir: launch.state_dir.clone(),
        },
    })
    .map_err(|e| e.to_string())?
    .map(Arc::new);
    super::paths::private_dir(&launch.logs_dir)
        .map_err(|e| format!("cannot create `{}`: {e}", launch.logs_dir.display()))?;

    if let Some(svc) = &services {
        svc.render_orders(&launch.bundle);
    }
    let shared = Arc::new(Shared {
        status: Mutex::new(Status {
            name: launch.name.clone(),
            supervisor_pid: std::process::id(),
            image_digest: launch.image_digest.clone(),
            ..Status::default()
        }),
        launch,
        services,
        memory_file: Mutex::new(None),
    });
    {
        let shared = shared.clone();
        services::spawn_started(move || serve_control(listener, shared));
    }
    let pumps = Pumps::start();

    let result = run_loop(&shared, &pumps, &wake_read, ready);
    shared.set(|s| {
        s.phase = Phase::Exited;
        s.pid = None;
    });
    let _ = std::fs::remove_file(&socket);
    if let Some(svc) = &shared.services {
        svc.shut_down();
    }
    result
}

/// The two threads that copy a container's stdout and stderr into the rotating logs:
/// started once, before the first container, and handed each run's pipes, so no thread
/// starts or ends around a clone.
struct Pumps {
    out: std::sync::mpsc::Sender<(File, RotatingLog)>,
    err: std::sync::mpsc::Sender<(File, RotatingLog)>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Pumps {
    fn start() -> Pumps {
        let (done_tx, done) = std::sync::mpsc::channel();
        let stream = || {
            let (tx, rx) = std::sync::mpsc::channel::<(File, RotatingLog)>();
            let done = done_tx.clone();
            services::spawn_started(move || {
                for (from, to) in rx {
                    logs::pump(from, to);
                    let _ = done.send(());
                }
            });
            tx
        };
        let (out, err) = (stream(), stream());
        Pumps { out, err, done }
    }

    /// Copy one run's output; `false` when the pumps are gone.
    fn pump(&self, out: (File, RotatingLog), err: (File, RotatingLog)) -> bool {
        self.out.send(out).is_ok() && self.err.send(err).is_ok()
    }

    /// Wait until both streams of the run reached end of file.
    fn wait(&self) {
        for _ in 0..2 {
            if self.done.recv().is_err() {
                return;
            }
        }
    }
}

fn run_loop(
    shared: &Arc<Shared>,
    pumps: &Pumps,
    wake_read: &File,
    ready: &mut Option<File>,
) -> Result<(), String> {
    let launch = &shared.launch;
    let ready_slot = Arc::new(Mutex::new(ready.take()));
    let mut failures_in_a_row: u32 = 0;
    loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        let id = warden_runtime::new_container_id(&launch.name);
        shared.set(|s| {
            s.phase = Phase::Starting;
            s.container_id = Some(id.clone());
            s.pid = None;
        });
        let (code, error) = run_once(shared, pumps, &id, &ready_slot);
        let asked_to_stop = STOP.load(Ordering::SeqCst);
        // The first run could not even start: the apply hears why and the supervisor
        // exits (nothing is running).
        if let Some(e) = &error {
            let mut slot = ready_slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(mut r) = slot.take() {
                let _ = writeln!(r, "error: {e}");
                return Err(e.clone());
            }
        }
        shared.set(|s| {
            s.pid = None;
            s.last_exit = code;
            s.error = error.clone();
            *shared.memory_file.lock().unwrap_or_else(|p| p.into_inner()) = None;
        });
        if asked_to_stop {
            return Ok(());
        }
        let failed = error.is_some() || code != Some(0);
        let backoff = match launch.restart {
            Restart::Never => None,
            Restart::OnFailure { max, backoff_ms } => {
                let restarts = shared.status.lock().map(|s| s.restarts).unwrap_or(max);
                (failed && restarts < max).then_some(backoff_ms)
            }
            Restart::Always { backoff_ms } => Some(backoff_ms),
        };
        let Some(base_ms) = backoff else {
            shared.set(|s| s.phase = Phase::Exited);
            // Idle, holding the status and logs, until stopped.
            while !STOP.load(Ordering::SeqCst) {
                wait_or_stop(wake_read, None);
            }
            return Ok(());
        };
        failures_in_a_row = if failed { failures_in_a_row + 1 } else { 0 };
        // Exponential: base, 2×base, 4×base... for consecutive failures.
        let factor = 1u64 << failures_in_a_row.saturating_sub(1).min(16);
        let delay = Duration::from_millis(base_ms.saturating_mul(factor)).min(MAX_BACKOFF);
        shared.set(|s| {
            s.phase = Phase::Restarting;
            s.restarts += 1;
        });
        eprintln!(
            "warden supervise: `{}` exited ({}); restarting in {} ms",
            launch.name,
            code.map_or_else(|| "did not start".to_string(), |c| format!("code {c}")),
            delay.as_millis()
        );
        wait_or_stop(wake_read, Some(delay));
    }
}

/// One container run: `(exit code, error)`.
fn run_once(
    shared: &Arc<Shared>,
    pumps: &Pumps,
    id: &str,
    ready_slot: &Arc<Mutex<Option<File>>>,
) -> (Option<i32>, Option<String>) {
    let launch = &shared.launch;
    let open_log = |stream: &str| {
        RotatingLog::open(
            &launch.logs_dir.join(format!("{stream}.log")),
            launch.log_max_bytes,
            logs::KEEP,
        )
    };
    let setup = (|| -> std::io::Result<_> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let null = File::open("/dev/null")?;
        Ok((
            out_r,
            out_w,
            err_r,
            err_w,
            null,
            open_log("stdout")?,
            open_log("stderr")?,
        ))
    })();
    let (out_r, out_w, err_r, err_w, null, out_log, err_log) = match setup {
        Ok(x) => x,
        Err(e) => {
            return (
                None,
                Some(format!("cannot set up the sandbox's output: {e}")),
            );
        }
    };
    if !pumps.pump((out_r, out_log), (err_r, err_log)) {
        return (None, Some("the log pumps are gone".into()));
    }
    let mut opts = warden_runtime::RunOptions::new(id, &launch.run_dir);
    match crate::commands::secret::resolve_env(
        &launch.state_dir,
        &launch.name,
        launch.tenant.as_deref(),
        &launch.secret_env,
    ) {
        Ok(env) => opts.secret_env = env,
        Err(e) => return (None, Some(e)),
    }
    opts.stdio = warden_runtime::Stdio {
        stdin: Some(null.into()),
        stdout: Some(out_w),
        stderr: Some(err_w),
    };
    {
        let services = shared.services.clone();
        opts.hold_for_clone = Some(Box::new(move || {
            Box::new(services::hold(services.as_deref()))
        }));
    }
    let serving: Arc<Mutex<Option<services::Serving>>> = Arc::new(Mutex::new(None));
    {
        let shared = shared.clone();
        let serving = serving.clone();
        let ready_slot = ready_slot.clone();
        let cgroup_parent = cgroup_parent(&launch.bundle);
        let id = id.to_string();
        opts.before_start = Some(Box::new(move |cx: &warden_runtime::StartContext<'_>| {
            if STOP.load(Ordering::SeqCst) {
                return Err("the supervisor is stopping".into());
            }
            if let Some(svc) = &shared.services {
                let listeners = services::Listeners::bind(svc.needs(), |addr| {
                    warden_runtime::bind_in_netns(cx.init_pid, addr)
                })?;
                let s = svc.serve(listeners)?;
                *serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
            }
            *shared.memory_file.lock().unwrap_or_else(|p| p.into_inner()) =
                memory_file(&cgroup_parent, &id);
            shared.set(|s| {
                s.phase = Phase::Running;
                s.pid = Some(cx.init_pid);
                s.started_at = Some(super::state::now());
                s.error = None;
            });
            if let Some(mut r) = ready_slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = writeln!(r, "ready {}", cx.init_pid);
            }
            Ok(())
        }));
    }
    // What starting the container touched once (libcontainer, JSON, start-up) need not
    // stay mapped while the supervisor idles: see `trim`.
    opts.after_start = Some(Box::new(|_: &warden_runtime::StartContext<'_>| {
        let _ = super::trim::release_clean_file_pages();
    }));
    let before = warden_runtime::terminating_signals_caught();
    let result = warden_runtime::run_foreground(&launch.bundle, &opts);
    if warden_runtime::terminating_signals_caught() != before {
        STOP.store(true, Ordering::SeqCst);
    }
    // Our copies of the write ends go with the options; the pumps then see end of file.
    drop(opts);
    pumps.wait();
    let s = serving.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let (Some(svc), Some(s)) = (&shared.services, s) {
        svc.stop(s, Duration::from_millis(500));
    }
    match result {
        Ok(code) => (Some(code), None),
        Err(e) => (None, Some(e.chain())),
    }
}

/// The parent of the bundle's `cgroupsPath` (the run's cgroup is `<parent>/<id>`).
fn cgroup_parent(bundle: &Path) -> String {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.pointer("/linux/cgroupsPath")
                .and_then(|p| p.as_str())
                .map(str::to_string)
        })
        .and_then(|p| Path::new(&p).parent().map(|x| x.display().to_string()))
        .unwrap_or_else(|| "/warden".to_string())
}

/// The file holding the run's memory usage: cgroup v2 `memory.current`, else v1
/// `memory.usage_in_bytes`.
fn memory_file(parent: &str, id: &str) -> Option<PathBuf> {
    let rel = format!("{}/{id}", parent.trim_start_matches('/'));
    [
        Path::new("/sys/fs/cgroup")
            .join(&rel)
            .join("memory.current"),
        Path::new("/sys/fs/cgroup/memory")
            .join(&rel)
            .join("memory.usage_in_bytes"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

fn serve_control(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let _busy = services::busy();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let response = match control::read_request(&stream) {
            Err(message) => Response::Error { message },
            Ok(Request::Status) => {
                let mut s = shared
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                s.memory_bytes = shared
                    .memory_file
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .and_then(|f| std::fs::read_to_string(f).ok())
                    .and_then(|t| t.trim().parse().ok());
                Response::Status(s)
            }
            Ok(Request::Reload { policies }) => reload(&shared, *policies),
            Ok(Request::Stop) => {
                STOP.store(true, Ordering::SeqCst);
                shared.set(|s| s.phase = Phase::Stopping);
                wake();
                // A running container gets the signal through the runtime's forwarding
                // (grace period, then SIGKILL); between runs our own handler takes it.
                // SAFETY: signalling ourselves.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                Response::Ok
            }
        };
        control::write_response(&stream, &response);
    }
}

fn reload(shared: &Shared, policies: Policies) -> Response {
    let Policies {
        egress,
        inference,
        orders,
    } = policies;
    let result = match &shared.services {
        Some(svc) => svc.reload(egress, inference, Some(orders)).map(|_| ()),
        None if egress.is_none() && inference.is_none() => Ok(()),
        None => Err(format!(
            "sandbox `{}` was started without network or inference; replace it to add them",
            shared.launch.name
        )),
    };
    // The orders endpoint (a sandbox with an agent) takes the new orders at once, and
    // its table is rewritten; the egress rules that follow an order were compiled with
    // its autonomy and came in `egress`.
    match result {
        Ok(()) => Response::Ok,
        Err(message) => Response::Error { message },
    }
}
