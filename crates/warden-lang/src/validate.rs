//! Checks across items: tenants claiming sandboxes, user ranges that overlap.

use crate::diag::WithHelp;
use crate::model::{Tenant, defaults};
use crate::read::{Cx, N};
use std::collections::HashMap;

/// Returns sandbox name → tenant name, reporting undeclared and doubly claimed
/// sandboxes and overlapping user ranges.
pub(crate) fn tenants(
    cx: &mut Cx,
    tenants: &[Tenant],
    nodes: &[N<'_>],
    sandboxes: &[String],
) -> HashMap<String, String> {
    let mut owner: HashMap<String, String> = HashMap::new();
    let node_of = |name: &str| {
        nodes
            .iter()
            .find(|n| crate::decode::first_str(n).as_deref() == Some(name))
    };
    for t in tenants {
        let Some(n) = node_of(&t.name) else { continue };
        for c in n.children() {
            match c.name() {
                "sandboxes" => {
                    for e in c.args() {
                        let Some(s) = e.value().as_string() else {
                            continue;
                        };
                        if !sandboxes.iter().any(|x| x == s) {
                            let known: Vec<&str> = sandboxes.iter().map(String::as_str).collect();
                            let mut d = c.diag(
                                "warden::reference",
                                e.span(),
                                format!("no sandbox named `{s}`"),
                                "undeclared sandbox",
                            );
                            if let Some(m) = crate::diag::did_you_mean(s, &known) {
                                d = d.help(format!("did you mean `{m}`?"));
                            }
                            cx.push(d);
                        } else if let Some(prev) = owner.get(s) {
                            let d = c
                                .diag(
                                    "warden::tenant::claimed",
                                    e.span(),
                                    format!("sandbox `{s}` already belongs to tenant `{prev}`"),
                                    "claimed twice",
                                )
                                .help("a sandbox belongs to at most one tenant");
                            cx.push(d);
                        } else {
                            owner.insert(s.to_string(), t.name.clone());
                        }
                    }
                }
                "users" if t.uid_count > 0 => {
                    let end = t.uid_start as u64 + t.uid_count as u64;
                    let d_end = defaults::UID_START as u64 + defaults::UID_COUNT as u64;
                    if (t.uid_start as u64) < d_end && (defaults::UID_START as u64) < end {
                        cx.push(c.diag("warden::tenant::overlap", c.name_span(), format!("tenant `{}` overlaps the default user range", t.name), format!("{}..{} overlaps {}..{}", t.uid_start, end, defaults::UID_START, d_end)).help("sandboxes without a tenant use host uids 100000..165536: start tenant ranges at 165536 or above"));
                    }
                    for other in tenants {
                        if std::ptr::eq(other, t) || other.uid_count == 0 {
                            continue;
                        }
                        let o_end = other.uid_start as u64 + other.uid_count as u64;
                        // Report once, on the later tenant.
                        let other_first = tenants.iter().position(|x| std::ptr::eq(x, other))
                            < tenants.iter().position(|x| std::ptr::eq(x, t));
                        if other_first
                            && (t.uid_start as u64) < o_end
                            && (other.uid_start as u64) < end
                        {
                            cx.push(
                                c.diag(
                                    "warden::tenant::overlap",
                                    c.name_span(),
                                    format!(
                                        "user ranges of tenants `{}` and `{}` overlap",
                                        other.name, t.name
                                    ),
                                    format!(
                                        "{}..{} overlaps {}..{}",
                                        t.uid_start, end, other.uid_start, o_end
                                    ),
                                )
                                .help("tenants must not share host uids: give each its own range"),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    owner
}
