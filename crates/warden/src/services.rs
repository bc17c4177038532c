//! The services warden hosts for one sandbox: the egress proxy (`127.0.0.1:3128`), the
//! inference router (`127.0.0.1:3129`) and the standing orders endpoint
//! (`127.0.0.1:3130`, for a sandbox with an agent), each on a listener bound inside the sandbox's
//! network namespace and served from this process, which dials out from the host's.
//! `warden run` and the supervisor of an applied sandbox both host them through
//! [`Services`]: one tokio runtime, the proxy's state and the router, their audit files
//! in the sandbox's state directory (`audit.jsonl`, `inference.jsonl`; `0600` in a
//! `0700` directory), reloads, and the hold that keeps them still while libcontainer
//! clones.
//!
//! # Nothing at work when libcontainer clones
//!
//! libcontainer makes the container's first process by cloning the calling thread; a
//! lock another thread of the process holds at that instant stays held in the copy
//! forever. A process that hosts these services has threads that may be at work at any
//! time (a call still being relayed from a sandbox's previous run, a `warden ps` asking
//! the supervisor for its status), so whoever creates a container takes [`hold`] first:
//!
//! - every worker of the services' runtime is parked inside a task of ours, blocked on a
//!   condition variable, before the clone; none polls a connection until the hold ends;
//! - warden's own helper threads (the supervisor's control socket and log pumps, the
//!   run's file watcher) do their work under [`busy`], which the hold excludes.
//!
//! The audit writers (one thread each for the proxy and the router) only serialize and
//! append to their own file; they are not held.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use warden_egress::{ProxyConfig, ProxyHandle, ProxyState};
use warden_orders::{Endpoint, EndpointHandle};
use warden_router::{JsonLines, KeySource, Router, RouterConfig, RouterHandle};
use warden_wire::egress::EgressPolicy;
use warden_wire::inference::InferencePolicy;
use warden_wire::orders::OrdersPolicy;
use warden_wire::sandbox::{ORDERS_ADDR, ORDERS_TABLE_FILE, PROXY_ADDR, ROUTER_ADDR};

/// The router's audit file in the sandbox's state directory, beside the proxy's.
pub const ROUTER_AUDIT_FILE: &str = "inference.jsonl";

/// How long [`hold`] waits for the runtime's workers to park before going on without
/// the ones still busy (a task never blocks that long; this only bounds a surprise).
const PARK_PATIENCE: Duration = Duration::from_secs(2);

/// What the services of one sandbox are made from.
pub struct Setup {
    pub sandbox: String,
    pub egress: Option<EgressPolicy>,
    pub inference: Option<InferencePolicy>,
    /// The standing orders, when the sandbox is served the orders endpoint.
    pub orders: Option<OrdersPolicy>,
    /// `<state>/sandboxes/<name>`: approvals and both audit files.
    pub state_dir: PathBuf,
    /// Worker threads of the runtime.
    pub workers: usize,
    /// Where providers' `key-secret` keys are read from.
    pub keys: KeyStore,
}

/// The sandbox's tenant and the state directory its secret store lives under: the
/// router reads `key-secret` keys from there when it starts and on each reload, into
/// its memory only.
#[derive(Debug, Clone, Default)]
pub struct KeyStore {
    pub tenant: Option<String>,
    /// The state directory (not the sandbox's): `<state>/secrets/<tenant>/`.
    pub state_dir: PathBuf,
}

impl KeyStore {
    /// The secret `name` of the tenant, as text for a header.
    fn read(&self, sandbox: &str, name: &str) -> Result<String, String> {
        let Some(tenant) = &self.tenant else {
            return Err(format!(
                "sandbox `{sandbox}` belongs to no tenant, so it has no secrets"
            ));
        };
        let kek = warden_secrets::Kek::from_env(&self.state_dir).map_err(|e| e.to_string())?;
        let value = warden_secrets::Store::new(&self.state_dir, kek)
            .get(tenant, name)
            .map_err(|e| e.to_string())?;
        match std::str::from_utf8(&value) {
            Ok(t) => Ok(t.to_string()),
            Err(_) => Err(format!(
                "secret `{name}` of tenant `{tenant}` is not UTF-8 text, which a key needs"
            )),
        }
    }
}

impl Setup {
    /// Which listeners the sandbox needs.
    pub fn needs(&self) -> Needs {
        Needs {
            proxy: self.egress.is_some(),
            router: self.inference.is_some(),
            orders: self.orders.is_some(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub proxy: bool,
    pub router: bool,
    pub orders: bool,
}

impl Needs {
    pub fn any(&self) -> bool {
        self.proxy || self.router || self.orders
    }
}

/// Why the services could not start.
#[derive(Debug)]
pub enum Error {
    /// A provider's key is missing or unusable: the file or the environment is at fault.
    Key(String),
    /// Anything else (the runtime, the state directory).
    Other(String),
}

impl Error {
    pub fn is_user_error(&self) -> bool {
        matches!(self, Error::Key(_))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Key(m) | Error::Other(m) => f.write_str(m),
        }
    }
}

/// The listeners of one container's network namespace.
#[derive(Debug, Default)]
pub struct Listeners {
    proxy: Option<TcpListener>,
    router: Option<TcpListener>,
    orders: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `needs` asks for through `bind` (which enters the sandbox's network
    /// namespace).
    pub fn bind(
        needs: Needs,
        bind: impl Fn(SocketAddr) -> io::Result<TcpListener>,
    ) -> io::Result<Listeners> {
        let addr = |a: &str| {
            a.parse::<SocketAddr>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        Ok(Listeners {
            proxy: needs.proxy.then(|| bind(addr(PROXY_ADDR)?)).transpose()?,
            router: needs.router.then(|| bind(addr(ROUTER_ADDR)?)).transpose()?,
            orders: needs.orders.then(|| bind(addr(ORDERS_ADDR)?)).transpose()?,
        })
    }
}

/// What serves one container; see [`Services::stop`].
#[derive(Debug, Default)]
pub struct Serving {
    proxy: Option<ProxyHandle>,
    router: Option<RouterHandle>,
    orders: Option<EndpointHandle>,
}

/// The proxy and the router of one sandbox, on one runtime.
pub struct Services {
    sandbox: String,
    handle: tokio::runtime::Handle,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
    workers: usize,
    proxy: Option<Arc<ProxyState>>,
    router: Option<Arc<Router>>,
    router_audit: Option<Arc<JsonLines>>,
    orders: Option<Arc<Endpoint>>,
    /// The bundle's orders table, rewritten in place when the orders change (the
    /// sandbox sees it through a read-only bind of that file).
    orders_table: Mutex<Option<PathBuf>>,
}

/// The router's audit sink, shared so that it can be flushed at the end.
struct Audit(Arc<JsonLines>);

impl warden_router::AuditSink for Audit {
    fn record(&self, event: warden_router::RouterEvent) {
        self.0.record(event);
    }
}

/// The router of `sandbox`, its keys read now (`key-env` from this process's
/// environment, `key-secret` from `keys`): a missing one is [`Error::Key`], naming why.
/// `apply` makes one with [`warden_router::NoAudit`] to check the keys before it starts
/// anything.
pub fn router(
    policy: InferencePolicy,
    sandbox: &str,
    keys: KeyStore,
    audit: impl warden_router::AuditSink,
) -> Result<Arc<Router>, Error> {
    // Why the last secret could not be read: the router's own error only says that it
    // could not.
    let why = Arc::new(Mutex::new(None::<String>));
    let lookup = {
        let (why, name) = (why.clone(), sandbox.to_string());
        move |k: KeySource<'_>| match k {
            KeySource::Env(var) => std::env::var(var).ok(),
            KeySource::Secret(secret) => match keys.read(&name, secret) {
                Ok(v) => Some(v),
                Err(e) => {
                    *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    None
                }
            },
        }
    };
    Router::with_keys(policy, RouterConfig::default(), audit, lookup).map_err(|e| match e {
        warden_router::RouterError::Key { .. } => {
            let why = why.lock().unwrap_or_else(|p| p.into_inner()).take();
            Error::Key(match why {
                Some(why) => format!("sandbox `{sandbox}`: {e}: {why}"),
                None => format!(
                    "sandbox `{sandbox}`: {e}; the inference router reads provider keys from warden's environment when the sandbox starts"
                ),
            })
        }
        e => Error::Other(format!(
            "cannot start the inference router of `{sandbox}`: {e}"
        )),
    })
}

impl Services {
    /// The runtime, the proxy's state and the router (whose keys are read now: a
    /// missing one is [`Error::Key`]). `None` when the sandbox needs neither.
    pub fn start(setup: Setup) -> Result<Option<Services>, Error> {
        if !setup.needs().any() {
            return Ok(None);
        }
        let Setup {
            sandbox,
            egress,
            inference,
            orders,
            state_dir,
            workers,
            keys,
        } = setup;
        let workers = workers.max(1);
        let other = |what: &str, e: &dyn std::fmt::Display| {
            Error::Other(format!("cannot start the {what} of `{sandbox}`: {e}"))
        };
        // The router first: a missing key stops the run before anything else is made.
        let (router, router_audit) = match inference {
            Some(policy) => {
                warden_egress::private_dir(&state_dir).map_err(|e| {
                    other(
                        "inference router",
                        &format!("cannot create `{}`: {e}", state_dir.display()),
                    )
                })?;
                let path = state_dir.join(ROUTER_AUDIT_FILE);
                let audit = open_private(&path)
                    .and_then(JsonLines::start)
                    .map(Arc::new)
                    .map_err(|e| {
                        other(
                            "inference router",
                            &format!("cannot open `{}`: {e}", path.display()),
                        )
                    })?;
                let router = router(policy, &sandbox, keys, Audit(audit.clone()))?;
                (Some(router), Some(audit))
            }
            None => (None, None),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("warden-services")
            .enable_all()
            .build()
            .map_err(|e| other("services runtime", &e))?;
        let proxy = match egress {
            Some(policy) => Some(
                ProxyState::new(policy, ProxyConfig::new(&state_dir))
                    .map_err(|e| other("egress proxy", &e))?,
            ),
            None => None,
        };
        // A round trip through each audit writer: their threads are running, not
        // starting, when the first container is cloned.
        if let Some(p) = &proxy {
            p.flush();
        }
        if let Some(a) = &router_audit {
            a.flush();
        }
        // The approvals queue of the sandbox's state directory, the proxy's too.
        let orders =
            orders.map(|policy| Arc::new(Endpoint::new(&sandbox, state_dir.clone(), policy)));
        Ok(Some(Services {
            orders,
            orders_table: Mutex::new(None),
            sandbox,
            handle: rt.handle().clone(),
            rt: Mutex::new(Some(rt)),
            workers,
            proxy,
            router,
            router_audit,
        }))
    }

    pub fn needs(&self) -> Needs {
        Needs {
            proxy: self.proxy.is_some(),
            router: self.router.is_some(),
            orders: self.orders.is_some(),
        }
    }

    /// Serve `listeners` (bound in the container's network namespace) from now on.
    pub fn serve(&self, listeners: Listeners) -> Result<Serving, String> {
        let _guard = self.handle.enter();
        let mut serving = Serving::default();
        if let (Some(l), Some(state)) = (listeners.proxy, &self.proxy) {
            l.set_nonblocking(true)
                .map_err(|e| format!("cannot serve the egress proxy of `{}`: {e}", self.sandbox))?;
            serving.proxy = Some(warden_egress::spawn(l, state.clone()).map_err(|e| {
                format!("cannot serve the egress proxy of `{}`: {e}", self.sandbox)
            })?);
        }
        if let (Some(l), Some(router)) = (listeners.router, &self.router) {
            serving.router = Some(warden_router::spawn(l, router.clone()).map_err(|e| {
                format!(
                    "cannot serve the inference router of `{}`: {e}",
                    self.sandbox
                )
            })?);
        }
        if let (Some(l), Some(endpoint)) = (listeners.orders, &self.orders) {
            serving.orders = Some(warden_orders::spawn(l, endpoint.clone()));
        }
        Ok(serving)
    }

    /// Stop serving one container's listeners: open connections get `patience` to end.
    /// Call from a plain thread, not from the runtime.
    pub fn stop(&self, serving: Serving, patience: Duration) {
        let Serving {
            proxy,
            router,
            orders,
        } = serving;
        self.handle.block_on(async {
            let proxy = async {
                if let Some(h) = proxy {
                    let _ = tokio::time::timeout(patience, h.shutdown()).await;
                }
            };
            let router = async {
                if let Some(h) = router {
                    let _ = tokio::time::timeout(patience, h.shutdown()).await;
                }
            };
            let orders = async {
                if let Some(h) = orders {
                    let _ = tokio::time::timeout(patience, h.shutdown()).await;
                }
            };
            tokio::join!(proxy, router, orders);
        });
    }

    /// Take the policies of an edited file: each that changed is swapped in for the next
    /// connection or call; a sandbox started without one cannot gain it (nor lose it)
    /// without a restart. Returns what was reloaded (`egress`, `inference`, `orders`).
    pub fn reload(
        &self,
        egress: Option<EgressPolicy>,
        inference: Option<InferencePolicy>,
        orders: Option<OrdersPolicy>,
    ) -> Result<Vec<&'static str>, String> {
        let restart = |what: &str, verb: &str| {
            format!(
                "sandbox `{}` was started {verb} {what}; it takes effect when the sandbox is started again",
                self.sandbox
            )
        };
        match (&self.proxy, &egress) {
            (None, Some(_)) => return Err(restart("egress", "without")),
            (Some(_), None) => return Err(restart("egress", "with")),
            _ => {}
        }
        match (&self.router, &inference) {
            (None, Some(_)) => return Err(restart("inference", "without")),
            (Some(_), None) => return Err(restart("inference", "with")),
            _ => {}
        }
        let mut done = Vec::new();
        // The router first: its reload is the one that can fail (a key, a CA file), and
        // a failure leaves both policies as they were.
        if let (Some(router), Some(policy)) = (&self.router, inference)
            && router.policy() != policy
        {
            router
                .reload(policy)
                .map_err(|e| format!("cannot reload the inference policy: {e}"))?;
            done.push("inference");
        }
        if let (Some(state), Some(policy)) = (&self.proxy, egress)
            && *state.policy() != policy
        {
            state
                .reload(policy)
                .map_err(|e| format!("cannot reload the egress policy: {e}"))?;
            done.push("egress");
        }
        if let (Some(endpoint), Some(policy)) = (&self.orders, orders)
            && *endpoint.policy() != policy
        {
            endpoint.reload(policy);
            self.write_orders_table();
            done.push("orders");
        }
        Ok(done)
    }

    /// Keep the orders table of `bundle` (when it has one and the sandbox is served the
    /// orders endpoint) as the orders in force: written now, and again at each reload
    /// that changes them. The bundle was made for the file as it was; the table follows
    /// the file as it is.
    pub fn render_orders(&self, bundle: &Path) {
        if self.orders.is_none() {
            return;
        }
        let path = bundle.join(ORDERS_TABLE_FILE);
        if !path.is_file() {
            return;
        }
        *self.orders_table.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
        self.write_orders_table();
    }

    fn write_orders_table(&self) {
        let (Some(endpoint), Some(path)) = (
            &self.orders,
            self.orders_table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        ) else {
            return;
        };
        let text = endpoint.policy().to_markdown();
        // In place: the sandbox's bind holds this inode.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, text.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "warden: cannot rewrite the orders table `{}` of `{}`: {e}",
                path.display(),
                self.sandbox
            );
        }
    }

    /// Parks every worker of the runtime until the returned value is dropped; see the
    /// module docs.
    fn park_workers(&self) -> Parked {
        let gate = Arc::new(Gate::default());
        for _ in 0..self.workers {
            let g = gate.clone();
            // A blocking wait inside a task: the worker that runs it can run nothing
            // else, so `workers` of them hold every worker.
            self.handle.spawn(async move { g.park() });
        }
        gate.wait_for(self.workers, PARK_PATIENCE);
        Parked(gate)
    }

    /// Writes what the audit logs and approvals still hold and stops the runtime. The
    /// listeners must have been stopped ([`Services::stop`]) or be dropped with it.
    pub fn shut_down(&self) {
        if let Some(p) = &self.proxy {
            p.flush();
        }
        if let Some(a) = &self.router_audit {
            a.flush();
        }
        let rt = self.rt.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rt) = rt {
            rt.shutdown_timeout(Duration::from_millis(200));
        }
    }
}

/// A file for the router's audit: appended to, `0600`.
fn open_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Where parked workers wait.
#[derive(Default)]
struct Gate {
    /// (workers parked, released)
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Gate {
    fn park(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        self.cv.notify_all();
        while !s.1 {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn wait_for(&self, n: usize, patience: Duration) {
        let deadline = Instant::now() + patience;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            s = self
                .cv
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn release(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.cv.notify_all();
    }
}

struct Parked(Arc<Gate>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Spawns a helper thread and returns once it runs `f`: a thread still starting holds
/// the runtime's locks, and must not be caught by a clone in that state.
pub fn spawn_started(f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(());
        f()
    });
    let _ = rx.recv();
    t
}

/// Excluded by [`hold`]: warden's helper threads do their work under it.
static WORK: RwLock<()> = RwLock::new(());

/// Held by a helper thread while it works (never while it waits for work).
pub fn busy() -> RwLockReadGuard<'static, ()> {
    WORK.read().unwrap_or_else(|e| e.into_inner())
}

/// Everything of this process held still, until dropped.
pub struct Held {
    _parked: Option<Parked>,
    _work: RwLockWriteGuard<'static, ()>,
}

/// Hold this process still for a clone: helper threads out of their work ([`busy`]) and,
/// with `services`, the runtime's workers parked.
pub fn hold(services: Option<&Services>) -> Held {
    let work = WORK.write().unwrap_or_else(|e| e.into_inner());
    Held {
        _parked: services.map(Services::park_workers),
        _work: work,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn services(workers: usize) -> (Services, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let policy = InferencePolicy {
            version: warden_wire::WIRE_VERSION,
            sandbox: "t".into(),
            providers: Vec::new(),
            routes: Vec::new(),
            privacy: Vec::new(),
            idle_timeout_secs: None,
            requests_per_minute: None,
            tokens_per_minute: None,
        };
        let s = Services::start(Setup {
            sandbox: "t".into(),
            egress: None,
            inference: Some(policy),
            orders: None,
            state_dir: dir.path().join("state"),
            workers,
            keys: KeyStore::default(),
        })
        .unwrap()
        .unwrap();
        (s, dir)
    }

    #[test]
    fn a_hold_keeps_every_worker_from_running_tasks() {
        let (s, _dir) = services(2);
        let ran = Arc::new(AtomicUsize::new(0));
        let held = hold(Some(&s));
        for _ in 0..8 {
            let ran = ran.clone();
            s.handle.spawn(async move {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a task ran during the hold");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ran.load(Ordering::SeqCst) < 8 {
            assert!(
                Instant::now() < deadline,
                "tasks did not run after the hold"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        s.shut_down();
    }

    #[test]
    fn a_hold_waits_for_work_in_progress() {
        let before = Instant::now();
        let worker = std::thread::spawn(|| {
            let _b = busy();
            std::thread::sleep(Duration::from_millis(150));
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(hold(None));
        assert!(before.elapsed() >= Duration::from_millis(150));
        worker.join().unwrap();
    }

    #[test]
    fn the_router_audit_file_is_private() {
        use std::os::unix::fs::MetadataExt;
        let (s, dir) = services(1);
        let state = dir.path().join("state");
        assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
        let audit = std::fs::metadata(state.join(ROUTER_AUDIT_FILE)).unwrap();
        assert_eq!(audit.mode() & 0o777, 0o600);
        s.shut_down();
    }
}
