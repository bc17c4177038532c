//! `cargo xtask test`: the whole test suite, as CI runs it. Installs the Debian packages
//! the tests use when they are missing (as root), then formatting, lints, and every test
//! with snapshots checked (a changed or new snapshot fails).

use anyhow::{Context, bail};
use std::process::Command;

/// Debian packages the test suite drives, and the command that shows each is present.
const PACKAGES: &[(&str, &str)] = &[
    ("busybox-static", "/bin/busybox"),
    ("crun", "/usr/bin/crun"),
    ("runc", "/usr/sbin/runc"),
    ("skopeo", "/usr/bin/skopeo"),
    ("umoci", "/usr/bin/umoci"),
    ("nix-bin", "/usr/bin/nix-store"),
    ("tinyproxy", "/usr/bin/tinyproxy"),
    ("iproute2", "/usr/sbin/ip"),
    ("util-linux", "/usr/bin/unshare"),
    ("e2fsprogs", "/usr/sbin/mkfs.ext4"),
    ("bsdutils", "/usr/bin/script"),
    ("perl-base", "/usr/bin/perl"),
    ("python3", "/usr/bin/python3"),
    ("nodejs", "/usr/bin/node"),
    // The inference tests install the official Python SDKs and the agents from PyPI and
    // npm once into the build directory.
    ("python3-pip", "/usr/bin/pip3"),
    ("npm", "/usr/bin/npm"),
    ("git", "/usr/bin/git"),
];

fn step(what: &str, cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("==> {what}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| !std::path::Path::new(probe).exists())
        .map(|(p, _)| *p)
        .collect();
    // The PostgreSQL audit store's tests run against a real server (its binaries live
    // under a versioned directory, hence no fixed probe).
    if crate::postgres::bin_dir().is_none() {
        missing.push("postgresql");
    }
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "the tests need root and these Debian packages: {}",
                missing.join(" ")
            );
        }
        step(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        step(
            &format!("apt-get install {}", missing.join(" ")),
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("==> third_party: each vendored crate is its release plus its patches");
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    crate::third_party::verify(&workspace, &cargo)?;
    step(
        "cargo fmt --check",
        Command::new(&cargo).args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "cargo clippy",
        Command::new(&cargo).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    eprintln!("==> starting a PostgreSQL server for the audit tests");
    // Stopped when dropped: at the end, on failure too.
    let pg = crate::postgres::Cluster::start()?;
    step(
        "cargo test",
        Command::new(&cargo)
            .args(["test", "--workspace", "--no-fail-fast"])
            .env(crate::postgres::ENV, &pg.url)
            .env("INSTA_UPDATE", "no")
            .env("INSTA_FORCE_PASS", "0")
            .env("CI", "true"),
    )?;
    Ok(())
}
