use crate::Exit;
use crate::project::{self, plural};
use crate::ui::Out;
use serde::Serialize;
use std::path::Path;

#[derive(Serialize)]
struct JsonDiag<'a> {
    severity: &'a str,
    code: &'a str,
    message: &'a str,
    file: &'a str,
    line: u32,
    column: u32,
    label: &'a str,
    help: Option<&'a str>,
}

#[derive(Serialize)]
struct Report<'a> {
    file: String,
    valid: bool,
    /// The first `project::MAX_SHOWN`; `omitted` counts the rest.
    diagnostics: Vec<JsonDiag<'a>>,
    omitted: usize,
    sandboxes: usize,
    images: usize,
}

pub fn run(out: &Out, path: &Path) -> anyhow::Result<Exit> {
    let loaded = match project::read_source(path) {
        Ok(src) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            warden_lang::load(
                &src,
                &project::FsLoader {
                    dir: dir.to_path_buf(),
                },
            )
        }
        Err(project::SourceError::Io(e)) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
        // A refused file is reported like any invalid one (in the JSON report too).
        Err(project::SourceError::Refused(d)) => warden_lang::Loaded {
            model: None,
            diagnostics: vec![*d],
        },
    };
    let valid = loaded.model.is_some();
    if out.json {
        let diagnostics = loaded
            .diagnostics
            .iter()
            .take(project::MAX_SHOWN)
            .map(|d| JsonDiag {
                severity: if d.is_error() { "error" } else { "warning" },
                code: d.code,
                message: &d.message,
                file: &d.loc.file,
                line: d.loc.line,
                column: d.loc.column,
                label: &d.label,
                help: d.help.as_deref(),
            })
            .collect();
        out.json(&Report {
            file: path.display().to_string(),
            valid,
            diagnostics,
            omitted: loaded.diagnostics.len().saturating_sub(project::MAX_SHOWN),
            sandboxes: loaded.model.as_ref().map_or(0, |m| m.sandboxes.len()),
            images: loaded.model.as_ref().map_or(0, |m| m.images.len()),
        });
    } else {
        project::report(out, &loaded.diagnostics);
        if let Some(m) = &loaded.model {
            // A model that loads must also compile; say so only when both hold.
            let options = warden_compile::CompileOptions {
                base_dir: "/".into(),
                state_dir: "/var/lib/warden".into(),
            };
            match warden_compile::compile(m, &options) {
                // The process ends right after the verdict: freeing thousands of specs
                // one allocation at a time would cost more than compiling them.
                Ok(compiled) => std::mem::forget(compiled),
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(Exit::Internal);
                }
            }
            eprintln!(
                "{}: ok ({}, {})",
                path.display(),
                plural(m.sandboxes.len(), "sandbox").replace("sandboxs", "sandboxes"),
                plural(m.images.len(), "image")
            );
        }
    }
    std::mem::forget(loaded);
    Ok(if valid { Exit::Ok } else { Exit::User })
}
