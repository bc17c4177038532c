//! The warden language: one KDL file (plus the layouts it builds on) parsed, decoded and
//! validated into a [`Model`]. Pure: reading layout files goes through a [`Loader`].
//!
//! Decoding is by hand over `kdl` 6 documents so that every value keeps its span and every
//! problem becomes a [`Diagnostic`]; all problems in a file are reported in one run.

mod decode;
pub mod diag;
pub mod edit;
mod fastparse;
pub mod fmt;
mod load;
pub mod model;
mod read;
mod source;
mod validate;
pub mod values;

pub use decode::{Url, parse_url};
pub use diag::{Diagnostic, Loc, SourceFile, render};
pub use load::{BUILTIN_LAYOUTS, Loader, NoFiles, join, parent};
pub use model::Model;
pub use source::{MAX_BYTES, MAX_NESTING, admit};

/// The result of loading a file: the model when there were no errors, and every
/// diagnostic (warnings included) in file order.
#[derive(Debug)]
pub struct Loaded {
    pub model: Option<Model>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parse, resolve layouts, decode and validate.
pub fn load(file: &SourceFile, loader: &dyn Loader) -> Loaded {
    let mut cx = read::Cx { diags: Vec::new() };
    let model =
        load::load(file, loader, &mut cx).map(|l| decode::decode(&l.files, l.layouts, &mut cx));
    let mut diagnostics = cx.diags;
    // File order; on one line, an invalid name first: it explains the messages on the
    // same node that repeat the name (`sandbox `…` has no command`).
    let rank = |d: &Diagnostic| u8::from(d.code != "warden::syntax::name");
    diagnostics.sort_by(|a, b| {
        (&a.loc.file, a.loc.line, rank(a), a.loc.column).cmp(&(
            &b.loc.file,
            b.loc.line,
            rank(b),
            b.loc.column,
        ))
    });
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    Loaded {
        model: if ok { model } else { None },
        diagnostics,
    }
}

/// The fast parser alone, for the differential test against `kdl`: `Some` only when
/// `kdl::KdlDocument::parse_v2` would produce the same tree.
#[doc(hidden)]
pub fn fast_parse_for_tests(text: &str) -> Option<kdl::KdlDocument> {
    fastparse::parse(text)
}
