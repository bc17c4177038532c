//! warden-egress: the one way out of a sandbox.
//!
//! A sandbox's network namespace has only `lo`. The runtime binds `127.0.0.1:PORT`
//! *inside* that namespace and hands the listening socket to [`serve`] (or [`spawn`]),
//! which runs in the host namespace and dials out from there. The proxy speaks HTTP/1:
//! `CONNECT host:port` for TLS and any TCP, and absolute-form plain HTTP
//! (`GET http://host/path`), where method and path rules apply.
//!
//! # Use
//!
//! ```no_run
//! # async fn run(policy: warden_wire::egress::EgressPolicy) -> Result<(), warden_egress::EgressError> {
//! use warden_egress::{ProxyConfig, ProxyState};
//! // The runtime binds this inside the sandbox's network namespace.
//! let listener = std::net::TcpListener::bind("127.0.0.1:3128").expect("bind");
//! let state = ProxyState::new(policy, ProxyConfig::new("/var/lib/warden/sandboxes/agent"))?;
//! let handle = warden_egress::spawn(listener, state.clone())?;
//! // Later: `state.reload(new_policy)?`, `state.pending_approvals()`, ...
//! handle.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Security decisions
//!
//! - **Fail closed, loudly.** Every refusal is an HTTP answer with `X-Warden-Reason`
//!   (for policy denials exactly `DenyReason::describe()`), a one-line body, and an audit
//!   line with the host and port the request named (also when it was refused before the
//!   policy was asked: [`head::destination_named`]). Nothing matched means deny.
//! - **One parser's view.** Heads are parsed with `httparse` and then validated in
//!   [`head::plan_request`]; anything two HTTP implementations could read differently is
//!   refused rather than normalized: `Content-Length` with `Transfer-Encoding`, duplicate
//!   `Content-Length`, any `Transfer-Encoding` but `chunked`, several `Host` headers, a
//!   `Host` header that disagrees with the URI, userinfo (`http://allowed@evil/`), dot
//!   segments (also `%2e` and `..;`), encoded slashes and backslashes in paths.
//! - **Host normalization is the policy's.** CONNECT targets and URI hosts go through
//!   `warden_wire::egress::normalize_host`, so `2130706433`, `0x7f.1`, `[::ffff:10.0.0.1]`
//!   are addresses and meet the forbidden classes.
//! - **Resolve once, check every address, dial what was checked.** A name is resolved by
//!   the [`Resolver`] once per connection; if *any* returned address lies in a forbidden
//!   class (loopback, private, link-local, CGNAT, metadata, ...) not named by an explicit
//!   CIDR rule, the request is refused (a name mixing public and internal addresses is a
//!   rebinding attempt); otherwise the proxy dials those addresses, never the name.
//!   To let a test or an internal service through, the file names the address
//!   (`Target::Cidr(127.0.0.2/32)`) *and* the name; naming only the host is not enough.
//! - **One checked request per plain-HTTP connection.** The request is rewritten to
//!   origin form with a canonical `Host`, hop-by-hop and `Proxy-*` headers removed (so
//!   proxy credentials never reach an origin), and `Connection: close`. Exactly one
//!   request body (by its framing) is forwarded; bytes the client pipelines after it are
//!   never sent, and the answer carries `Connection: close`. So every request an origin
//!   sees was checked; each request pipelined after a served or refused one gets an audit
//!   line saying it was not served ([`head::pipelined_after`]). WebSocket upgrades (`Connection: upgrade`) become a tunnel after
//!   the 101.
//! - **Bounded heads, bounded time to send them.** A head over
//!   [`ProxyConfig::max_head_bytes`] gets 431; a head not complete within
//!   [`ProxyConfig::header_timeout`] gets 408 and the connection is dropped (slowloris),
//!   each connection in its own task so others are unaffected.
//! - **Idle timeout, never a total one.** Tunnels end after `idle_timeout_secs` without a
//!   byte in either direction (0 disables it); long streams and WebSockets run as long as
//!   they are used. `TCP_NODELAY` on both sockets.
//! - **Reload is atomic and per connection.** The policy sits in an `ArcSwap`; each
//!   connection takes a snapshot when accepted. [`ProxyState::reload`] changes what the
//!   next connection sees immediately; open tunnels keep their decision.
//! - **`ask` is a denial for now.** A rule whose standing order needs a human denies and
//!   records a pending approval, as do `NoRule`, port, method, path and http-only
//!   denials. Explicit `deny` rules, forbidden addresses and `never` orders are final and
//!   not surfaced for approval.
//! - **Recording never blocks traffic.** Audit events go through a bounded channel to a
//!   writer thread; when full they are dropped and counted ([`ProxyState::audit_dropped`]).
//! - **No panics on input.** Parsing is pure and fuzzed (`tests/it/fuzz.rs`).

pub mod approvals;
pub mod audit;
pub mod chunked;
pub mod head;
mod proxy;
pub mod resolve;
#[cfg(target_os = "linux")]
mod splice;
mod tunnel;

pub use approvals::{
    Approval, ApprovalStatus, ToolAsk, approval_id, approval_status, ask_tool, deny_approval,
    load_all_approvals, load_approvals, mark_approved, tool_approval_id,
};
pub use audit::{AUDIT_FILE, AuditEvent};
pub use proxy::refusal_response;
pub use resolve::{ResolveFuture, Resolver, StaticResolver, SystemResolver};
pub use tunnel::setup_socket;

use approvals::ApprovalStore;
use arc_swap::ArcSwap;
use audit::{AuditLimits, Recorder};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use warden_wire::egress::{EgressPolicy, Request, normalize_host};

/// Errors from setting up or reloading the proxy.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress policy has wire version {found}, this warden reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("egress policy is for sandbox `{found}`, this proxy serves `{expected}`")]
    Sandbox { found: String, expected: String },
    #[error("cannot prepare the egress state directory `{path}`: {source}")]
    StateDir { path: PathBuf, source: io::Error },
    #[error("cannot serve the egress listener: {0}")]
    Listener(io::Error),
}

/// Tunables. [`ProxyConfig::new`] gives the production defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where `approvals.json` and `audit.jsonl` live.
    pub state_dir: PathBuf,
    /// Whole request head must arrive within this (slowloris).
    pub header_timeout: Duration,
    /// Cap on the request head, request line and headers together (431 beyond).
    pub max_head_bytes: usize,
    /// Per resolution and per dial attempt.
    pub connect_timeout: Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
    /// Rotate `audit.jsonl` past this size.
    pub audit_max_bytes: u64,
    /// Rotated audit files kept (`audit.jsonl.1` .. `.N`).
    pub audit_keep: usize,
    /// Approvals and audit reach the disk at most this long after a change.
    pub flush_interval: Duration,
    /// On shutdown, open connections get this long to finish before being cut.
    pub shutdown_grace: Duration,
}

impl ProxyConfig {
    pub fn new(state_dir: impl Into<PathBuf>) -> ProxyConfig {
        ProxyConfig {
            state_dir: state_dir.into(),
            header_timeout: Duration::from_secs(10),
            max_head_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_connections: 4096,
            audit_max_bytes: 16 * 1024 * 1024,
            audit_keep: 5,
            flush_interval: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Everything the proxy shares between connections.
pub struct ProxyState {
    policy: ArcSwap<EgressPolicy>,
    config: ProxyConfig,
    resolver: Arc<dyn Resolver>,
    approvals: Arc<ApprovalStore>,
    recorder: Recorder,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("sandbox", &self.policy.load().sandbox)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ProxyState {
    /// A proxy state resolving names with the host's resolver.
    pub fn new(policy: EgressPolicy, config: ProxyConfig) -> Result<Arc<ProxyState>, EgressError> {
        ProxyState::with_resolver(policy, config, Arc::new(SystemResolver))
    }

    /// A proxy state with a chosen resolver (tests map names to loopback addresses).
    /// Creates the state directory and starts the audit writer thread.
    pub fn with_resolver(
        policy: EgressPolicy,
        config: ProxyConfig,
        resolver: Arc<dyn Resolver>,
    ) -> Result<Arc<ProxyState>, EgressError> {
        check_version(&policy)?;
        let dir_err = |source| EgressError::StateDir {
            path: config.state_dir.clone(),
            source,
        };
        private_dir(&config.state_dir).map_err(dir_err)?;
        let approvals = Arc::new(ApprovalStore::open(&config.state_dir));
        let limits = AuditLimits {
            max_bytes: config.audit_max_bytes,
            keep: config.audit_keep,
            debounce: config.flush_interval,
        };
        let recorder =
            Recorder::start(&config.state_dir, limits, approvals.clone()).map_err(dir_err)?;
        Ok(Arc::new(ProxyState {
            policy: ArcSwap::from_pointee(policy),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            config,
            resolver,
            approvals,
            recorder,
        }))
    }

    /// The policy new connections are decided by.
    pub fn policy(&self) -> Arc<EgressPolicy> {
        self.policy.load_full()
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Swap in a new policy: the next accepted connection uses it; open connections keep
    /// theirs. Pending approvals the new policy allows are marked approved.
    pub fn reload(&self, policy: EgressPolicy) -> Result<(), EgressError> {
        check_version(&policy)?;
        let current = self.policy.load();
        if policy.sandbox != current.sandbox {
            return Err(EgressError::Sandbox {
                found: policy.sandbox,
                expected: current.sandbox.clone(),
            });
        }
        let policy = Arc::new(policy);
        self.policy.store(policy.clone());
        self.approvals.settle(|a| {
            let Ok(host) = normalize_host(&a.host) else {
                return false;
            };
            let http = a.method.as_deref().map(|m| (m, "/"));
            policy
                .decide(&Request {
                    host: &host,
                    port: a.port,
                    http,
                })
                .is_allow()
        });
        Ok(())
    }

    /// Pending approvals as this proxy sees them now (the file may lag by
    /// [`ProxyConfig::flush_interval`]).
    pub fn pending_approvals(&self) -> Vec<Approval> {
        let mut v = self.approvals.snapshot();
        v.retain(|a| a.status == ApprovalStatus::Pending);
        v.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
        v
    }

    /// A human said no: the record stays (and keeps counting) but is no longer surfaced.
    /// `false` when no record has that ID. Does not block: the file follows within
    /// [`ProxyConfig::flush_interval`] (or call [`ProxyState::flush`]).
    pub fn deny_approval(&self, id: &str) -> bool {
        self.approvals.set_status(id, ApprovalStatus::Denied)
    }

    /// Block until every decision so far is in `audit.jsonl` and `approvals.json`.
    /// Blocking: call from a plain thread or `spawn_blocking`, not from async code.
    pub fn flush(&self) {
        self.recorder.flush();
    }

    /// Audit events dropped because the writer could not keep up.
    pub fn audit_dropped(&self) -> u64 {
        self.recorder.dropped()
    }
}

fn check_version(policy: &EgressPolicy) -> Result<(), EgressError> {
    if policy.version != warden_wire::WIRE_VERSION {
        return Err(EgressError::Version {
            found: policy.version,
            expected: warden_wire::WIRE_VERSION,
        });
    }
    Ok(())
}

/// Serve `listener` until the process ends. Must run inside a tokio runtime.
pub async fn serve(
    listener: std::net::TcpListener,
    state: Arc<ProxyState>,
) -> Result<(), EgressError> {
    serve_until(listener, state, std::future::pending()).await
}

/// Serve until `shutdown` resolves, then stop accepting, give open connections
/// [`ProxyConfig::shutdown_grace`] to finish, cut the rest, and flush the records.
pub async fn serve_until(
    listener: std::net::TcpListener,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EgressError> {
    listener
        .set_nonblocking(true)
        .map_err(EgressError::Listener)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(EgressError::Listener)?;
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    while conns.try_join_next().is_some() {}
                    match state.slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let st = state.clone();
                            conns.spawn(async move {
                                proxy::handle(st, stream).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            conns.spawn(busy(stream));
                        }
                    }
                }
                // Out of descriptors or a transient error: back off, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
        }
    }
    drop(listener);
    let grace = state.config.shutdown_grace;
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    conns.shutdown().await;
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || st.flush()).await;
    Ok(())
}

async fn busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let r = head::Refusal::new(503, "too many connections through this proxy");
    let _ = stream.write_all(&refusal_response(&r, None)).await;
}

/// A running proxy, from [`spawn`].
#[derive(Debug)]
pub struct ProxyHandle {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), EgressError>>,
}

impl ProxyHandle {
    /// The address the listener is bound to (inside the sandbox's namespace).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, let open connections finish (up to the grace period), flush.
    pub async fn shutdown(mut self) -> Result<(), EgressError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(EgressError::Listener(io::Error::other(e))),
        }
    }
}

/// Start serving `listener` on the current tokio runtime (panics outside one, like
/// `tokio::spawn`). Dropping the handle without [`ProxyHandle::shutdown`] leaves the
/// proxy serving.
pub fn spawn(
    listener: std::net::TcpListener,
    state: Arc<ProxyState>,
) -> Result<ProxyHandle, EgressError> {
    let local_addr = listener.local_addr().map_err(EgressError::Listener)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_until(listener, state, async move {
        if rx.await.is_err() {
            // The handle was dropped: keep serving.
            std::future::pending::<()>().await;
        }
    }));
    Ok(ProxyHandle {
        local_addr,
        stop: Some(tx),
        task,
    })
}

/// Makes `dir` (and missing parents) readable by root only: a sandbox's approvals and
/// audit are no other tenant's business.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
