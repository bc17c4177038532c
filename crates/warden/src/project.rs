//! Reading a warden file from disk: the file, its layouts, and the compile options.

use crate::Exit;
use std::io::Read as _;
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
        match read_source_as(&full, rel) {
            Ok(f) => Ok(f),
            Err(SourceError::Io(e)) => Err(e),
            Err(SourceError::Refused(d)) => Err(format!(
                "`{}` line {}, column {}: {}",
                full.display(),
                d.loc.line,
                d.loc.column,
                d.message
            )),
        }
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

/// Why a file could not be read.
pub enum SourceError {
    /// The file system refused (the message names the path).
    Io(String),
    /// The bytes are over a limit or not text (`warden_lang::admit`).
    Refused(Box<Diagnostic>),
}

/// Read a warden file the one way every command does: at most one byte past
/// `warden_lang::MAX_BYTES`, then `warden_lang::admit` (size, UTF-8, NUL).
pub fn read_source(path: &Path) -> Result<SourceFile, SourceError> {
    read_source_as(path, path.display().to_string())
}

fn read_source_as(path: &Path, name: String) -> Result<SourceFile, SourceError> {
    let io = |e: std::io::Error| {
        SourceError::Io(format!("cannot read `{}`: {}", path.display(), io_msg(&e)))
    };
    let bytes = read_limited(path).map_err(io)?;
    warden_lang::admit(name, bytes).map_err(SourceError::Refused)
}

/// A file's bytes, at most one past `warden_lang::MAX_BYTES` (enough to refuse it).
pub fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(warden_lang::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read_source`], reporting a failure (exit 1).
pub fn read(out: &crate::ui::Out, path: &Path) -> Result<SourceFile, Exit> {
    match read_source(path) {
        Ok(s) => Ok(s),
        Err(SourceError::Io(e)) => {
            eprintln!("error: {e}");
            Err(Exit::User)
        }
        Err(SourceError::Refused(d)) => {
            report(out, std::slice::from_ref(&*d));
            Err(Exit::User)
        }
    }
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Load and validate; prints diagnostics. `Err(exit)` when the file is unusable.
pub fn load(out: &crate::ui::Out, path: &Path) -> Result<Project, Exit> {
    load_tracked(out, path).map(|(p, _)| p)
}

/// Every file a load read (the main file and its layouts), with the bytes it read.
pub type Sources = Vec<(PathBuf, Vec<u8>)>;

/// A loader that remembers what it read, so that a cache can tell an edit of a layout
/// as well as of the main file.
struct Recording {
    inner: FsLoader,
    read: std::cell::RefCell<Sources>,
}

impl Loader for Recording {
    fn load(&self, base: &str, path: &str) -> Result<SourceFile, String> {
        let full = self.inner.dir.join(warden_lang::join(base, path));
        let bytes = read_limited(&full).unwrap_or_default();
        self.read.borrow_mut().push((full, bytes));
        self.inner.load(base, path)
    }
}

/// Whether every file of `sources` still holds the bytes it held.
pub fn unchanged(sources: &Sources) -> bool {
    sources
        .iter()
        .all(|(path, bytes)| read_limited(path).is_ok_and(|now| now == *bytes))
}

/// [`load`], also returning what it read ([`unchanged`] tells when to load again).
pub fn load_tracked(out: &crate::ui::Out, path: &Path) -> Result<(Project, Sources), Exit> {
    let main = read_limited(path).unwrap_or_default();
    let src = read(out, path)?;
    let dir = dir_of(path);
    let loader = Recording {
        inner: FsLoader { dir: dir.clone() },
        read: std::cell::RefCell::new(vec![(path.to_path_buf(), main)]),
    };
    let loaded = warden_lang::load(&src, &loader);
    report(out, &loaded.diagnostics);
    let Some(model) = loaded.model else {
        return Err(Exit::User);
    };
    let base_dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let state_dir = std::env::var("WARDEN_STATE_DIR").unwrap_or_else(|_| "/var/lib/warden".into());
    Ok((
        Project {
            model,
            options: CompileOptions {
                base_dir: base_dir.display().to_string(),
                state_dir,
            },
        },
        loader.read.into_inner(),
    ))
}

/// Diagnostics rendered at most: past these the count says how many more there are, so
/// a file of 100,000 mistakes prints a screenful, not megabytes.
pub const MAX_SHOWN: usize = 50;

/// Diagnostics go to stderr as text (never to stdout, which carries data).
pub fn report(out: &crate::ui::Out, diags: &[Diagnostic]) {
    if diags.is_empty() {
        return;
    }
    if out.json && out.diagnostics_as_json {
        return;
    }
    let shown = &diags[..diags.len().min(MAX_SHOWN)];
    eprint!("{}", warden_lang::render(shown));
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        eprintln!(
            "error: {} found{}{}",
            plural(errors, "error"),
            if warnings > 0 {
                format!(", {}", plural(warnings, "warning"))
            } else {
                String::new()
            },
            if shown.len() < diags.len() {
                format!(" (the first {} shown)", shown.len())
            } else {
                String::new()
            }
        );
    } else if shown.len() < diags.len() {
        eprintln!(
            "warning: {} found (the first {} shown)",
            plural(warnings, "warning"),
            shown.len()
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
