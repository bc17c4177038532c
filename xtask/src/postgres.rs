//! A throwaway PostgreSQL server (Debian's `postgresql` package) for the tests and
//! benches of the PostgreSQL audit store: `initdb` in a fresh directory owned by
//! `postgres`, the server on a free loopback port with its socket in that directory,
//! trust authentication (loopback only), stopped and removed when dropped.
//!
//! `cargo xtask postgres start` starts one for a developer and prints the variable to
//! export; `cargo xtask postgres stop` stops it.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the tests read the server's URL from.
pub const ENV: &str = "WARDEN_TEST_POSTGRES";
/// Where [`Cluster::start`] puts its server when set.
const DIR_ENV: &str = "WARDEN_TEST_POSTGRES_DIR";
/// Where `cargo xtask postgres start` keeps its server.
const DEV_DIR: &str = "/tmp/warden-postgres";

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub url: String,
    /// Stop and remove the server when dropped (`false` for `xtask postgres start`).
    owned: bool,
}

/// The newest installed server's `bin` directory (`/usr/lib/postgresql/<major>/bin`).
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// `cmd ARGS` as the `postgres` user, in `dir` (which that user can enter).
fn as_postgres(dir: &Path, what: &str, cmd: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot start {what} (runuser)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// A new server in a fresh directory under `parent`.
    pub fn start_in(parent: &Path, owned: bool) -> anyhow::Result<Cluster> {
        let Some(bin) = bin_dir() else {
            bail!("no PostgreSQL server is installed (Debian package `postgresql`)");
        };
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create `{}`", parent.display()))?;
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(parent)
            .status()
            .context("cannot start chown")?;
        if !chown.success() {
            bail!("cannot give `{}` to the postgres user", parent.display());
        }
        let data = parent.join("data");
        let dir = parent.display().to_string();
        as_postgres(
            parent,
            "initdb",
            &bin.join("initdb"),
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
        )?;
        let port = free_port()?;
        let options = format!("-c listen_addresses=127.0.0.1 -p {port} -k {dir}");
        as_postgres(
            parent,
            "pg_ctl start",
            &bin.join("pg_ctl"),
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &parent.join("server.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )?;
        Ok(Cluster {
            dir: parent.to_path_buf(),
            bin,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            owned,
        })
    }

    /// A new server in a fresh temporary directory (`WARDEN_TEST_POSTGRES_DIR` when set:
    /// `.ci/run` names one so its trap can stop the server if xtask itself is killed),
    /// stopped when dropped.
    pub fn start() -> anyhow::Result<Cluster> {
        let parent = match std::env::var_os(DIR_ENV) {
            Some(d) => PathBuf::from(d),
            None => std::env::temp_dir().join(format!("warden-postgres-{}", std::process::id())),
        };
        if parent.join("data").exists() {
            std::fs::remove_dir_all(parent.join("data"))
                .with_context(|| format!("cannot empty `{}`", parent.display()))?;
        }
        Cluster::start_in(&parent, true)
    }

    fn stop(dir: &Path, bin: &Path) -> anyhow::Result<()> {
        as_postgres(
            dir,
            "pg_ctl stop",
            &bin.join("pg_ctl"),
            &[
                "-D",
                &dir.join("data").display().to_string(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        eprintln!("==> stopping the PostgreSQL test server");
        if let Err(e) = Cluster::stop(&self.dir, &self.bin) {
            eprintln!("warning: {e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `cargo xtask postgres start|stop`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let dir = Path::new(DEV_DIR);
    match args.first().map(String::as_str) {
        Some("start") => {
            if dir.join("data/postmaster.pid").exists() {
                bail!("a server already runs in `{DEV_DIR}` (`cargo xtask postgres stop` first)");
            }
            let _ = std::fs::remove_dir_all(dir);
            let c = Cluster::start_in(dir, false)?;
            eprintln!("started; stop it with `cargo xtask postgres stop`");
            println!("export {ENV}={}", c.url);
            Ok(())
        }
        Some("stop") => {
            let Some(bin) = bin_dir() else {
                bail!("no PostgreSQL server is installed");
            };
            Cluster::stop(dir, &bin)?;
            std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove `{DEV_DIR}`"))?;
            Ok(())
        }
        _ => bail!("usage: cargo xtask postgres start|stop"),
    }
}
