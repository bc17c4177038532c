//! CLI tests: exit codes, stdout and stderr of the `warden` binary.

mod apply;
mod approve;
mod audit;
mod egress;
mod examples;
mod lang;
mod mounts;
mod runtime;
mod secret;
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn warden() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_warden"));
    c.env("NO_COLOR", "1");
    c
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("run warden");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
