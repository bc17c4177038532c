//! `oci-layout` bases: layers kept, whiteouts honoured, broken layouts refused.

use std::fs;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};
use warden_image::{ImageError, build_image, unpack_bundle};
use warden_wire::image::Source;

use crate::support::*;

fn digest(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn put(dir: &Path, bytes: &[u8]) -> String {
    let d = digest(bytes);
    write(&blob(dir, &d), bytes, 0o644);
    d
}

/// A tar layer of (path, Some(contents) | None for a directory).
fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_ustar();
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, path, c.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_cksum();
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A two-layer base: the second layer (gzip) deletes `deleted` with a whiteout and makes
/// `dir` opaque.
fn base_layout(dir: &Path) -> (String, String) {
    let l1 = layer(&[
        ("etc/", None),
        ("etc/passwd", Some("root:x:0:0:base:/:/bin/sh\n")),
        ("keep.txt", Some("keep\n")),
        ("deleted", Some("gone\n")),
        ("dir/", None),
        ("dir/old", Some("old\n")),
    ]);
    let l2 = layer(&[
        ("dir/.wh..wh..opq", Some("")),
        ("dir/new", Some("new\n")),
        (".wh.deleted", Some("")),
    ]);
    let l2z = gzip(&l2);
    let d1 = put(dir, &l1);
    let d2 = put(dir, &l2z);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Env": ["PATH=/base/bin", "LANG=C.UTF-8"], "WorkingDir": "/base" },
        "rootfs": { "type": "layers", "diff_ids": [digest(&l1), digest(&l2)] }
    });
    let cd = put(dir, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.to_string().len() },
        "layers": [
            { "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d1, "size": l1.len() },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d2, "size": l2z.len() }
        ]
    });
    let md = put(dir, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                        "size": manifest.to_string().len(),
                        "annotations": { "org.opencontainers.image.ref.name": "v1" } }]
    });
    write(&dir.join("index.json"), index.to_string().as_bytes(), 0o644);
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );
    (d1, d2)
}

fn base_source() -> Source {
    Source::OciLayout {
        dir: "base".into(),
        tag: "v1".into(),
    }
}

#[test]
fn whiteouts_in_the_base_are_honoured() {
    let area = Area::new();
    let (d1, d2) = base_layout(&area.src().join("base"));
    write(&area.src().join("extra.txt"), b"extra\n", 0o644);
    let p = plan(
        "based",
        vec![base_source(), copy("extra.txt", "/opt/extra.txt", 0)],
    );
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();

    let m = json(&blob(&built.layout_dir, &built.manifest_digest));
    let layers: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(layers.len(), 3);
    assert_eq!(&layers[..2], [d1.as_str(), d2.as_str()]);
    let cfg = json(&blob(
        &built.layout_dir,
        m["config"]["digest"].as_str().unwrap(),
    ));
    // The plan's PATH overrides the base's in place; the base's other variables stay.
    assert_eq!(
        cfg["config"]["Env"],
        serde_json::json!(["PATH=/usr/bin:/bin", "LANG=C.UTF-8"])
    );
    assert_eq!(cfg["config"]["WorkingDir"], "/sandbox");

    // The base has /etc/passwd: ours is not added on top.
    let top = listing(&top_layer(&built.layout_dir, &built.manifest_digest));
    assert!(!top.iter().any(|e| e.contains("passwd")), "{top:#?}");

    let bundle = area.path().join("bundle");
    unpack_bundle(&built.layout_dir, &built.tag, "{}", &[], &bundle).unwrap();
    let root = bundle.join("rootfs");
    assert!(!root.join("deleted").exists());
    assert_eq!(fs::read_to_string(root.join("keep.txt")).unwrap(), "keep\n");
    assert!(!root.join("dir/old").exists());
    assert_eq!(fs::read_to_string(root.join("dir/new")).unwrap(), "new\n");
    assert_eq!(
        fs::read_to_string(root.join("opt/extra.txt")).unwrap(),
        "extra\n"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/passwd")).unwrap(),
        "root:x:0:0:base:/:/bin/sh\n"
    );
    assert!(!root.join("dir/.wh..wh..opq").exists() && !root.join(".wh.deleted").exists());

    // umoci agrees.
    let ub = area.path().join("umoci");
    ok(
        tool("umoci", "umoci")
            .args([
                "unpack",
                "--image",
                &format!("{}:latest", built.layout_dir.display()),
            ])
            .arg(&ub)
            .output()
            .unwrap(),
        "umoci unpack",
    );
    assert!(!ub.join("rootfs/deleted").exists());
    assert!(!ub.join("rootfs/dir/old").exists());
    assert!(ub.join("rootfs/dir/new").exists());
}

#[test]
fn broken_bases_are_refused() {
    let area = Area::new();
    let base = area.src().join("base");
    let (d1, _) = base_layout(&base);
    let p = plan("broken", vec![base_source()]);
    let ctx = area.ctx();

    // A layer that does not match its digest.
    let l1 = blob(&base, &d1);
    let good = fs::read(&l1).unwrap();
    let mut bad = good.clone();
    bad[1024] ^= 1; // inside `etc/passwd` content: only the digest can tell
    fs::write(&l1, &bad).unwrap();
    let err = build_image(&p, &ctx, &no_progress).unwrap_err();
    assert!(matches!(err, ImageError::BrokenLayer { .. }), "{err}");
    assert!(err.to_string().contains(&format!("expected {d1}")), "{err}");

    // A truncated layer.
    fs::write(&l1, &good[..700]).unwrap();
    let err = build_image(&p, &ctx, &no_progress).unwrap_err();
    assert!(matches!(err, ImageError::BrokenLayer { .. }), "{err}");
    fs::write(&l1, &good).unwrap();

    // Wrong tag, no marker file.
    let p2 = plan(
        "broken",
        vec![Source::OciLayout {
            dir: "base".into(),
            tag: "v2".into(),
        }],
    );
    let err = build_image(&p2, &ctx, &no_progress).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "broken OCI layout `{}`: no image tagged `v2`",
            base.display()
        )
    );
    fs::remove_file(base.join("oci-layout")).unwrap();
    let err = build_image(&p, &ctx, &no_progress).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "broken OCI layout `{}`: no `oci-layout` file",
            base.display()
        )),
        "{err}"
    );

    // A base that is not first.
    let p3 = plan(
        "broken",
        vec![copy("base/index.json", "/i", 0), base_source()],
    );
    let err = build_image(&p3, &ctx, &no_progress).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid image `broken`: `oci-layout` must be the first source"
    );
}

#[test]
fn truncated_layer_leaves_no_bundle() {
    let area = Area::new();
    write(&area.src().join("f"), b"data", 0o644);
    let built = build_image(
        &plan("t", vec![copy("f", "/f", 0)]),
        &area.ctx(),
        &no_progress,
    )
    .unwrap();
    let layer = top_layer(&built.layout_dir, &built.manifest_digest);
    let bytes = fs::read(&layer).unwrap();
    fs::write(&layer, &bytes[..bytes.len() / 2]).unwrap();
    let bundle = area.path().join("bundles/t");
    let err = unpack_bundle(&built.layout_dir, &built.tag, "{}", &[], &bundle).unwrap_err();
    assert!(matches!(err, ImageError::BrokenLayer { .. }), "{err}");
    assert_eq!(
        fs::read_dir(area.path().join("bundles")).unwrap().count(),
        0
    );
}

/// A layout whose single layer plants `escape -> <host dir>` and then writes through it.
#[test]
fn layers_cannot_write_outside_the_rootfs() {
    let area = Area::new();
    let host_dir = area.path().join("host-victim");
    mkdir(&host_dir, 0o755);
    let dir = area.src().join("evil");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "escape", &host_dir).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "escape/pwned", &b"pwned\n"[..])
        .unwrap();
    let l = b.into_inner().unwrap();
    let dl = put(&dir, &l);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [dl] }
    })
    .to_string();
    let cd = put(&dir, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dl, "size": l.len() }]
    })
    .to_string();
    let md = put(&dir, manifest.as_bytes());
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
        "annotations": { "org.opencontainers.image.ref.name": "evil" } }] });
    write(&dir.join("index.json"), index.to_string().as_bytes(), 0o644);
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    );

    let bundle = area.path().join("bundle");
    unpack_bundle(&dir, "evil", "{}", &[], &bundle).unwrap();
    assert!(!host_dir.join("pwned").exists());
    let inside = bundle
        .join("rootfs")
        .join(host_dir.strip_prefix("/").unwrap())
        .join("pwned");
    assert_eq!(fs::read_to_string(inside).unwrap(), "pwned\n");
}
