//! `warden orders`: the standing orders with each one's history, `grant` and `revoke`
//! (one line of the file each), and the record of every decision taken on an order
//! (approvals and denials of what an `ask` order held, grants, revokes).

use crate::Exit;
use crate::commands::approvals::OpError;
use crate::project::{self, Project};
use crate::ui::Out;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use warden_wire::orders::Autonomy;

/// One decision on an order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Decision {
    /// Unix seconds.
    pub at: u64,
    pub order: String,
    /// `approved`, `denied`, `granted` or `revoked`.
    pub decision: String,
    /// Who decided: the user behind `sudo`, else the login name, else the uid.
    pub actor: String,
    /// What was decided on: a request line, or the file for grants and revokes.
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

fn history_path(p: &Project) -> PathBuf {
    PathBuf::from(&p.options.state_dir)
        .join("orders")
        .join("history.jsonl")
}

/// Who runs the CLI: the user behind `sudo`, else the login name, else the uid.
pub fn actor() -> String {
    for k in ["SUDO_USER", "USER", "LOGNAME"] {
        if let Ok(v) = std::env::var(k)
            && !v.is_empty()
        {
            return v;
        }
    }
    // SAFETY: getuid cannot fail.
    format!("uid {}", unsafe { libc::getuid() })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Appends a decision to the history (0600, in a 0700 directory). Failing to record is
/// reported but does not undo the decision.
pub fn record(
    p: &Project,
    order: &str,
    decision: &str,
    what: &str,
    sandbox: Option<&str>,
    actor: &str,
) {
    let path = history_path(p);
    let line = Decision {
        at: now(),
        order: order.to_string(),
        decision: decision.to_string(),
        actor: actor.to_string(),
        what: what.to_string(),
        sandbox: sandbox.map(str::to_string),
    };
    let result = (|| -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        warden_egress::private_dir(dir)?;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        f.write_all(&bytes)?;
        f.sync_data()
    })();
    if let Err(e) = result {
        eprintln!(
            "warning: the decision on order `{order}` was not recorded in `{}`: {}",
            path.display(),
            project::io_msg(&e)
        );
    }
}

fn history(p: &Project) -> Vec<Decision> {
    std::fs::read_to_string(history_path(p))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Approved asks in a row since the last denial, grant or revoke of `order`.
fn approved_in_a_row(history: &[Decision], order: &str) -> u32 {
    let mut n = 0;
    for d in history.iter().filter(|d| d.order == order) {
        match d.decision.as_str() {
            "approved" => n += 1,
            _ => n = 0,
        }
    }
    n
}

/// `warden orders [FILE]`: the table, each order's history, and the grants that
/// `earn-after` proposes.
pub fn list(out: &Out, path: &Path) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let hist = history(&p);
    let proposals: Vec<(String, u32)> = p
        .model
        .orders
        .iter()
        .filter(|o| o.autonomy == Autonomy::Ask)
        .filter_map(|o| {
            let n = o.earn_after?;
            let row = approved_in_a_row(&hist, &o.name);
            (row >= n).then(|| (o.name.clone(), row))
        })
        .collect();
    if out.json {
        let orders: Vec<serde_json::Value> = p
            .model
            .orders
            .iter()
            .map(|o| {
                let mine: Vec<&Decision> = hist.iter().filter(|d| d.order == o.name).collect();
                serde_json::json!({
                    "name": o.name,
                    "bounds": o.bounds,
                    "override": o.override_,
                    "autonomy": o.autonomy.as_str(),
                    "earn_after": o.earn_after,
                    "approved_in_a_row": approved_in_a_row(&hist, &o.name),
                    "propose_grant": proposals.iter().any(|(n, _)| *n == o.name),
                    "history": mine,
                })
            })
            .collect();
        out.json(&serde_json::json!({ "orders": orders }));
        return Ok(Exit::Ok);
    }
    println!("| Order | Bounds | Override | Autonomy |");
    println!("|---|---|---|---|");
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    for o in &p.model.orders {
        let autonomy = match o.autonomy {
            Autonomy::Auto => "on its own, within the bounds",
            Autonomy::Ask => "a human first",
            Autonomy::Never => "never",
        };
        println!(
            "| {} | {} | {} | {autonomy} |",
            cell(&o.name),
            cell(&o.bounds),
            cell(o.override_.as_deref().unwrap_or(""))
        );
    }
    println!("\nAnything not listed here needs a human first.");
    for o in &p.model.orders {
        let mine: Vec<&Decision> = hist.iter().filter(|d| d.order == o.name).collect();
        if mine.is_empty() {
            continue;
        }
        println!("\n{}:", o.name);
        for d in mine {
            let sandbox = d
                .sandbox
                .as_deref()
                .map(|s| format!(" in `{s}`"))
                .unwrap_or_default();
            println!(
                "  {} {} by {}{sandbox}: {}",
                crate::commands::approvals::date(d.at),
                d.decision,
                d.actor,
                d.what
            );
        }
    }
    for (name, row) in &proposals {
        println!(
            "\nproposed: `{name}` had {row} asks in a row approved and none denied; `warden orders grant {name}` lets it act on its own"
        );
    }
    Ok(Exit::Ok)
}

/// Whether tenant `scope` may change order `name`: the order gates egress rules of the
/// tenant's sandboxes and of no other sandbox (a change would reach them too). Any
/// order when `scope` is `None`.
pub fn order_in_scope(p: &Project, name: &str, scope: Option<&str>) -> bool {
    let Some(tenant) = scope else {
        return true;
    };
    let users: Vec<&warden_lang::model::Sandbox> = p
        .model
        .sandboxes
        .iter()
        .filter(|s| {
            s.egress
                .as_ref()
                .is_some_and(|e| e.rules.iter().any(|r| r.order.as_deref() == Some(name)))
        })
        .collect();
    !users.is_empty() && users.iter().all(|s| s.tenant.as_deref() == Some(tenant))
}

/// The tenant whose sandboxes alone follow order `name`, if one is.
fn order_tenant(p: &Project, name: &str) -> Option<String> {
    p.model
        .tenants
        .iter()
        .find(|t| order_in_scope(p, name, Some(&t.name)))
        .map(|t| t.name.clone())
}

/// What `grant` or `revoke` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrderSet {
    pub order: String,
    pub autonomy: &'static str,
    pub changed: bool,
    pub reloaded: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Sets order `name`'s autonomy in the file (one line), records the decision by `actor`
/// and reloads applied sandboxes that follow it. Orders outside tenant `scope` (see
/// [`order_in_scope`]) are not found.
pub fn set_op(
    p: &Project,
    path: &Path,
    name: &str,
    autonomy: Autonomy,
    scope: Option<&str>,
    actor: &str,
) -> Result<OrderSet, OpError> {
    let order = p
        .model
        .orders
        .iter()
        .find(|o| o.name == name)
        .filter(|_| order_in_scope(p, name, scope));
    let Some(order) = order else {
        let names: Vec<&str> = p
            .model
            .orders
            .iter()
            .map(|o| o.name.as_str())
            .filter(|o| order_in_scope(p, o, scope))
            .collect();
        return Err(OpError::NotFound(format!(
            "no standing order `{name}` in `{}`; it declares: {}",
            path.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    };
    let (verb, done) = match autonomy {
        Autonomy::Auto => ("grant", "granted"),
        _ => ("revoke", "revoked"),
    };
    if order.autonomy == autonomy {
        return Ok(OrderSet {
            order: name.to_string(),
            autonomy: autonomy.as_str(),
            changed: false,
            reloaded: Vec::new(),
            warnings: Vec::new(),
        });
    }
    let src = project::read_source(path)?;
    let q = |s: &str| format!("{s:?}");
    let mut fallback = format!("order {} bounds={}", q(&order.name), q(&order.bounds));
    if let Some(o) = &order.override_ {
        fallback.push_str(&format!(" override={}", q(o)));
    }
    if let Some(n) = order.earn_after {
        fallback.push_str(&format!(" earn-after={n}"));
    }
    // The order as the layout declares it, tool rules included: the file's copy
    // replaces the layout's.
    match order.tools.as_slice() {
        [] => {}
        [one] => fallback.push_str(&format!(" tool={}", q(one))),
        many => {
            let rules: Vec<String> = many.iter().map(|t| q(t)).collect();
            fallback.push_str(&format!(" {{ tool {}; }}", rules.join(" ")));
        }
    }
    let edited =
        warden_lang::edit::set_order_autonomy(&src.text, name, autonomy.as_str(), &fallback)
            .map_err(|e| OpError::Refused {
                message: format!("cannot {verb} `{name}` in `{}`: {e}", path.display()),
                diagnostics: Vec::new(),
            })?;
    let check = project::load_text(path, &edited);
    if check.model.is_none() {
        return Err(OpError::Refused {
            message: format!(
                "{verb}ing `{name}` would make `{}` invalid; nothing was changed",
                path.display()
            ),
            diagnostics: check.diagnostics,
        });
    }
    project::write_atomic(path, edited.as_bytes()).map_err(|e| {
        OpError::Internal(format!(
            "cannot write `{}`: {}",
            path.display(),
            project::io_msg(&e)
        ))
    })?;
    record(p, name, done, &path.display().to_string(), None, actor);
    let mut warnings = Vec::new();
    let detail = match autonomy {
        Autonomy::Auto => warden_audit::Detail::OrderGranted {
            order: name.to_string(),
        },
        _ => warden_audit::Detail::OrderRevoked {
            order: name.to_string(),
        },
    };
    if let Err(e) = crate::commands::audit::record(
        &crate::commands::audit::AuditAt::of(p),
        actor,
        order_tenant(p, name).as_deref(),
        None,
        detail,
    ) {
        warnings.push(format!(
            "the decision was not recorded in the audit store: {e}"
        ));
    }
    // Applied sandboxes whose egress follows this order, or whose agent asks the orders
    // endpoint, take the change now.
    let mut reloaded = Vec::new();
    for s in &p.model.sandboxes {
        let uses = !s.agents.is_empty()
            || s.egress
                .as_ref()
                .is_some_and(|e| e.rules.iter().any(|r| r.order.as_deref() == Some(name)));
        if uses && let Ok(true) = crate::commands::deploy::reload_applied(path, &s.name) {
            reloaded.push(s.name.clone());
        }
    }
    Ok(OrderSet {
        order: name.to_string(),
        autonomy: autonomy.as_str(),
        changed: true,
        reloaded,
        warnings,
    })
}

/// `warden orders grant|revoke NAME [FILE]`: sets the order's autonomy in the file (one
/// line), records the decision, and reloads applied sandboxes; `warden run` follows the
/// file by itself.
pub fn set(out: &Out, path: &Path, name: &str, autonomy: Autonomy) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let r = match set_op(&p, path, name, autonomy, None, &actor()) {
        Ok(r) => r,
        Err(e) => return Ok(crate::commands::approvals::print_error(out, &e)),
    };
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    let done = match autonomy {
        Autonomy::Auto => "granted",
        _ => "revoked",
    };
    if !r.changed {
        if !out.json {
            eprintln!("order `{name}` is already `{}`", autonomy.as_str());
        } else {
            out.json(&serde_json::json!({"order": name, "autonomy": autonomy.as_str(), "changed": false}));
        }
        return Ok(Exit::Ok);
    }
    if out.json {
        out.json(&serde_json::json!({"order": name, "autonomy": autonomy.as_str(), "changed": true, "reloaded": r.reloaded}));
    } else {
        eprintln!(
            "{done} `{name}` in `{}`: autonomy=\"{}\"",
            path.display(),
            autonomy.as_str()
        );
        for s in r.reloaded {
            eprintln!("reloaded the applied sandbox `{s}`");
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(order: &str, decision: &str) -> Decision {
        Decision {
            at: 0,
            order: order.into(),
            decision: decision.into(),
            actor: "t".into(),
            what: String::new(),
            sandbox: None,
        }
    }

    #[test]
    fn approvals_in_a_row_reset_on_any_other_decision() {
        let h = [
            d("x", "approved"),
            d("x", "approved"),
            d("x", "denied"),
            d("x", "approved"),
            d("y", "denied"),
            d("x", "approved"),
        ];
        assert_eq!(approved_in_a_row(&h, "x"), 2);
        assert_eq!(approved_in_a_row(&h, "y"), 0);
        assert_eq!(approved_in_a_row(&h[..2], "x"), 2);
        assert_eq!(
            approved_in_a_row(&[d("x", "approved"), d("x", "revoked")], "x"),
            0
        );
    }
}
