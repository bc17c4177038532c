//! `warden secret set|ls|rm|rotate`: a tenant's secrets, sealed under the state directory
//! with a key-encryption key kept elsewhere (`warden-secrets`).

use crate::Exit;
use crate::deploy::paths::Paths;
use crate::ui::Out;
use std::io::Read;
use warden_secrets::{Kek, MAX_VALUE, SecretError, Store, Zeroizing};

fn store(paths: &Paths) -> Result<Store, SecretError> {
    Ok(Store::new(
        &paths.state_dir,
        Kek::from_env(&paths.state_dir)?,
    ))
}

fn user_error(e: &SecretError) -> bool {
    matches!(
        e,
        SecretError::NoKek
            | SecretError::KekFile { .. }
            | SecretError::BadName { .. }
            | SecretError::NotFound { .. }
            | SecretError::BadValue { .. }
            | SecretError::WrongKek { .. }
    )
}

fn fail(e: &SecretError) -> anyhow::Result<Exit> {
    eprintln!("error: {e}");
    Ok(if user_error(e) {
        Exit::User
    } else {
        Exit::Internal
    })
}

/// The value from stdin, without one trailing newline (what `echo` and a here-string
/// add); at most [`MAX_VALUE`] bytes.
fn read_value() -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    std::io::stdin()
        .take(MAX_VALUE as u64 + 2)
        .read_to_end(&mut buf)
        .map_err(|source| SecretError::Io {
            op: "read",
            path: "stdin".into(),
            source,
        })?;
    let len = buf.len();
    if buf.ends_with(b"\r\n") {
        buf.truncate(len - 2);
    } else if buf.ends_with(b"\n") {
        buf.truncate(len - 1);
    }
    Ok(buf)
}

pub fn set(out: &Out, tenant: &str, name: &str) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    // Names first: a bad name is refused before anything is read or unwrapped.
    if let Err(e) = warden_secrets::check_tenant(tenant).and(warden_secrets::check_name(name)) {
        return fail(&e);
    }
    let store = match store(&paths) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let value = match read_value() {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    match store.set(tenant, name, &value) {
        Ok(o) => {
            crate::commands::audit::record_cli(
                None,
                warden_audit::Detail::SecretSet {
                    name: name.to_string(),
                    key_version: o.key_version,
                },
                Some(tenant),
                None,
            );
            if out.json {
                out.json(&serde_json::json!({"tenant": tenant, "name": name, "key_version": o.key_version, "replaced": o.replaced}));
            } else {
                eprintln!(
                    "{} secret `{name}` of tenant `{tenant}` (data key {})",
                    if o.replaced { "replaced" } else { "stored" },
                    o.key_version
                );
            }
            Ok(Exit::Ok)
        }
        Err(e) => fail(&e),
    }
}

pub fn ls(out: &Out, tenant: &str) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    let list = match warden_secrets::list(&paths.state_dir, tenant) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    if out.json {
        out.json(&list);
        return Ok(Exit::Ok);
    }
    if list.is_empty() {
        eprintln!("tenant `{tenant}` has no secrets");
        return Ok(Exit::Ok);
    }
    println!("{:<32}  {:>3}  sealed", "name", "key");
    for s in list {
        println!(
            "{:<32}  {:>3}  {}",
            s.name,
            s.key_version,
            crate::commands::approvals::date(s.sealed_at)
        );
    }
    Ok(Exit::Ok)
}

pub fn rm(out: &Out, tenant: &str, name: &str) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    // Removing needs no key: a lost KEK must not keep a secret's file around.
    match warden_secrets::remove(&paths.state_dir, tenant, name) {
        Ok(true) => {
            crate::commands::audit::record_cli(
                None,
                warden_audit::Detail::SecretRemoved {
                    name: name.to_string(),
                },
                Some(tenant),
                None,
            );
            if out.json {
                out.json(&serde_json::json!({"tenant": tenant, "name": name, "removed": true}));
            } else {
                eprintln!("removed secret `{name}` of tenant `{tenant}`");
            }
            Ok(Exit::Ok)
        }
        Ok(false) => fail(&SecretError::NotFound {
            tenant: tenant.to_string(),
            name: name.to_string(),
        }),
        Err(e) => fail(&e),
    }
}

pub fn rotate(out: &Out, tenant: &str) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    let store = match store(&paths) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    match store.rotate(tenant) {
        Ok(v) => {
            crate::commands::audit::record_cli(
                None,
                warden_audit::Detail::KeyRotated { key_version: v },
                Some(tenant),
                None,
            );
            if out.json {
                out.json(&serde_json::json!({"tenant": tenant, "key_version": v}));
            } else {
                eprintln!(
                    "tenant `{tenant}` seals new secrets with data key {v}; secrets sealed before keep opening with theirs"
                );
            }
            Ok(Exit::Ok)
        }
        Err(e) => fail(&e),
    }
}

/// The `NAME=value` entries of a sandbox's `env NAME secret=SECRET` nodes, read from its
/// tenant's store now (each time the sandbox starts). They go to the runtime in memory
/// only ([`warden_runtime::RunOptions::secret_env`]).
pub fn resolve_env(
    state_dir: &std::path::Path,
    sandbox: &str,
    tenant: Option<&str>,
    secret_env: &[warden_wire::sandbox::SecretEnv],
) -> Result<Vec<String>, String> {
    if secret_env.is_empty() {
        return Ok(Vec::new());
    }
    let Some(tenant) = tenant else {
        return Err(format!(
            "sandbox `{sandbox}` reads secrets but belongs to no tenant"
        ));
    };
    let kek = Kek::from_env(state_dir).map_err(|e| e.to_string())?;
    let store = Store::new(state_dir, kek);
    let mut out = Vec::with_capacity(secret_env.len());
    for e in secret_env {
        let value = store
            .get(tenant, &e.secret)
            .map_err(|err| format!("sandbox `{sandbox}`: env `{}`: {err}", e.name))?;
        let text = match std::str::from_utf8(&value) {
            Ok(t) if !t.contains('\0') => t,
            _ => {
                return Err(format!(
                    "sandbox `{sandbox}`: env `{}`: secret `{}` of tenant `{tenant}` is not text without NUL bytes, which an environment variable needs",
                    e.name, e.secret
                ));
            }
        };
        out.push(format!("{}={text}", e.name));
    }
    Ok(out)
}
