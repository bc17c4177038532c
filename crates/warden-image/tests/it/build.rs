//! Building from files the tests create: golden digest, cache, progress, errors, and the
//! layout accepted by skopeo and umoci.

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use warden_image::{ImageError, Progress, build_image, export_layout, unpack_bundle};

use crate::support::*;

/// A small tree with a script, a nested file, a symlink, an empty dir and a path longer
/// than ustar's 100 bytes; every mode set explicitly so the umask does not matter.
fn tools_tree(area: &Area) {
    let t = area.src().join("tools");
    mkdir(&t, 0o755);
    write(&t.join("agent.sh"), b"#!/bin/sh\necho agent\n", 0o755);
    write(&t.join("lib/helper.txt"), b"helper\n", 0o640);
    mkdir(&t.join("lib"), 0o750);
    mkdir(&t.join("empty"), 0o700);
    symlink("agent.sh", t.join("run")).unwrap();
    let long = t.join("deep").join("x".repeat(60)).join("y".repeat(60));
    write(&long.join("file.txt"), b"long\n", 0o644);
    for d in [t.join("deep"), t.join("deep").join("x".repeat(60)), long] {
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
}

#[test]
fn golden_digest_of_a_copied_tree() {
    let area = Area::new();
    tools_tree(&area);
    let p = plan("golden", vec![copy("tools", "/opt/tools", 1000)]);
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    assert!(!built.reused);
    let layout = &built.layout_dir;
    let manifest = json(&blob(layout, &built.manifest_digest));
    let config = json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    insta::assert_json_snapshot!(serde_json::json!({
        "manifest_digest": built.manifest_digest,
        "size_bytes": built.size_bytes,
        "index": json(&layout.join("index.json")),
        "manifest": manifest,
        "config": config,
        "layer": listing(&top_layer(layout, &built.manifest_digest)),
    }));
}

#[test]
fn layout_is_accepted_by_skopeo_and_umoci() {
    let area = Area::new();
    tools_tree(&area);
    let p = plan("tools", vec![copy("tools", "/opt/tools", 1000)]);
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    let dir = built.layout_dir.display().to_string();
    let out = ok(
        tool("skopeo", "skopeo")
            .args(["inspect", &format!("oci:{dir}:{}", built.tag)])
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], built.manifest_digest);
    assert_eq!(v["Env"], serde_json::json!(["PATH=/usr/bin:/bin"]));

    let bundle = area.path().join("umoci-bundle");
    ok(
        tool("umoci", "umoci")
            .args(["unpack", "--image", &format!("{dir}:{}", built.tag)])
            .arg(&bundle)
            .output()
            .unwrap(),
        "umoci unpack",
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(rootfs.join("opt/tools/agent.sh")).unwrap(),
        "#!/bin/sh\necho agent\n"
    );
    assert_eq!(
        fs::read_link(rootfs.join("opt/tools/run"))
            .unwrap()
            .to_str(),
        Some("agent.sh")
    );
    assert!(rootfs.join(".warden/init").is_file());

    // Exported copies are layouts too.
    let out_dir = area.path().join("out/images/tools");
    export_layout(&built.layout_dir, &built.tag, &out_dir).unwrap();
    let out = ok(
        Command::new("skopeo")
            .args(["inspect", &format!("oci:{}:latest", out_dir.display())])
            .output()
            .unwrap(),
        "skopeo inspect (export)",
    );
    assert!(out.contains(&built.manifest_digest), "{out}");
}

#[test]
fn our_unpack_matches_the_layer() {
    let area = Area::new();
    tools_tree(&area);
    let p = plan("tools", vec![copy("tools", "/opt/tools/", 1000)]);
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    let bundle = area.path().join("bundles/tools");
    unpack_bundle(
        &built.layout_dir,
        &built.tag,
        "{\"ociVersion\":\"1.0.2\"}",
        &[],
        &bundle,
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(bundle.join("config.json")).unwrap(),
        "{\"ociVersion\":\"1.0.2\"}"
    );
    let root = bundle.join("rootfs");
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(root.join("opt/tools/lib/helper.txt")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 1000, 1000));
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/sandbox:/bin/sh\n"
    );
    assert_eq!(fs::read(root.join(".warden/init")).unwrap(), minimal_elf());
    // Unpacking again replaces the bundle whole; no temporary directory is left behind.
    unpack_bundle(&built.layout_dir, &built.tag, "{}", &[], &bundle).unwrap();
    assert_eq!(
        fs::read_to_string(bundle.join("config.json")).unwrap(),
        "{}"
    );
    let names: Vec<_> = fs::read_dir(area.path().join("bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["tools"]);
}

#[test]
fn unchanged_inputs_reuse_the_cache_and_changes_rebuild() {
    let area = Area::new();
    tools_tree(&area);
    let p = plan("cached", vec![copy("tools", "/opt/tools", 0)]);
    let ctx = area.ctx();
    let first = build_image(&p, &ctx, &no_progress).unwrap();
    let events = RefCell::new(Vec::new());
    let second = build_image(&p, &ctx, &|e| events.borrow_mut().push(e)).unwrap();
    assert!(second.reused);
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert_eq!(
        events.into_inner(),
        [Progress::Done {
            image: "cached".into(),
            reused: true,
            manifest_digest: first.manifest_digest.clone()
        }]
    );

    // Same bytes, new mtime: rebuilt (the fingerprint changed), same digest.
    let f = area.src().join("tools/agent.sh");
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&f, b"#!/bin/sh\necho agent\n", 0o755);
    let third = build_image(&p, &ctx, &no_progress).unwrap();
    assert!(!third.reused);
    assert_eq!(third.manifest_digest, first.manifest_digest);

    // A new file in a copied directory: rebuilt, new digest.
    write(&area.src().join("tools/lib/new.txt"), b"new\n", 0o644);
    let fourth = build_image(&p, &ctx, &no_progress).unwrap();
    assert!(!fourth.reused);
    assert_ne!(fourth.manifest_digest, first.manifest_digest);

    // A different epoch is a different image.
    let mut ctx2 = ctx.clone();
    ctx2.source_date_epoch = 1_700_000_000;
    let fifth = build_image(&p, &ctx2, &no_progress).unwrap();
    assert!(!fifth.reused);
    assert_ne!(fifth.manifest_digest, fourth.manifest_digest);
    let m = json(&blob(&fifth.layout_dir, &fifth.manifest_digest));
    let cfg = json(&blob(
        &fifth.layout_dir,
        m["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(cfg["created"], "2023-11-14T22:13:20Z");

    // A deleted layout is rebuilt even though the record matches.
    fs::remove_dir_all(&fifth.layout_dir).unwrap();
    assert!(!build_image(&p, &ctx2, &no_progress).unwrap().reused);
}

#[test]
fn progress_reports_start_files_and_done() {
    let area = Area::new();
    tools_tree(&area);
    let p = plan("progress", vec![copy("tools", "/opt/tools", 0)]);
    let events = RefCell::new(Vec::new());
    let built = build_image(&p, &area.ctx(), &|e| events.borrow_mut().push(e)).unwrap();
    let events = events.into_inner();
    assert_eq!(
        events.first(),
        Some(&Progress::Started {
            image: "progress".into()
        })
    );
    let entries = listing(&top_layer(&built.layout_dir, &built.manifest_digest)).len() as u64;
    assert_eq!(
        events[1],
        Progress::Files {
            image: "progress".into(),
            done: entries,
            total: entries
        }
    );
    assert_eq!(
        events.last(),
        Some(&Progress::Done {
            image: "progress".into(),
            reused: false,
            manifest_digest: built.manifest_digest.clone()
        })
    );
}

#[test]
fn errors_name_the_path() {
    let area = Area::new();
    let ctx = area.ctx();
    let err = build_image(&plan("e", vec![copy("nope", "/x", 0)]), &ctx, &no_progress).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "source `{}` does not exist",
            area.src().join("nope").display()
        )
    );

    let mut bad_init = ctx.clone();
    bad_init.init_binary = area.src().join("script");
    write(&bad_init.init_binary, b"#!/bin/sh\n", 0o755);
    let err = build_image(&plan("e", vec![]), &bad_init, &no_progress).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("`{}` is not an ELF file", bad_init.init_binary.display())
    );

    // ELF magic, then garbage: a malformed ELF is an error naming the file.
    let broken = area.src().join("broken-elf");
    let mut bytes = minimal_elf();
    bytes[32..40].copy_from_slice(&1000u64.to_le_bytes());
    bytes[56] = 1;
    write(&broken, &bytes, 0o755);
    let err = build_image(
        &plan("e", vec![from_host(&[broken.to_str().unwrap()], &[])]),
        &ctx,
        &no_progress,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "malformed ELF file `{}`: truncated at offset 1000",
            broken.display()
        )
    );
    assert!(matches!(err, ImageError::BadElf { .. }));

    let mut future = plan("e", vec![]);
    future.version = 99;
    let err = build_image(&future, &ctx, &no_progress).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid image `e`: plan version 99 is not supported (this build reads version 1)"
    );

    let err = build_image(&plan("../x", vec![]), &ctx, &no_progress).unwrap_err();
    assert!(matches!(err, ImageError::Plan { .. }), "{err}");

    let err = build_image(
        &plan("e", vec![copy("nope", "relative", 0)]),
        &ctx,
        &no_progress,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid image `e`: `copy` destination `relative` must be absolute"
    );
}
