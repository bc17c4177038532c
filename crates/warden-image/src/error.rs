//! The one error type of the image builder. Every variant names the path involved.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("source `{}` does not exist", path.display())]
    Missing { path: PathBuf },

    #[error("{op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`{}` is not an ELF file", path.display())]
    NotElf { path: PathBuf },

    #[error("malformed ELF file `{}`: {reason}", path.display())]
    BadElf { path: PathBuf, reason: String },

    #[error("`{}` needs library `{lib}`, which was not found in {searched}", path.display())]
    LibraryNotFound {
        path: PathBuf,
        lib: String,
        searched: String,
    },

    #[error("broken OCI layout `{}`: {reason}", path.display())]
    BrokenLayout { path: PathBuf, reason: String },

    #[error("broken layer `{}`: {reason}", path.display())]
    BrokenLayer { path: PathBuf, reason: String },

    #[error("unsupported file type at `{}` (only files, directories and symlinks are copied)", path.display())]
    Unsupported { path: PathBuf },

    #[error("cannot place `{}` in the image: {reason}", path.display())]
    Place { path: PathBuf, reason: String },

    #[error("cannot make the mount point `{target}` in the sandbox's root: {reason}")]
    MountTarget { target: String, reason: String },

    #[error("the bind source `{}` (for `{destination}`) does not exist on the host", source_path.display())]
    BindSource {
        source_path: PathBuf,
        destination: String,
    },

    #[error("`{}` changed while the image was being built", path.display())]
    Changed { path: PathBuf },

    #[error("nix is not installed: {0}")]
    NixMissing(String),

    #[error("`{command}` failed: {stderr}")]
    Nix { command: String, stderr: String },

    #[error("malformed nix closure file `{}` line {line}: {reason}", path.display())]
    NixClosure {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("invalid image `{image}`: {reason}")]
    Plan { image: String, reason: String },
}

impl ImageError {
    /// Whether the cause lies in the file or on the host (a missing source, a mount
    /// point the image cannot hold), not in warden: the CLI exits 1 for these.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            ImageError::Missing { .. }
                | ImageError::MountTarget { .. }
                | ImageError::BindSource { .. }
                | ImageError::NotElf { .. }
                | ImageError::LibraryNotFound { .. }
                | ImageError::Unsupported { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
