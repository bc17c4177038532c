//! The plan: what the file declares (each sandbox's digest, split into named parts) against
//! what the last apply left running.

use super::state::{Entry, State};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use warden_compile::CompiledSandbox;
use warden_wire::sandbox::Restart;

pub const PLAN_KIND: &str = "warden-plan";
pub const PLAN_VERSION: u32 = 1;

/// Parts a running sandbox takes without a restart.
pub const RELOADABLE: [&str; 3] = ["egress", "inference", "orders"];

/// What the plan compares for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub name: String,
    pub digest: String,
    pub parts: BTreeMap<String, String>,
}

impl Want {
    pub fn new(name: &str, parts: BTreeMap<String, String>) -> Self {
        Self {
            name: name.to_string(),
            digest: digest_of(&parts),
            parts,
        }
    }
}

/// One sandbox as the file declares it.
#[derive(Debug, Clone)]
pub struct Desired {
    pub want: Want,
    pub image: String,
    pub image_digest: String,
    pub tenant: Option<String>,
    pub restart: Restart,
    pub bundle: PathBuf,
    pub policies: super::supervisor::Policies,
    pub compiled: CompiledSandbox,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn part_hash<T: Serialize>(v: &T) -> String {
    sha256_hex(
        warden_wire::canonical_json(v)
            .unwrap_or_default()
            .as_bytes(),
    )
}

/// The parts of a compiled sandbox, each hashed, named as the plan reports them.
pub fn parts(s: &CompiledSandbox, image_digest: &str) -> BTreeMap<String, String> {
    let mut spec: serde_json::Value =
        serde_json::from_str(&s.config_json()).unwrap_or(serde_json::Value::Null);
    let mut take = |ptr: &str| -> serde_json::Value {
        spec.pointer_mut(ptr)
            .map(serde_json::Value::take)
            .unwrap_or(serde_json::Value::Null)
    };
    let mut env = take("/process/env");
    let init_prefix = format!("{}=", warden_wire::init::INIT_CONFIG_ENV);
    let mut init = serde_json::Value::Null;
    if let Some(list) = env.as_array_mut()
        && let Some(i) = list
            .iter()
            .position(|e| e.as_str().is_some_and(|e| e.starts_with(&init_prefix)))
    {
        init = list.remove(i);
    }
    let mut p = BTreeMap::new();
    let mut put = |k: &str, h: String| {
        p.insert(k.to_string(), h);
    };
    put("image", sha256_hex(image_digest.as_bytes()));
    put("command", part_hash(&take("/process/args")));
    // Which secrets fill which variables (never their values, read at each start).
    if s.plan.secret_env.is_empty() {
        put("environment", part_hash(&env));
    } else {
        put("environment", part_hash(&(&env, &s.plan.secret_env)));
    }
    put("user", part_hash(&take("/process/user")));
    put("workdir", part_hash(&take("/process/cwd")));
    put("hostname", part_hash(&take("/hostname")));
    put("mounts", part_hash(&[take("/mounts"), take("/root")]));
    put(
        "limits",
        part_hash(&[take("/process/rlimits"), take("/linux/resources")]),
    );
    put("landlock and seccomp", part_hash(&init));
    // Annotations describe (sandbox, image, tenant, a summary of the network); what they
    // describe is hashed in its own part.
    take("/annotations");
    // What is left: namespaces, capabilities, id mappings, masked paths...
    put("isolation", part_hash(&spec));
    put("restart policy", part_hash(&s.plan.restart));
    put("tenant", part_hash(&(&s.plan.tenant, &s.plan.host_dirs)));
    put("egress", policy_hash(&s.plan.egress));
    put("inference", policy_hash(&s.plan.inference));
    put("orders", policy_hash(&s.plan.orders));
    p
}

/// Policies carry the file line of each rule (for denial messages); moving a rule
/// without changing it (an edit elsewhere in the file) is not a change of the policy.
fn policy_hash<T: Serialize>(v: &T) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("line");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
    strip(&mut v);
    part_hash(&v)
}

pub fn digest_of(parts: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    for (k, v) in parts {
        text.push_str(k);
        text.push('=');
        text.push_str(v);
        text.push('\n');
    }
    format!("sha256:{}", sha256_hex(text.as_bytes()))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Destroy,
    Replace,
    Create,
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Action {
    pub sandbox: String,
    pub action: Kind,
    /// What changed (parts), or why (`new`, `not running`).
    pub reasons: Vec<String>,
    /// The digest the sandbox will have (none for a destroy).
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub kind: String,
    pub version: u32,
    /// The file the plan was made from (absolute).
    pub file: String,
    /// The state generation the plan was made against.
    pub generation: u64,
    pub actions: Vec<Action>,
    pub unchanged: Vec<String>,
}

impl Plan {
    pub fn count(&self, k: Kind) -> usize {
        self.actions.iter().filter(|a| a.action == k).count()
    }

    pub fn summary(&self) -> String {
        if self.actions.is_empty() {
            return format!("No changes. The machine matches `{}`.", self.file);
        }
        format!(
            "Plan: {} to create, {} to replace, {} to reload, {} to destroy.",
            self.count(Kind::Create),
            self.count(Kind::Replace),
            self.count(Kind::Reload),
            self.count(Kind::Destroy)
        )
    }

    /// The terraform-style listing, one line per action, then the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for a in &self.actions {
            let (sign, verb) = match a.action {
                Kind::Create => ("  +", "create"),
                Kind::Replace => ("-/+", "replace"),
                Kind::Reload => ("  ~", "reload"),
                Kind::Destroy => ("  -", "destroy"),
            };
            out.push_str(&format!("{sign} {verb:<8} {}", a.sandbox));
            if !a.reasons.is_empty() {
                out.push_str(&format!("  ({})", a.reasons.join(", ")));
            }
            out.push('\n');
        }
        if !self.actions.is_empty() {
            out.push('\n');
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

/// Compare the file's sandboxes with the state. `alive` tells whether an entry's
/// supervisor still runs. A sandbox recorded from another file is an error: each sandbox
/// name belongs to one file.
pub fn diff(
    file: &str,
    desired: &[&Want],
    state: &State,
    alive: &dyn Fn(&Entry) -> bool,
) -> Result<Plan, String> {
    let mut actions = Vec::new();
    let mut unchanged = Vec::new();
    for d in desired {
        match state.sandboxes.get(&d.name) {
            None => actions.push(Action {
                sandbox: d.name.clone(),
                action: Kind::Create,
                reasons: vec!["new".into()],
                digest: Some(d.digest.clone()),
            }),
            Some(e) if e.file != file => {
                return Err(format!(
                    "sandbox `{}` is managed from `{}`; destroy it there first \
                     (`warden destroy {}`) or rename it",
                    d.name, e.file, e.file
                ));
            }
            Some(e) if !alive(e) => actions.push(Action {
                sandbox: d.name.clone(),
                action: Kind::Create,
                reasons: vec!["not running: its supervisor is gone".into()],
                digest: Some(d.digest.clone()),
            }),
            Some(e) if e.digest == d.digest => unchanged.push(d.name.clone()),
            Some(e) => {
                let changed: Vec<String> = d
                    .parts
                    .iter()
                    .filter(|(k, v)| e.parts.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone())
                    .chain(
                        e.parts
                            .keys()
                            .filter(|k| !d.parts.contains_key(*k))
                            .cloned(),
                    )
                    .collect();
                let reload_only =
                    !changed.is_empty() && changed.iter().all(|c| RELOADABLE.contains(&c.as_str()));
                actions.push(Action {
                    sandbox: d.name.clone(),
                    action: if reload_only {
                        Kind::Reload
                    } else {
                        Kind::Replace
                    },
                    reasons: changed,
                    digest: Some(d.digest.clone()),
                });
            }
        }
    }
    for (name, e) in &state.sandboxes {
        if e.file == file && !desired.iter().any(|d| &d.name == name) {
            actions.push(Action {
                sandbox: name.clone(),
                action: Kind::Destroy,
                reasons: vec!["no longer in the file".into()],
                digest: None,
            });
        }
    }
    actions.sort_by(|a, b| (a.action, &a.sandbox).cmp(&(b.action, &b.sandbox)));
    Ok(Plan {
        kind: PLAN_KIND.to_string(),
        version: PLAN_VERSION,
        file: file.to_string(),
        generation: state.generation,
        actions,
        unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, parts: &[(&str, &str)]) -> Entry {
        let parts: BTreeMap<String, String> = parts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Entry {
            file: file.into(),
            digest: digest_of(&parts),
            parts,
            image: "base".into(),
            image_digest: "sha256:0".into(),
            tenant: None,
            restart: Restart::Never,
            supervisor: None,
            created_at: 0,
        }
    }

    fn state(entries: Vec<(&str, Entry)>) -> State {
        State {
            sandboxes: entries
                .into_iter()
                .map(|(n, e)| (n.to_string(), e))
                .collect(),
            ..State::default()
        }
    }

    fn plan_for(
        file: &str,
        want: &[(&str, &[(&str, &str)])],
        st: &State,
        alive: bool,
    ) -> Result<Plan, String> {
        let desired: Vec<(String, BTreeMap<String, String>)> = want
            .iter()
            .map(|(n, p)| {
                (
                    n.to_string(),
                    p.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect();
        let wants: Vec<Want> = desired.into_iter().map(|(n, p)| Want::new(&n, p)).collect();
        let refs: Vec<&Want> = wants.iter().collect();
        diff(file, &refs, st, &|_| alive)
    }

    #[test]
    fn create_replace_reload_destroy_and_unchanged() {
        let st = state(vec![
            ("a", entry("/f", &[("limits", "1"), ("egress", "1")])),
            ("b", entry("/f", &[("limits", "1"), ("egress", "1")])),
            ("c", entry("/f", &[("limits", "1"), ("egress", "1")])),
            ("gone", entry("/f", &[("limits", "1")])),
            ("other", entry("/g", &[("limits", "1")])),
        ]);
        let p = plan_for(
            "/f",
            &[
                ("a", &[("limits", "2"), ("egress", "1")]),
                ("b", &[("limits", "1"), ("egress", "2")]),
                ("c", &[("limits", "1"), ("egress", "1")]),
                ("new", &[("limits", "1")]),
            ],
            &st,
            true,
        )
        .unwrap();
        let got: Vec<(&str, Kind, Vec<String>)> = p
            .actions
            .iter()
            .map(|a| (a.sandbox.as_str(), a.action, a.reasons.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "gone",
                    Kind::Destroy,
                    vec!["no longer in the file".to_string()]
                ),
                ("a", Kind::Replace, vec!["limits".to_string()]),
                ("new", Kind::Create, vec!["new".to_string()]),
                ("b", Kind::Reload, vec!["egress".to_string()]),
            ]
        );
        assert_eq!(p.unchanged, vec!["c".to_string()]);
        assert_eq!(
            p.summary(),
            "Plan: 1 to create, 1 to replace, 1 to reload, 1 to destroy."
        );
    }

    #[test]
    fn a_dead_supervisor_is_planned_as_a_create() {
        let st = state(vec![("a", entry("/f", &[("limits", "1")]))]);
        let p = plan_for("/f", &[("a", &[("limits", "1")])], &st, false).unwrap();
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.actions[0].action, Kind::Create);
        assert_eq!(
            p.actions[0].reasons,
            vec!["not running: its supervisor is gone".to_string()]
        );
    }

    #[test]
    fn a_name_owned_by_another_file_is_refused() {
        let st = state(vec![("a", entry("/g", &[("limits", "1")]))]);
        let e = plan_for("/f", &[("a", &[("limits", "1")])], &st, true).unwrap_err();
        assert!(e.contains("sandbox `a` is managed from `/g`"), "{e}");
    }
}
