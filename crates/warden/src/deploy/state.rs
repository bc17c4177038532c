//! What the last apply left running, and the lock that serializes applies.

use super::paths::{Paths, write_durable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use warden_wire::sandbox::Restart;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// Bumped by every write: a saved plan records it and refuses to apply if it moved.
    pub generation: u64,
    pub sandboxes: BTreeMap<String, Entry>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            generation: 0,
            sandboxes: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// The file that declares the sandbox (absolute).
    pub file: String,
    pub digest: String,
    /// Digest of each part of the sandbox (image, limits, egress...), to name what changed.
    pub parts: BTreeMap<String, String>,
    pub image: String,
    pub image_digest: String,
    pub tenant: Option<String>,
    pub restart: Restart,
    pub supervisor: Option<Proc>,
    /// Seconds since the epoch.
    pub created_at: u64,
}

/// A process, told apart from a later one that reuses its pid by its start time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub start_time: u64,
}

impl Proc {
    pub fn of(pid: i32) -> Option<Self> {
        super::procs::start_time(pid).map(|start_time| Self { pid, start_time })
    }
    pub fn alive(&self) -> bool {
        super::procs::start_time(self.pid) == Some(self.start_time)
            && !super::procs::is_zombie(self.pid)
    }
}

impl State {
    /// The recorded state; a missing file is an empty state, a damaged one an error (it
    /// is never overwritten on a guess).
    pub fn load(paths: &Paths) -> Result<Self, String> {
        let path = paths.state_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(format!(
                    "cannot read `{}`: {}",
                    path.display(),
                    crate::project::io_msg(&e)
                ));
            }
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "`{}` is damaged ({e}); move it away to start from an empty state",
                path.display()
            )
        })?;
        if state.version != STATE_VERSION {
            return Err(format!(
                "`{}` has version {}, this warden reads version {STATE_VERSION}",
                path.display(),
                state.version
            ));
        }
        Ok(state)
    }

    pub fn save(&mut self, paths: &Paths) -> Result<(), String> {
        self.generation += 1;
        let path = paths.state_file();
        super::paths::private_dir(&paths.apply_dir())
            .map_err(|e| format!("cannot create `{}`: {e}", paths.apply_dir().display()))?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_durable(&path, &bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    }
}

/// An exclusive `flock` on `<state>/apply/lock`, released when dropped or when the process
/// dies (SIGKILL included). The holder's pid is written into the file for messages.
pub struct ApplyLock {
    file: File,
}

impl ApplyLock {
    /// Take the lock, waiting for the holder if there is one (`on_wait` is told its pid
    /// first); with `wait == false`, return an error naming the holder instead.
    pub fn acquire(
        paths: &Paths,
        wait: bool,
        on_wait: &dyn Fn(Option<i32>),
    ) -> Result<Self, String> {
        super::paths::private_dir(&paths.apply_dir())
            .map_err(|e| format!("cannot create `{}`: {e}", paths.apply_dir().display()))?;
        let path = paths.lock();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
            let holder = read_pid(&mut file);
            if !wait {
                return Err(match holder {
                    Some(pid) => format!("another apply (pid {pid}) is in progress"),
                    None => "another apply is in progress".to_string(),
                });
            }
            on_wait(holder);
            flock(&file, libc::LOCK_EX)?;
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Self { file })
    }
}

impl Drop for ApplyLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        // SAFETY: the descriptor is open for the lifetime of `self.file`.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn flock(file: &File, op: i32) -> Result<bool, String> {
    loop {
        // SAFETY: the descriptor is open for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(format!("cannot lock the apply state: {e}")),
        }
    }
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The absolute form of a file argument, as recorded in the state.
pub fn file_key(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
