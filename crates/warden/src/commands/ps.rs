//! `warden ps` and `warden logs`: what the applied sandboxes are doing.

use crate::Exit;
use crate::deploy::control::{self, Phase, Status};
use crate::deploy::logs;
use crate::deploy::paths::Paths;
use crate::deploy::state::{self, Entry, State};
use crate::ui::Out;
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// One applied sandbox as `warden ps` (and the control API) shows it.
#[derive(Serialize)]
pub struct Row {
    pub name: String,
    pub tenant: Option<String>,
    pub state: String,
    pub pid: Option<i32>,
    pub container_id: Option<String>,
    pub supervisor_pid: Option<i32>,
    pub supervisor_rss_bytes: Option<u64>,
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<i32>,
    pub image: String,
    pub image_digest: String,
    pub memory_bytes: Option<u64>,
    pub file: String,
}

/// Every applied sandbox, by name.
pub fn rows(paths: &Paths) -> Result<Vec<Row>, String> {
    let st = State::load(paths)?;
    Ok(st.sandboxes.iter().map(|(n, e)| row(paths, n, e)).collect())
}

fn row(paths: &Paths, name: &str, e: &Entry) -> Row {
    let status: Option<Status> = e
        .supervisor
        .filter(|p| p.alive())
        .and_then(|_| control::status(&paths.socket(name)).ok());
    let (state, pid, uptime, restarts, last_exit, memory) = match &status {
        None => (
            "dead (supervisor gone)".to_string(),
            None,
            None,
            0,
            None,
            None,
        ),
        Some(s) => {
            let state = match (&s.phase, s.last_exit) {
                (Phase::Exited, Some(c)) => format!("exited ({c})"),
                (Phase::Exited, None) => match &s.error {
                    Some(_) => "failed to start".to_string(),
                    None => "exited".to_string(),
                },
                (Phase::Running, _) => "running".to_string(),
                (Phase::Restarting, _) => "restarting".to_string(),
                (Phase::Starting, _) => "starting".to_string(),
                (Phase::Stopping, _) => "stopping".to_string(),
            };
            let uptime = match s.phase {
                Phase::Running => s.started_at.map(|t| state::now().saturating_sub(t)),
                _ => None,
            };
            (
                state,
                s.pid,
                uptime,
                s.restarts,
                s.last_exit,
                s.memory_bytes,
            )
        }
    };
    Row {
        name: name.to_string(),
        tenant: e.tenant.clone(),
        state,
        pid,
        container_id: status
            .as_ref()
            .filter(|s| s.phase == Phase::Running)
            .and_then(|s| s.container_id.clone()),
        supervisor_pid: e.supervisor.filter(|p| p.alive()).map(|p| p.pid),
        supervisor_rss_bytes: e
            .supervisor
            .filter(|p| p.alive())
            .and_then(|p| crate::deploy::procs::rss_bytes(p.pid)),
        uptime_secs: uptime,
        restarts,
        last_exit,
        image: e.image.clone(),
        image_digest: e.image_digest.clone(),
        memory_bytes: memory,
        file: e.file.clone(),
    }
}

fn human_duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn human_bytes(b: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if b >= 1024 * MIB {
        format!("{:.1}GiB", b as f64 / (1024 * MIB) as f64)
    } else if b >= MIB {
        format!("{:.1}MiB", b as f64 / MIB as f64)
    } else {
        format!("{}KiB", b.div_ceil(1024))
    }
}

fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.chars().take(12).collect()
}

pub fn ps(out: &Out) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    let rows = match rows(&paths) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Internal);
        }
    };
    if out.json {
        out.json(&rows);
        return Ok(Exit::Ok);
    }
    let dash = || "-".to_string();
    let mut table = vec![
        [
            "NAME", "TENANT", "STATE", "PID", "UPTIME", "RESTARTS", "IMAGE", "MEMORY",
        ]
        .map(str::to_string),
    ];
    for r in &rows {
        table.push([
            r.name.clone(),
            r.tenant.clone().unwrap_or_else(dash),
            r.state.clone(),
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.uptime_secs.map_or_else(dash, human_duration),
            r.restarts.to_string(),
            format!("{}@{}", r.image, short_digest(&r.image_digest)),
            r.memory_bytes.map_or_else(dash, human_bytes),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &table {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(Exit::Ok)
}

pub fn logs(name: &str, follow: bool, tail: Option<usize>) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    let st = State::load(&paths).unwrap_or_default();
    let plain = !name.is_empty() && !name.contains('/') && name != "." && name != "..";
    let dir = paths.logs_dir(name);
    if !plain || (!st.sandboxes.contains_key(name) && !dir.exists()) {
        let names: Vec<&str> = st.sandboxes.keys().map(String::as_str).collect();
        eprintln!(
            "error: no sandbox named `{name}` was applied{}",
            if names.is_empty() {
                String::new()
            } else {
                format!(" (applied: {})", names.join(", "))
            }
        );
        return Ok(Exit::User);
    }
    let mut streams = [
        Follower::new(&dir.join("stdout.log"), tail)?,
        Follower::new(&dir.join("stderr.log"), tail)?,
    ];
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    streams[0].copy(&mut stdout)?;
    streams[1].copy(&mut stderr)?;
    if !follow {
        return Ok(Exit::Ok);
    }
    // Follow until the sandbox's supervisor is gone (destroyed) or we are interrupted.
    let supervisor = st.sandboxes.get(name).and_then(|e| e.supervisor);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let more = streams[0].copy(&mut stdout)? | streams[1].copy(&mut stderr)?;
        if !more && !supervisor.is_some_and(|p| p.alive()) {
            return Ok(Exit::Ok);
        }
    }
}

/// Reads a log file from where it was left, across rotations.
struct Follower {
    path: std::path::PathBuf,
    pos: u64,
    inode: Option<u64>,
    first: Option<Option<usize>>,
}

impl Follower {
    fn new(path: &Path, tail: Option<usize>) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            pos: 0,
            inode: None,
            first: Some(tail),
        })
    }

    /// Copy what is new; true if anything was.
    fn copy(&mut self, to: &mut dyn Write) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let meta = f.metadata()?;
        if self.inode != Some(meta.ino()) || meta.len() < self.pos {
            // New or rotated file: start from its beginning.
            self.inode = Some(meta.ino());
            self.pos = 0;
        }
        f.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.pos += buf.len() as u64;
        let shown = match self.first.take() {
            Some(tail) => logs::tail(&buf, tail),
            None => &buf[..],
        };
        to.write_all(shown)?;
        to.flush()?;
        Ok(!buf.is_empty())
    }
}

/// `warden exec NAME [-t] -- CMD...`: run a command in an applied, running sandbox, with
/// the sandbox's isolation (namespaces, user, capabilities, cgroups, Landlock, seccomp).
pub fn exec(name: &str, tty: bool, command: Vec<String>) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    let st = match State::load(&paths) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Internal);
        }
    };
    let Some(entry) = st.sandboxes.get(name) else {
        eprintln!("error: no sandbox named `{name}` was applied (see `warden ps`)");
        return Ok(Exit::User);
    };
    let status = entry
        .supervisor
        .filter(|p| p.alive())
        .and_then(|_| control::status(&paths.socket(name)).ok());
    let container = match &status {
        Some(s) if s.phase == Phase::Running => s.container_id.clone(),
        _ => None,
    };
    let Some(container) = container else {
        let r = row(&paths, name, entry);
        eprintln!("error: sandbox `{name}` is not running ({})", r.state);
        return Ok(Exit::User);
    };
    let mut opts = warden_runtime::ExecOptions::new(command);
    opts.tty = tty;
    match warden_runtime::exec_in(&paths.run_dir, &container, opts) {
        Ok(code) => Ok(Exit::Code(code)),
        Err(e) => {
            eprintln!("error: cannot exec in `{name}`: {e}");
            Ok(Exit::Internal)
        }
    }
}
