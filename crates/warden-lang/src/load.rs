//! Loading: parse the main file and the layouts it builds on, then merge them into one
//! set of top-level items (later files override earlier ones by kind and name).

use crate::diag::{Diagnostic, FileCx, SourceFile, WithHelp};
use crate::read::{Cx, N, str_args};
use kdl::KdlDocument;
use miette::SourceSpan;

/// Layouts shipped with warden, usable as `layout "name"`.
pub const BUILTIN_LAYOUTS: &[(&str, &str)] = &[
    ("solo", include_str!("../../../layouts/solo.kdl")),
    ("strict", include_str!("../../../layouts/strict.kdl")),
    (
        "multi-tenant",
        include_str!("../../../layouts/multi-tenant.kdl"),
    ),
];

/// Reads layout files named by path. The CLI reads the disk; tests use a map.
pub trait Loader {
    /// `path` as written in the file, joined to the including file's directory by the
    /// loader. Returns the file's display name and text.
    fn load(&self, base: &str, path: &str) -> Result<SourceFile, String>;
}

/// A loader that refuses every path (built-in layouts still work).
pub struct NoFiles;

impl Loader for NoFiles {
    fn load(&self, _base: &str, path: &str) -> Result<SourceFile, String> {
        Err(format!("cannot read `{path}` here"))
    }
}

pub(crate) struct Loaded {
    /// Parsed files, layouts first (in application order), the main file last.
    pub files: Vec<(FileCx, KdlDocument, String)>,
    pub layouts: Vec<String>,
}

const MAX_DEPTH: usize = 8;

/// Join a relative path onto a base directory, both as written ("" is the main file's dir).
pub fn join(base: &str, path: &str) -> String {
    if path.starts_with('/') || base.is_empty() {
        return path.to_string();
    }
    format!("{base}/{}", path.strip_prefix("./").unwrap_or(path))
}

pub fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((p, _)) => p.to_string(),
        None => String::new(),
    }
}

pub(crate) fn load(main: &SourceFile, loader: &dyn Loader, cx: &mut Cx) -> Option<Loaded> {
    let mut out = Loaded {
        files: Vec::new(),
        layouts: Vec::new(),
    };
    let mut stack = Vec::new();
    load_file(
        main.clone(),
        String::new(),
        loader,
        cx,
        &mut out,
        &mut stack,
        0,
    );
    if out.files.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// Parse a file after [`crate::source::limits`]. The fast parser's tree carries no
/// comments, so `fmt` asks for kdl's own (`fast: false`).
pub(crate) fn parse(file: &FileCx, cx: &mut Cx, fast: bool) -> Option<KdlDocument> {
    if let Some(d) = crate::source::limits(file) {
        cx.push(d);
        return None;
    }
    // The common subset parses fast by hand; anything else (and every error) goes to
    // kdl's parser, which owns the diagnostics.
    if fast && let Some(doc) = crate::fastparse::parse(&file.file.text) {
        return Some(doc);
    }
    match KdlDocument::parse_v2(&file.file.text) {
        Ok(doc) => Some(doc),
        Err(err) => {
            for d in err.diagnostics {
                let span = clamp(d.span, file.file.text.len());
                let mut diag = file.diag(
                    "warden::syntax::kdl",
                    span,
                    d.message.unwrap_or_else(|| "invalid KDL".to_string()),
                    d.label.unwrap_or_else(|| "here".to_string()),
                );
                let spanned = file
                    .file
                    .text
                    .get(span.offset()..span.offset() + span.len())
                    .unwrap_or("");
                let help = match spanned.trim() {
                    w @ ("true" | "false" | "null") => format!("KDL 2 writes this as `#{w}`"),
                    _ => d.help.unwrap_or_else(|| {
                        "warden files are KDL 2: strings in quotes, #true/#false, // comments"
                            .to_string()
                    }),
                };
                diag = diag.help(help);
                cx.push(diag);
            }
            None
        }
    }
}

fn clamp(span: SourceSpan, len: usize) -> SourceSpan {
    let off = span.offset().min(len);
    let l = span.len().min(len - off);
    SourceSpan::new(off.into(), l)
}

fn load_file(
    file: SourceFile,
    base: String,
    loader: &dyn Loader,
    cx: &mut Cx,
    out: &mut Loaded,
    stack: &mut Vec<String>,
    depth: usize,
) {
    let fcx = FileCx::new(file);
    let Some(doc) = parse(&fcx, cx, true) else {
        return;
    };
    stack.push(fcx.file.name.clone());
    for node in doc.nodes() {
        let n = N { node, file: &fcx };
        if n.name() != "layout" {
            continue;
        }
        n.check_props(cx, &[]);
        n.no_children(cx);
        if !n.check_args(
            cx,
            1,
            1,
            "a layout name (`solo`, `strict`, `multi-tenant`) or a path",
        ) {
            continue;
        }
        let Some((name, span)) = str_args(cx, &n, "a layout").into_iter().next() else {
            continue;
        };
        let resolved = if let Some((_, text)) = BUILTIN_LAYOUTS.iter().find(|(b, _)| *b == name) {
            Ok((
                SourceFile::new(format!("layouts/{name}.kdl"), *text),
                String::new(),
            ))
        } else if name.contains('/') || name.ends_with(".kdl") {
            loader
                .load(&base, &name)
                .map(|f| (f, parent(&join(&base, &name))))
        } else {
            let names: Vec<&str> = BUILTIN_LAYOUTS.iter().map(|(n, _)| *n).collect();
            let mut d = fcx.diag(
                "warden::layout::unknown",
                span,
                format!("unknown layout `{name}`"),
                "no such built-in layout",
            );
            d = match crate::diag::did_you_mean(&name, &names) {
                Some(s) => d.help(format!(
                    "did you mean `{s}`? a path must contain `/` or end in `.kdl`"
                )),
                None => d.help(format!(
                    "built-in layouts: {}; or give a path such as `./base.kdl`",
                    crate::read::list(&names)
                )),
            };
            cx.push(d);
            continue;
        };
        match resolved {
            Err(e) => cx.push(layout_err(&fcx, span, &name, e)),
            Ok((f, _)) if stack.contains(&f.name) => cx.push(
                fcx.diag(
                    "warden::layout::cycle",
                    span,
                    format!("layout `{name}` includes itself"),
                    "cycle here",
                )
                .help(format!(
                    "include chain: {} -> {}",
                    stack.join(" -> "),
                    f.name
                )),
            ),
            Ok(_) if depth >= MAX_DEPTH => cx.push(
                fcx.diag(
                    "warden::layout::depth",
                    span,
                    "layouts nest too deeply",
                    "here",
                )
                .help(format!("at most {MAX_DEPTH} levels of layouts")),
            ),
            Ok((f, fbase)) => {
                out.layouts.push(name.clone());
                load_file(f, fbase, loader, cx, out, stack, depth + 1);
            }
        }
    }
    stack.pop();
    out.files.push((fcx, doc, base));
}

fn layout_err(f: &FileCx, span: SourceSpan, name: &str, e: String) -> Diagnostic {
    f.diag(
        "warden::layout::read",
        span,
        format!("cannot read layout `{name}`"),
        e,
    )
    .help("a layout path is relative to the file that names it")
}
