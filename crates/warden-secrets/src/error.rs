use std::path::PathBuf;

/// What went wrong with a secret, its key ring or the key-encryption key. Messages name
/// the tenant, secret or path involved and never hold a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "no key-encryption key: set `WARDEN_KEK_FILE` to a file of 32 random bytes kept outside the state directory (e.g. `head -c 32 /dev/urandom > /etc/warden/kek && chmod 600 /etc/warden/kek`), or run under systemd with `LoadCredential=warden-kek:PATH`"
    )]
    NoKek,
    #[error("key-encryption key `{path}`: {reason}")]
    KekFile { path: PathBuf, reason: String },
    #[error("invalid {what} `{name}`: {reason}")]
    BadName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("tenant `{tenant}` has no secret `{name}`")]
    NotFound { tenant: String, name: String },
    #[error(
        "secret `{name}` of tenant `{tenant}` does not open (`{path}`): it was altered, or copied from another name or tenant"
    )]
    DoesNotOpen {
        tenant: String,
        name: String,
        path: PathBuf,
    },
    #[error(
        "the key-encryption key (id {found}) is not the one tenant `{tenant}`'s secrets were sealed with (id {expected})"
    )]
    WrongKek {
        tenant: String,
        expected: String,
        found: String,
    },
    #[error(
        "data key {version} of tenant `{tenant}` does not unwrap (`{path}`): the key ring was altered or copied from another tenant"
    )]
    KeyDoesNotUnwrap {
        tenant: String,
        version: u32,
        path: PathBuf,
    },
    #[error("`{path}` is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error(
        "secret `{name}` of tenant `{tenant}` was sealed with data key {version}, which the key ring does not hold"
    )]
    MissingKey {
        tenant: String,
        name: String,
        version: u32,
    },
    #[error("a secret value is 1 to {max} bytes; this one is {len}")]
    BadValue { len: usize, max: usize },
    #[error("cannot {op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no randomness from the kernel: {0}")]
    Random(String),
}

pub(crate) fn io(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> SecretError {
    let path = path.to_path_buf();
    move |source| SecretError::Io { op, path, source }
}
