//! What warden-init (PID 1 in every sandbox) is told to do before it runs the command.
//! Passed in the environment variable [`INIT_CONFIG_ENV`] as JSON; warden-init removes
//! every `WARDEN_INIT*` variable before it executes the command.

use serde::{Deserialize, Serialize};

/// Where warden-init lives inside every image.
pub const INIT_PATH: &str = "/.warden/init";
/// The environment variable carrying the JSON [`InitConfig`].
pub const INIT_CONFIG_ENV: &str = "WARDEN_INIT_CONFIG";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitConfig {
    pub version: u32,
    pub landlock: Landlock,
    /// Installed by warden-init after Landlock, just before exec, with no_new_privs set.
    /// The same list is in config.json for runtimes that install it themselves.
    pub seccomp: Vec<crate::seccomp::SeccompRule>,
    /// Milliseconds between forwarding SIGTERM and sending SIGKILL to the command.
    pub grace_period_ms: u64,
    /// Files warden-init writes before the command starts, as the sandbox's user, unless
    /// they exist: state an agent expects and may change (Claude Code's `.claude.json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<SeedFile>,
}

/// One file of [`InitConfig::files`]. It holds no secret (the config is in the
/// sandbox's `config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedFile {
    /// Absolute path inside the sandbox; missing parent directories are made (0700).
    pub path: String,
    pub content: String,
    pub mode: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    /// Refuse to start when the kernel cannot enforce every rule.
    Required,
    /// Enforce what the kernel supports and report the rest.
    BestEffort,
    /// No Landlock (visible in the file as `landlock "off"`).
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Landlock {
    pub mode: LandlockMode,
    /// Read and execute beneath these paths.
    pub read_exec: Vec<String>,
    /// Read, write, create, remove beneath these paths (and execute).
    pub read_write: Vec<String>,
}
