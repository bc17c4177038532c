//! The key-encryption key: 32 bytes from a file kept apart from the state directory.

use crate::error::SecretError;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The environment variable naming the KEK file.
pub const KEK_ENV: &str = "WARDEN_KEK_FILE";
/// The systemd credential holding the KEK (`LoadCredential=warden-kek:PATH`), read from
/// `$CREDENTIALS_DIRECTORY` when `WARDEN_KEK_FILE` is not set.
pub const KEK_CREDENTIAL: &str = "warden-kek";
pub const KEK_LEN: usize = 32;

/// The key that wraps every tenant's data keys. Zeroed when dropped; `Debug` shows its id
/// only.
pub struct Kek {
    key: Zeroizing<[u8; KEK_LEN]>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek(id {})", self.id())
    }
}

impl Kek {
    /// The KEK named by `WARDEN_KEK_FILE`, else the systemd credential; neither is
    /// [`SecretError::NoKek`]. `state_dir` is where the data lives: a KEK inside it is
    /// refused.
    pub fn from_env(state_dir: &Path) -> Result<Kek, SecretError> {
        Kek::locate(|k| std::env::var_os(k).map(PathBuf::from), state_dir)
    }

    /// As [`Kek::from_env`], with the environment read through `env`.
    pub fn locate(
        env: impl Fn(&str) -> Option<PathBuf>,
        state_dir: &Path,
    ) -> Result<Kek, SecretError> {
        let path = match env(KEK_ENV).filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => p,
            None => match env("CREDENTIALS_DIRECTORY").filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) if dir.join(KEK_CREDENTIAL).exists() => dir.join(KEK_CREDENTIAL),
                _ => return Err(SecretError::NoKek),
            },
        };
        Kek::from_file(&path, state_dir)
    }

    /// Reads a KEK file: exactly 32 bytes, closed to group and others, outside
    /// `state_dir`.
    pub fn from_file(path: &Path, state_dir: &Path) -> Result<Kek, SecretError> {
        let bad = |reason: String| SecretError::KekFile {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode {mode:03o} lets group or others read it; `chmod 600` it"
            )));
        }
        // The KEK protects the state directory's secrets only while it is elsewhere: a
        // copy of the state directory must not carry its own key.
        if let (Ok(k), Ok(s)) = (
            std::fs::canonicalize(path),
            std::fs::canonicalize(state_dir),
        ) && k.starts_with(&s)
        {
            return Err(bad(format!(
                "it lies inside the state directory `{}`; keep the key-encryption key apart from the data it protects",
                s.display()
            )));
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
        let key: [u8; KEK_LEN] = bytes.as_slice().try_into().map_err(|_| {
            bad(format!(
                "holds {} bytes; a key-encryption key is exactly {KEK_LEN} random bytes",
                bytes.len()
            ))
        })?;
        Ok(Kek::from_bytes(key))
    }

    pub fn from_bytes(key: [u8; KEK_LEN]) -> Kek {
        Kek {
            key: Zeroizing::new(key),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8; KEK_LEN] {
        &self.key
    }

    /// 16 hex digits naming this KEK: a store records the id of the KEK it was sealed
    /// with, so a wrong KEK is told apart from an altered key ring.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"warden-kek-id\0");
        h.update(self.key.as_slice());
        crate::files::hex(&h.finalize()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_kek_file_is_32_private_bytes_outside_the_state() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let ok = write(tmp.path(), "kek", &[7; 32], 0o600);
        assert!(Kek::from_file(&ok, &state).is_ok());

        let short = write(tmp.path(), "short", &[7; 31], 0o600);
        let e = Kek::from_file(&short, &state).unwrap_err().to_string();
        assert!(e.contains("holds 31 bytes"), "{e}");

        let open = write(tmp.path(), "open", &[7; 32], 0o644);
        let e = Kek::from_file(&open, &state).unwrap_err().to_string();
        assert!(e.contains("mode 644"), "{e}");

        let inside = write(&state, "kek", &[7; 32], 0o600);
        let e = Kek::from_file(&inside, &state).unwrap_err().to_string();
        assert!(e.contains("inside the state directory"), "{e}");
    }

    #[test]
    fn the_environment_names_the_file_or_the_systemd_credential() {
        let tmp = tempfile::tempdir().unwrap();
        let creds = tmp.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        write(&creds, KEK_CREDENTIAL, &[1; 32], 0o400);
        let other = write(tmp.path(), "other", &[2; 32], 0o600);
        let state = tmp.path().join("state");
        let env = |file: Option<&Path>, dir: Option<&Path>| {
            let (file, dir) = (file.map(Path::to_path_buf), dir.map(Path::to_path_buf));
            move |k: &str| match k {
                KEK_ENV => file.clone(),
                "CREDENTIALS_DIRECTORY" => dir.clone(),
                _ => None,
            }
        };
        let from_cred = Kek::locate(env(None, Some(&creds)), &state).unwrap();
        assert_eq!(from_cred.id(), Kek::from_bytes([1; 32]).id());
        let from_file = Kek::locate(env(Some(&other), Some(&creds)), &state).unwrap();
        assert_eq!(from_file.id(), Kek::from_bytes([2; 32]).id());
        let none = Kek::locate(env(None, None), &state).unwrap_err();
        assert!(matches!(none, SecretError::NoKek));
        assert!(none.to_string().contains("WARDEN_KEK_FILE"));
        assert_ne!(from_cred.id(), from_file.id());
        assert!(!format!("{from_cred:?}").contains("0101"));
    }
}
