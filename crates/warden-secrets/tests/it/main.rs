//! The store against the files it writes: every way a ciphertext can be misused fails
//! with its own error, and no value reaches the disk in the clear.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use warden_secrets::{Kek, SecretError, Store, list, remove, secrets_dir};

const VALUE: &[u8] = b"sk-test-7f3a9c2e-the-plaintext";

fn store(state: &Path, kek: u8) -> Store {
    Store::new(state, Kek::from_bytes([kek; 32]))
}

fn secret_file(state: &Path, tenant: &str, name: &str) -> PathBuf {
    secrets_dir(state, tenant).join(format!("{name}.secret"))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_value_round_trips_and_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), 1);
    let first = s.set("acme", "API_KEY", VALUE).unwrap();
    assert_eq!(first.key_version, 1);
    assert!(!first.replaced);
    assert_eq!(s.get("acme", "API_KEY").unwrap().as_slice(), VALUE);
    let second = s.set("acme", "API_KEY", b"other").unwrap();
    assert!(second.replaced);
    assert_eq!(s.get("acme", "API_KEY").unwrap().as_slice(), b"other");
    let names: Vec<String> = list(tmp.path(), "acme")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["API_KEY"]);
    assert!(remove(tmp.path(), "acme", "API_KEY").unwrap());
    assert!(!remove(tmp.path(), "acme", "API_KEY").unwrap());
    assert!(matches!(
        s.get("acme", "API_KEY"),
        Err(SecretError::NotFound { .. })
    ));
    assert!(list(tmp.path(), "acme").unwrap().is_empty());
}

#[test]
fn files_are_private_and_hold_no_plaintext() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), 1);
    s.set("acme", "API_KEY", VALUE).unwrap();
    s.rotate("acme").unwrap();
    s.set("acme", "OTHER", VALUE).unwrap();
    let dir = secrets_dir(tmp.path(), "acme");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let files = files_under(tmp.path());
    assert!(files.len() >= 3, "{files:?}");
    let needle = &VALUE[..12];
    let hex_needle: String = needle.iter().map(|b| format!("{b:02x}")).collect();
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "plaintext in {}",
            f.display()
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&hex_needle),
            "hex plaintext in {}",
            f.display()
        );
    }
    // No temp file is left behind.
    assert!(files.iter().all(|f| !f.to_string_lossy().contains(".tmp-")));
}

#[test]
fn a_flipped_bit_is_an_error_not_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), 1);
    s.set("acme", "API_KEY", VALUE).unwrap();
    let path = secret_file(tmp.path(), "acme", "API_KEY");
    let text = std::fs::read_to_string(&path).unwrap();
    let sealed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ct = sealed["ciphertext"].as_str().unwrap();
    // Flip the lowest bit of the first ciphertext byte.
    let first = u8::from_str_radix(&ct[..2], 16).unwrap() ^ 1;
    let flipped = text.replacen(ct, &format!("{first:02x}{}", &ct[2..]), 1);
    assert_ne!(flipped, text);
    std::fs::write(&path, flipped).unwrap();
    let e = s.get("acme", "API_KEY").unwrap_err();
    assert!(matches!(e, SecretError::DoesNotOpen { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "secret `API_KEY` of tenant `acme` does not open (`{}`): it was altered, or copied from another name or tenant",
            path.display()
        )
    );
    // A file that is not even JSON any more: the same error.
    std::fs::write(&path, b"garbage").unwrap();
    assert!(matches!(
        s.get("acme", "API_KEY"),
        Err(SecretError::DoesNotOpen { .. })
    ));
}

#[test]
fn a_ciphertext_copied_to_another_name_does_not_open() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), 1);
    s.set("acme", "API_KEY", VALUE).unwrap();
    s.set("acme", "HARMLESS", b"x").unwrap();
    std::fs::copy(
        secret_file(tmp.path(), "acme", "API_KEY"),
        secret_file(tmp.path(), "acme", "HARMLESS"),
    )
    .unwrap();
    let e = s.get("acme", "HARMLESS").unwrap_err();
    assert!(
        matches!(&e, SecretError::DoesNotOpen { tenant, name, .. } if tenant == "acme" && name == "HARMLESS"),
        "{e:?}"
    );
    assert_eq!(s.get("acme", "API_KEY").unwrap().as_slice(), VALUE);
}

#[test]
fn a_ciphertext_copied_to_another_tenant_does_not_open() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), 1);
    s.set("acme", "API_KEY", VALUE).unwrap();
    s.set("globex", "API_KEY", b"globex's own").unwrap();
    std::fs::copy(
        secret_file(tmp.path(), "acme", "API_KEY"),
        secret_file(tmp.path(), "globex", "API_KEY"),
    )
    .unwrap();
    let e = s.get("globex", "API_KEY").unwrap_err();
    assert!(
        matches!(&e, SecretError::DoesNotOpen { tenant, .. } if tenant == "globex"),
        "{e:?}"
    );
    // Even with acme's whole key ring copied over, the tenant bound into the associated
    // data keeps it shut.
    std::fs::copy(
        secrets_dir(tmp.path(), "acme").join("keyring.json"),
        secrets_dir(tmp.path(), "globex").join("keyring.json"),
    )
    .unwrap();
    let e = s.get("globex", "API_KEY").unwrap_err();
    assert!(
        matches!(&e, SecretError::KeyDoesNotUnwrap { tenant, version: 1, .. } if tenant == "globex"),
        "{e:?}"
    );
}

#[test]
fn a_wrong_kek_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    store(tmp.path(), 1).set("acme", "API_KEY", VALUE).unwrap();
    let wrong = store(tmp.path(), 2);
    let e = wrong.get("acme", "API_KEY").unwrap_err();
    let (right_id, wrong_id) = (Kek::from_bytes([1; 32]).id(), Kek::from_bytes([2; 32]).id());
    assert_eq!(
        e.to_string(),
        format!(
            "the key-encryption key (id {wrong_id}) is not the one tenant `acme`'s secrets were sealed with (id {right_id})"
        )
    );
    // Nor can it add to or rotate that tenant's store.
    assert!(matches!(
        wrong.set("acme", "B", b"x"),
        Err(SecretError::WrongKek { .. })
    ));
    assert!(matches!(
        wrong.rotate("acme"),
        Err(SecretError::WrongKek { .. })
    ));
    // A KEK that claims the right id but is another key (an edited ring) cannot unwrap.
    let ring = secrets_dir(tmp.path(), "acme").join("keyring.json");
    let text = std::fs::read_to_string(&ring)
        .unwrap()
        .replace(&right_id, &wrong_id);
    std::fs::write(&ring, text).unwrap();
    assert!(matches!(
        wrong.get("acme", "API_KEY"),
        Err(SecretError::KeyDoesNotUnwrap { .. })
    ));
}

#[test]
fn rotation_keeps_old_secrets_open_and_seals_new_ones_with_the_new_key() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), 1);
    s.set("acme", "OLD", b"old value").unwrap();
    assert_eq!(s.rotate("acme").unwrap(), 2);
    let new = s.set("acme", "NEW", b"new value").unwrap();
    assert_eq!(new.key_version, 2);
    assert_eq!(s.get("acme", "OLD").unwrap().as_slice(), b"old value");
    assert_eq!(s.get("acme", "NEW").unwrap().as_slice(), b"new value");
    let versions: Vec<(String, u32)> = list(tmp.path(), "acme")
        .unwrap()
        .into_iter()
        .map(|i| (i.name, i.key_version))
        .collect();
    assert_eq!(versions, [("NEW".into(), 2), ("OLD".into(), 1)]);
    // Setting OLD again moves it to the current key.
    assert_eq!(s.set("acme", "OLD", b"old value").unwrap().key_version, 2);
    // A ciphertext sealed with key 2 does not open if its header claims key 1.
    let path = secret_file(tmp.path(), "acme", "NEW");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"key\": 2", "\"key\": 1")).unwrap();
    assert!(matches!(
        s.get("acme", "NEW"),
        Err(SecretError::DoesNotOpen { .. })
    ));
    // Rotating a tenant with no secrets yet makes its first key.
    assert_eq!(s.rotate("globex").unwrap(), 1);
}

#[test]
fn names_that_leave_the_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), 1);
    for (tenant, name) in [
        ("../x", "A"),
        ("acme", "../../x"),
        ("acme", "a/b"),
        ("", "A"),
    ] {
        assert!(
            matches!(s.set(tenant, name, b"v"), Err(SecretError::BadName { .. })),
            "{tenant} {name}"
        );
    }
    assert!(files_under(tmp.path()).is_empty());
    assert!(matches!(
        s.set("acme", "A", b""),
        Err(SecretError::BadValue { len: 0, .. })
    ));
    assert!(matches!(
        s.set("acme", "A", &vec![b'x'; warden_secrets::MAX_VALUE + 1]),
        Err(SecretError::BadValue { .. })
    ));
}
