//! The compiler: a validated [`Model`] becomes, per sandbox, an OCI runtime
//! [`Spec`] plus the wire types the enforcing components read, and per image an
//! [`ImagePlan`]. Pure: no IO, no clock, no environment; the same model and options give
//! byte-identical output. Never links libcontainer.

mod agents;
mod explain;
mod spec;
mod tests;

pub use explain::{Explanation, explain};
pub use oci_spec::runtime::Spec;
pub use tests::{TestKind, TestResult, run_tests};

use warden_lang::Model;
use warden_lang::model::{Restart, Sandbox};
use warden_wire::image::ImagePlan;
use warden_wire::orders::{Autonomy, Order, OrdersPolicy};
use warden_wire::sandbox::{HostDir, SandboxPlan};
use warden_wire::{WIRE_VERSION, canonical_json, egress, inference, init};

/// What the compiler needs from outside the model.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// Absolute directory of the main file; relative host paths resolve against it.
    pub base_dir: String,
    /// Where warden keeps state on the host (tenant volumes live under it).
    pub state_dir: String,
}

#[derive(Debug, Clone)]
pub struct Compiled {
    pub images: Vec<ImagePlan>,
    pub sandboxes: Vec<CompiledSandbox>,
    pub orders: OrdersPolicy,
}

#[derive(Debug, Clone)]
pub struct CompiledSandbox {
    pub name: String,
    pub spec: Spec,
    pub init: init::InitConfig,
    pub plan: SandboxPlan,
}

#[derive(Debug)]
pub enum CompileError {
    Spec(String),
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Spec(m) => write!(f, "internal error building the OCI spec: {m}"),
        }
    }
}

impl std::error::Error for CompileError {}

pub fn compile(model: &Model, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    let orders = orders_policy(model);
    let images = model
        .images
        .iter()
        .map(|i| ImagePlan {
            version: WIRE_VERSION,
            name: i.name.clone(),
            sources: i.sources.iter().map(|s| rebase(s, &i.base)).collect(),
            env: i.env.clone(),
            workdir: i.workdir.clone(),
        })
        .collect();
    let shared = spec::Shared::new()?;
    let mut sandboxes = Vec::with_capacity(model.sandboxes.len());
    for s in &model.sandboxes {
        sandboxes.push(sandbox(model, s, &orders, opts, &shared)?);
    }
    Ok(Compiled {
        images,
        sandboxes,
        orders,
    })
}

/// Every error [`compile`] reports for this model, found without building the specs and
/// wire types: enough for a verdict on the file.
pub fn check(model: &Model) -> Result<(), CompileError> {
    spec::Shared::new()?;
    for s in &model.sandboxes {
        spec::check(s)?;
    }
    Ok(())
}

/// Relative image sources from a layout file are made relative to the main file.
fn rebase(s: &warden_wire::image::Source, base: &str) -> warden_wire::image::Source {
    use warden_wire::image::Source;
    let j = |p: &String| warden_lang::join(base, p);
    match s {
        Source::Copy {
            src,
            to,
            uid,
            gid,
            mode,
        } => Source::Copy {
            src: j(src),
            to: to.clone(),
            uid: *uid,
            gid: *gid,
            mode: *mode,
        },
        Source::OciLayout { dir, tag } => Source::OciLayout {
            dir: j(dir),
            tag: tag.clone(),
        },
        Source::NixClosure { file } => Source::NixClosure { file: j(file) },
        other => other.clone(),
    }
}

fn orders_policy(model: &Model) -> OrdersPolicy {
    OrdersPolicy {
        version: WIRE_VERSION,
        orders: model
            .orders
            .iter()
            .map(|o| Order {
                name: o.name.clone(),
                bounds: o.bounds.clone(),
                override_: o.override_.clone(),
                autonomy: o.autonomy,
                tools: o.tools.clone(),
            })
            .collect(),
        unlisted: model.orders_unlisted.unwrap_or(Autonomy::Ask),
    }
}

pub(crate) fn egress_policy(s: &Sandbox, orders: &OrdersPolicy) -> Option<egress::EgressPolicy> {
    let eg = s.egress.as_ref()?;
    Some(egress::EgressPolicy {
        version: WIRE_VERSION,
        sandbox: s.name.clone(),
        idle_timeout_secs: eg.idle_timeout_secs,
        rules: eg
            .rules
            .iter()
            .map(|r| egress::EgressRule {
                action: r.action,
                target: r.target.clone(),
                ports: r.ports.clone(),
                http: r.http.clone(),
                reason: r.reason.clone(),
                autonomy: r
                    .order
                    .as_deref()
                    .map(|o| orders.autonomy(o))
                    .unwrap_or(Autonomy::Auto),
                order: r.order.clone(),
                line: r.loc.line,
            })
            .collect(),
    })
}

pub(crate) fn inference_policy(model: &Model, s: &Sandbox) -> Option<inference::InferencePolicy> {
    let inf = s.inference.as_ref()?;
    let mut used: Vec<&str> = inf
        .routes
        .iter()
        .flat_map(|r| std::iter::once(&r.provider).chain(&r.fallback))
        .map(String::as_str)
        .collect();
    for p in &inf.privacy {
        if let inference::PrivacyAction::Reroute { to } = &p.action {
            used.push(to);
        }
    }
    Some(inference::InferencePolicy {
        version: WIRE_VERSION,
        sandbox: s.name.clone(),
        providers: model
            .providers
            .iter()
            .filter(|p| used.contains(&p.name.as_str()))
            .map(|p| inference::Provider {
                name: p.name.clone(),
                api: p.api,
                endpoint: p.endpoint.clone(),
                key_env: p.key_env.clone(),
                key_file: p.key_file.clone(),
                ca: p.ca.clone(),
                key_secret: p.key_secret.clone(),
            })
            .collect(),
        routes: inf
            .routes
            .iter()
            .map(|r| inference::Route {
                model: r.model.clone(),
                provider: r.provider.clone(),
                model_rewrite: r.model_rewrite.clone(),
                fallback: r.fallback.clone(),
            })
            .collect(),
        privacy: inf
            .privacy
            .iter()
            .map(|p| inference::PrivacyRule {
                detect: p.detect.clone(),
                action: p.action.clone(),
            })
            .collect(),
        idle_timeout_secs: inf.limits.idle_timeout_secs,
        requests_per_minute: inf.limits.requests_per_minute,
        tokens_per_minute: inf.limits.tokens_per_minute,
    })
}

fn sandbox(
    model: &Model,
    s: &Sandbox,
    orders: &OrdersPolicy,
    opts: &CompileOptions,
    shared: &spec::Shared,
) -> Result<CompiledSandbox, CompileError> {
    let (uid_start, _) = model.user_range(s);
    let init = spec::init_config(model, s, shared);
    let spec = spec::spec(model, s, &init, opts, shared)?;
    let mut host_dirs: Vec<HostDir> = s
        .filesystem
        .volumes
        .iter()
        .filter_map(|v| {
            let tenant = s.tenant.as_deref()?;
            Some(HostDir {
                path: spec::volume_path(opts, tenant, &v.volume),
                uid: uid_start + s.user,
                gid: uid_start + s.group,
                size: model
                    .tenant(tenant)
                    .and_then(|t| t.volumes.iter().find(|tv| tv.name == v.volume))
                    .and_then(|tv| tv.size),
            })
        })
        .collect();
    host_dirs.sort_by(|a, b| a.path.cmp(&b.path));
    host_dirs.dedup();
    let plan = SandboxPlan {
        version: WIRE_VERSION,
        name: s.name.clone(),
        image: s.image.clone(),
        tenant: s.tenant.clone(),
        restart: match s.restart {
            Restart::Never => warden_wire::sandbox::Restart::Never,
            Restart::OnFailure { max, backoff_ms } => {
                warden_wire::sandbox::Restart::OnFailure { max, backoff_ms }
            }
            Restart::Always { backoff_ms } => warden_wire::sandbox::Restart::Always { backoff_ms },
        },
        egress: egress_policy(s, orders),
        inference: inference_policy(model, s),
        orders: orders.clone(),
        host_dirs,
        files: agents::bundle_files(model, s, orders),
        orders_endpoint: agents::serves_orders(s),
        secret_env: s
            .secret_env
            .iter()
            .map(|e| warden_wire::sandbox::SecretEnv {
                name: e.name.clone(),
                secret: e.secret.clone(),
            })
            .collect(),
    };
    Ok(CompiledSandbox {
        name: s.name.clone(),
        spec,
        init,
        plan,
    })
}

impl CompiledSandbox {
    /// `config.json`, canonical: keys sorted, sets sorted, fixed indentation.
    pub fn config_json(&self) -> String {
        let mut v = serde_json::to_value(&self.spec).unwrap_or(serde_json::Value::Null);
        // oci-spec keeps capabilities in hash sets: sort them so the bytes are stable.
        if let Some(caps) = v
            .pointer_mut("/process/capabilities")
            .and_then(|c| c.as_object_mut())
        {
            for set in caps.values_mut() {
                if let Some(arr) = set.as_array_mut() {
                    arr.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                }
            }
        }
        canonical_json(&v).unwrap_or_default()
    }

    /// `warden.json`, canonical.
    pub fn plan_json(&self) -> String {
        canonical_json(&self.plan).unwrap_or_default()
    }
}
