use crate::Exit;
use crate::project::{self, plural};
use crate::ui::Out;
use std::path::Path;

pub fn run(out: &Out, path: &Path) -> anyhow::Result<Exit> {
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let compiled = match project::compile(&p) {
        Ok(c) => c,
        Err(e) => return Ok(e),
    };
    let results = warden_compile::run_tests(&p.model, &compiled);
    let failed = results.iter().filter(|r| !r.pass).count();
    if out.json {
        out.json(&serde_json::json!({"passed": results.len() - failed, "failed": failed, "tests": results}));
    } else {
        for r in &results {
            let scope = r
                .sandbox
                .as_deref()
                .map(|s| format!("{s}: "))
                .unwrap_or_default();
            if r.pass {
                println!(
                    "ok     {scope}{} -> {} ({}:{})",
                    r.subject, r.actual, r.file, r.line
                );
            } else {
                println!(
                    "FAILED {scope}{} -> {}, expected {} ({}:{}): {}",
                    r.subject, r.actual, r.expected, r.file, r.line, r.why
                );
            }
        }
        println!("{} passed, {} failed", results.len() - failed, failed);
        if results.is_empty() {
            eprintln!("note: `{}` has no `test` nodes", path.display());
        }
    }
    let _ = plural;
    Ok(if failed > 0 { Exit::User } else { Exit::Ok })
}
