//! `warden audit`: the audit store, queried; and the one way the CLI and the control API
//! record an event.

use crate::Exit;
use crate::deploy::paths::Paths;
use crate::deploy::state::State;
use crate::project::Project;
use crate::ui::Out;
use std::path::PathBuf;
use warden_audit::{Detail, Event, Filter, Store};

/// Where the audit store lives: its spool under the state directory, its rows there
/// (SQLite) or in the PostgreSQL database the file's `audit` node names.
#[derive(Debug, Clone)]
pub struct AuditAt {
    pub state_dir: PathBuf,
    pub postgres: Option<String>,
}

impl AuditAt {
    /// The store `p`'s file names.
    pub fn of(p: &Project) -> AuditAt {
        AuditAt {
            state_dir: PathBuf::from(&p.options.state_dir),
            postgres: p.model.audit.as_ref().map(|a| a.url.clone()),
        }
    }

    /// For a command that names no file of its own (`audit`, `secret`): the store the
    /// file `file` names, by default `warden.kdl` in the current directory; SQLite under
    /// the state directory when no file was named and there is no `warden.kdl`.
    pub fn for_cli(file: Option<PathBuf>) -> Result<AuditAt, String> {
        let named = file.is_some();
        let path = crate::project::file(file);
        if !named && !path.exists() {
            return Ok(AuditAt {
                state_dir: Paths::from_env().state_dir,
                postgres: None,
            });
        }
        let quiet = Out {
            json: true,
            diagnostics_as_json: true,
        };
        crate::project::load(&quiet, &path)
            .map(|p| AuditAt::of(&p))
            .map_err(|_| {
                format!(
                    "`{}` cannot be loaded, so where its audit store lives is unknown (see `warden check`)",
                    path.display()
                )
            })
    }

    pub fn open(&self) -> Result<Store, warden_audit::AuditError> {
        Store::open_at(&self.state_dir, self.postgres.as_deref())
    }
}

/// Records one event (spooled and fsynced before this returns).
pub fn record(
    at: &AuditAt,
    actor: &str,
    tenant: Option<&str>,
    sandbox: Option<&str>,
    detail: Detail,
) -> Result<(), String> {
    let mut store = at.open().map_err(|e| e.to_string())?;
    store
        .append(&[Event::new(actor, tenant, sandbox, detail)])
        .map_err(|e| e.to_string())
}

/// Records an event of the CLI's user in the store of `file` (see
/// [`AuditAt::for_cli`]); a failure is a warning (the change stands).
pub fn record_cli(
    file: Option<PathBuf>,
    detail: Detail,
    tenant: Option<&str>,
    sandbox: Option<&str>,
) {
    let actor = crate::commands::orders::actor();
    if let Err(e) =
        AuditAt::for_cli(file).and_then(|at| record(&at, &actor, tenant, sandbox, detail))
    {
        eprintln!("warning: not recorded in the audit store: {e}");
    }
}

/// Imports what the egress proxies wrote since the last import: every sandbox with a
/// directory under `<state>/sandboxes/`, with the tenant `tenant_of` gives it.
pub fn import_egress(
    store: &mut Store,
    paths: &Paths,
    tenant_of: &dyn Fn(&str) -> Option<String>,
) -> Result<(), String> {
    let dir = paths.state_dir.join("sandboxes");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let tenant = tenant_of(&name);
        warden_audit::import_egress(store, &name, tenant.as_deref(), &e.path())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub struct Query {
    /// The file whose `audit` node says where the store is (see [`AuditAt::for_cli`]).
    pub file: Option<PathBuf>,
    pub tenant: Option<String>,
    pub sandbox: Option<String>,
    pub kind: Option<String>,
    pub since: Option<u64>,
}

pub fn query(out: &Out, q: Query) -> anyhow::Result<Exit> {
    if let Some(k) = &q.kind
        && !Detail::KINDS.contains(&k.as_str())
    {
        eprintln!(
            "error: unknown kind `{k}`; kinds: {}",
            Detail::KINDS.join(", ")
        );
        return Ok(Exit::User);
    }
    let paths = Paths::from_env();
    let at = match AuditAt::for_cli(q.file) {
        Ok(at) => at,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    let mut store = match at.open() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Internal);
        }
    };
    // Tenants as the last apply recorded them.
    let st = State::load(&paths).unwrap_or_default();
    let tenant_of = |name: &str| st.sandboxes.get(name).and_then(|e| e.tenant.clone());
    if let Err(e) = import_egress(&mut store, &paths, &tenant_of) {
        eprintln!("warning: egress decisions were not imported: {e}");
    }
    let events = match store.query(&Filter {
        tenant: q.tenant,
        sandbox: q.sandbox,
        kind: q.kind,
        since_ms: q.since.map(|s| s.saturating_mul(1000)),
        limit: None,
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Internal);
        }
    };
    if out.json {
        out.json(&events);
        return Ok(Exit::Ok);
    }
    if events.is_empty() {
        eprintln!("no audit events");
        return Ok(Exit::Ok);
    }
    for e in &events {
        println!(
            "{}  {:<17}  {:<10}  {:<14}  {:<20}  {}",
            time(e.at_ms),
            e.detail.kind(),
            e.tenant.as_deref().unwrap_or("-"),
            e.sandbox.as_deref().unwrap_or("-"),
            e.actor,
            summary(&e.detail)
        );
    }
    Ok(Exit::Ok)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC).
fn time(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{} {:02}:{:02}:{:02}",
        crate::commands::approvals::date(s),
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

fn summary(d: &Detail) -> String {
    match d {
        Detail::ApprovalApproved {
            approval,
            destination,
            rule,
            ..
        } => format!("{approval} {destination}: {rule}"),
        Detail::ApprovalDenied {
            approval,
            destination,
            ..
        } => format!("{approval} {destination}"),
        Detail::OrderGranted { order } | Detail::OrderRevoked { order } => order.clone(),
        Detail::LoginRefused {
            code,
            method,
            path,
            remote,
        } => format!("{code}: {method} {path} from {remote}"),
        Detail::SecretSet { name, key_version } => format!("{name} (data key {key_version})"),
        Detail::SecretRemoved { name } => name.clone(),
        Detail::KeyRotated { key_version } => format!("data key {key_version}"),
        Detail::Egress {
            decision,
            host,
            port,
            method,
            status,
            ..
        } => format!(
            "{decision} {}{}:{} ({status})",
            method
                .as_deref()
                .map(|m| format!("{m} "))
                .unwrap_or_default(),
            host.as_deref().unwrap_or("?"),
            port.map_or("?".to_string(), |p| p.to_string())
        ),
    }
}
