//! `warden serve [FILE] [--listen ADDR]`: the control API (`warden-serve`) over the
//! same state, file and operations as the CLI. It serves only: approvals and orders are
//! the CLI's file edits, and `apply` stays the one writer of sandboxes.

use crate::Exit;
use crate::commands::approvals::{self, OpError};
use crate::commands::audit::{self, AuditAt};
use crate::deploy::paths::Paths;
use crate::project::{self, Project};
use crate::ui::Out;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use warden_serve::{AuditQuery, Backend, BackendError, Role, Sample};
use warden_wire::orders::Autonomy;

pub struct Options {
    pub listen: String,
    pub header_timeout: Option<String>,
}

/// The API's backend: the file named at start (read again for every request, so
/// edits and roles take effect at once) and the state directory.
struct Control {
    file: PathBuf,
    paths: Paths,
    /// The last load, with the bytes of every file it read: reused while they are the
    /// same (reading a few small files is cheap; parsing and validating them for every
    /// request was most of an approvals listing), loaded again as soon as one differs.
    last: Mutex<Option<Arc<(Project, project::Sources)>>>,
}

impl Control {
    fn project(&self) -> Result<Arc<(Project, project::Sources)>, BackendError> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(last) = last
            && project::unchanged(&last.1)
        {
            return Ok(last);
        }
        // Diagnostics are not printed for every request (`check` shows them).
        let quiet = Out {
            json: true,
            diagnostics_as_json: true,
        };
        let loaded = Arc::new(project::load_tracked(&quiet, &self.file).map_err(|_| {
            BackendError::Internal(format!(
                "`{}` cannot be loaded (see `warden check`)",
                self.file.display()
            ))
        })?);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(loaded.clone());
        Ok(loaded)
    }

    fn audit_store(&self, p: &Project) -> Result<warden_audit::Store, BackendError> {
        AuditAt::of(p)
            .open()
            .map_err(|e| BackendError::Internal(e.to_string()))
    }

    /// Where the file (as it is now) keeps the audit.
    fn audit_at(&self) -> Result<AuditAt, String> {
        self.project().map(|p| AuditAt::of(&p.0)).map_err(|_| {
            format!(
                "`{}` cannot be loaded, so where its audit store lives is unknown",
                self.file.display()
            )
        })
    }

    fn record(&self, actor: &str, tenant: &str, detail: warden_audit::Detail) {
        if let Err(e) = self
            .audit_at()
            .and_then(|at| audit::record(&at, actor, Some(tenant), None, detail))
        {
            eprintln!("warning: not recorded in the audit store: {e}");
        }
    }

    fn secrets(&self) -> Result<warden_secrets::Store, BackendError> {
        let kek = warden_secrets::Kek::from_env(&self.paths.state_dir)
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        Ok(warden_secrets::Store::new(&self.paths.state_dir, kek))
    }
}

fn op_error(e: OpError) -> BackendError {
    match e {
        OpError::NotFound(_) => BackendError::NotFound,
        OpError::Refused { message, .. } => BackendError::Refused(message),
        OpError::Internal(m) => BackendError::Internal(m),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, BackendError> {
    serde_json::to_value(v).map_err(|e| BackendError::Internal(e.to_string()))
}

fn secret_error(e: warden_secrets::SecretError) -> BackendError {
    use warden_secrets::SecretError as E;
    match e {
        E::NotFound { .. } => BackendError::NotFound,
        E::BadValue { .. } | E::BadName { .. } => BackendError::Invalid(e.to_string()),
        E::NoKek | E::KekFile { .. } | E::WrongKek { .. } => {
            BackendError::Unavailable(e.to_string())
        }
        e => BackendError::Internal(e.to_string()),
    }
}

impl Backend for Control {
    fn role(&self, tenant: &str, subject: &str) -> Result<Option<Role>, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        Ok(p.model.tenant(tenant).and_then(|t| {
            t.roles
                .iter()
                .filter(|r| r.subject == subject)
                .filter_map(|r| Role::parse(&r.role))
                .max()
        }))
    }

    fn sandboxes(&self, tenant: &str) -> Result<Value, BackendError> {
        let rows: Vec<crate::commands::ps::Row> = crate::commands::ps::rows(&self.paths)
            .map_err(BackendError::Internal)?
            .into_iter()
            .filter(|r| r.tenant.as_deref() == Some(tenant))
            .collect();
        to_json(&rows)
    }

    fn approvals(&self, tenant: &str) -> Result<Value, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        to_json(&approvals::pending_in(p, Some(tenant)))
    }

    fn approve(&self, tenant: &str, id: &str, actor: &str) -> Result<Value, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        let a = approvals::approve_op(p, &self.file, id, Some(tenant), actor).map_err(op_error)?;
        let mut v = to_json(&a)?;
        // Where the server's file lives is none of the tenant's business.
        if let Some(o) = v.as_object_mut() {
            o.remove("file");
        }
        Ok(v)
    }

    fn deny(&self, tenant: &str, id: &str, actor: &str) -> Result<Value, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        let d = approvals::deny_op(p, id, Some(tenant), actor).map_err(op_error)?;
        to_json(&d)
    }

    fn orders(&self, tenant: &str) -> Result<Value, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        let orders: Vec<Value> = p
            .model
            .orders
            .iter()
            .filter(|o| crate::commands::orders::order_in_scope(p, &o.name, Some(tenant)))
            .map(|o| {
                json!({
                    "name": o.name,
                    "bounds": o.bounds,
                    "override": o.override_,
                    "autonomy": o.autonomy.as_str(),
                })
            })
            .collect();
        Ok(json!({ "orders": orders }))
    }

    fn set_order(
        &self,
        tenant: &str,
        name: &str,
        grant: bool,
        actor: &str,
    ) -> Result<Value, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        let autonomy = if grant { Autonomy::Auto } else { Autonomy::Ask };
        let r = crate::commands::orders::set_op(p, &self.file, name, autonomy, Some(tenant), actor)
            .map_err(op_error)?;
        to_json(&r)
    }

    fn audit(&self, tenant: &str, q: &AuditQuery) -> Result<Value, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        let mut store = self.audit_store(p)?;
        let tenant_of = |name: &str| p.model.sandbox(name).and_then(|s| s.tenant.clone());
        if let Err(e) = audit::import_egress(&mut store, &self.paths, &tenant_of) {
            eprintln!("warning: egress decisions were not imported: {e}");
        }
        let events = store
            .query(&warden_audit::Filter {
                tenant: Some(tenant.to_string()),
                sandbox: q.sandbox.clone(),
                kind: q.kind.clone(),
                since_ms: q.since.map(|s| s.saturating_mul(1000)),
                limit: Some(q.limit),
            })
            .map_err(|e| BackendError::Internal(e.to_string()))?;
        to_json(&events)
    }

    fn secrets(&self, tenant: &str) -> Result<Value, BackendError> {
        let list = warden_secrets::list(&self.paths.state_dir, tenant).map_err(secret_error)?;
        to_json(&list)
    }

    fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: &[u8],
        actor: &str,
    ) -> Result<Value, BackendError> {
        let o = self
            .secrets()?
            .set(tenant, name, value)
            .map_err(secret_error)?;
        self.record(
            actor,
            tenant,
            warden_audit::Detail::SecretSet {
                name: name.to_string(),
                key_version: o.key_version,
            },
        );
        Ok(json!({"name": name, "key_version": o.key_version, "replaced": o.replaced}))
    }

    fn remove_secret(&self, tenant: &str, name: &str, actor: &str) -> Result<Value, BackendError> {
        if !warden_secrets::remove(&self.paths.state_dir, tenant, name).map_err(secret_error)? {
            return Err(BackendError::NotFound);
        }
        self.record(
            actor,
            tenant,
            warden_audit::Detail::SecretRemoved {
                name: name.to_string(),
            },
        );
        Ok(json!({"name": name, "removed": true}))
    }

    fn metrics(&self, tenant: &str) -> Result<Vec<Sample>, BackendError> {
        let loaded = self.project()?;
        let p = &loaded.0;
        let rows = crate::commands::ps::rows(&self.paths).map_err(BackendError::Internal)?;
        let mut by_state: std::collections::BTreeMap<String, u64> = Default::default();
        for r in rows.iter().filter(|r| r.tenant.as_deref() == Some(tenant)) {
            // `exited (3)` counts as `exited`.
            let state = r.state.split(' ').next().unwrap_or_default().to_string();
            *by_state.entry(state).or_default() += 1;
        }
        let mut out: Vec<Sample> = by_state
            .into_iter()
            .map(|(state, n)| Sample {
                name: "warden_sandboxes",
                help: "Applied sandboxes of the tenant, by state.",
                labels: vec![("tenant", tenant.to_string()), ("state", state)],
                value: n as f64,
            })
            .collect();
        out.push(Sample {
            name: "warden_approvals_pending",
            help: "Destinations the tenant's sandboxes were refused, waiting for a human.",
            labels: vec![("tenant", tenant.to_string())],
            value: approvals::pending_in(p, Some(tenant)).len() as f64,
        });
        Ok(out)
    }

    fn refused_login(&self, code: &str, method: &str, path: &str, remote: &str) {
        let detail = warden_audit::Detail::LoginRefused {
            code: code.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            remote: remote.to_string(),
        };
        if let Err(e) = self
            .audit_at()
            .and_then(|at| audit::record(&at, "anonymous", None, None, detail))
        {
            eprintln!("warning: a refused login was not recorded in the audit store: {e}");
        }
    }
}

/// A path of the `auth` node, relative to the file that declared it.
fn auth_path(file: &Path, base: &str, p: &str) -> PathBuf {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(base).join(p)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the {what} `{}`: {}",
            path.display(),
            project::io_msg(&e)
        )
    })
}

/// The verifier and TLS configuration the file's `auth` node names.
fn configure(
    path: &Path,
    auth: &warden_lang::model::Auth,
) -> Result<(warden_serve::Verifier, Option<Arc<warden_serve::TlsConfig>>), String> {
    let mut v = warden_serve::Verifier::new(&auth.issuer, &auth.audience);
    if let Some(jwks) = &auth.jwks {
        let p = auth_path(path, &auth.base, jwks);
        let text = String::from_utf8(read(&p, "JWKS file")?)
            .map_err(|_| format!("the JWKS file `{}` is not UTF-8", p.display()))?;
        v.add_jwks(&text)
            .map_err(|e| format!("the JWKS file `{}`: {e}", p.display()))?;
    }
    if let Some(hs) = &auth.hs256_key_file {
        use std::os::unix::fs::MetadataExt;
        let p = auth_path(path, &auth.base, hs);
        let mode = std::fs::metadata(&p).map(|m| m.mode() & 0o777).unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(format!(
                "the HS256 key file `{}` has mode {mode:03o}: group or others can read it; `chmod 600` it",
                p.display()
            ));
        }
        let secret = read(&p, "HS256 key file")?;
        v.add_hs256(&secret)
            .map_err(|e| format!("the HS256 key file `{}`: {e}", p.display()))?;
    }
    let tls = match &auth.tls {
        None => None,
        Some(t) => {
            let cert = read(&auth_path(path, &auth.base, &t.cert), "TLS certificate")?;
            let key = read(&auth_path(path, &auth.base, &t.key), "TLS key")?;
            Some(warden_serve::tls_config(&cert, &key)?)
        }
    };
    Ok((v, tls))
}

pub fn serve(out: &Out, path: &Path, opts: Options) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let Some(auth) = &p.model.auth else {
        eprintln!(
            "error: `{}` has no `auth` node: the control API serves only requests whose tokens it can check",
            path.display()
        );
        return Ok(Exit::User);
    };
    let (verifier, tls) = match configure(path, auth) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    let mut limits = warden_serve::Limits::default();
    if let Some(t) = &opts.header_timeout {
        match warden_lang::values::parse_duration(t) {
            Ok(ms) if ms > 0 => limits.header_timeout = Duration::from_millis(ms),
            _ => {
                eprintln!("error: `--header-timeout {t}` is not a duration such as `10s`");
                return Ok(Exit::User);
            }
        }
    }
    let control = Control {
        file: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        paths: Paths::from_env(),
        last: Mutex::new(None),
    };
    let listener = match std::net::TcpListener::bind(&opts.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on `{}`: {}",
                opts.listen,
                project::io_msg(&e)
            );
            return Ok(Exit::User);
        }
    };
    let addr = listener.local_addr()?;
    if tls.is_none() && !addr.ip().is_loopback() {
        eprintln!(
            "warning: serving plain HTTP on {addr}: tokens cross the network in the clear; name `tls cert=... key=...` in `auth`"
        );
    }
    listener.set_nonblocking(true)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = warden_serve::Server::new(verifier, Arc::new(control), limits, tls);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        // Scripts and tests read this line to learn the port.
        eprintln!("serving the control API on {scheme}://{addr}");
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match term.as_mut() {
                        Some(t) => { t.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        };
        server.serve(listener, stop).await
    })?;
    Ok(Exit::Ok)
}
