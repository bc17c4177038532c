use std::path::PathBuf;

use libcontainer::error::LibcontainerError;

/// Why a run failed. Each variant says what was attempted and on which container or path;
/// the underlying cause is the error's `source()`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot open bundle `{path}`")]
    OpenBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read bundle config `{path}`")]
    ReadBundle {
        path: PathBuf,
        #[source]
        source: libcontainer::oci_spec::OciSpecError,
    },
    #[error("invalid bundle config `{path}`: {reason}")]
    InvalidBundle { path: PathBuf, reason: String },
    #[error("invalid container id `{id}`: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("cannot prepare the state directory `{path}`")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the run's bundle config `{path}`")]
    WriteBundle {
        path: PathBuf,
        #[source]
        source: libcontainer::oci_spec::OciSpecError,
    },
    #[error("cannot install signal handlers for container `{id}`")]
    Signals {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container `{id}`: cannot {what}")]
    Mount {
        id: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container `{id}`: cannot make the mount point `{target}`: {reason}")]
    MountPoint {
        id: String,
        target: String,
        reason: String,
    },
    #[error("the bind source `{}` (for `{destination}`) does not exist on the host", source_path.display())]
    BindSource {
        source_path: PathBuf,
        destination: String,
    },
    #[error(
        "container `{id}`: the filesystem of `{}` cannot idmap, so the writable bind at `{destination}` cannot make its files the sandbox user's; move the directory to a filesystem that can (ext4, xfs, btrfs, tmpfs), or bind it read-only (`writable=#false`: the host's owners stay)", source_path.display()
    )]
    CannotIdmap {
        id: String,
        source_path: PathBuf,
        destination: String,
    },
    #[error(
        "container `{id}`: the sandbox's root (host uid {uid}) cannot reach its root filesystem `{}`: `{}` has mode {mode:04o}; give it `o+x` (`chmod o+x`) or keep warden's cache (`WARDEN_CACHE_DIR`) where every directory on the way can be passed", root.display(), dir.display()
    )]
    Unreachable {
        id: String,
        root: PathBuf,
        dir: PathBuf,
        mode: u32,
        uid: u32,
    },
    #[error("container `{id}`: cannot mount the volume image `{}`: {reason}", image.display())]
    Volume {
        id: String,
        image: PathBuf,
        reason: String,
    },
    #[error("cannot create container `{id}`")]
    Create {
        id: String,
        #[source]
        source: LibcontainerError,
    },
    #[error("cannot set up the network of container `{id}`")]
    Network {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the before-start hook failed for container `{id}`")]
    BeforeStart {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot start container `{id}`")]
    Start {
        id: String,
        #[source]
        source: LibcontainerError,
    },
    #[error("cannot wait for the init process of container `{id}`")]
    Wait {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot clean up container `{id}`: {what}")]
    Cleanup { id: String, what: String },
    #[error("no container `{id}` under `{state_root}`")]
    NotFound { id: String, state_root: PathBuf },
    #[error("container `{id}` is not running: {reason}")]
    NotRunning { id: String, reason: String },
    #[error("cannot read the state of container `{id}`")]
    State {
        id: String,
        #[source]
        source: LibcontainerError,
    },
    #[error("cannot exec in container `{id}`: {reason}")]
    InvalidExec { id: String, reason: String },
    #[error("cannot give the exec in container `{id}` a terminal")]
    Terminal {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot exec in container `{id}`")]
    Exec {
        id: String,
        #[source]
        source: LibcontainerError,
    },
}

impl RuntimeError {
    /// Whether the cause is in the file or the host's set-up (a missing bind source, a
    /// mount point the image cannot hold, a directory the sandbox cannot reach), not in
    /// warden: the CLI exits 1 for these, 2 for the rest.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            RuntimeError::BindSource { .. }
                | RuntimeError::MountPoint { .. }
                | RuntimeError::CannotIdmap { .. }
                | RuntimeError::Unreachable { .. }
                | RuntimeError::Volume { .. }
                | RuntimeError::InvalidBundle { .. }
        )
    }

    /// The error and each of its causes, `: `-separated (libcontainer's chain included).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            let msg = e.to_string();
            if !out.ends_with(&msg) {
                out.push_str(": ");
                out.push_str(&msg);
            }
            cur = e.source();
        }
        out
    }
}
