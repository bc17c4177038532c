//! `warden approvals`, `approve ID`, `deny ID`: blocked destinations become rules in the
//! file itself, so what runs never drifts from what is reviewed. An agent's tool call
//! held by an `ask` order (asked through the orders endpoint) is approved for the next
//! identical call of that sandbox, once; `--always` grants the order.

use crate::Exit;
use crate::commands::run::sandbox_state_dir;
use crate::project::{self, Project};
use crate::ui::Out;
use std::path::Path;
use warden_egress::Approval;

/// What waits for a human: the records a sandbox's proxy left pending that the current
/// file still refuses. One the file allows now (a rule written by hand, a proxy that has
/// not reloaded yet) is not listed; an approved one whose rule was removed is listed
/// again once the proxy refuses it again (and marks it pending).
fn pending(p: &Project) -> Vec<Approval> {
    let compiled = warden_compile::compile(&p.model, &p.options).ok();
    let mut all: Vec<Approval> = p
        .model
        .sandboxes
        .iter()
        .flat_map(|s| warden_egress::load_approvals(&sandbox_state_dir(p, &s.name)))
        .filter(|a| !compiled.as_ref().is_some_and(|c| allowed_now(c, a)))
        .collect();
    all.sort_by(|a, b| (a.first_seen, &a.id).cmp(&(b.first_seen, &b.id)));
    all
}

/// Whether the file's policy for the record's sandbox allows its destination now.
fn allowed_now(c: &warden_compile::Compiled, a: &Approval) -> bool {
    if a.tool.is_some() {
        return false;
    }
    let Some(policy) = c
        .sandboxes
        .iter()
        .find(|s| s.name == a.sandbox)
        .and_then(|s| s.plan.egress.as_ref())
    else {
        return false;
    };
    let Ok(host) = warden_wire::egress::normalize_host(&a.host) else {
        return false;
    };
    // A plain-HTTP record's path is in its sample: `GET http://host:port/path`.
    let origin = format!("http://{}:{}", a.host, a.port);
    let path = a
        .sample
        .split_once(&origin)
        .map_or("/", |(_, p)| if p.is_empty() { "/" } else { p });
    let verdict = policy.decide(&warden_wire::egress::Request {
        host: &host,
        port: a.port,
        http: a.method.as_deref().map(|m| (m, path)),
    });
    matches!(verdict, warden_wire::egress::Verdict::Allow { .. })
}

pub fn list(out: &Out, path: &Path) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let all = pending(&p);
    if out.json {
        out.json(&all);
        return Ok(Exit::Ok);
    }
    if all.is_empty() {
        eprintln!("no pending approvals");
        return Ok(Exit::Ok);
    }
    println!(
        "{:<12}  {:<14}  {:<32}  {:>5}  {:<10}  reason",
        "id", "sandbox", "destination", "count", "last seen"
    );
    for a in &all {
        println!(
            "{:<12}  {:<14}  {:<32}  {:>5}  {:<10}  {}",
            a.id,
            a.sandbox,
            destination(a),
            a.count,
            date(a.last_seen),
            a.reason
        );
    }
    Ok(Exit::Ok)
}

fn find(p: &Project, id: &str, scope: Option<&str>) -> Option<Approval> {
    pending(p)
        .into_iter()
        .filter(|a| in_scope(p, &a.sandbox, scope))
        .find(|a| a.id == id)
}

/// Whether `sandbox` belongs to tenant `scope` (any sandbox when `None`).
pub fn in_scope(p: &Project, sandbox: &str, scope: Option<&str>) -> bool {
    match scope {
        None => true,
        Some(t) => p
            .model
            .sandbox(sandbox)
            .is_some_and(|s| s.tenant.as_deref() == Some(t)),
    }
}

/// The pending approvals of the sandboxes of tenant `scope` (all when `None`).
pub fn pending_in(p: &Project, scope: Option<&str>) -> Vec<Approval> {
    pending(p)
        .into_iter()
        .filter(|a| in_scope(p, &a.sandbox, scope))
        .collect()
}

/// Why an approval, a denial or an order change did not happen. Shared by the CLI
/// (which prints it) and the control API (which answers it).
#[derive(Debug)]
pub enum OpError {
    /// No such approval or order (within the scope).
    NotFound(String),
    /// The change would break the file: invalid, or an inline test would fail.
    Refused {
        message: String,
        diagnostics: Vec<warden_lang::Diagnostic>,
    },
    /// The file cannot be read or written.
    Internal(String),
}

impl From<project::SourceError> for OpError {
    fn from(e: project::SourceError) -> Self {
        match e {
            project::SourceError::Io(m) => OpError::Internal(m),
            project::SourceError::Refused(d) => OpError::Refused {
                message: d.message.clone(),
                diagnostics: vec![*d],
            },
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::NotFound(m) | OpError::Internal(m) => f.write_str(m),
            OpError::Refused { message, .. } => f.write_str(message),
        }
    }
}

/// The CLI's rendering of an [`OpError`].
pub fn print_error(out: &Out, e: &OpError) -> Exit {
    match e {
        OpError::NotFound(m) => {
            eprintln!("error: {m}");
            Exit::User
        }
        OpError::Refused {
            message,
            diagnostics,
        } => {
            project::report(out, diagnostics);
            eprintln!("error: {message}");
            Exit::User
        }
        OpError::Internal(m) => {
            eprintln!("error: {m}");
            Exit::Internal
        }
    }
}

/// What an approval did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Approved {
    pub id: String,
    pub sandbox: String,
    pub rule: String,
    pub file: String,
    pub reloaded: bool,
    /// The standing order that held it.
    pub order: Option<String>,
    /// What went wrong after the file was written (the change stands).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Approves pending approval `id` of a sandbox of tenant `scope` (any when `None`): the
/// narrowest rule that allows it goes into the sandbox's `egress` block in `path`,
/// unless the edited file would be invalid or fail an inline test; recorded as done by
/// `actor`.
pub fn approve_op(
    p: &Project,
    path: &Path,
    id: &str,
    scope: Option<&str>,
    actor: &str,
) -> Result<Approved, OpError> {
    let Some(a) = find(p, id, scope) else {
        return Err(OpError::NotFound(format!(
            "no pending approval `{id}` (see `warden approvals`)"
        )));
    };
    if a.tool.is_some() {
        return approve_call(p, a, actor);
    }
    let host = a.host.trim_start_matches('[').trim_end_matches(']');
    let reason = match &a.order {
        Some(order) => format!("approved {} under order `{order}` ({})", date(now()), a.id),
        None => format!("approved {} ({})", date(now()), a.id),
    };
    // A refused plain-HTTP request is approved for its method and path only, not for
    // the whole host and port.
    let rule = match (&a.method, http_path(&a.sample)) {
        (Some(method), Some(p)) => format!(
            "http {} port={} methods={} paths={} reason={}",
            quote(host),
            a.port,
            quote(method),
            quote(p),
            quote(&reason)
        ),
        _ => format!(
            "allow {} port={} reason={}",
            quote(host),
            a.port,
            quote(&reason)
        ),
    };
    let src = project::read_source(path)?;
    // A destination held by an `ask` order: the approving rule goes first, so that it
    // decides before the order's rule (allow rules are tried in order).
    let place = if a.order.is_some() {
        warden_lang::edit::Place::First
    } else {
        warden_lang::edit::Place::Last
    };
    let edited = warden_lang::edit::insert_egress_rule(&src.text, &a.sandbox, &rule, place)
        .map_err(|e| OpError::Refused {
            message: format!("cannot add the rule to `{}`: {e}", path.display()),
            diagnostics: Vec::new(),
        })?;
    let load = |text: &str| project::load_text(path, text);
    let mut rule = rule;
    let mut check = load(&edited);
    let mut edited = edited;
    // The order's own rule names exactly this destination: the new rule would repeat
    // it, so the approval takes `order=` off that rule instead (one line changes).
    let duplicate = check
        .diagnostics
        .iter()
        .any(|d| d.code == "warden::egress::duplicate");
    if let (true, Some(order)) = (duplicate, &a.order)
        && let Ok(t) = warden_lang::edit::approve_order_rule(
            &src.text, &a.sandbox, host, a.port, order, &reason,
        )
    {
        rule = format!(
            "allow {} port={} reason={} (was order={})",
            quote(host),
            a.port,
            quote(&reason),
            quote(order)
        );
        check = load(&t);
        edited = t;
    }
    // The edited file must still be valid before it replaces the old one.
    let Some(model) = check.model.as_ref() else {
        return Err(OpError::Refused {
            message: format!(
                "adding `{rule}` would make `{}` invalid; nothing was changed",
                path.display()
            ),
            diagnostics: check.diagnostics,
        });
    };
    // ...and its inline tests must still pass.
    if let Ok(compiled) = warden_compile::compile(model, &p.options) {
        let failed: Vec<String> = warden_compile::run_tests(model, &compiled)
            .into_iter()
            .filter(|r| !r.pass)
            .map(|r| {
                format!(
                    "{}:{}: {} -> {}, expected {}",
                    r.file, r.line, r.subject, r.actual, r.expected
                )
            })
            .collect();
        if !failed.is_empty() {
            return Err(OpError::Refused {
                message: format!(
                    "adding `{rule}` would make these inline tests of `{}` fail; nothing was changed:\n  {}",
                    path.display(),
                    failed.join("\n  ")
                ),
                diagnostics: Vec::new(),
            });
        }
    }
    project::write_atomic(path, edited.as_bytes()).map_err(|e| {
        OpError::Internal(format!(
            "cannot write `{}`: {}",
            path.display(),
            project::io_msg(&e)
        ))
    })?;
    let mut warnings = record_approval(p, &a, &a.sample, &rule, actor);
    if let Err(e) = warden_egress::mark_approved(&sandbox_state_dir(p, &a.sandbox), &a.id) {
        warnings.push(format!(
            "the rule was added but the approval could not be marked: {}",
            project::io_msg(&e)
        ));
    }
    // A sandbox applied from this file takes the rule now; `warden run` follows the file.
    let reloaded = match crate::commands::deploy::reload_applied(path, &a.sandbox) {
        Ok(r) => r,
        Err(e) => {
            warnings.push(format!(
                "the rule was added but the applied sandbox `{}` was not reloaded ({e}); run `warden apply`",
                a.sandbox
            ));
            false
        }
    };
    Ok(Approved {
        id: a.id,
        sandbox: a.sandbox,
        rule,
        file: path.display().to_string(),
        reloaded,
        order: a.order,
        warnings,
    })
}

/// `host:port`, after the method for plain HTTP; the call for a tool call.
fn destination(a: &Approval) -> String {
    if let Some(t) = &a.tool {
        return t.clone();
    }
    match &a.method {
        Some(m) => format!("{m} {}:{}", a.host, a.port),
        None => format!("{}:{}", a.host, a.port),
    }
}

/// Records an approval by `actor`: in its order's history (`what` was approved) and in
/// the audit store. Returns what could not be recorded.
fn record_approval(p: &Project, a: &Approval, what: &str, rule: &str, actor: &str) -> Vec<String> {
    if let Some(order) = &a.order {
        crate::commands::orders::record(p, order, "approved", what, Some(&a.sandbox), actor);
    }
    let tenant = p.model.sandbox(&a.sandbox).and_then(|s| s.tenant.clone());
    match crate::commands::audit::record(
        &crate::commands::audit::AuditAt::of(p),
        actor,
        tenant.as_deref(),
        Some(&a.sandbox),
        warden_audit::Detail::ApprovalApproved {
            approval: a.id.clone(),
            destination: destination(a),
            rule: rule.to_string(),
            order: a.order.clone(),
        },
    ) {
        Ok(_) => Vec::new(),
        Err(e) => vec![format!(
            "the approval was not recorded in the audit store: {e}"
        )],
    }
}

/// Approves a held tool call: the sandbox's next identical call goes through, once. The
/// file does not change (`--always` grants the order, which does).
fn approve_call(p: &Project, a: Approval, actor: &str) -> Result<Approved, OpError> {
    let call = destination(&a);
    warden_egress::mark_approved(&sandbox_state_dir(p, &a.sandbox), &a.id).map_err(|e| {
        OpError::Internal(format!(
            "cannot record the approval: {}",
            project::io_msg(&e)
        ))
    })?;
    let rule = format!("the next call `{call}` goes through, once");
    let warnings = record_approval(p, &a, &call, &rule, actor);
    Ok(Approved {
        id: a.id,
        sandbox: a.sandbox,
        rule,
        file: String::new(),
        reloaded: false,
        order: a.order,
        warnings,
    })
}

pub fn approve(out: &Out, path: &Path, id: &str, always: bool) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let a = match approve_op(&p, path, id, None, &crate::commands::orders::actor()) {
        Ok(a) => a,
        Err(e) => return Ok(print_error(out, &e)),
    };
    for w in &a.warnings {
        eprintln!("warning: {w}");
    }
    if a.reloaded && !out.json {
        eprintln!(
            "reloaded the egress policy of the applied sandbox `{}`",
            a.sandbox
        );
    }
    if out.json {
        out.json(&serde_json::json!({"id": a.id, "sandbox": a.sandbox, "rule": a.rule, "file": a.file, "reloaded": a.reloaded}));
    } else if a.file.is_empty() {
        eprintln!("approved for sandbox `{}`: {}", a.sandbox, a.rule);
    } else {
        eprintln!(
            "added to sandbox `{}` in `{}`: {}",
            a.sandbox,
            path.display(),
            a.rule
        );
    }
    match (&a.order, always) {
        (Some(order), true) => crate::commands::orders::set(
            &Out {
                json: false,
                diagnostics_as_json: out.diagnostics_as_json,
            },
            path,
            order,
            warden_wire::orders::Autonomy::Auto,
        ),
        (None, true) => {
            eprintln!("note: no standing order held `{id}`: there is no order to grant");
            Ok(Exit::Ok)
        }
        _ => Ok(Exit::Ok),
    }
}

/// What a denial did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Denied {
    pub id: String,
    pub sandbox: String,
    pub destination: String,
    pub denied: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Refuses pending approval `id` (of a sandbox of tenant `scope`) for good.
pub fn deny_op(p: &Project, id: &str, scope: Option<&str>, actor: &str) -> Result<Denied, OpError> {
    let Some(a) = find(p, id, scope) else {
        return Err(OpError::NotFound(format!(
            "no pending approval `{id}` (see `warden approvals`)"
        )));
    };
    warden_egress::deny_approval(&sandbox_state_dir(p, &a.sandbox), &a.id).map_err(|e| {
        OpError::Internal(format!("cannot record the denial: {}", project::io_msg(&e)))
    })?;
    if let Some(order) = &a.order {
        crate::commands::orders::record(p, order, "denied", &a.sample, Some(&a.sandbox), actor);
    }
    let mut warnings = Vec::new();
    let tenant = p.model.sandbox(&a.sandbox).and_then(|s| s.tenant.clone());
    if let Err(e) = crate::commands::audit::record(
        &crate::commands::audit::AuditAt::of(p),
        actor,
        tenant.as_deref(),
        Some(&a.sandbox),
        warden_audit::Detail::ApprovalDenied {
            approval: a.id.clone(),
            destination: destination(&a),
            order: a.order.clone(),
        },
    ) {
        warnings.push(format!(
            "the denial was not recorded in the audit store: {e}"
        ));
    }
    Ok(Denied {
        destination: destination(&a),
        id: a.id,
        sandbox: a.sandbox,
        denied: true,
        warnings,
    })
}

pub fn deny(out: &Out, path: &Path, id: &str) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    match deny_op(&p, id, None, &crate::commands::orders::actor()) {
        Ok(d) => {
            for w in &d.warnings {
                eprintln!("warning: {w}");
            }
            if out.json {
                out.json(&serde_json::json!({"id": d.id, "sandbox": d.sandbox, "denied": true}));
            } else {
                eprintln!(
                    "denied `{}` for sandbox `{}`; it will not be listed again",
                    d.destination, d.sandbox
                );
            }
            Ok(Exit::Ok)
        }
        Err(e) => Ok(print_error(out, &e)),
    }
}

/// The path of a plain-HTTP refusal's sample (`GET http://host:80/path?q HTTP/1.1` or
/// `GET http://host:80/path`), without its query.
fn http_path(sample: &str) -> Option<&str> {
    let url = sample.split(' ').nth(1)?;
    let rest = url.strip_prefix("http://")?;
    let path = &rest[rest.find('/')?..];
    Some(path.split(['?', '#']).next().unwrap_or(path))
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD` (UTC) of a unix time; civil-from-days.
pub fn date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::http_path;

    #[test]
    fn http_paths_of_samples() {
        assert_eq!(
            http_path("POST http://pypi.org:80/upload?x=1"),
            Some("/upload")
        );
        assert_eq!(http_path("GET http://h:8080/a/b HTTP/1.1"), Some("/a/b"));
        assert_eq!(http_path("CONNECT h:443"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(1_795_305_600), "2026-11-22");
        assert_eq!(super::date(951_782_400), "2000-02-29");
    }
}
