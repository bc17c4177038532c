//! Nix store closures: `nix-store -qR` for `nix PATHS`, and the `exportReferencesGraph`
//! file format for `nix-closure FILE`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::ImageError;

/// The closure of `paths` as reported by `nix-store -qR`, sorted and deduplicated.
pub(crate) fn query_closure(nix_store: &Path, paths: &[String]) -> Result<Vec<String>, ImageError> {
    let shown = nix_store.display().to_string();
    let out = Command::new(nix_store)
        .arg("--query")
        .arg("--requisites")
        .args(paths)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ImageError::NixMissing(format!("cannot run `{shown}`: {e}"))
            } else {
                ImageError::Nix {
                    command: format!("{shown} --query --requisites"),
                    stderr: e.to_string(),
                }
            }
        })?;
    if !out.status.success() {
        return Err(ImageError::Nix {
            command: format!("{shown} --query --requisites {}", paths.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Parse an `exportReferencesGraph` file: blocks of
///
/// ```text
/// /nix/store/...-name     the store path
/// /nix/store/...-name.drv its deriver (may be an empty line)
/// 2                       the number of references
/// /nix/store/...-dep      one line per reference
/// ```
///
/// Returns every store path named (as a path or a reference), sorted and deduplicated.
pub fn parse_closure_file(text: &str, file: &Path) -> Result<Vec<String>, ImageError> {
    let err = |line: usize, reason: String| ImageError::NixClosure {
        path: PathBuf::from(file),
        line,
        reason,
    };
    let check = |line: usize, p: &str| -> Result<String, ImageError> {
        if p.starts_with('/') && !p.split('/').any(|c| c == "..") {
            Ok(p.to_string())
        } else {
            Err(err(
                line,
                format!("expected an absolute store path, found `{p}`"),
            ))
        }
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1; // blank lines between blocks
            continue;
        }
        out.push(check(i + 1, lines[i].trim())?);
        let deriver = lines
            .get(i + 1)
            .ok_or_else(|| err(i + 2, "missing deriver line".into()))?
            .trim();
        if !deriver.is_empty() {
            check(i + 2, deriver)?;
        }
        let count_line = lines
            .get(i + 2)
            .ok_or_else(|| err(i + 3, "missing reference count".into()))?
            .trim();
        let count: usize = count_line.parse().map_err(|_| {
            err(
                i + 3,
                format!("expected a reference count, found `{count_line}`"),
            )
        })?;
        for r in 0..count {
            let at = i + 3 + r;
            let line = lines
                .get(at)
                .ok_or_else(|| err(at + 1, format!("expected {count} references, found {r}")))?;
            out.push(check(at + 1, line.trim())?);
        }
        i += 3 + count;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<String>, String> {
        parse_closure_file(s, Path::new("graph")).map_err(|e| e.to_string())
    }

    #[test]
    fn two_paths_one_reference() {
        let text = "/nix/store/bbb-u\n/nix/store/xxx-u.drv\n1\n/nix/store/aaa-t\n/nix/store/aaa-t\n/nix/store/yyy-t.drv\n0\n";
        assert_eq!(
            parse(text).unwrap(),
            ["/nix/store/aaa-t", "/nix/store/bbb-u"]
        );
    }

    #[test]
    fn empty_deriver_and_self_reference() {
        let text = "/nix/store/aaa-src\n\n1\n/nix/store/aaa-src\n";
        assert_eq!(parse(text).unwrap(), ["/nix/store/aaa-src"]);
    }

    #[test]
    fn empty_file_is_empty_closure() {
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("/nix/store/a\n/nix/store/a.drv\nmany\n").unwrap_err(),
            "malformed nix closure file `graph` line 3: expected a reference count, found `many`"
        );
        assert_eq!(
            parse("/nix/store/a\n/nix/store/a.drv\n2\n/nix/store/b\n").unwrap_err(),
            "malformed nix closure file `graph` line 5: expected 2 references, found 1"
        );
        assert_eq!(
            parse("/nix/store/a\n").unwrap_err(),
            "malformed nix closure file `graph` line 2: missing deriver line"
        );
        assert_eq!(
            parse("relative\n\n0\n").unwrap_err(),
            "malformed nix closure file `graph` line 1: expected an absolute store path, found `relative`"
        );
        assert_eq!(
            parse("/nix/store/a\n\n1\n/nix/../etc\n").unwrap_err(),
            "malformed nix closure file `graph` line 4: expected an absolute store path, found `/nix/../etc`"
        );
    }
}
