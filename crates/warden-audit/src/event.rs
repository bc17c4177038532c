//! The events: one envelope (who, when, which tenant and sandbox) around a typed detail.

use serde::{Deserialize, Serialize};

/// The version of [`Event`] this crate writes and reads.
pub const EVENT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub version: u32,
    /// Unique: 32 hex digits, random for recorded events, derived from the file and
    /// offset for imported egress decisions (so an import is never counted twice).
    pub id: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub tenant: Option<String>,
    pub sandbox: Option<String>,
    /// Who: the token's subject for the control API, the user behind `sudo` (else the
    /// login name) for the CLI, `proxy` for egress decisions, `anonymous` for refused
    /// logins.
    pub actor: String,
    pub detail: Detail,
}

/// What happened. `kind` in JSON and in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Detail {
    /// A pending destination became a rule in the file.
    ApprovalApproved {
        approval: String,
        destination: String,
        rule: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order: Option<String>,
    },
    /// A pending destination was refused for good.
    ApprovalDenied {
        approval: String,
        destination: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order: Option<String>,
    },
    OrderGranted {
        order: String,
    },
    OrderRevoked {
        order: String,
    },
    /// A request to the control API without a valid token.
    LoginRefused {
        /// The error code answered (`token_expired`, `bad_signature`, ...).
        code: String,
        method: String,
        path: String,
        remote: String,
    },
    SecretSet {
        name: String,
        key_version: u32,
    },
    SecretRemoved {
        name: String,
    },
    KeyRotated {
        key_version: u32,
    },
    /// A decision of a sandbox's egress proxy, imported from its `audit.jsonl`.
    Egress {
        decision: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Detail {
    /// The kind's name, as in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Detail::ApprovalApproved { .. } => "approval-approved",
            Detail::ApprovalDenied { .. } => "approval-denied",
            Detail::OrderGranted { .. } => "order-granted",
            Detail::OrderRevoked { .. } => "order-revoked",
            Detail::LoginRefused { .. } => "login-refused",
            Detail::SecretSet { .. } => "secret-set",
            Detail::SecretRemoved { .. } => "secret-removed",
            Detail::KeyRotated { .. } => "key-rotated",
            Detail::Egress { .. } => "egress",
        }
    }

    /// Every kind, for messages and argument checks.
    pub const KINDS: &'static [&'static str] = &[
        "approval-approved",
        "approval-denied",
        "order-granted",
        "order-revoked",
        "login-refused",
        "secret-set",
        "secret-removed",
        "key-rotated",
        "egress",
    ];
}

impl Event {
    /// A new event now, with a random id.
    pub fn new(
        actor: impl Into<String>,
        tenant: Option<&str>,
        sandbox: Option<&str>,
        detail: Detail,
    ) -> Event {
        Event {
            version: EVENT_VERSION,
            id: random_id(),
            at_ms: now_ms(),
            tenant: tenant.map(str::to_string),
            sandbox: sandbox.map(str::to_string),
            actor: actor.into(),
            detail,
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 128 random bits as hex; from the clock, pid and a counter if the kernel has no
/// randomness to give (ids need to be unique, not secret).
fn random_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom fills the buffer it is given, up to its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes[..8].copy_from_slice(&nanos.to_le_bytes());
        let c = COUNTER.fetch_add(1, Ordering::Relaxed) ^ (u64::from(std::process::id()) << 40);
        bytes[8..].copy_from_slice(&c.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_kind_and_read_back() {
        let e = Event::new(
            "alice",
            Some("acme"),
            Some("agent"),
            Detail::OrderGranted {
                order: "deploy".into(),
            },
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["detail"]["kind"], "order-granted");
        assert_eq!(json["version"], 1);
        assert_eq!(e.id.len(), 32);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        for k in Detail::KINDS {
            assert!(!k.is_empty());
        }
        assert_ne!(Event::new("a", None, None, e.detail.clone()).id, e.id);
    }
}
