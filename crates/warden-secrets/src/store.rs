//! A tenant's key ring and sealed values on disk.

use crate::error::{SecretError, io};
use crate::files::{Lock, hex, private_dir, unhex, write_private};
use crate::kek::Kek;
use crate::seal::{self, KEY_LEN};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The largest value a secret holds.
pub const MAX_VALUE: usize = 64 * 1024;
const KEYRING: &str = "keyring.json";
const SUFFIX: &str = ".secret";
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct KeyRing {
    version: u32,
    /// Id of the KEK every key below is wrapped with ([`Kek::id`]).
    kek_id: String,
    /// The version new secrets are sealed with.
    current: u32,
    keys: Vec<WrappedKey>,
}

#[derive(Serialize, Deserialize)]
struct WrappedKey {
    version: u32,
    /// Unix seconds.
    created: u64,
    nonce: String,
    wrapped: String,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    version: u32,
    /// The data key's version.
    key: u32,
    /// Unix seconds.
    sealed_at: u64,
    nonce: String,
    ciphertext: String,
}

/// What `ls` shows of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    /// The data key version it is sealed with.
    pub key_version: u32,
    /// Unix seconds.
    pub sealed_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SetOutcome {
    pub key_version: u32,
    /// A secret of that name existed and was replaced.
    pub replaced: bool,
}

/// Names of tenants follow the language: lower-case letters, digits, `-` and `_`.
pub fn check_tenant(name: &str) -> Result<(), SecretError> {
    let bad = |reason| {
        Err(SecretError::BadName {
            what: "tenant name",
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return bad("1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return bad("lower-case letters, digits, `-` and `_`");
    }
    Ok(())
}

/// Secret names: letters, digits, `-` and `_` (an environment variable's name fits), not
/// starting with `-`; at most 128.
pub fn check_name(name: &str) -> Result<(), SecretError> {
    let bad = |reason| {
        Err(SecretError::BadName {
            what: "secret name",
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 128 {
        return bad("1 to 128 characters");
    }
    if name.starts_with('-')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return bad("letters, digits, `-` and `_`, not starting with `-`");
    }
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn damaged(path: &Path, reason: impl Into<String>) -> SecretError {
    SecretError::Damaged {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The secrets of every tenant under one state directory, with the KEK that opens them.
#[derive(Debug)]
pub struct Store {
    state_dir: PathBuf,
    kek: Kek,
}

impl Store {
    pub fn new(state_dir: impl Into<PathBuf>, kek: Kek) -> Store {
        Store {
            state_dir: state_dir.into(),
            kek,
        }
    }

    fn dir(&self, tenant: &str) -> PathBuf {
        crate::secrets_dir(&self.state_dir, tenant)
    }

    /// Seals `value` under `tenant`'s current data key (made on the tenant's first
    /// secret) and writes it as `name`, replacing a secret of that name.
    pub fn set(&self, tenant: &str, name: &str, value: &[u8]) -> Result<SetOutcome, SecretError> {
        check_tenant(tenant)?;
        check_name(name)?;
        if value.is_empty() || value.len() > MAX_VALUE {
            return Err(SecretError::BadValue {
                len: value.len(),
                max: MAX_VALUE,
            });
        }
        let dir = self.dir(tenant);
        private_dir(&dir)?;
        let _lock = Lock::take(&dir)?;
        let ring = match self.read_ring(tenant)? {
            Some(r) => r,
            None => self.add_key(tenant, None)?,
        };
        let key = self.unwrap(tenant, &ring, ring.current)?;
        let (nonce, ct) = seal::seal(&key, &seal::secret_aad(tenant, name, ring.current), value)?;
        let sealed = Sealed {
            version: FORMAT,
            key: ring.current,
            sealed_at: now(),
            nonce: hex(&nonce),
            ciphertext: hex(&ct),
        };
        let path = dir.join(format!("{name}{SUFFIX}"));
        let replaced = path.exists();
        let bytes =
            serde_json::to_vec_pretty(&sealed).map_err(|e| damaged(&path, e.to_string()))?;
        write_private(&path, &bytes)?;
        Ok(SetOutcome {
            key_version: ring.current,
            replaced,
        })
    }

    /// The value of `tenant`'s secret `name`, in a buffer zeroed when dropped.
    pub fn get(&self, tenant: &str, name: &str) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        check_tenant(tenant)?;
        check_name(name)?;
        let path = self.dir(tenant).join(format!("{name}{SUFFIX}"));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::NotFound {
                    tenant: tenant.to_string(),
                    name: name.to_string(),
                });
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        let does_not_open = || SecretError::DoesNotOpen {
            tenant: tenant.to_string(),
            name: name.to_string(),
            path: path.clone(),
        };
        // A file that is not what `set` writes was altered: the same error as a bad tag.
        let sealed: Sealed = serde_json::from_slice(&bytes).map_err(|_| does_not_open())?;
        if sealed.version != FORMAT {
            return Err(damaged(
                &path,
                format!("format {}, this warden reads {FORMAT}", sealed.version),
            ));
        }
        let (Some(nonce), Some(ct)) = (unhex(&sealed.nonce), unhex(&sealed.ciphertext)) else {
            return Err(does_not_open());
        };
        let ring = self
            .read_ring(tenant)?
            .ok_or_else(|| SecretError::MissingKey {
                tenant: tenant.to_string(),
                name: name.to_string(),
                version: sealed.key,
            })?;
        if !ring.keys.iter().any(|k| k.version == sealed.key) {
            return Err(SecretError::MissingKey {
                tenant: tenant.to_string(),
                name: name.to_string(),
                version: sealed.key,
            });
        }
        let key = self.unwrap(tenant, &ring, sealed.key)?;
        seal::open(
            &key,
            &seal::secret_aad(tenant, name, sealed.key),
            &nonce,
            &ct,
        )
        .ok_or_else(does_not_open)
    }

    /// Adds a new data key and makes it current: secrets set from now on are sealed with
    /// it; those sealed before keep opening with theirs. Returns the new version.
    pub fn rotate(&self, tenant: &str) -> Result<u32, SecretError> {
        check_tenant(tenant)?;
        let dir = self.dir(tenant);
        private_dir(&dir)?;
        let _lock = Lock::take(&dir)?;
        let ring = self.read_ring(tenant)?;
        if let Some(r) = &ring {
            // Every key must still unwrap with this KEK before another is added.
            for k in &r.keys {
                self.unwrap(tenant, r, k.version)?;
            }
        }
        Ok(self.add_key(tenant, ring)?.current)
    }

    fn read_ring(&self, tenant: &str) -> Result<Option<KeyRing>, SecretError> {
        let path = self.dir(tenant).join(KEYRING);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let ring: KeyRing =
            serde_json::from_slice(&bytes).map_err(|e| damaged(&path, e.to_string()))?;
        if ring.version != FORMAT {
            return Err(damaged(
                &path,
                format!("format {}, this warden reads {FORMAT}", ring.version),
            ));
        }
        if ring.kek_id != self.kek.id() {
            return Err(SecretError::WrongKek {
                tenant: tenant.to_string(),
                expected: ring.kek_id,
                found: self.kek.id(),
            });
        }
        if !ring.keys.iter().any(|k| k.version == ring.current) {
            return Err(damaged(
                &path,
                format!("the current key {} is not in it", ring.current),
            ));
        }
        Ok(Some(ring))
    }

    fn unwrap(
        &self,
        tenant: &str,
        ring: &KeyRing,
        version: u32,
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, SecretError> {
        let path = self.dir(tenant).join(KEYRING);
        let fail = || SecretError::KeyDoesNotUnwrap {
            tenant: tenant.to_string(),
            version,
            path: path.clone(),
        };
        let k = ring
            .keys
            .iter()
            .find(|k| k.version == version)
            .ok_or_else(fail)?;
        let (Some(nonce), Some(wrapped)) = (unhex(&k.nonce), unhex(&k.wrapped)) else {
            return Err(fail());
        };
        let plain = seal::open(
            self.kek.bytes(),
            &seal::key_aad(tenant, version),
            &nonce,
            &wrapped,
        )
        .ok_or_else(fail)?;
        let key: [u8; KEY_LEN] = plain.as_slice().try_into().map_err(|_| fail())?;
        Ok(Zeroizing::new(key))
    }

    /// Writes the ring with one more key, current; the caller holds the lock.
    fn add_key(&self, tenant: &str, ring: Option<KeyRing>) -> Result<KeyRing, SecretError> {
        let mut ring = ring.unwrap_or(KeyRing {
            version: FORMAT,
            kek_id: self.kek.id(),
            current: 0,
            keys: Vec::new(),
        });
        let version = ring.keys.iter().map(|k| k.version).max().unwrap_or(0) + 1;
        let key = seal::random_key()?;
        let (nonce, wrapped) = seal::seal(
            self.kek.bytes(),
            &seal::key_aad(tenant, version),
            key.as_slice(),
        )?;
        ring.keys.push(WrappedKey {
            version,
            created: now(),
            nonce: hex(&nonce),
            wrapped: hex(&wrapped),
        });
        ring.current = version;
        let path = self.dir(tenant).join(KEYRING);
        let bytes = serde_json::to_vec_pretty(&ring).map_err(|e| damaged(&path, e.to_string()))?;
        write_private(&path, &bytes)?;
        Ok(ring)
    }
}

/// Removes `tenant`'s secret `name`; `false` when there was none. Needs no KEK: a lost
/// key must not keep a secret's file around.
pub fn remove(state_dir: &Path, tenant: &str, name: &str) -> Result<bool, SecretError> {
    check_tenant(tenant)?;
    check_name(name)?;
    let dir = crate::secrets_dir(state_dir, tenant);
    if !dir.is_dir() {
        return Ok(false);
    }
    let _lock = Lock::take(&dir)?;
    let path = dir.join(format!("{name}{SUFFIX}"));
    match std::fs::remove_file(&path) {
        Ok(()) => {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync", &dir))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("remove", &path)(e)),
    }
}

/// The secrets `tenant` holds, by name; reads no value and needs no KEK.
pub fn list(state_dir: &Path, tenant: &str) -> Result<Vec<SecretInfo>, SecretError> {
    check_tenant(tenant)?;
    let dir = crate::secrets_dir(state_dir, tenant);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(io("read", &dir))?;
        let file = e.file_name().to_string_lossy().to_string();
        let Some(name) = file.strip_suffix(SUFFIX) else {
            continue;
        };
        if check_name(name).is_err() {
            continue;
        }
        let path = e.path();
        let bytes = std::fs::read(&path).map_err(io("read", &path))?;
        let sealed: Sealed =
            serde_json::from_slice(&bytes).map_err(|e| damaged(&path, e.to_string()))?;
        out.push(SecretInfo {
            name: name.to_string(),
            key_version: sealed.key,
            sealed_at: sealed.sealed_at,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_tenant("acme-1_x").is_ok());
        for bad in ["", "Acme", "a/b", "..", "a.b", "a b", &"a".repeat(65)] {
            assert!(check_tenant(bad).is_err(), "{bad}");
        }
        assert!(check_name("ANTHROPIC_API_KEY").is_ok());
        assert!(check_name("github-token").is_ok());
        for bad in ["", "-x", "a/b", "..", "a.secret", "x\0", &"a".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
