//! warden-secrets: a tenant's secrets at rest.
//!
//! Each tenant has its own data keys (AES-256-GCM), kept in `keyring.json` wrapped by a
//! key-encryption key (KEK) that is never stored beside the data: it is read from the
//! file `WARDEN_KEK_FILE` names, or from the systemd credential `warden-kek`
//! (`$CREDENTIALS_DIRECTORY/warden-kek`). A secret is one file sealed with the tenant's
//! current data key; the tenant, the secret's name and the key version are bound as
//! associated data, so a ciphertext moved to another name or tenant, or altered by one
//! bit, does not open (an error, never garbage). `rotate` adds a data key: secrets sealed
//! before still open with their version, new ones use the new key.
//!
//! Layout, under the state directory (directories 0700, files 0600, every write a temp
//! file renamed over):
//!
//! ```text
//! tenants/<tenant>/secrets/keyring.json    data keys, each wrapped by the KEK
//! tenants/<tenant>/secrets/<name>.secret   one sealed value
//! tenants/<tenant>/secrets/.lock           flock'ed by every change
//! ```
//!
//! Plaintext lives only in memory, in buffers that are zeroed when dropped.

mod error;
mod files;
mod kek;
mod seal;
mod store;

pub use error::SecretError;
pub use kek::{KEK_CREDENTIAL, KEK_ENV, KEK_LEN, Kek};
pub use store::{MAX_VALUE, SecretInfo, SetOutcome, Store, check_name, check_tenant, list, remove};
pub use zeroize::Zeroizing;

/// Where a tenant's secrets live: `<state>/tenants/<tenant>/secrets`.
pub fn secrets_dir(state_dir: &std::path::Path, tenant: &str) -> std::path::PathBuf {
    state_dir.join("tenants").join(tenant).join("secrets")
}
