//! Wire types: the one serialized boundary between the compiler and everything that
//! enforces its output (warden-init, the egress proxy, the inference router, the image
//! builder, the runtime). Nothing here knows about KDL.
//!
//! Every top-level type carries `version`; a reader refuses a version it does not know.
//! The evaluation functions live beside the types so that `warden test` and the
//! enforcing components can never disagree about what a rule means.

pub mod egress;
pub mod image;
pub mod inference;
pub mod init;
pub mod orders;
pub mod sandbox;
pub mod seccomp;

use serde::Serialize;

/// The wire format version written by this build of warden.
pub const WIRE_VERSION: u32 = 1;

/// Canonical JSON: object keys sorted (serde_json's `Value` map is a `BTreeMap`),
/// two-space indentation, trailing newline. Same value, same bytes.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = serde_json::to_string_pretty(&value)?;
    out.push('\n');
    Ok(out)
}

/// Glob match where `*` matches any run of characters except `/`, `**` matches any run
/// including `/`, and `?` matches one character. Used for HTTP paths and model names.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob_inner(pattern.as_bytes(), text.as_bytes())
}

fn glob_inner(p: &[u8], t: &[u8]) -> bool {
    // Iterative matcher with backtracking over the last star; `**` may cross `/`.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize, bool)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            let double = pi + 1 < p.len() && p[pi + 1] == b'*';
            pi += if double { 2 } else { 1 };
            star = Some((pi, ti, double));
            continue;
        }
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) && !(p[pi] == b'?' && t[ti] == b'/') {
            pi += 1;
            ti += 1;
            continue;
        }
        match star {
            Some((sp, st, double)) if double || t[st] != b'/' => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1, double));
            }
            _ => return false,
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("/simple/**", "/simple/requests/"));
        assert!(glob_match("/simple/*", "/simple/requests"));
        assert!(!glob_match("/simple/*", "/simple/requests/x"));
        assert!(glob_match("claude-*", "claude-sonnet-4"));
        assert!(glob_match("*", "gpt-4o"));
        assert!(!glob_match("claude-*", "gpt-4o"));
        assert!(glob_match("/a?c", "/abc"));
        assert!(!glob_match("/a?c", "/a/c"));
        assert!(glob_match("**", "/any/thing"));
        assert!(!glob_match("/x", "/x/y"));
    }
}
