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
