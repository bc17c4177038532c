//! Image plans: what the image builder assembles, layer by layer, for each `image` node.
//! Relative source paths are relative to the directory of the file that declared them;
//! the builder resolves them, so the plan itself is independent of where it is built.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePlan {
    pub version: u32,
    pub name: String,
    /// Applied in order; an `oci-layout` base, when present, is first.
    pub sources: Vec<Source>,
    /// Image config environment, in declaration order.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Source {
    /// Binaries and their ELF closure copied from this machine, plus declared extra
    /// libraries (dlopen'ed ones the closure cannot see).
    FromHost {
        paths: Vec<String>,
        with_libs: Vec<String>,
    },
    /// A local file or directory; mode kept, owner from the file.
    Copy {
        src: String,
        to: String,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    },
    /// A local OCI image layout used as the base.
    OciLayout { dir: String, tag: String },
    /// Nix store paths and their closure.
    Nix { paths: Vec<String> },
    /// A closure file written by Nix's `exportReferencesGraph`.
    NixClosure { file: String },
}
