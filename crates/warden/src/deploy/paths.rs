//! Where apply state, supervisors and logs live.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    /// Persistent: `WARDEN_STATE_DIR`, else `/var/lib/warden`.
    pub state_dir: PathBuf,
    /// Volatile: `WARDEN_RUN_DIR`, else `/run/warden`.
    pub run_dir: PathBuf,
}

impl Paths {
    pub fn from_env() -> Self {
        Self {
            state_dir: std::env::var_os("WARDEN_STATE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/warden")),
            run_dir: std::env::var_os("WARDEN_RUN_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/run/warden")),
        }
    }

    pub fn apply_dir(&self) -> PathBuf {
        self.state_dir.join("apply")
    }
    pub fn state_file(&self) -> PathBuf {
        self.apply_dir().join("state.json")
    }
    pub fn journal(&self) -> PathBuf {
        self.apply_dir().join("journal.jsonl")
    }
    pub fn last_journal(&self) -> PathBuf {
        self.apply_dir().join("last-apply.jsonl")
    }
    pub fn lock(&self) -> PathBuf {
        self.apply_dir().join("lock")
    }
    pub fn supervisors(&self) -> PathBuf {
        self.run_dir.join("supervisors")
    }
    pub fn supervisor_dir(&self, name: &str) -> PathBuf {
        self.supervisors().join(name)
    }
    pub fn launch(&self, name: &str) -> PathBuf {
        self.supervisor_dir(name).join("launch.json")
    }
    pub fn socket(&self, name: &str) -> PathBuf {
        self.supervisor_dir(name).join("control.sock")
    }
    pub fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(name)
    }
    pub fn logs_dir(&self, name: &str) -> PathBuf {
        self.sandbox_dir(name).join("logs")
    }
}

impl Paths {
    /// Records in the run directory which state directory its supervisors belong to, and
    /// refuses one that belongs to another state that still exists: an apply stops every
    /// supervisor under its run directory that its own state does not record, so two
    /// states sharing one run directory would stop each other's sandboxes.
    pub fn claim_run_dir(&self) -> Result<(), String> {
        let marker = self.run_dir.join("state-dir");
        let mine = std::fs::canonicalize(&self.state_dir)
            .unwrap_or_else(|_| self.state_dir.clone())
            .display()
            .to_string();
        let refuse = |owner: &str| {
            format!(
                "the run directory `{}` holds the supervisors of the state in `{owner}`; \
                 this state (`{mine}`) needs a run directory of its own (set WARDEN_RUN_DIR)",
                self.run_dir.display()
            )
        };
        private_dir(&self.run_dir)
            .map_err(|e| format!("cannot create `{}`: {e}", self.run_dir.display()))?;
        for _ in 0..3 {
            match std::fs::read_to_string(&marker) {
                Ok(owner) if owner.trim_end() == mine => return Ok(()),
                Ok(owner) if Path::new(owner.trim_end()).join("apply").is_dir() => {
                    return Err(refuse(owner.trim_end()));
                }
                // Its state is gone: nothing of it is left to protect.
                Ok(_) => {
                    return write_durable(&marker, format!("{mine}\n").as_bytes())
                        .map_err(|e| format!("cannot write `{}`: {e}", marker.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Claimed atomically: a hard link fails if another state got there first.
                    let tmp = self
                        .run_dir
                        .join(format!(".state-dir.{}", std::process::id()));
                    let made = std::fs::write(&tmp, format!("{mine}\n"))
                        .and_then(|()| std::fs::hard_link(&tmp, &marker));
                    let _ = std::fs::remove_file(&tmp);
                    match made {
                        Ok(()) => return Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                        Err(e) => {
                            return Err(format!("cannot write `{}`: {e}", marker.display()));
                        }
                    }
                }
                Err(e) => return Err(format!("cannot read `{}`: {e}", marker.display())),
            }
        }
        Err(format!("cannot claim `{}`", self.run_dir.display()))
    }
}

/// Create `dir` (and parents) with mode 0700: supervisors' sockets and launch files are
/// for root only.
pub use warden_egress::private_dir;

/// Write `bytes` to `path` through a temp file in the same directory, fsynced, then
/// renamed over: readers see the old or the new content, never a mix, even after a crash.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
