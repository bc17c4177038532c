//! Compiler tests: snapshots of every example and layout, determinism, the fuzz run.

mod fuzz;

use std::path::{Path, PathBuf};
use warden_compile::{CompileOptions, compile};
use warden_lang::{Loader, SourceFile, load, render};

pub struct DiskLoader(pub PathBuf);

impl Loader for DiskLoader {
    fn load(&self, base: &str, path: &str) -> Result<SourceFile, String> {
        let rel = warden_lang::join(base, path);
        std::fs::read_to_string(self.0.join(&rel))
            .map(|t| SourceFile::new(rel, t))
            .map_err(|e| e.to_string())
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn options() -> CompileOptions {
    CompileOptions {
        base_dir: "/project".into(),
        state_dir: "/var/lib/warden".into(),
    }
}

/// Everything the compiler emits for one file, as one text: each image plan, then each
/// sandbox's config.json and warden.json.
fn compiled_text(name: &str, text: &str, dir: &Path) -> String {
    let loaded = load(&SourceFile::new(name, text), &DiskLoader(dir.to_path_buf()));
    let model = loaded
        .model
        .unwrap_or_else(|| panic!("{name}:\n{}", render(&loaded.diagnostics)));
    let c = compile(&model, &options()).expect("compiles");
    let mut out = String::new();
    for i in &c.images {
        out.push_str(&format!(
            "=== image {}\n{}",
            i.name,
            warden_wire::canonical_json(i).unwrap()
        ));
    }
    for s in &c.sandboxes {
        out.push_str(&format!("=== {}/config.json\n{}", s.name, s.config_json()));
        out.push_str(&format!("=== {}/warden.json\n{}", s.name, s.plan_json()));
    }
    out.push_str(&format!(
        "=== orders\n{}",
        warden_wire::canonical_json(&c.orders).unwrap()
    ));
    out
}

#[test]
fn examples() {
    insta::glob!("../../../../examples", "*.kdl", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let name = format!("examples/{}", path.file_name().unwrap().to_string_lossy());
        insta::assert_snapshot!(compiled_text(&name, &text, path.parent().unwrap()));
    });
}

#[test]
fn layouts() {
    // A layout alone declares no sandbox: compile it under a minimal one, so the
    // snapshot shows what the layout does to a sandbox.
    insta::glob!("../../../../layouts", "*.kdl", |path| {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = format!(
            "layout \"./{file}\"\nimage \"i\" {{\n    from-host \"/bin/sh\"\n}}\nsandbox \"probe\" {{\n    image \"i\"\n    command \"/bin/sh\"\n}}\n"
        );
        insta::assert_snapshot!(compiled_text("probe.kdl", &text, path.parent().unwrap()));
    });
}

#[test]
fn same_file_same_bytes() {
    let path = repo().join("examples/claude-code.kdl");
    let text = std::fs::read_to_string(&path).unwrap();
    let a = compiled_text("x.kdl", &text, path.parent().unwrap());
    let b = compiled_text("x.kdl", &text, path.parent().unwrap());
    assert_eq!(a, b);
}

#[test]
fn strict_spec_defaults() {
    let text = "image \"i\" {\n    from-host \"/bin/sh\"\n}\nsandbox \"s\" {\n    image \"i\"\n    command \"/bin/sh\"\n}\n";
    let model = load(&SourceFile::new("t.kdl", text), &warden_lang::NoFiles)
        .model
        .unwrap();
    let c = compile(&model, &options()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&c.sandboxes[0].config_json()).unwrap();
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(v["process"]["noNewPrivileges"], true);
    assert_eq!(v["process"]["user"]["uid"], 1000);
    assert_eq!(
        v["process"]["capabilities"]["bounding"],
        serde_json::json!([])
    );
    let mounts: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert!(
        !mounts.iter().any(|m| m.starts_with("/sys/fs/cgroup")),
        "{mounts:?}"
    );
    assert_eq!(v["linux"]["cgroupsPath"], "/warden/s");
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert!(ns.contains(&"network") && ns.contains(&"user"));
    assert_eq!(v["linux"]["resources"]["pids"]["limit"], 256);
    let env = v["process"]["env"].as_array().unwrap();
    assert!(
        !env.iter()
            .any(|e| e.as_str().unwrap().starts_with("HTTP_PROXY=")),
        "no egress, no proxy"
    );
    let denied: Vec<&str> = v["linux"]["seccomp"]["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for s in [
        "ptrace",
        "bpf",
        "mount",
        "keyctl",
        "kexec_load",
        "init_module",
        "perf_event_open",
        "userfaultfd",
        "unshare",
        "setns",
        "io_uring_setup",
    ] {
        assert!(denied.contains(&s), "{s} not denied");
    }
    assert_eq!(
        c.sandboxes[0].init.landlock.mode,
        warden_wire::init::LandlockMode::Required
    );
}
