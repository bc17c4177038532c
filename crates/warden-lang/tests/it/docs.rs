//! Every ```kdl block in docs/ and README.md parses and validates; blocks tagged
//! ```kdl,fails must fail.

use std::path::Path;
use warden_lang::{SourceFile, load, render};

fn blocks(text: &str) -> Vec<(String, bool, usize)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, bool, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some((buf, fails, start)) = cur.take() {
            if t.starts_with("```") {
                out.push((buf, fails, start));
            } else {
                cur = Some((format!("{buf}{line}\n"), fails, start));
            }
        } else if let Some(tag) = t.strip_prefix("```kdl") {
            cur = Some((String::new(), tag.contains("fails"), i + 1));
        }
    }
    out
}

#[test]
fn every_kdl_block_in_the_docs() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    let mut n = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (block, fails, line) in blocks(&text) {
            n += 1;
            let name = format!("{}:{line}", f.display());
            let loaded = load(&SourceFile::new(name.clone(), block), &warden_lang::NoFiles);
            let errors = loaded.diagnostics.iter().any(|d| d.is_error());
            if fails {
                assert!(errors, "{name}: block tagged `fails` is valid");
            } else {
                assert!(!errors, "{name}:\n{}", render(&loaded.diagnostics));
            }
        }
    }
    assert!(n >= 20, "only {n} kdl blocks in the docs");
}
