//! `cargo xtask test` checks the vendored crates: each directory of `third_party/` must be
//! its crates.io release (fetched by cargo, as any dependency) with the patch files of
//! `third_party/patches/<crate>/` applied in name order, and nothing else. A change made
//! in the tree but not in a patch fails the check.

use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files of a published `.crate` that are not vendored: cargo's packaging metadata.
const NOT_VENDORED: &[&str] = &[".cargo_vcs_info.json", "Cargo.lock"];

fn field(manifest: &str, key: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package
            && let Some(rest) = line.strip_prefix(key)
            && let Some(v) = rest.trim_start().strip_prefix('=')
        {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

fn files(root: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root)?.to_path_buf();
                if !NOT_VENDORED.iter().any(|n| rel == Path::new(n)) {
                    out.insert(rel);
                }
            }
        }
    }
    Ok(out)
}

/// Checks every vendored crate; the error lists each difference.
pub fn verify(workspace: &Path, cargo: &str) -> anyhow::Result<()> {
    let third_party = workspace.join("third_party");
    let mut crates = Vec::new();
    for e in std::fs::read_dir(&third_party)? {
        let p = e?.path();
        if p.is_dir() && p.join("Cargo.toml").exists() {
            let manifest = std::fs::read_to_string(p.join("Cargo.toml"))?;
            let name = field(&manifest, "name").context("vendored crate without a name")?;
            let version =
                field(&manifest, "version").context("vendored crate without a version")?;
            crates.push((p, name, version));
        }
    }
    crates.sort();
    // A throwaway package that depends on the exact releases: `cargo fetch` puts their
    // `.crate` files in cargo's cache, through the registry cargo already uses.
    let tmp = std::env::temp_dir().join(format!("warden-third-party-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("src"))?;
    let mut manifest = String::from(
        "[package]\nname = \"third-party-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n\n[dependencies]\n",
    );
    for (_, name, version) in &crates {
        manifest.push_str(&format!(
            "{name} = {{ version = \"={version}\", default-features = false }}\n"
        ));
    }
    std::fs::write(tmp.join("Cargo.toml"), manifest)?;
    std::fs::write(tmp.join("src/lib.rs"), "")?;
    let st = Command::new(cargo)
        .args(["fetch", "--quiet", "--manifest-path"])
        .arg(tmp.join("Cargo.toml"))
        .status()
        .context("cannot run cargo fetch")?;
    if !st.success() {
        bail!("cargo fetch of the vendored crates' releases failed");
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("no CARGO_HOME or HOME")?;
    let mut problems = Vec::new();
    for (dir, name, version) in &crates {
        let file = format!("{name}-{version}.crate");
        let found = std::fs::read_dir(cargo_home.join("registry/cache"))?
            .flatten()
            .map(|d| d.path().join(&file))
            .find(|p| p.exists())
            .with_context(|| format!("{file} is not in cargo's cache after fetching"))?;
        let out = tmp.join("unpacked");
        std::fs::create_dir_all(&out)?;
        let st = Command::new("tar")
            .arg("xzf")
            .arg(&found)
            .arg("-C")
            .arg(&out)
            .status()?;
        if !st.success() {
            bail!("cannot unpack {}", found.display());
        }
        let released = out.join(format!("{name}-{version}"));
        let patches_dir = third_party.join("patches").join(name);
        let mut patches: Vec<PathBuf> = std::fs::read_dir(&patches_dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        patches.sort();
        for p in &patches {
            let st = Command::new("git")
                .args(["apply", "-p1"])
                .arg(p)
                .current_dir(&released)
                .status()?;
            if !st.success() {
                problems.push(format!(
                    "{}: does not apply to {name} {version}",
                    p.display()
                ));
            }
        }
        let (want, have) = (files(&released)?, files(dir)?);
        for f in want.symmetric_difference(&have) {
            let side = if want.contains(f) {
                "missing from the vendored tree"
            } else {
                "not in the release (add it through a patch)"
            };
            problems.push(format!("{name}: `{}` {side}", f.display()));
        }
        for f in want.intersection(&have) {
            if std::fs::read(released.join(f))? != std::fs::read(dir.join(f))? {
                problems.push(format!(
                    "{name}: `{}` differs from the release with the patches applied (put the change in a patch under third_party/patches/{name}/)",
                    f.display()
                ));
            }
        }
        println!(
            "{name} {version}: the release plus {} patch(es)",
            patches.len()
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if !problems.is_empty() {
        bail!(
            "third_party/ is not its releases plus patches:\n{}",
            problems.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_fields_only() {
        let m = "[package]\nname = \"libcgroups\"\nversion = \"0.7.0\"\n\n[dependencies.x]\nversion = \"1\"\n";
        assert_eq!(field(m, "name").as_deref(), Some("libcgroups"));
        assert_eq!(field(m, "version").as_deref(), Some("0.7.0"));
        assert_eq!(field("[dependencies]\nversion = \"1\"\n", "version"), None);
    }
}
