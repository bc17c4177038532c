//! Files the sandbox starts with ([`warden_wire::init::InitConfig::files`]): written by
//! warden-init, as the sandbox's user, before Landlock and before the command runs, and
//! only when the path is free, so state the agent changed is never overwritten.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use warden_wire::init::SeedFile;

use crate::Error;

/// Writes each file that does not exist yet; a path taken by anything (a file, a
/// symbolic link) is left alone.
pub fn write(files: &[SeedFile]) -> Result<(), Error> {
    for f in files {
        write_one(f).map_err(|e| Error::Seed(format!("cannot write `{}`: {e}", f.path)))?;
    }
    Ok(())
}

fn write_one(f: &SeedFile) -> io::Result<()> {
    let path = Path::new(&f.path);
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(f.mode & 0o7777)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    file.write_all(f.content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(path: &Path, content: &str) -> SeedFile {
        SeedFile {
            path: path.display().to_string(),
            content: content.into(),
            mode: 0o600,
        }
    }

    #[test]
    fn writes_missing_files_and_keeps_existing_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b/state.json");
        let kept = dir.path().join("kept.json");
        std::fs::write(&kept, "changed by the agent").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        write(&[
            seed(&new, "{}"),
            seed(&kept, "seeded"),
            seed(&link, "seeded"),
        ])
        .unwrap();
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "{}");
        let mode = std::fs::metadata(&new).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let parent = std::fs::metadata(new.parent().unwrap()).unwrap();
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        assert_eq!(
            std::fs::read_to_string(&kept).unwrap(),
            "changed by the agent"
        );
        assert!(!dir.path().join("elsewhere").exists());
    }

    #[test]
    fn an_unwritable_place_is_an_error_naming_the_path() {
        let e = write(&[seed(Path::new("/proc/warden-seed-test"), "x")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot write `/proc/warden-seed-test`: "),
            "{e}"
        );
    }
}
