//! One provider as the router reaches it: where, with which key, over which TLS roots,
//! and a pool of idle HTTP/1.1 connections.
//!
//! Connections are handed back to the pool only after an answer was read to its end.
//! An answer abandoned midway (the caller went away, the stream went idle) drops its
//! connection with it, which closes the socket: the provider sees the request cancelled.

use crate::RouterError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use warden_wire::inference::{Api, Provider};

/// Idle connections kept per provider.
const POOL_MAX_IDLE: usize = 64;

/// A provider key. Never printed; marked sensitive so HTTP tooling leaves it out too.
#[derive(Clone)]
pub(crate) struct Key(http::HeaderValue);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

pub(crate) type Sender = SendRequest<Full<Bytes>>;

pub(crate) struct Upstream {
    pub provider: Provider,
    /// `Authorization: Bearer ...` or `x-api-key: ...`, ready to send.
    key: Option<Key>,
    https: bool,
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path prefix of the endpoint, without a trailing `/`.
    base_path: String,
    tls: Option<tokio_rustls::TlsConnector>,
    idle: Mutex<Vec<Sender>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("provider", &self.provider.name)
            .field("endpoint", &self.provider.endpoint)
            .finish_non_exhaustive()
    }
}

/// Where a provider's key comes from, as the router's host is asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// `key-env=`: an environment variable of the router's process.
    Env(&'a str),
    /// `key-secret=`: a secret of the sandbox's tenant.
    Secret(&'a str),
}

pub(crate) type KeyLookup = dyn Fn(KeySource<'_>) -> Option<String> + Send + Sync;

impl Upstream {
    pub(crate) fn new(p: &Provider, env: &KeyLookup) -> Result<Upstream, RouterError> {
        let bad = |reason: String| RouterError::Endpoint {
            provider: p.name.clone(),
            endpoint: p.endpoint.clone(),
            reason,
        };
        let uri: http::Uri = p.endpoint.parse().map_err(|e| bad(format!("{e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("not an http or https URL".into())),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let base_path = uri.path().trim_end_matches('/').to_string();
        let key = read_key(p, env)?;
        let tls = if https { Some(tls_connector(p)?) } else { None };
        Ok(Upstream {
            provider: p.clone(),
            key,
            https,
            host,
            port,
            authority,
            base_path,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The upstream path for a caller's `/v1/...` path. An endpoint whose path already
    /// ends in `/v1` (the OpenAI convention, `http://host:8000/v1`) takes the rest;
    /// others (the Anthropic convention, `https://api.anthropic.com`) take it whole.
    pub(crate) fn path_for(&self, path: &str, query: Option<&str>) -> String {
        let rest = if self.base_path.ends_with("/v1") {
            path.strip_prefix("/v1").unwrap_or(path)
        } else {
            path
        };
        match query {
            Some(q) => format!("{}{rest}?{q}", self.base_path),
            None => format!("{}{rest}", self.base_path),
        }
    }

    /// Add the provider's credential, the one way each API expects it.
    pub(crate) fn authorize(&self, headers: &mut http::HeaderMap) {
        let Some(Key(v)) = &self.key else { return };
        match self.provider.api {
            Api::Anthropic => headers.insert("x-api-key", v.clone()),
            Api::Openai => headers.insert(http::header::AUTHORIZATION, v.clone()),
        };
    }

    /// An idle pooled connection, if one is still open.
    pub(crate) fn pooled(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// Hand a connection back once its answer was read to the end.
    pub(crate) fn release(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < POOL_MAX_IDLE {
            idle.push(s);
        }
    }

    /// A new connection: TCP (no Nagle), TLS when https, then the HTTP/1.1 handshake.
    pub(crate) async fn connect(&self, timeout: Duration) -> io::Result<Sender> {
        let addr = (self.host.as_str(), self.port);
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        let builder = hyper::client::conn::http1::Builder::new();
        let sender = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let stream = tokio::time::timeout(timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                let (sender, conn) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(io::Error::other)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
            None => {
                let (sender, conn) = builder
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(io::Error::other)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        debug_assert!(self.https == self.tls.is_some());
        Ok(sender)
    }
}

/// The key, read once when the router is made (or reloaded): a missing one is an error
/// now, not a 401 on some later request.
fn read_key(p: &Provider, keys: &KeyLookup) -> Result<Option<Key>, RouterError> {
    let err = |reason: String| RouterError::Key {
        provider: p.name.clone(),
        reason,
    };
    let raw = match (&p.key_env, &p.key_file, &p.key_secret) {
        (None, None, None) => return Ok(None),
        (Some(var), None, None) => keys(KeySource::Env(var))
            .ok_or_else(|| err(format!("environment variable `{var}` is not set")))?,
        (None, Some(path), None) => read_key_file(&p.name, path)?,
        (None, None, Some(secret)) => keys(KeySource::Secret(secret))
            .ok_or_else(|| err(format!("the tenant's secret `{secret}` cannot be read")))?,
        _ => {
            return Err(err(
                "more than one of `key-env`, `key-file` and `key-secret` is set".into(),
            ));
        }
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(RouterError::Key {
            provider: p.name.clone(),
            reason: "the key is empty".into(),
        });
    }
    let value = match p.api {
        Api::Anthropic => raw.to_string(),
        Api::Openai => format!("Bearer {raw}"),
    };
    let mut v = http::HeaderValue::from_str(&value).map_err(|_| RouterError::Key {
        provider: p.name.clone(),
        reason: "the key holds characters a header cannot carry".into(),
    })?;
    v.set_sensitive(true);
    Ok(Some(Key(v)))
}

/// A key file must be owned by the router's user and closed to group and others.
fn read_key_file(provider: &str, path: &str) -> Result<String, RouterError> {
    let err = |reason: String| RouterError::Key {
        provider: provider.to_string(),
        reason: format!("key file `{path}`: {reason}"),
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {mode:03o} lets group or others read it; `chmod 600` it"
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(err(format!(
            "owned by uid {}, not by the router's uid {euid}",
            meta.uid()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| err(e.to_string()))
}

fn tls_connector(p: &Provider) -> Result<tokio_rustls::TlsConnector, RouterError> {
    let bad = |reason: String| RouterError::Tls {
        provider: p.name.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &p.ca {
        use rustls::pki_types::pem::PemObject;
        let mut n = 0;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)
            .map_err(|e| bad(format!("cannot read CA file `{ca}`: {e}")))?
        {
            let cert = cert.map_err(|e| bad(format!("CA file `{ca}`: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("CA file `{ca}`: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad(format!("CA file `{ca}` holds no certificate")));
        }
    }
    // ring, not aws-lc-rs: it builds with a C compiler alone (no cmake), which keeps
    // `cargo install` working on a bare machine. rustls 0.23.48 marks ring's provider
    // deprecated because it lacks post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
