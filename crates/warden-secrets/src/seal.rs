//! AES-256-GCM with a fresh random 96-bit nonce per seal, and the associated data that
//! binds a ciphertext to where it belongs.

use crate::error::SecretError;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use zeroize::Zeroizing;

pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const KEY_LEN: usize = 32;

/// `(nonce, ciphertext with its tag)`.
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; NONCE_LEN], Vec<u8>), SecretError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(|e| SecretError::Random(e.to_string()))?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Only a message beyond GCM's length limit (64 GiB) fails to seal.
        .map_err(|_| SecretError::BadValue {
            len: plaintext.len(),
            max: crate::MAX_VALUE,
        })?;
    Ok((nonce, ct))
}

/// The plaintext, or `None` when the tag does not verify (wrong key, altered bytes, or
/// other associated data).
pub(crate) fn open(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

pub(crate) fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, SecretError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    OsRng
        .try_fill_bytes(key.as_mut())
        .map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(key)
}

/// Associated data of a wrapped data key: its tenant and version.
pub(crate) fn key_aad(tenant: &str, version: u32) -> Vec<u8> {
    let mut a = b"warden data key\0v1\0".to_vec();
    a.extend_from_slice(tenant.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

/// Associated data of a secret: its tenant, its name and the data key's version.
pub(crate) fn secret_aad(tenant: &str, name: &str, version: u32) -> Vec<u8> {
    let mut a = b"warden secret\0v1\0".to_vec();
    a.extend_from_slice(tenant.as_bytes());
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a.push(0);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_opens_only_with_its_key_and_associated_data() {
        let key = [3u8; KEY_LEN];
        let (nonce, ct) = seal(&key, b"a", b"value").unwrap();
        assert_eq!(open(&key, b"a", &nonce, &ct).unwrap().as_slice(), b"value");
        assert!(open(&key, b"b", &nonce, &ct).is_none());
        assert!(open(&[4u8; KEY_LEN], b"a", &nonce, &ct).is_none());
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert!(open(&key, b"a", &nonce, &flipped).is_none());
        assert!(open(&key, b"a", &nonce[..11], &ct).is_none());
        // A fresh nonce every time.
        let (nonce2, ct2) = seal(&key, b"a", b"value").unwrap();
        assert_ne!(nonce, nonce2);
        assert_ne!(ct, ct2);
    }

    #[test]
    fn associated_data_separates_names_that_concatenate_alike() {
        assert_ne!(secret_aad("ab", "c", 1), secret_aad("a", "bc", 1));
        assert_ne!(secret_aad("a", "b", 1), secret_aad("a", "b", 2));
        assert_ne!(key_aad("a", 1), key_aad("b", 1));
    }
}
