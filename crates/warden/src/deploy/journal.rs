//! The apply journal: one JSON line per step, fsynced before the step's effects, so the
//! next apply knows an apply was interrupted and where.
//!
//! Recovery does not replay the journal: the next apply takes the lock, stops every
//! supervisor the state does not record and removes every container whose owner is gone,
//! then plans against what is left. Whatever step the kill hit, that converges.
//!
//! Fault injection for tests: with `WARDEN_APPLY_CRASH_AFTER=N`, the process kills itself
//! with SIGKILL right after writing its N-th journal record.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    pub pid: u32,
    pub at: u64,
}

pub struct Journal {
    file: File,
    path: PathBuf,
    written: u64,
    crash_after: Option<u64>,
}

impl Journal {
    /// Start a journal at `path` (an existing one must have been dealt with first).
    pub fn begin(path: &Path) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            written: 0,
            crash_after: std::env::var("WARDEN_APPLY_CRASH_AFTER")
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    pub fn record(
        &mut self,
        step: &str,
        sandbox: Option<&str>,
        detail: Option<serde_json::Value>,
    ) -> Result<(), String> {
        let rec = Record {
            step: step.to_string(),
            sandbox: sandbox.map(str::to_string),
            detail,
            pid: std::process::id(),
            at: super::state::now(),
        };
        let mut line = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot write `{}`: {e}", self.path.display()))?;
        self.written += 1;
        if self.crash_after == Some(self.written) {
            // SAFETY: raising a signal at ourselves has no memory preconditions.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        Ok(())
    }

    /// The apply finished: the journal becomes `last`.
    pub fn finish(self, last: &Path) -> Result<(), String> {
        std::fs::rename(&self.path, last)
            .map_err(|e| format!("cannot rename `{}`: {e}", self.path.display()))
    }
}

/// The records of an interrupted apply's journal, if there is one.
pub fn interrupted(path: &Path) -> Option<Vec<Record>> {
    let text = std::fs::read_to_string(path).ok()?;
    // A line cut by the crash is dropped; every whole line is a record.
    Some(
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}
