//! Bearer tokens: JWTs checked against the keys the file names, each key with the one
//! algorithm its type allows.
//!
//! The algorithm is never taken from the token alone. Each key is loaded with the
//! algorithm of its type (Ed25519 → EdDSA, P-256 → ES256, RSA → RS256, the
//! `hs256-key-file` secret → HS256), and a token is checked only with keys whose
//! algorithm is the one its header names: an RS256 public key is never used as an HMAC
//! secret, and `alg: none` matches nothing. `jsonwebtoken` checks the same again
//! (a validation allows exactly the key's algorithm), then the signature, then the
//! claims: `exp` (required), `nbf` (when present), `iss`, `aud`, and the subject and
//! `tenant` warden needs.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub tenant: String,
}

/// Why a token was refused; [`AuthError::code`] is the API's stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request carries no `Authorization: Bearer` token")]
    Missing,
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's algorithm `{0}` is not accepted for these keys")]
    Algorithm(String),
    #[error("no key with the token's `kid`")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    #[error("the token's issuer is not the one this server accepts")]
    Issuer,
    #[error("the token's audience is not this server")]
    Audience,
    #[error("the token lacks the `{0}` claim")]
    MissingClaim(String),
    #[error("the token names no tenant (`tenant` claim)")]
    NoTenant,
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::Algorithm(_) => "algorithm_not_allowed",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Signature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::Issuer => "wrong_issuer",
            AuthError::Audience => "wrong_audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::NoTenant => "no_tenant",
        }
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys tokens are checked with, and the issuer and audience they must name.
pub struct Verifier {
    issuer: String,
    audience: String,
    keys: Vec<Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|k| (k.kid.clone(), k.alg))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

impl Verifier {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Verifier {
        Verifier {
            issuer: issuer.into(),
            audience: audience.into(),
            keys: Vec::new(),
        }
    }

    /// Adds every key of a JSON Web Key Set. Key types other than Ed25519 (`OKP`),
    /// P-256 (`EC`) and RSA are refused, as is a key whose `alg` names another
    /// algorithm than its type allows.
    pub fn add_jwks(&mut self, json: &str) -> Result<usize, String> {
        let set: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let keys = set
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("no `keys` array")?;
        for (i, k) in keys.iter().enumerate() {
            let name = k
                .get("kid")
                .and_then(|v| v.as_str())
                .map_or_else(|| format!("key {i}"), |kid| format!("key `{kid}`"));
            let s = |f: &str| k.get(f).and_then(|v| v.as_str());
            let alg = match (s("kty"), s("crv")) {
                (Some("OKP"), Some("Ed25519")) => Algorithm::EdDSA,
                (Some("EC"), Some("P-256")) => Algorithm::ES256,
                (Some("RSA"), _) => Algorithm::RS256,
                (kty, crv) => {
                    return Err(format!(
                        "{name}: key type {} is not accepted (Ed25519, P-256 or RSA)",
                        match (kty, crv) {
                            (Some(t), Some(c)) => format!("`{t}` `{c}`"),
                            (Some(t), None) => format!("`{t}`"),
                            _ => "missing".into(),
                        }
                    ));
                }
            };
            if let Some(a) = s("alg")
                && a != alg_name(alg)
            {
                return Err(format!(
                    "{name}: `alg` is `{a}`, but the key's type allows `{}` only",
                    alg_name(alg)
                ));
            }
            if s("d").is_some() {
                return Err(format!(
                    "{name} holds a private key (`d`); the server needs the public part only"
                ));
            }
            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(k.clone()).map_err(|e| format!("{name}: {e}"))?;
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{name}: {e}"))?;
            self.keys.push(Key {
                kid: s("kid").map(str::to_string),
                alg,
                key,
            });
        }
        Ok(keys.len())
    }

    /// Accepts HS256 tokens signed with `secret` (at least 32 bytes).
    pub fn add_hs256(&mut self, secret: &[u8]) -> Result<(), String> {
        if secret.len() < 32 {
            return Err(format!(
                "an HS256 secret is at least 32 bytes; this one is {}",
                secret.len()
            ));
        }
        self.keys.push(Key {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The identity a token speaks for, or why it does not.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let mut parts = token.split('.');
        let (Some(head), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::Malformed)?;
        let alg = header.alg.unwrap_or_default();
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let candidates: Vec<&Key> = candidates
            .into_iter()
            .filter(|k| alg_name(k.alg) == alg)
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::Algorithm(alg));
        }
        let mut last = AuthError::Signature;
        for k in candidates {
            let mut v = Validation::new(k.alg);
            v.algorithms = vec![k.alg];
            v.leeway = LEEWAY_SECS;
            v.validate_exp = true;
            v.validate_nbf = true;
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.audience]);
            v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(data) => {
                    let subject = data
                        .claims
                        .sub
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| AuthError::MissingClaim("sub".into()))?;
                    let tenant = data
                        .claims
                        .tenant
                        .filter(|t| !t.is_empty())
                        .ok_or(AuthError::NoTenant)?;
                    return Ok(Identity { subject, tenant });
                }
                Err(e) => {
                    last = match e.kind() {
                        // Another key of the same algorithm may still verify it.
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidIssuer => AuthError::Issuer,
                        ErrorKind::InvalidAudience => AuthError::Audience,
                        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
                        ErrorKind::InvalidAlgorithm => AuthError::Algorithm(alg.clone()),
                        _ => AuthError::Malformed,
                    };
                    // Signature checked, claims refused: no other key changes that.
                    return Err(last);
                }
            }
        }
        Err(last)
    }
}

fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        Algorithm::HS256 => "HS256",
        // Never loaded (see `add_jwks`, `add_hs256`).
        _ => "",
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or(AuthError::Missing)?;
    let (scheme, token) = h.split_once(' ').ok_or(AuthError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader, encode};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &JwtHeader::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn verifier() -> Verifier {
        let mut v = Verifier::new("iss", "aud");
        v.add_hs256(SECRET).unwrap();
        v
    }

    #[test]
    fn claims_are_checked_after_the_signature() {
        let v = verifier();
        let ok = serde_json::json!({"iss": "iss", "aud": "aud", "sub": "a", "tenant": "t", "exp": now() + 60});
        assert_eq!(
            v.verify(&token(ok.clone())),
            Ok(Identity {
                subject: "a".into(),
                tenant: "t".into()
            })
        );
        let with = |k: &str, val: serde_json::Value| {
            let mut c = ok.clone();
            c[k] = val;
            v.verify(&token(c)).unwrap_err().code()
        };
        assert_eq!(with("exp", (now() - 3600).into()), "token_expired");
        assert_eq!(with("nbf", (now() + 3600).into()), "token_not_yet_valid");
        assert_eq!(with("iss", "other".into()), "wrong_issuer");
        assert_eq!(with("aud", "other".into()), "wrong_audience");
        assert_eq!(with("tenant", "".into()), "no_tenant");
        let mut no_sub = ok.clone();
        no_sub.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            v.verify(&token(no_sub)).unwrap_err().code(),
            "missing_claim"
        );
        let mut no_exp = ok.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            v.verify(&token(no_exp)).unwrap_err().code(),
            "missing_claim"
        );
    }

    #[test]
    fn headers_that_name_nothing_loaded_are_refused() {
        let v = verifier();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"a"}"#));
        assert_eq!(v.verify(&none).unwrap_err().code(), "algorithm_not_allowed");
        let rs = format!("{}.{}.AAAA", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(v.verify(&rs).unwrap_err().code(), "algorithm_not_allowed");
        let kid = format!("{}.{}.AAAA", b64(r#"{"alg":"HS256","kid":"x"}"#), b64("{}"));
        assert_eq!(v.verify(&kid).unwrap_err().code(), "unknown_key");
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.x"] {
            assert_eq!(
                v.verify(bad).unwrap_err().code(),
                "malformed_token",
                "{bad}"
            );
        }
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(bearer(None), Err(AuthError::Missing));
    }

    #[test]
    fn jwks_keys_get_the_algorithm_of_their_type_only() {
        let mut v = Verifier::new("i", "a");
        let okp = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"e","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert_eq!(v.add_jwks(okp), Ok(1));
        let lying = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"HS256","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert!(
            v.add_jwks(lying)
                .unwrap_err()
                .contains("allows `EdDSA` only")
        );
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        assert!(v.add_jwks(oct).unwrap_err().contains("is not accepted"));
        assert!(v.add_hs256(b"short").is_err());
    }
}
