//! The validated model: every default applied, every reference resolved. The compiler
//! reads only this.

use crate::diag::Loc;
pub use warden_wire::egress::{Action, HttpRule, Target};
pub use warden_wire::inference::{Api, Detector, PrivacyAction};
pub use warden_wire::init::LandlockMode;
pub use warden_wire::orders::Autonomy;

/// Strict defaults, applied when the file says nothing. Each relaxation must be written.
pub mod defaults {
    /// Non-root inside the sandbox.
    pub const USER: u32 = 1000;
    pub const GROUP: u32 = 1000;
    pub const WORKDIR: &str = "/";
    pub const MEMORY: u64 = 1 << 30;
    pub const PIDS: u32 = 256;
    /// CPU time in thousandths of a CPU.
    pub const CPU_MILLIS: u32 = 1000;
    pub const OPEN_FILES: u32 = 1024;
    pub const GRACE_MS: u64 = 10_000;
    pub const IDLE_TIMEOUT_SECS: u64 = 300;
    pub const TMPFS_SIZE: u64 = 64 << 20;
    /// Port of an `allow` rule with no `port=`: HTTPS only.
    pub const ALLOW_PORT: u16 = 443;
    /// Port of an `http` rule with no `port=`.
    pub const HTTP_PORT: u16 = 80;
    /// Host user range of sandboxes that belong to no tenant.
    pub const UID_START: u32 = 100_000;
    pub const UID_COUNT: u32 = 65_536;
    pub const BACKOFF_MS: u64 = 1000;
    /// `HOME` of a sandbox with an `agent` whose file and image set none.
    pub const AGENT_HOME: &str = "/home/agent";
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub images: Vec<Image>,
    pub providers: Vec<Provider>,
    pub sandboxes: Vec<Sandbox>,
    pub tenants: Vec<Tenant>,
    pub orders: Vec<Order>,
    pub order_tests: Vec<OrderTest>,
    /// `unlisted "..."`: what a tool call no order names needs (a human by default).
    pub orders_unlisted: Option<Autonomy>,
    /// `render "PATH"`: where else in each sandbox the orders table is put, read-only.
    pub orders_render: Vec<String>,
    /// Layouts the file built on, in order (names or paths as written).
    pub layouts: Vec<String>,
    /// Who may use the control API (`warden serve`); `None`: no API.
    pub auth: Option<Auth>,
    /// Where the audit store lives; `None`: SQLite under the state directory.
    pub audit: Option<AuditStore>,
}

/// `audit "postgres://..."`: events go to this PostgreSQL database (through the same
/// spool under the state directory) instead of the embedded SQLite.
#[derive(Debug, Clone)]
pub struct AuditStore {
    pub loc: Loc,
    pub url: String,
}

/// `auth { ... }`: the keys `warden serve` checks bearer tokens against, and its TLS.
#[derive(Debug, Clone)]
pub struct Auth {
    pub loc: Loc,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// An `aud` every token must carry.
    pub audience: String,
    /// A JWKS file of public keys (Ed25519, P-256, RSA), as written.
    pub jwks: Option<String>,
    /// A file holding an HS256 secret, as written; the only way HS256 is accepted.
    pub hs256_key_file: Option<String>,
    pub tls: Option<Tls>,
    /// Directory of the declaring file ("" for the main file): relative paths resolve
    /// here.
    pub base: String,
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain, as written.
    pub cert: String,
    /// PEM private key, as written.
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub loc: Loc,
    pub sources: Vec<ImageSource>,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Directory of the file that declared the image (relative sources resolve here),
    /// as written in the include chain: "" for the main file.
    pub base: String,
}

pub use warden_wire::image::Source as ImageSource;

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub loc: Loc,
    pub api: Api,
    pub endpoint: String,
    pub key_env: Option<String>,
    /// Absolute path of a file holding the key (owner-only).
    pub key_file: Option<String>,
    /// Absolute path of a PEM file of extra CAs for the endpoint.
    pub ca: Option<String>,
    /// `key-secret=`: a secret of the tenant of the sandbox whose router calls the
    /// provider.
    pub key_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Sandbox {
    pub name: String,
    pub loc: Loc,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `env NAME secret=SECRET`: set from the tenant's secret store when the sandbox
    /// starts, never written into the bundle.
    pub secret_env: Vec<SecretEnv>,
    pub user: u32,
    pub group: u32,
    pub workdir: String,
    pub hostname: String,
    pub filesystem: Filesystem,
    pub limits: Limits,
    pub grace_ms: u64,
    pub restart: Restart,
    /// Relaxation: capabilities kept (none by default).
    pub capabilities: Vec<String>,
    /// Relaxation: syscalls removed from the default deny list.
    pub allow_syscalls: Vec<String>,
    /// `None`: no network at all.
    pub egress: Option<Egress>,
    pub inference: Option<Inference>,
    /// Agents whose own configuration warden prepares (`agent`), in the file's order.
    pub agents: Vec<Agent>,
    /// Filled from the `tenant` that claims the sandbox.
    pub tenant: Option<String>,
}

/// An agent whose own configuration warden prepares so that it works unmodified through
/// the inference router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Agent {
    /// Claude Code: `$HOME/.claude.json` seeded (onboarding done, the placeholder key
    /// approved, the working directory trusted).
    ClaudeCode,
    /// Codex CLI: `$CODEX_HOME/config.toml` rendered read-only with a provider at the
    /// router over HTTP.
    Codex,
}

impl Agent {
    pub const ALL: [(&'static str, Agent); 2] =
        [("claude-code", Agent::ClaudeCode), ("codex", Agent::Codex)];
    pub fn parse(s: &str) -> Option<Agent> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }
    pub fn as_str(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, a)| a == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

impl Sandbox {
    /// The sandbox's `HOME`: its own `env`, else its image's (`image_env`), else
    /// [`defaults::AGENT_HOME`] when it has an agent.
    pub fn home<'a>(&'a self, image_env: &'a [(String, String)]) -> Option<&'a str> {
        let find = |env: &'a [(String, String)]| {
            env.iter()
                .rev()
                .find(|(k, _)| k == "HOME")
                .map(|(_, v)| v.as_str())
        };
        find(&self.env)
            .or_else(|| find(image_env))
            .or_else(|| (!self.agents.is_empty()).then_some(defaults::AGENT_HOME))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    /// The environment variable.
    pub name: String,
    /// The secret of the sandbox's tenant that holds its value.
    pub secret: String,
}

#[derive(Debug, Clone, Default)]
pub struct Filesystem {
    /// Writable tmpfs mounts (everything else is read-only).
    pub read_write: Vec<String>,
    pub tmpfs_size: u64,
    /// A writable tmpfs at `/dev/shm` of this size (POSIX shared memory); none without.
    pub shm: Option<u64>,
    pub binds: Vec<Bind>,
    pub volumes: Vec<VolumeMount>,
    pub landlock: Option<LandlockMode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Host path as written (relative to the declaring file's directory).
    pub source: String,
    pub at: String,
    pub writable: bool,
    /// Directory of the declaring file ("" for the main file).
    pub base: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub volume: String,
    pub at: String,
    pub writable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory: u64,
    pub pids: u32,
    pub cpu_millis: u32,
    pub open_files: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Never,
    OnFailure { max: u32, backoff_ms: u64 },
    Always { backoff_ms: u64 },
}

#[derive(Debug, Clone)]
pub struct Egress {
    pub rules: Vec<EgressRule>,
    pub idle_timeout_secs: u64,
    pub tests: Vec<EgressTest>,
}

#[derive(Debug, Clone)]
pub struct EgressRule {
    pub action: Action,
    pub target: Target,
    /// Empty: any port.
    pub ports: Vec<u16>,
    pub http: Option<HttpRule>,
    pub reason: Option<String>,
    pub order: Option<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct EgressTest {
    pub url: String,
    pub method: Option<String>,
    pub expect: Expect,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
    Ask,
}

impl Expect {
    pub fn as_str(&self) -> &'static str {
        match self {
            Expect::Allow => "allow",
            Expect::Deny => "deny",
            Expect::Ask => "ask",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Inference {
    pub routes: Vec<Route>,
    pub privacy: Vec<PrivacyRule>,
    pub tests: Vec<InferenceTest>,
    pub limits: InferenceLimits,
}

/// `limits` in `inference`: nothing written, nothing limited (the router's idle timeout
/// applies).
#[derive(Debug, Clone, Default)]
pub struct InferenceLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub model: String,
    pub provider: String,
    /// `model=`: the name sent upstream.
    pub model_rewrite: Option<String>,
    /// `fallback=`: providers tried in order when `provider` fails.
    pub fallback: Vec<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct PrivacyRule {
    pub detect: Vec<Detector>,
    pub action: PrivacyAction,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct InferenceTest {
    pub model: String,
    pub prompt: String,
    /// A provider name, or `block`.
    pub expect: String,
    /// `api=`: the API the caller speaks (the outcome then says which API the request
    /// leaves in, and whether it was translated).
    pub api: Option<Api>,
    /// `leaves=`: the API the request must leave in (the provider's).
    pub leaves: Option<Api>,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub loc: Loc,
    pub sandboxes: Vec<String>,
    pub uid_start: u32,
    pub uid_count: u32,
    pub volumes: Vec<Volume>,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub name: String,
    pub size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub role: String,
    pub subject: String,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub name: String,
    pub loc: Loc,
    pub bounds: String,
    pub override_: Option<String>,
    pub autonomy: Autonomy,
    /// `earn-after=N`: `warden orders` proposes granting the order (`auto`) once N asks
    /// in a row were approved and none denied.
    pub earn_after: Option<u32>,
    /// `tool="..."` and `tool "..."` children: the agent's tool calls the order governs,
    /// in Claude Code's rule syntax.
    pub tools: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct OrderTest {
    /// `test "ORDER"`: the order's autonomy; `test tool="Bash(git push)"`: the decision
    /// on that tool call (this field then holds the call).
    pub order: String,
    pub tool: bool,
    pub expect: Autonomy,
    pub loc: Loc,
}

impl Model {
    pub fn sandbox(&self, name: &str) -> Option<&Sandbox> {
        self.sandboxes.iter().find(|s| s.name == name)
    }
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.name == name)
    }
    pub fn order(&self, name: &str) -> Option<&Order> {
        self.orders.iter().find(|o| o.name == name)
    }
    /// Host uid/gid range of a sandbox: its tenant's, or the default one.
    pub fn user_range(&self, sandbox: &Sandbox) -> (u32, u32) {
        sandbox
            .tenant
            .as_deref()
            .and_then(|t| self.tenant(t))
            .map(|t| (t.uid_start, t.uid_count))
            .unwrap_or((defaults::UID_START, defaults::UID_COUNT))
    }
}
