//! warden-serve: the control API's network edge.
//!
//! HTTP/1.1 (axum on hyper, TLS through rustls when configured) in front of a
//! [`Backend`] that does the work over warden's state and file. This crate owns what
//! faces the network: bearer tokens ([`auth`]), tenant scoping and roles, path names,
//! limits (bodies, header read time, connections), JSON errors with stable codes
//! ([`ApiError`]) and the metrics of the API itself.
//!
//! Tenant scoping: a token speaks for one tenant (its `tenant` claim). A path naming
//! another tenant is answered exactly as a tenant that does not exist, and the backend
//! is asked only about the token's tenant, so approvals, orders and secrets of another
//! tenant are not found either.

pub mod api;
pub mod auth;
mod error;

pub use api::{AuditQuery, Backend, BackendError, Role, Sample};
pub use auth::{AuthError, Identity, Verifier};
pub use error::ApiError;

use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// A TLS server configuration ([`tls_config`]).
pub type TlsConfig = rustls::ServerConfig;

/// What a client may cost the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request bodies larger than this are refused with 413 (announced ones before a
    /// byte of them is read).
    pub max_body: usize,
    /// A client that has not sent a request's whole head (or finished the TLS
    /// handshake) in this time is disconnected.
    pub header_timeout: Duration,
    /// A body that has not arrived in this time is answered with 408.
    pub body_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// The peer's address, for the audit of refused logins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote(pub SocketAddr);

pub(crate) struct App {
    pub verifier: Verifier,
    pub backend: Arc<dyn Backend>,
    pub limits: Limits,
    /// Changes (file edits, secrets) one at a time.
    pub writes: tokio::sync::Mutex<()>,
    /// Answers per tenant and status code.
    answers: Mutex<BTreeMap<(String, u16), u64>>,
}

impl App {
    pub(crate) fn count(&self, tenant: &str, status: u16) {
        let mut a = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        *a.entry((tenant.to_string(), status)).or_default() += 1;
    }

    pub(crate) fn samples(&self, tenant: &str) -> Vec<Sample> {
        let a = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        a.iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((t, code), n)| Sample {
                name: "warden_api_requests_total",
                help: "Requests of the tenant's tokens answered by the control API, by status code.",
                labels: vec![("tenant", t.clone()), ("code", code.to_string())],
                value: *n as f64,
            })
            .collect()
    }
}

/// A configured server: token keys, backend, limits and optional TLS.
pub struct Server {
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("verifier", &self.app.verifier)
            .field("limits", &self.app.limits)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    pub fn new(
        verifier: Verifier,
        backend: Arc<dyn Backend>,
        limits: Limits,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Server {
        Server {
            app: Arc::new(App {
                verifier,
                backend,
                limits,
                writes: tokio::sync::Mutex::new(()),
                answers: Mutex::new(BTreeMap::new()),
            }),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
        }
    }

    /// Serves connections from `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let router = api::router(self.app.clone());
        let limits = self.app.limits;
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
                () = &mut shutdown => return Ok(()),
            };
            let (tcp, remote) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    // Out of descriptors and the like: wait a little, keep serving.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let _ = tcp.set_nodelay(true);
            let svc = router.clone().layer(axum::Extension(Remote(remote)));
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tls {
                    None => connection(tcp, svc, limits).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await;
                        if let Ok(Ok(stream)) = handshake {
                            connection(stream, svc, limits).await;
                        }
                    }
                }
            });
        }
    }
}

async fn connection<I>(io: I, svc: axum::Router, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), svc);
    let _ = conn.await;
}

/// A rustls server configuration from PEM files' contents (a certificate chain and its
/// private key), HTTP/1.1 only.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no PEM certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    // ring, as the router uses (no cmake needed to build); rustls 0.23.48 marks its
    // provider deprecated for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
