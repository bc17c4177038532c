//! `warden fmt`: canonical, idempotent, keeps every comment, keeps the meaning.

use std::path::Path;
use warden_lang::fmt::format;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn kdl_files() -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for d in ["examples", "layouts"] {
        for e in std::fs::read_dir(repo().join(d)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "kdl") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

fn comments(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            l.find("//")
                .or_else(|| l.find("/*"))
                .map(|i| l[i..].trim().to_string())
        })
        .collect()
}

#[test]
fn idempotent_and_keeps_comments_on_every_example() {
    let files = kdl_files();
    assert!(files.len() >= 9);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let once = format(&text).unwrap();
        let twice = format(&once).unwrap();
        assert_eq!(once, twice, "not idempotent: {}", f.display());
        assert_eq!(
            comments(&text),
            comments(&once),
            "comments changed: {}",
            f.display()
        );
        // The shipped files are already canonical.
        assert_eq!(text, once, "{} is not formatted", f.display());
    }
}

#[test]
fn messy_input_is_canonicalized_with_comments_kept() {
    let messy = "// head\nimage   a {\n  from-host \"/bin/sh\" /* inline */ \"/bin/ls\" // trailing\n  /- env \"X\" \"y\"\n}\n// between\nprovider  p  api=openai endpoint=\"http://x\"\nprovider \"q\" api=\"openai\" endpoint=\"http://x\" /-key-env=\"K\"\nsandbox s { image a; command \"/bin/sh\"; limits  pids=0x10 cpus=1.5 }\n/* end */\n";
    let expected = "// head\nimage \"a\" {\n    from-host \"/bin/sh\" /* inline */ \"/bin/ls\" // trailing\n    /- env \"X\" \"y\"\n}\n\n// between\nprovider \"p\" api=\"openai\" endpoint=\"http://x\"\nprovider \"q\" api=\"openai\" endpoint=\"http://x\" /-key-env=\"K\"\n\nsandbox \"s\" {\n    image \"a\"\n    command \"/bin/sh\"\n    limits pids=0x10 cpus=1.5\n}\n/* end */\n";
    assert_eq!(format(messy).unwrap(), expected);
    assert_eq!(format(expected).unwrap(), expected);
}

#[test]
fn escapes_round_trip() {
    let src = "env \"A\" \"tab\\there \\\"q\\\" back\\\\slash\\u{1b}\"\n";
    let out = format(src).unwrap();
    let a = kdl::KdlDocument::parse_v2(src).unwrap();
    let b = kdl::KdlDocument::parse_v2(&out).unwrap();
    assert_eq!(
        a.nodes()[0].entries()[1].value(),
        b.nodes()[0].entries()[1].value()
    );
}

#[test]
fn broken_input_is_an_error() {
    assert!(format("image \"a\" {").is_err());
}
