//! Landlock: the filesystem view the config names, enforced by the kernel.
//!
//! - `read_exec` paths get read and execute beneath them; `read_write` paths get every
//!   filesystem right warden handles. Everything else is denied once the ruleset is on.
//! - warden handles the filesystem rights of ABI [`TARGET_ABI`] (5: up to `ioctl_dev`,
//!   the complete filesystem set through ABI 8). Network rights are not handled (the
//!   sandbox's network namespace and the egress proxy do that job) and neither are the ABI 6
//!   scopes (abstract sockets and signals are already confined by the network and pid
//!   namespaces).
//! - `required`: refuse to start (exit 125) unless the kernel enforces all of it; the
//!   message names the kernel's ABI and the missing rights. `best-effort`: enforce what the
//!   kernel has and say on stderr what was not enforced (nothing is printed when all is).
//!   `off`: nothing.
//! - A rule path that does not exist in the rootfs (`ENOENT`, `ENOTDIR`) is skipped without
//!   a word: skipping only ever grants less. Any other failure to open one is an error.
//! - A rule on a non-directory gets only the rights that make sense for a file.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;

use ::landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus,
};
use warden_wire::init::{Landlock, LandlockMode};

use crate::Error;

/// The Landlock ABI whose filesystem rights warden handles.
pub const TARGET_ABI: ABI = ABI::V5;
const TARGET_ABI_NUMBER: i32 = 5;

/// Landlock support of the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSupport {
    /// Built in but not enabled at boot (`EOPNOTSUPP`): not in the `lsm=` list.
    Disabled,
    /// Not built into the kernel (`ENOSYS`).
    Absent,
    /// Available with this ABI version.
    Abi(i32),
}

impl KernelSupport {
    /// Asks the kernel (`landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`).
    pub fn probe() -> KernelSupport {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag the kernel reads
        // no memory and only returns the ABI version (or an error).
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if v >= 0 {
            return KernelSupport::Abi(i32::try_from(v).unwrap_or(i32::MAX));
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EOPNOTSUPP) => KernelSupport::Disabled,
            _ => KernelSupport::Absent,
        }
    }
}

/// The handled rights a kernel with `support` cannot enforce.
pub fn missing_rights(support: KernelSupport) -> BitFlags<AccessFs> {
    let have = match support {
        KernelSupport::Abi(v) => AccessFs::from_all(ABI::from(v)),
        KernelSupport::Disabled | KernelSupport::Absent => BitFlags::EMPTY,
    };
    AccessFs::from_all(TARGET_ABI) & !have
}

/// Why the kernel falls short, for messages; `None` when it enforces everything.
pub fn shortfall(support: KernelSupport) -> Option<String> {
    match support {
        KernelSupport::Disabled => {
            Some("landlock is built into this kernel but not enabled (add it to the `lsm=` boot parameter)".into())
        }
        KernelSupport::Absent => Some("this kernel is built without landlock".into()),
        KernelSupport::Abi(v) => {
            let missing = missing_rights(support);
            (!missing.is_empty()).then(|| {
                format!(
                    "the kernel has landlock ABI {v}, warden needs ABI {TARGET_ABI_NUMBER} (missing: {})",
                    right_names(missing)
                )
            })
        }
    }
}

/// Applies the config to the calling thread and its future children. Returns a report to
/// print when `best-effort` left something unenforced.
pub fn apply(config: &Landlock) -> Result<Option<String>, Error> {
    if config.mode == LandlockMode::Off {
        return Ok(None);
    }
    let support = KernelSupport::probe();
    let shortfall = shortfall(support);
    let required = config.mode == LandlockMode::Required;
    if let Some(why) = &shortfall {
        if required {
            return Err(Error::Landlock(format!("landlock is required but {why}")));
        }
        if !matches!(support, KernelSupport::Abi(_)) {
            return Ok(Some(format!(
                "landlock best-effort: not enforced at all: {why}"
            )));
        }
    }

    let level = if required {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let all = AccessFs::from_all(TARGET_ABI);
    let failed =
        |e: ::landlock::RulesetError| Error::Landlock(format!("cannot apply landlock: {e}"));
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(all)
        .and_then(|r| r.create())
        .map_err(failed)?;
    let rules = config
        .read_exec
        .iter()
        .map(|p| (p, AccessFs::from_read(TARGET_ABI)))
        .chain(config.read_write.iter().map(|p| (p, all)));
    for (path, access) in rules {
        let Some((fd, is_dir)) = open_beneath(path)? else {
            continue;
        };
        let access = if is_dir {
            access
        } else {
            access & AccessFs::from_file(TARGET_ABI)
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(failed)?;
    }
    let status = ruleset.restrict_self().map_err(failed)?;

    match (&status.ruleset, shortfall) {
        (RulesetStatus::FullyEnforced, None) => Ok(None),
        (ruleset, _) if required => Err(Error::Landlock(format!(
            "landlock is required but the kernel did not enforce the ruleset fully ({ruleset:?})"
        ))),
        (RulesetStatus::NotEnforced, why) => Ok(Some(format!(
            "landlock best-effort: not enforced at all{}",
            why.map(|w| format!(": {w}")).unwrap_or_default()
        ))),
        (_, Some(why)) => Ok(Some(format!(
            "landlock best-effort: partly enforced: {why}"
        ))),
        (_, None) => Ok(Some("landlock best-effort: partly enforced".into())),
    }
}

/// Opens a rule path with `O_PATH`. `None` when it does not exist.
fn open_beneath(path: &str) -> Result<Option<(File, bool)>, Error> {
    let opened = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .and_then(|f| Ok((f.metadata()?.is_dir(), f)));
    match opened {
        Ok((is_dir, f)) => Ok(Some((f, is_dir))),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(Error::Landlock(format!(
            "cannot open landlock rule path `{path}`: {e}"
        ))),
    }
}

/// Kernel-documentation names of the rights, `,`-separated.
pub fn right_names(rights: BitFlags<AccessFs>) -> String {
    let name = |r: AccessFs| match r {
        AccessFs::Execute => "execute",
        AccessFs::WriteFile => "write_file",
        AccessFs::ReadFile => "read_file",
        AccessFs::ReadDir => "read_dir",
        AccessFs::RemoveDir => "remove_dir",
        AccessFs::RemoveFile => "remove_file",
        AccessFs::MakeChar => "make_char",
        AccessFs::MakeDir => "make_dir",
        AccessFs::MakeReg => "make_reg",
        AccessFs::MakeSock => "make_sock",
        AccessFs::MakeFifo => "make_fifo",
        AccessFs::MakeBlock => "make_block",
        AccessFs::MakeSym => "make_sym",
        AccessFs::Refer => "refer",
        AccessFs::Truncate => "truncate",
        AccessFs::IoctlDev => "ioctl_dev",
        _ => "newer right",
    };
    rights.iter().map(name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_abi_number_matches() {
        assert_eq!(ABI::from(TARGET_ABI_NUMBER), TARGET_ABI);
    }

    #[test]
    fn what_old_kernels_miss() {
        assert_eq!(missing_rights(KernelSupport::Abi(5)), BitFlags::EMPTY);
        assert_eq!(missing_rights(KernelSupport::Abi(7)), BitFlags::EMPTY);
        assert_eq!(
            right_names(missing_rights(KernelSupport::Abi(1))),
            "refer, truncate, ioctl_dev"
        );
        assert_eq!(
            right_names(missing_rights(KernelSupport::Abi(3))),
            "ioctl_dev"
        );
        assert_eq!(
            missing_rights(KernelSupport::Disabled),
            AccessFs::from_all(TARGET_ABI)
        );
    }

    #[test]
    fn shortfall_messages() {
        assert_eq!(shortfall(KernelSupport::Abi(5)), None);
        assert_eq!(shortfall(KernelSupport::Abi(9)), None);
        assert_eq!(
            shortfall(KernelSupport::Abi(2)).unwrap(),
            "the kernel has landlock ABI 2, warden needs ABI 5 (missing: truncate, ioctl_dev)"
        );
        assert_eq!(
            shortfall(KernelSupport::Absent).unwrap(),
            "this kernel is built without landlock"
        );
        assert_eq!(
            shortfall(KernelSupport::Disabled).unwrap(),
            "landlock is built into this kernel but not enabled (add it to the `lsm=` boot parameter)"
        );
    }

    #[test]
    fn off_does_nothing() {
        let config = Landlock {
            mode: LandlockMode::Off,
            read_exec: vec![],
            read_write: vec![],
        };
        assert_eq!(apply(&config).unwrap(), None);
    }

    #[test]
    fn missing_paths_are_skipped_other_open_errors_are_not() {
        assert!(
            open_beneath("/nonexistent/warden-init-test")
                .unwrap()
                .is_none()
        );
        assert!(open_beneath("/bin/sh/below-a-file").unwrap().is_none());
        let (_, is_dir) = open_beneath("/").unwrap().unwrap();
        assert!(is_dir);
        let (_, is_dir) = open_beneath("/bin/sh").unwrap().unwrap();
        assert!(!is_dir);
        let long = format!("/{}", "x".repeat(5000));
        let err = open_beneath(&long).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open landlock rule path `/xxx"),
            "{err}"
        );
        assert!(
            err.to_string()
                .ends_with("File name too long (os error 36)"),
            "{err}"
        );
    }
}
