//! Nix sources, with Debian's `nix-bin` (offline, no sandbox, local store).

use std::fs;
use std::path::PathBuf;

use warden_image::{ImageError, build_image, unpack_bundle};
use warden_wire::image::Source;

use crate::support::*;

/// Two derivations, `u` referencing `t`, plus `graph`, the `exportReferencesGraph` of `u`.
const EXPR: &str = r#"
let
  t = derivation { name = "warden-t"; system = builtins.currentSystem; builder = "/bin/sh";
                   args = [ "-c" "echo hi > $out" ]; };
  u = derivation { name = "warden-u"; system = builtins.currentSystem; builder = "/bin/sh";
                   args = [ "-c" "echo ${t} > $out" ]; };
  g = derivation { name = "warden-graph"; system = builtins.currentSystem; builder = "/bin/sh";
                   exportReferencesGraph = [ "graph" u ];
                   args = [ "-c" "/bin/cat graph > $out" ]; };
in { inherit t u g; }
"#;

fn nix_build(area: &Area, attr: &str) -> String {
    let file = area.path().join("t.nix");
    fs::write(&file, EXPR).unwrap();
    let out = tool("nix-build", "nix-bin")
        .args([
            "--option",
            "sandbox",
            "false",
            "--option",
            "substituters",
            "",
            // Build as the calling user: a fresh machine has no `nixbld` group.
            "--option",
            "build-users-group",
            "",
            "--no-out-link",
            "-A",
            attr,
        ])
        .arg(&file)
        .output()
        .unwrap();
    ok(out, "nix-build").trim().to_string()
}

#[test]
fn nix_closure_lands_in_the_image() {
    let area = Area::new();
    let u = nix_build(&area, "u");
    let t = nix_build(&area, "t");
    let p = plan(
        "nix",
        vec![Source::Nix {
            paths: vec![u.clone()],
        }],
    );
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    let bundle = area.path().join("bundle");
    unpack_bundle(&built.layout_dir, &built.tag, "{}", &[], &bundle).unwrap();
    let root = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(root.join(&u[1..])).unwrap(),
        format!("{t}\n")
    );
    assert_eq!(fs::read_to_string(root.join(&t[1..])).unwrap(), "hi\n");
    let store: Vec<_> = fs::read_dir(root.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(store.len(), 2, "{store:?}");

    // Something new lands in /nix/store; this image's inputs did not change.
    let unique = area.path().join("unique");
    fs::write(&unique, format!("{:?}", std::time::SystemTime::now())).unwrap();
    ok(
        tool("nix-store", "nix-bin")
            .arg("--add")
            .arg(&unique)
            .output()
            .unwrap(),
        "nix-store --add",
    );
    assert!(build_image(&p, &area.ctx(), &no_progress).unwrap().reused);
}

#[test]
fn nix_closure_file_from_export_references_graph() {
    let area = Area::new();
    let u = nix_build(&area, "u");
    let t = nix_build(&area, "t");
    let graph = nix_build(&area, "g");
    fs::copy(&graph, area.src().join("closure")).unwrap();
    let text = fs::read_to_string(area.src().join("closure")).unwrap();
    let mut want = vec![t.clone(), u.clone()];
    want.sort();
    assert_eq!(
        warden_image::parse_closure_file(&text, &PathBuf::from("closure")).unwrap(),
        want
    );
    let p = plan(
        "nixfile",
        vec![Source::NixClosure {
            file: "closure".into(),
        }],
    );
    let built = build_image(&p, &area.ctx(), &no_progress).unwrap();
    let bundle = area.path().join("bundle");
    unpack_bundle(&built.layout_dir, &built.tag, "{}", &[], &bundle).unwrap();
    for path in [&t, &u] {
        assert!(bundle.join("rootfs").join(&path[1..]).is_file(), "{path}");
    }
}

#[test]
fn missing_nix_is_a_clear_error() {
    let area = Area::new();
    let mut ctx = area.ctx();
    ctx.nix_store = Some(area.path().join("no-such-dir/nix-store"));
    let p = plan(
        "nix",
        vec![Source::Nix {
            paths: vec!["/nix/store/x".into()],
        }],
    );
    let err = build_image(&p, &ctx, &no_progress).unwrap_err();
    assert!(matches!(err, ImageError::NixMissing(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "nix is not installed: cannot run `{}`: No such file or directory (os error 2)",
            area.path().join("no-such-dir/nix-store").display()
        )
    );
}
