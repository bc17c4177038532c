//! Everything the runtime and the supervisor need about one sandbox besides its OCI
//! `config.json`: written as `warden.json` next to it in the bundle.

use serde::{Deserialize, Serialize};

/// The file name beside `config.json` in every bundle.
pub const SANDBOX_FILE: &str = "warden.json";

/// The egress proxy's address inside every sandbox with egress: the sandbox's network
/// namespace is its own, so the same port serves every sandbox.
pub const PROXY_ADDR: &str = "127.0.0.1:3128";

/// The inference router's address inside every sandbox with `inference`, beside the
/// egress proxy: the sandbox's model calls go here (`ANTHROPIC_BASE_URL`,
/// `OPENAI_BASE_URL`), and the router adds the provider's key on the way out.
pub const ROUTER_ADDR: &str = "127.0.0.1:3129";
/// The standing orders endpoint inside the sandbox's network namespace (a sandbox with
/// an agent): "may I do X under order Y".
pub const ORDERS_ADDR: &str = "127.0.0.1:3130";
/// The standing orders table in a bundle (relative to it), bound read-only where the
/// agents read their instructions.
pub const ORDERS_TABLE_FILE: &str = "agents/orders/ORDERS.md";

/// The API key a sandbox with `inference` sees in `ANTHROPIC_API_KEY` and
/// `OPENAI_API_KEY`: clients refuse to start without one, and the router drops it and
/// sends the provider's real key instead. Not a secret.
pub const PLACEHOLDER_KEY: &str = "sk-warden-placeholder-the-router-adds-the-real-key";

/// Spec annotation `<this><volume's host directory>` on every tenant volume: the value is
/// the volume's ext4 image when it has a size (warden's runtime mounts the image at the
/// directory before binding it; other runtimes bind the directory as it is, without the
/// size limit), else empty. The directory itself is made by warden when the sandbox
/// starts, so a bundle may name it before it exists.
pub const VOLUME_ANNOTATION: &str = "dev.warden.volume:";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    pub version: u32,
    pub name: String,
    pub image: String,
    pub tenant: Option<String>,
    pub restart: Restart,
    /// `None`: no network at all (only `lo`).
    pub egress: Option<crate::egress::EgressPolicy>,
    pub inference: Option<crate::inference::InferencePolicy>,
    pub orders: crate::orders::OrdersPolicy,
    /// Host directories the runtime creates (mode 0700, owned by the sandbox's mapped
    /// user) before start: tenant volumes and bind sources that must exist.
    pub host_dirs: Vec<HostDir>,
    /// Files warden writes into the bundle beside `rootfs` (the agents' configuration,
    /// bound read-only where the agent reads it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<BundleFile>,
    /// Environment variables whose values are secrets of the sandbox's tenant: read from
    /// the tenant's store and handed to the container's process each time it starts,
    /// never written into `config.json` or any other file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<SecretEnv>,
    /// The standing orders endpoint is served at [`ORDERS_ADDR`] (a sandbox with an
    /// agent).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub orders_endpoint: bool,
}

/// One file of [`SandboxPlan::files`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BundleFile {
    /// Relative to the bundle (`agents/codex/config.toml`), as the spec's bind names it.
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnv {
    /// The environment variable.
    pub name: String,
    /// The tenant's secret holding its value.
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDir {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    /// A tenant volume with a size: an ext4 image of this many bytes at `<path>.img`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl HostDir {
    /// Where the volume's image lives, when it has a size.
    pub fn image(&self) -> Option<String> {
        self.size.map(|_| format!("{}.img", self.path))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum Restart {
    Never,
    OnFailure { max: u32, backoff_ms: u64 },
    Always { backoff_ms: u64 },
}
