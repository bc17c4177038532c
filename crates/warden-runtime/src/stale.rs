//! Clean-up after runs that could not clean up themselves (warden SIGKILLed, the machine
//! reset while `/run` is not a tmpfs). Every run records its owner (pid and start time of
//! the warden process) in an annotation of its bundle copy; a run whose owner is gone is
//! stale: its processes are killed and its cgroups, state and bundle copy removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libcontainer::oci_spec::runtime::Spec;

use crate::cgroup;
use crate::error::RuntimeError;

/// The annotation holding `"<pid>:<start time in clock ticks>"` of the owning process.
pub const OWNER_ANNOTATION: &str = "dev.warden.owner";

/// `"<pid>:<starttime>"` of the calling process.
pub(crate) fn self_owner() -> String {
    let pid = std::process::id() as i32;
    format!("{pid}:{}", start_time(pid).unwrap_or(0))
}

/// Field 22 of `/proc/<pid>/stat`: distinguishes a process from a later one that reuses
/// its pid. `None` for a process that has exited but not been reaped yet (a zombie: its
/// parent, often the host's init after a reparenting, may reap it much later).
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command: state is field 3, starttime field 22.
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    match (pid.parse::<i32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Removes every run under `state_root` whose owning warden process no longer exists:
/// kills what is left of it, removes its cgroups (every hierarchy), state directory and
/// bundle copy. Runs whose owner lives, and bundle copies younger than a minute without
/// an owner (a run being set up), are left alone. Returns the ids removed.
pub fn remove_stale(state_root: &Path) -> Result<Vec<String>, RuntimeError> {
    let bundles = state_root.join("bundles");
    let entries = match fs::read_dir(&bundles) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RuntimeError::StateDir {
                path: bundles,
                source,
            });
        }
    };
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for entry in entries.flatten() {
        let Ok(id) = entry.file_name().into_string() else {
            continue;
        };
        let copy = entry.path();
        let spec = Spec::load(copy.join("config.json")).ok();
        let owner = spec
            .as_ref()
            .and_then(|s| s.annotations().as_ref()?.get(OWNER_ANNOTATION).cloned());
        match &owner {
            Some(o) if owner_alive(o) => continue,
            Some(_) => {}
            // No readable config yet: a run between `mkdir` and writing it, unless old.
            None if !older_than(&copy, Duration::from_secs(60)) => continue,
            None => {}
        }
        let cgroup_path = spec
            .as_ref()
            .and_then(|s| s.linux().as_ref()?.cgroups_path().clone())
            .unwrap_or_else(|| PathBuf::from(crate::spec::DEFAULT_CGROUP_PARENT).join(&id));
        // The init may still run (its warden was SIGKILLed): the cgroup removal kills
        // every member it finds before removing the directories.
        if let Err(e) = cgroup::remove(&cgroup_path, Duration::from_secs(5)) {
            failures.push(format!("`{id}` cgroups: {e}"));
            continue;
        }
        for dir in [state_root.join("containers").join(&id), copy] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failures.push(format!("`{}`: {e}", dir.display())),
            }
        }
        removed.push(id);
    }
    if failures.is_empty() {
        Ok(removed)
    } else {
        Err(RuntimeError::Cleanup {
            id: "stale runs".into(),
            what: failures.join("; "),
        })
    }
}

fn older_than(path: &Path, age: Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = self_owner();
        assert!(owner_alive(&me), "{me}");
        let (pid, start) = me.split_once(':').unwrap();
        let later: u64 = start.parse::<u64>().unwrap() + 1;
        assert!(!owner_alive(&format!("{pid}:{later}")));
        assert!(!owner_alive("garbage"));
    }
}
