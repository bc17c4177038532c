//! warden can be its own init: copied into an image as `/.warden/init`, it runs
//! warden-init (PID 1 in the sandbox) instead of the command line. Images use the small
//! `warden-init` binary installed beside warden when there is one (see
//! `commands::build::init_binary`), and warden itself otherwise, so a lone `warden` is
//! all there is to install.

use std::io::Write;
use std::process::ExitCode;

/// Invoked as `init` (the file name of `/.warden/init`).
pub fn is_init() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "init"))
        .unwrap_or(false)
}

pub fn init_main() -> ExitCode {
    let mut stderr = std::io::stderr();
    let code = match warden_init::run(
        std::env::args_os().skip(1),
        std::env::vars_os().collect(),
        &mut stderr,
    ) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(stderr, "warden-init: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(125))
}
