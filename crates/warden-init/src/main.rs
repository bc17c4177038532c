//! `/.warden/init -- CMD ARGS...`: see the library for what it does and why.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
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
    // Exit statuses are 0..=255; anything else is our own bug, reported as one.
    ExitCode::from(u8::try_from(code).unwrap_or(125))
}
