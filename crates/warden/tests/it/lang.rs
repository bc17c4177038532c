//! check, fmt, explain, test and build --spec-only through the binary.

use super::{repo, run, warden};

#[test]
fn check_every_example_and_layout() {
    for dir in ["examples", "layouts"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "kdl") {
                continue;
            }
            let (code, _, err) = run(warden().arg("check").arg(&p));
            assert_eq!(code, 0, "{}: {err}", p.display());
            // An example is a promise: its inline tests pass as shipped.
            let (code, out, err) = run(warden().arg("test").arg(&p));
            assert_eq!(code, 0, "{}: {out}{err}", p.display());
            assert!(
                out.lines()
                    .chain(err.lines())
                    .any(|l| l.ends_with(" passed, 0 failed")),
                "{}: {out}{err}",
                p.display()
            );
        }
    }
}

#[test]
fn check_invalid_exits_1_with_location() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("warden.kdl");
    std::fs::write(
        &f,
        "sandbox \"a\" {\n    image \"nope\"\n    command \"/bin/sh\"\n}\n",
    )
    .unwrap();
    let (code, out, err) = run(warden().arg("check").current_dir(d.path()));
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(err.contains("warden.kdl:2:11"), "{err}");
    assert!(err.contains("no image named `nope`"), "{err}");
    assert!(err.contains("error: 1 error found"), "{err}");
}

#[test]
fn check_json() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("w.kdl");
    std::fs::write(&f, "sandbx \"a\"\n").unwrap();
    let (code, out, _) = run(warden().args(["check", "--json"]).arg(&f));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["code"], "warden::syntax::unknown-node");
    assert_eq!(v["diagnostics"][0]["line"], 1);
    assert_eq!(v["diagnostics"][0]["column"], 1);
    assert_eq!(v["diagnostics"][0]["help"], "did you mean `sandbox`?");
}

#[test]
fn missing_file_is_a_user_error() {
    let (code, _, err) = run(warden().args(["check", "/nonexistent/warden.kdl"]));
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "error: cannot read `/nonexistent/warden.kdl`: no such file or directory\n"
    );
}

#[test]
fn test_quickstart_passes_with_allow_and_deny() {
    let (code, out, _) = run(warden()
        .arg("test")
        .arg(repo().join("examples/quickstart.kdl")));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("-> allow"), "{out}");
    assert!(out.contains("-> deny"), "{out}");
    assert!(out.ends_with("4 passed, 0 failed\n"), "{out}");
}

#[test]
fn wrong_expectation_exits_1_and_names_test_and_line() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("w.kdl");
    std::fs::write(
        &f,
        "image \"i\" {\n    from-host \"/bin/sh\"\n}\nsandbox \"s\" {\n    image \"i\"\n    command \"/bin/sh\"\n    egress {\n        allow \"a.example\"\n        test \"https://a.example/\" expect=\"allow\"\n        test \"https://b.example/\" expect=\"allow\"\n    }\n}\n",
    )
    .unwrap();
    let (code, out, _) = run(warden().arg("test").arg(&f));
    assert_eq!(code, 1);
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAILED")).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(
        failed[0].contains("CONNECT https://b.example/ -> deny, expected allow"),
        "{out}"
    );
    assert!(failed[0].contains("w.kdl:10"), "{out}");
    assert!(
        failed[0].ends_with("no egress rule allows this destination"),
        "{out}"
    );
    assert!(out.ends_with("1 passed, 1 failed\n"));
    let (code, out, _) = run(warden().args(["test", "--json"]).arg(&f));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed"], 1);
    assert_eq!(v["tests"][1]["line"], 10);
}

#[test]
fn spec_only_is_byte_identical_from_two_working_directories() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let example = repo().join("examples/claude-code.kdl");
    let (c1, _, e1) = run(warden()
        .args(["build", "--spec-only", "--out"])
        .arg(a.path().join("out"))
        .arg(&example)
        .current_dir(a.path()));
    let rel = pathdiff(&example, b.path());
    let (c2, _, e2) = run(warden()
        .args(["build", "--spec-only", "--out", "out"])
        .arg(&rel)
        .current_dir(b.path()));
    assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
    for f in ["config.json", "warden.json"] {
        let x = std::fs::read(a.path().join("out/claude").join(f)).unwrap();
        let y = std::fs::read(b.path().join("out/claude").join(f)).unwrap();
        assert!(!x.is_empty());
        assert_eq!(x, y, "{f} differs");
    }
    // Relative bind sources resolve against the file's directory, not the cwd.
    let cfg = std::fs::read_to_string(a.path().join("out/claude/config.json")).unwrap();
    let ws = format!(
        "\"source\": \"{}/workspace\"",
        repo().join("examples").display()
    );
    assert!(cfg.contains(&ws), "{cfg}");
}

/// A relative path from `base` to `target` (both absolute).
fn pathdiff(target: &std::path::Path, base: &std::path::Path) -> std::path::PathBuf {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut p = std::path::PathBuf::new();
    for _ in common..b.len() {
        p.push("..");
    }
    for c in &t[common..] {
        p.push(c);
    }
    p
}

#[test]
fn fmt_check_and_write() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("w.kdl");
    std::fs::write(
        &f,
        "// keep me\nimage  i {\n  from-host \"/bin/sh\" // and me\n}\n",
    )
    .unwrap();
    let (code, _, err) = run(warden().args(["fmt", "--check"]).arg(&f));
    assert_eq!(code, 1);
    assert!(err.contains("is not formatted"), "{err}");
    let (code, _, _) = run(warden().arg("fmt").arg(&f));
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "// keep me\nimage \"i\" {\n    from-host \"/bin/sh\" // and me\n}\n"
    );
    let (code, _, _) = run(warden().args(["fmt", "--check"]).arg(&f));
    assert_eq!(code, 0);
    // A broken file is reported and left untouched.
    std::fs::write(&f, "image \"i\" {\n").unwrap();
    let (code, _, err) = run(warden().arg("fmt").arg(&f));
    assert_eq!(code, 1);
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "image \"i\" {\n");
}

#[test]
fn explain_names_the_walls() {
    let (code, out, _) = run(warden()
        .arg("explain")
        .arg(repo().join("examples/quickstart.kdl")));
    assert_eq!(code, 0);
    assert!(out.contains("sandbox `hello`"), "{out}");
    assert!(
        out.contains("may reach deb.debian.org on port 443: package index"),
        "{out}"
    );
    assert!(out.contains("the root filesystem is read-only"), "{out}");
    // The solo layout's orders, with the tool calls they govern.
    let (code, out, _) = run(warden()
        .arg("explain")
        .arg(repo().join("examples/claude-code.kdl")));
    assert_eq!(code, 0);
    assert!(
        out.contains("standing orders (a tool call or action none names: ask a human first)\n"),
        "{out}"
    );
    assert!(
        out.contains("  `git-push` (ask): Push a feature branch whose tests pass; never force. Override: Ask First Tool calls: Bash(git push:*)\n"),
        "{out}"
    );
    let (code, out, _) = run(warden()
        .args(["explain", "--json"])
        .arg(repo().join("examples/local-inference.kdl")));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["sandboxes"][0]["network"][0],
        "no network at all: only a loopback interface"
    );
}
