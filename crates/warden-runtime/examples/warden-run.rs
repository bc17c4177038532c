//! A minimal `warden run` on the library, for benchmarks and manual checks until the CLI
//! lands (`cargo xtask bench run` drives it).
//!
//! ```text
//! warden-run make-bundle DIR INIT      write DIR/config.json + DIR/rootfs (busybox, INIT)
//! warden-run run BUNDLE [--state DIR] [-- CMD ARG...]
//! ```

#![allow(clippy::print_stderr)]

#[path = "../tests/it/spec.rs"]
mod spec;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden_runtime::{RunOptions, new_container_id, run_foreground};
use warden_wire::init::{INIT_CONFIG_ENV, INIT_PATH, InitConfig, Landlock, LandlockMode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("make-bundle") if args.len() == 3 => {
            make_bundle(Path::new(&args[1]), Path::new(&args[2])).map(|()| 0)
        }
        Some("run") if args.len() >= 2 => run(&args[1..]),
        _ => Err(
            "usage: warden-run make-bundle DIR INIT | run BUNDLE [--state DIR] [-- CMD...]".into(),
        ),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("warden-run: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<i32, String> {
    let bundle = PathBuf::from(&args[0]);
    let mut state = PathBuf::from("/run/warden");
    let mut rest = &args[1..];
    let mut cmd = None;
    while let Some((a, tail)) = rest.split_first() {
        match a.as_str() {
            "--state" => {
                let (dir, tail) = tail.split_first().ok_or("--state needs a directory")?;
                state = PathBuf::from(dir);
                rest = tail;
            }
            "--" => {
                cmd = Some(tail.to_vec());
                break;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let mut opts = RunOptions::new(new_container_id("run"), state);
    opts.args_override = cmd;
    run_foreground(&bundle, &opts).map_err(|e| {
        let mut s = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(c) = cur {
            s.push_str(&format!(": {c}"));
            cur = c.source();
        }
        s
    })
}

fn make_bundle(dir: &Path, init: &Path) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", ".warden", "scratch"] {
        fs::create_dir_all(root.join(d)).map_err(|e| err("mkdir", e))?;
    }
    for d in [dir, root.as_path()] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).map_err(|e| err("chmod", e))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("busybox is not installed (apt-get install -y busybox-static)")?;
    fs::copy(busybox, root.join("bin/busybox")).map_err(|e| err("copy busybox", e))?;
    for applet in ["sh", "true", "echo", "sleep"] {
        let link = root.join("bin").join(applet);
        let _ = fs::remove_file(&link);
        symlink("busybox", link).map_err(|e| err("symlink", e))?;
    }
    fs::copy(init, root.join(".warden/init")).map_err(|e| err("copy init", e))?;
    let config = InitConfig {
        version: 1,
        landlock: Landlock {
            mode: LandlockMode::Required,
            read_exec: vec!["/bin".into(), "/.warden".into(), "/proc".into()],
            read_write: vec!["/tmp".into(), "/dev".into()],
        },
        seccomp: warden_wire::seccomp::default_rules(),
        grace_period_ms: 2000,
        files: Vec::new(),
    };
    let env = format!(
        "{INIT_CONFIG_ENV}={}",
        serde_json::to_string(&config).map_err(|e| e.to_string())?
    );
    let spec = spec::sandbox_spec(spec::SandboxSpec {
        rootfs: Path::new("rootfs"),
        args: vec![INIT_PATH.into(), "--".into(), "/bin/true".into()],
        env: vec!["PATH=/bin".into(), env],
        memory_bytes: 256 << 20,
        pids: 128,
        extra_mounts: vec![],
    });
    spec.save(dir.join("config.json"))
        .map_err(|e| e.to_string())
}
