//! The command line, the `WARDEN_INIT_CONFIG` JSON, and the environment the command gets.
//!
//! A missing config is an error, not "run with defaults": an init that silently skips
//! Landlock and seccomp when the runtime forgot to pass the config would be a sandbox that
//! looks enforced and is not.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use serde::Deserialize;
use warden_wire::WIRE_VERSION;
use warden_wire::init::{INIT_CONFIG_ENV, InitConfig};

use crate::Error;

/// Environment variables with this prefix are for warden-init and never reach the command.
pub const ENV_PREFIX: &str = "WARDEN_INIT";

/// The command from `[--] CMD ARGS...` (the arguments after the program name).
pub fn command(args: impl IntoIterator<Item = OsString>) -> Result<Vec<OsString>, Error> {
    let mut args = args.into_iter().peekable();
    match args.peek() {
        Some(first) if first == "--" => {
            args.next();
        }
        Some(first) if first.as_bytes().starts_with(b"-") => {
            return Err(Error::Usage(format!(
                "unknown option `{}`; usage: warden-init -- COMMAND [ARG...]",
                first.to_string_lossy()
            )));
        }
        _ => {}
    }
    let command: Vec<OsString> = args.collect();
    if command.is_empty() {
        return Err(Error::Usage(
            "no command given; usage: warden-init -- COMMAND [ARG...]".into(),
        ));
    }
    Ok(command)
}

/// Parses and checks the config (`None`: the variable is not set).
pub fn parse(raw: Option<&OsStr>) -> Result<InitConfig, Error> {
    let raw = raw.ok_or_else(|| {
        Error::Config(format!(
            "`{INIT_CONFIG_ENV}` is not set; refusing to run without the sandbox's Landlock and seccomp settings"
        ))
    })?;
    let text = std::str::from_utf8(raw.as_bytes())
        .map_err(|_| Error::Config(format!("`{INIT_CONFIG_ENV}` is not valid UTF-8")))?;

    // The version first, so that a config from a newer warden says so instead of failing on
    // whichever field changed.
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let versioned: Versioned = serde_json::from_str(text)
        .map_err(|e| Error::Config(format!("invalid `{INIT_CONFIG_ENV}`: {e}")))?;
    if versioned.version != WIRE_VERSION {
        return Err(Error::Config(format!(
            "`{INIT_CONFIG_ENV}` has version {}, this warden-init reads version {WIRE_VERSION}",
            versioned.version
        )));
    }
    let config: InitConfig = serde_json::from_str(text)
        .map_err(|e| Error::Config(format!("invalid `{INIT_CONFIG_ENV}`: {e}")))?;
    check(&config)?;
    Ok(config)
}

fn check(config: &InitConfig) -> Result<(), Error> {
    let lists = [
        ("read_exec", &config.landlock.read_exec),
        ("read_write", &config.landlock.read_write),
    ];
    for (list, paths) in lists {
        if let Some(path) = paths.iter().find(|p| !p.starts_with('/')) {
            return Err(Error::Config(format!(
                "landlock {list} path `{path}` is not absolute"
            )));
        }
    }
    for rule in &config.seccomp {
        // errno 0 would make the call "succeed" without running; above 4095 the kernel
        // cannot return it as an error.
        if rule.errno == 0 || rule.errno > 4095 {
            return Err(Error::Config(format!(
                "seccomp rule for `{}` has errno {}, expected 1 to 4095",
                rule.syscall, rule.errno
            )));
        }
        if let Some(arg) = rule.arg {
            if arg.index > 5 {
                return Err(Error::Config(format!(
                    "seccomp rule for `{}` tests argument {}, syscalls have arguments 0 to 5",
                    rule.syscall, arg.index
                )));
            }
            if arg.value & !arg.mask != 0 {
                return Err(Error::Config(format!(
                    "seccomp rule for `{}`: value {:#x} has bits outside mask {:#x}, so it could never match",
                    rule.syscall, arg.value, arg.mask
                )));
            }
        }
    }
    Ok(())
}

/// The command's environment: ours without any `WARDEN_INIT*` variable.
pub fn child_env(env: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
    env.into_iter()
        .filter(|(k, _)| !k.as_bytes().starts_with(ENV_PREFIX.as_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_wire::init::{Landlock, LandlockMode};
    use warden_wire::seccomp::{ArgMask, SeccompRule, default_rules};

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn sample() -> InitConfig {
        InitConfig {
            version: WIRE_VERSION,
            landlock: Landlock {
                mode: LandlockMode::Required,
                read_exec: vec!["/".into()],
                read_write: vec!["/sandbox".into(), "/tmp".into()],
            },
            seccomp: default_rules(),
            grace_period_ms: 10_000,
            files: Vec::new(),
        }
    }

    fn parse_str(s: &str) -> Result<InitConfig, Error> {
        parse(Some(OsStr::new(s)))
    }

    fn config_error(s: &str) -> String {
        match parse_str(s) {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn command_after_double_dash() {
        assert_eq!(
            command(os(&["--", "/bin/sh", "-c", "exit 7"])).unwrap(),
            os(&["/bin/sh", "-c", "exit 7"])
        );
        // Only the first `--` belongs to warden-init.
        assert_eq!(
            command(os(&["--", "echo", "--"])).unwrap(),
            os(&["echo", "--"])
        );
        assert_eq!(command(os(&["true"])).unwrap(), os(&["true"]));
    }

    #[test]
    fn command_errors() {
        for args in [&[][..], &["--"][..]] {
            let err = command(os(args)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "no command given; usage: warden-init -- COMMAND [ARG...]"
            );
            assert_eq!(err.exit_code(), 125);
        }
        let err = command(os(&["--help"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown option `--help`; usage: warden-init -- COMMAND [ARG...]"
        );
    }

    #[test]
    fn round_trips_the_wire_format() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(parse_str(&json).unwrap(), sample());
    }

    #[test]
    fn reads_the_documented_json() {
        let json = r#"{"version":1,"landlock":{"mode":"best-effort","read_exec":["/usr"],"read_write":[]},
            "seccomp":[{"syscall":"clone","errno":1,"arg":{"index":0,"mask":268435456,"value":268435456}}],
            "grace_period_ms":250}"#;
        let config = parse_str(json).unwrap();
        assert_eq!(config.landlock.mode, LandlockMode::BestEffort);
        assert_eq!(config.grace_period_ms, 250);
        assert_eq!(
            config.seccomp,
            vec![SeccompRule {
                syscall: "clone".into(),
                errno: 1,
                arg: Some(ArgMask {
                    index: 0,
                    mask: 0x1000_0000,
                    value: 0x1000_0000
                })
            }]
        );
    }

    #[test]
    fn missing_config_is_refused() {
        let err = parse(None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`WARDEN_INIT_CONFIG` is not set; refusing to run without the sandbox's Landlock and seccomp settings"
        );
        assert_eq!(err.exit_code(), 125);
    }

    #[test]
    fn bad_json() {
        assert_eq!(
            config_error("{"),
            "invalid `WARDEN_INIT_CONFIG`: EOF while parsing an object at line 1 column 1"
        );
        assert_eq!(
            config_error("{}"),
            "invalid `WARDEN_INIT_CONFIG`: missing field `version` at line 1 column 2"
        );
        assert_eq!(
            config_error(r#"{"version":1}"#),
            "invalid `WARDEN_INIT_CONFIG`: missing field `landlock` at line 1 column 13"
        );
        let wrong_mode = serde_json::to_string(&sample())
            .unwrap()
            .replace("required", "sometimes");
        assert!(
            config_error(&wrong_mode)
                .starts_with("invalid `WARDEN_INIT_CONFIG`: unknown variant `sometimes`"),
            "{wrong_mode}"
        );
        use std::os::unix::ffi::OsStrExt;
        let err = parse(Some(OsStr::from_bytes(b"\xff"))).unwrap_err();
        assert_eq!(err.to_string(), "`WARDEN_INIT_CONFIG` is not valid UTF-8");
    }

    #[test]
    fn unknown_version() {
        let json = serde_json::to_string(&InitConfig {
            version: 2,
            ..sample()
        })
        .unwrap();
        assert_eq!(
            config_error(&json),
            "`WARDEN_INIT_CONFIG` has version 2, this warden-init reads version 1"
        );
        // A future version is recognised even when the rest of the shape changed.
        assert_eq!(
            config_error(r#"{"version":3,"sandbox":{}}"#),
            "`WARDEN_INIT_CONFIG` has version 3, this warden-init reads version 1"
        );
    }

    #[test]
    fn semantic_checks() {
        let mut c = sample();
        c.landlock.read_write.push("relative/dir".into());
        assert_eq!(
            config_error(&serde_json::to_string(&c).unwrap()),
            "landlock read_write path `relative/dir` is not absolute"
        );

        let rule = |errno, arg| SeccompRule {
            syscall: "clone".into(),
            errno,
            arg,
        };
        let cases = [
            (
                rule(0, None),
                "seccomp rule for `clone` has errno 0, expected 1 to 4095",
            ),
            (
                rule(4096, None),
                "seccomp rule for `clone` has errno 4096, expected 1 to 4095",
            ),
            (
                rule(
                    1,
                    Some(ArgMask {
                        index: 6,
                        mask: 1,
                        value: 1,
                    }),
                ),
                "seccomp rule for `clone` tests argument 6, syscalls have arguments 0 to 5",
            ),
            (
                rule(
                    1,
                    Some(ArgMask {
                        index: 0,
                        mask: 0xf0,
                        value: 0x1f,
                    }),
                ),
                "seccomp rule for `clone`: value 0x1f has bits outside mask 0xf0, so it could never match",
            ),
        ];
        for (r, msg) in cases {
            let c = InitConfig {
                seccomp: vec![r],
                ..sample()
            };
            assert_eq!(config_error(&serde_json::to_string(&c).unwrap()), msg);
        }
    }

    #[test]
    fn strips_every_warden_init_variable() {
        let env = vec![
            (OsString::from("PATH"), OsString::from("/bin")),
            (OsString::from("WARDEN_INIT_CONFIG"), OsString::from("{}")),
            (OsString::from("WARDEN_INIT_DEBUG"), OsString::from("1")),
            (OsString::from("WARDEN_SANDBOX"), OsString::from("claude")),
        ];
        let kept: Vec<_> = child_env(env).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kept, os(&["PATH", "WARDEN_SANDBOX"]));
    }
}
