//! Small typed accessors over KDL nodes. Each reports a diagnostic with a span on
//! misuse and returns `None`, so decoding goes on and every error is collected.

use crate::diag::{Diagnostic, FileCx, WithHelp, did_you_mean};
use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

/// A node together with the file it came from (layouts are other files).
#[derive(Clone, Copy)]
pub(crate) struct N<'a> {
    pub node: &'a KdlNode,
    pub file: &'a FileCx,
}

pub(crate) struct Cx {
    pub diags: Vec<Diagnostic>,
}

impl Cx {
    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }
}

impl<'a> N<'a> {
    pub fn name(&self) -> &'a str {
        self.node.name().value()
    }
    pub fn name_span(&self) -> SourceSpan {
        self.node.name().span()
    }
    pub fn loc(&self) -> crate::diag::Loc {
        self.file.loc(self.name_span())
    }
    pub fn diag(
        &self,
        code: &'static str,
        span: SourceSpan,
        msg: impl Into<String>,
        label: impl Into<String>,
    ) -> Diagnostic {
        self.file.diag(code, span, msg, label)
    }
    /// The positional arguments, in order.
    pub fn args(&self) -> impl Iterator<Item = &'a KdlEntry> + Clone + use<'a> {
        self.node.entries().iter().filter(|e| e.name().is_none())
    }
    pub fn prop(&self, key: &str) -> Option<&'a KdlEntry> {
        self.node
            .entries()
            .iter()
            .rev()
            .find(|e| e.name().is_some_and(|n| n.value() == key))
    }
    /// The nodes of the block, in order (none without a block).
    pub fn children(&self) -> impl ExactSizeIterator<Item = N<'a>> + Clone + use<'a> {
        let file = self.file;
        self.node
            .children()
            .map_or(&[][..], |d| d.nodes())
            .iter()
            .map(move |node| N { node, file })
    }

    /// Report properties not in `allowed` (with "did you mean") and repeated ones.
    pub fn check_props(&self, cx: &mut Cx, allowed: &[&str]) {
        let entries = self.node.entries();
        for (i, e) in entries.iter().enumerate() {
            let Some(name) = e.name() else { continue };
            let key = name.value();
            if !allowed.contains(&key) {
                let mut d = self.diag(
                    "warden::syntax::unknown-property",
                    name.span(),
                    format!("unknown property `{key}` on `{}`", self.name()),
                    "not a property of this node",
                );
                d = match did_you_mean(key, allowed) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None if allowed.is_empty() => {
                        d.help(format!("`{}` takes no properties", self.name()))
                    }
                    None => d.help(format!("`{}` takes: {}", self.name(), list(allowed))),
                };
                cx.push(d);
            } else if entries[..i]
                .iter()
                .any(|p| p.name().is_some_and(|n| n.value() == key))
            {
                cx.push(
                    self.diag(
                        "warden::syntax::duplicate-property",
                        name.span(),
                        format!("property `{key}` given twice"),
                        "repeated here",
                    )
                    .help("give each property once"),
                );
            }
        }
    }

    /// Report a wrong number of positional arguments.
    pub fn check_args(&self, cx: &mut Cx, min: usize, max: usize, what: &str) -> bool {
        let count = self.args().count();
        if count < min {
            cx.push(
                self.diag(
                    "warden::syntax::missing-argument",
                    self.name_span(),
                    format!("`{}` needs {what}", self.name()),
                    "argument missing",
                )
                .help(format!(
                    "write it after the node name: `{} ...`",
                    self.name()
                )),
            );
            return false;
        }
        if count > max {
            let extra = self.args().nth(max).map_or(self.name_span(), |e| e.span());
            cx.push(
                self.diag(
                    "warden::syntax::extra-argument",
                    extra,
                    format!("`{}` takes {}", self.name(), plural(max, "argument")),
                    "unexpected argument",
                )
                .help(format!("`{}` takes {what}", self.name())),
            );
            return false;
        }
        true
    }

    /// Report children on a node that takes none.
    pub fn no_children(&self, cx: &mut Cx) {
        if let Some(doc) = self.node.children() {
            cx.push(self.diag(
                "warden::syntax::unexpected-block",
                doc.span(),
                format!("`{}` takes no block", self.name()),
                "remove this block",
            ));
        }
    }

    /// Report child nodes that are not known, with "did you mean".
    pub fn unknown_child(&self, cx: &mut Cx, child: &N<'_>, known: &[&str]) {
        let name = child.name();
        let mut d = child.diag(
            "warden::syntax::unknown-node",
            child.name_span(),
            format!("unknown node `{name}` in `{}`", self.name()),
            "not known here",
        );
        d = match did_you_mean(name, known) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!("`{}` may contain: {}", self.name(), list(known))),
        };
        cx.push(d);
    }
}

pub(crate) fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize, word: &str) -> String {
    match n {
        0 => format!("no {word}s"),
        1 => format!("one {word}"),
        n => format!("at most {n} {word}s"),
    }
}

pub(crate) fn kind(v: &KdlValue) -> &'static str {
    match v {
        KdlValue::String(_) => "a string",
        KdlValue::Integer(_) => "an integer",
        KdlValue::Float(_) => "a number",
        KdlValue::Bool(_) => "a boolean",
        KdlValue::Null => "#null",
    }
}

/// Typed value extraction with a diagnostic on mismatch.
pub(crate) fn want_str(cx: &mut Cx, n: &N<'_>, e: &KdlEntry, what: &str) -> Option<String> {
    match e.value() {
        KdlValue::String(s) => Some(s.clone()),
        v => {
            cx.push(
                n.diag(
                    "warden::syntax::type",
                    e.span(),
                    format!("{what} must be a string, found {}", kind(v)),
                    "expected a string",
                )
                .help("quote it: \"...\""),
            );
            None
        }
    }
}

pub(crate) fn want_int(
    cx: &mut Cx,
    n: &N<'_>,
    e: &KdlEntry,
    what: &str,
    min: i128,
    max: i128,
) -> Option<i128> {
    match e.value() {
        KdlValue::Integer(i) if (min..=max).contains(i) => Some(*i),
        KdlValue::Integer(i) => {
            cx.push(n.diag(
                "warden::syntax::range",
                e.span(),
                format!("{what} {i} is out of range"),
                format!("must be between {min} and {max}"),
            ));
            None
        }
        v => {
            cx.push(n.diag(
                "warden::syntax::type",
                e.span(),
                format!("{what} must be an integer, found {}", kind(v)),
                "expected an integer",
            ));
            None
        }
    }
}

pub(crate) fn want_bool(cx: &mut Cx, n: &N<'_>, e: &KdlEntry, what: &str) -> Option<bool> {
    match e.value() {
        KdlValue::Bool(b) => Some(*b),
        v => {
            cx.push(
                n.diag(
                    "warden::syntax::type",
                    e.span(),
                    format!("{what} must be #true or #false, found {}", kind(v)),
                    "expected a boolean",
                )
                .help("KDL 2 writes booleans as #true and #false"),
            );
            None
        }
    }
}

/// All positional arguments as strings.
pub(crate) fn str_args(cx: &mut Cx, n: &N<'_>, what: &str) -> Vec<(String, SourceSpan)> {
    n.args()
        .filter_map(|e| want_str(cx, n, e, what).map(|s| (s, e.span())))
        .collect()
}

/// The first positional argument as a string (the name of named nodes).
pub(crate) fn name_arg(cx: &mut Cx, n: &N<'_>, what: &str) -> Option<(String, SourceSpan)> {
    n.check_args(cx, 1, 1, what);
    let e = n.args().next()?;
    want_str(cx, n, e, what).map(|s| (s, e.span()))
}

/// A string property.
pub(crate) fn str_prop(cx: &mut Cx, n: &N<'_>, key: &str) -> Option<(String, SourceSpan)> {
    let e = n.prop(key)?;
    match e.value() {
        KdlValue::String(s) => Some((s.clone(), e.span())),
        _ => want_str(cx, n, e, &format!("`{key}`")).map(|s| (s, e.span())),
    }
}

pub(crate) fn require<T>(cx: &mut Cx, n: &N<'_>, key: &str, v: Option<T>, help: &str) -> Option<T> {
    if v.is_none() && n.prop(key).is_none() {
        cx.push(
            n.diag(
                "warden::syntax::missing-property",
                n.name_span(),
                format!("`{}` needs `{key}=`", n.name()),
                format!("`{key}` missing"),
            )
            .help(help.to_string()),
        );
    }
    v
}

/// A required string property.
pub(crate) fn req_str(
    cx: &mut Cx,
    n: &N<'_>,
    key: &str,
    help: &str,
) -> Option<(String, SourceSpan)> {
    let v = str_prop(cx, n, key);
    require(cx, n, key, v, help)
}
