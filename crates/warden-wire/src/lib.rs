//! Wire types: the one serialized boundary between the compiler and everything that
//! enforces its output (warden-init, the egress proxy, the inference router, the image
//! builder, the runtime). Nothing here knows about KDL.
//!
//! Every top-level type carries `version`; a reader refuses a version it does not know.
//! The evaluation functions live beside the types so that `warden test` and the
//! enforcing components can never disagree about what a rule means.

pub mod detect;
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

/// Dynamic programming over (pattern position, text position): `ok[j]` says whether the
/// pattern from token `i` on matches the text from byte `j` on. Quadratic at worst
/// (patterns and texts are short: paths and model names), never exponential, and
/// correct for any mix of `*` and `**` (a backtracking matcher that keeps only the last
/// star forgets an earlier `**` once a later `*` is seen).
fn glob_inner(p: &[u8], t: &[u8]) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Lit(u8),
        One,
        Star,
        DoubleStar,
    }
    let mut toks = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                toks.push(Tok::DoubleStar);
                i += 2;
            }
            b'*' => {
                toks.push(Tok::Star);
                i += 1;
            }
            b'?' => {
                toks.push(Tok::One);
                i += 1;
            }
            c => {
                toks.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    // `next[j]`: tokens after the current one match `t[j..]`.
    let mut next = vec![false; t.len() + 1];
    next[t.len()] = true;
    let mut cur = vec![false; t.len() + 1];
    for tok in toks.iter().rev() {
        for j in (0..=t.len()).rev() {
            let c = t.get(j).copied();
            cur[j] = match (*tok, c) {
                (Tok::Lit(l), Some(c)) => l == c && next[j + 1],
                (Tok::One, Some(c)) => c != b'/' && next[j + 1],
                (Tok::Lit(_) | Tok::One, None) => false,
                (Tok::Star, Some(c)) => next[j] || (c != b'/' && cur[j + 1]),
                (Tok::DoubleStar, Some(_)) => next[j] || cur[j + 1],
                (Tok::Star | Tok::DoubleStar, None) => next[j],
            };
        }
        std::mem::swap(&mut cur, &mut next);
    }
    next[0]
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
        // An earlier `**` survives a later `*`.
        assert!(glob_match("/api/**/file*.json", "/api/a/file/b/file1.json"));
        assert!(!glob_match(
            "/api/**/file*.json",
            "/api/a/file/b/file1/x.json"
        ));
    }

    /// The definition, written as plainly as possible.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|k| reference(rest, &t[k..])),
            [b'*', rest @ ..] => (0..=t.len())
                .take_while(|k| !t[..*k].contains(&b'/'))
                .any(|k| reference(rest, &t[k..])),
            [b'?', rest @ ..] => t.first().is_some_and(|c| *c != b'/') && reference(rest, &t[1..]),
            [c, rest @ ..] => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    #[test]
    fn globs_agree_with_the_reference_on_generated_cases() {
        // xorshift64*: deterministic, no dependency.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: usize| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        };
        const PAT: &[&str] = &["a", "b", "/", "*", "**", "?", "file", ".json"];
        const TXT: &[&str] = &["a", "b", "/", "file", "1", ".json"];
        let mut matched = 0;
        for _ in 0..20_000 {
            let p: String = (0..rand(7)).map(|_| PAT[rand(PAT.len())]).collect();
            let t: String = (0..rand(9)).map(|_| TXT[rand(TXT.len())]).collect();
            let want = reference(p.as_bytes(), t.as_bytes());
            assert_eq!(glob_match(&p, &t), want, "pattern {p:?} text {t:?}");
            matched += usize::from(want);
        }
        // The generator must exercise both outcomes.
        assert!(matched > 1000, "only {matched} matches");
    }
}
