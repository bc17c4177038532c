//! Reading a warden file from disk: the file, its layouts, and the compile options.

use crate::Exit;
use std::path::{Path, PathBuf};
use warden_compile::{CompileOptions, Compiled};
use warden_lang::{Diagnostic, Loader, Model, SourceFile};

pub const DEFAULT_FILE: &str = "warden.kdl";

pub fn file(f: Option<PathBuf>) -> PathBuf {
    f.unwrap_or_else(|| PathBuf::from(DEFAULT_FILE))
}

/// Layout paths are relative to the main file's directory.
pub struct FsLoader {
    pub dir: PathBuf,
}

impl Loader for FsLoader {
    fn load(&self, base: &str, path: &str) -> Result<SourceFile, String> {
        let rel = warden_lang::join(base, path);
        let full = self.dir.join(&rel);
        std::fs::read_to_string(&full)
            .map(|text| SourceFile::new(rel.clone(), text))
            .map_err(|e| format!("cannot read `{}`: {}", full.display(), io_msg(&e)))
    }
}

pub fn io_msg(e: &std::io::Error) -> String {
    let s = e.to_string();
    // "No such file or directory (os error 2)" -> "no such file or directory"
    let s = s.split(" (os error").next().unwrap_or(&s).to_string();
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => s,
    }
}

pub struct Project {
    pub model: Model,
    pub options: CompileOptions,
}

pub fn read_source(path: &Path) -> Result<SourceFile, String> {
    let text = std::fs::read(path)
        .map_err(|e| format!("cannot read `{}`: {}", path.display(), io_msg(&e)))?;
    let text =
        String::from_utf8(text).map_err(|_| format!("`{}` is not UTF-8 text", path.display()))?;
    Ok(SourceFile::new(path.display().to_string(), text))
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Load and validate; prints diagnostics. `Err(exit)` when the file is unusable.
pub fn load(out: &crate::ui::Out, path: &Path) -> Result<Project, Exit> {
    let src = match read_source(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Err(Exit::User);
        }
    };
    let dir = dir_of(path);
    let loaded = warden_lang::load(&src, &FsLoader { dir: dir.clone() });
    report(out, &loaded.diagnostics);
    let Some(model) = loaded.model else {
        return Err(Exit::User);
    };
    let base_dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let state_dir = std::env::var("WARDEN_STATE_DIR").unwrap_or_else(|_| "/var/lib/warden".into());
    Ok(Project {
        model,
        options: CompileOptions {
            base_dir: base_dir.display().to_string(),
            state_dir,
        },
    })
}

/// Diagnostics go to stderr as text (never to stdout, which carries data).
pub fn report(out: &crate::ui::Out, diags: &[Diagnostic]) {
    if diags.is_empty() {
        return;
    }
    if out.json && out.diagnostics_as_json {
        return;
    }
    eprint!("{}", warden_lang::render(diags));
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        eprintln!(
            "error: {} found{}",
            plural(errors, "error"),
            if warnings > 0 {
                format!(", {}", plural(warnings, "warning"))
            } else {
                String::new()
            }
        );
    }
}

pub fn plural(n: usize, w: &str) -> String {
    if n == 1 {
        format!("1 {w}")
    } else {
        format!("{n} {w}s")
    }
}

pub fn compile(p: &Project) -> Result<Compiled, Exit> {
    warden_compile::compile(&p.model, &p.options).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Internal
    })
}

/// Write a file atomically: temp file in the same directory, then rename.
/// `text` loaded as if it were the file at `path` (layouts found beside it): what a
/// command that edits the file checks before it writes.
pub fn load_text(path: &Path, text: &str) -> warden_lang::Loaded {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    warden_lang::load(
        &warden_lang::SourceFile::new(path.display().to_string(), text.to_string()),
        &FsLoader { dir },
    )
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
