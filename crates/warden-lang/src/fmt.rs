//! Canonical formatting that keeps every comment: four-space indentation, one node per
//! line, strings always quoted, numbers as written, a blank line between top-level
//! items (consecutive one-line nodes of the same kind stay together).
//!
//! A printer of our own over the parsed document: comments and slashdashed text live in
//! the decor strings kdl keeps around nodes and entries, and are re-emitted verbatim
//! (trimmed and re-indented) at the canonical place.

use crate::diag::{Diagnostic, FileCx, SourceFile};
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};

const INDENT: &str = "    ";

/// Format a file canonically. Returns the message of the first problem when it does not
/// parse or is over the limits.
pub fn format(text: &str) -> Result<String, String> {
    format_file(&SourceFile::new("", text)).map_err(|d| {
        d.first()
            .map_or_else(|| "invalid KDL".into(), |d| d.message.clone())
    })
}

/// Format a file canonically, after the same limits and parse as `load`; the diagnostics
/// of the parse when it fails.
pub fn format_file(file: &SourceFile) -> Result<String, Vec<Diagnostic>> {
    let mut cx = crate::read::Cx { diags: Vec::new() };
    let Some(doc) = crate::load::parse(&FileCx::new(file.clone()), &mut cx, false) else {
        return Err(cx.diags);
    };
    let mut out = String::new();
    print_doc(&doc, 0, true, &mut out);
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    Ok(out)
}

fn print_doc(doc: &KdlDocument, level: usize, top: bool, out: &mut String) {
    let mut prev: Option<(String, bool)> = None;
    if let Some(f) = doc.format() {
        decor_lines(&f.leading, level, out);
    }
    for node in doc.nodes() {
        let name = node.name().value().to_string();
        let block = node.children().is_some();
        if top {
            let together = matches!(&prev, Some((p, false)) if *p == name && !block);
            if prev.is_some() && !together {
                out.push('\n');
            }
        }
        prev = Some((name, block));
        print_node(node, level, out);
    }
    if let Some(f) = doc.format() {
        decor_lines(&f.trailing, level, out);
    }
}

fn print_node(node: &KdlNode, level: usize, out: &mut String) {
    let indent = INDENT.repeat(level);
    let fmt = node.format();
    if let Some(f) = fmt {
        decor_lines(&f.leading, level, out);
    }
    out.push_str(&indent);
    if let Some(ty) = node.ty() {
        out.push_str(&format!("({})", ident(ty.value())));
    }
    out.push_str(&ident(node.name().value()));
    for e in node.entries() {
        print_entry(e, out);
    }
    let mut tail: Vec<String> = Vec::new();
    if let Some(f) = fmt {
        // Comments after the last entry (before `{`, `;` or the line end).
        tail.extend(comments(&f.before_children));
        tail.extend(comments(&f.before_terminator));
    }
    if let Some(children) = node.children() {
        for c in &tail {
            out.push(' ');
            out.push_str(c);
        }
        tail.clear();
        out.push_str(" {\n");
        print_doc(children, level + 1, false, out);
        out.push_str(&indent);
        out.push('}');
    }
    if let Some(f) = fmt {
        tail.extend(comments(&f.terminator));
        tail.extend(comments(&f.trailing));
    }
    for c in &tail {
        out.push(' ');
        out.push_str(c);
    }
    out.push('\n');
}

fn print_entry(e: &KdlEntry, out: &mut String) {
    let f = e.format();
    if let Some(f) = f {
        for c in comments(&f.leading) {
            out.push(' ');
            out.push_str(&c);
        }
    }
    out.push(' ');
    if let Some(k) = e.name() {
        out.push_str(&ident(k.value()));
        out.push('=');
    }
    if let Some(ty) = e.ty() {
        out.push_str(&format!("({})", ident(ty.value())));
    }
    out.push_str(&value(e.value(), f.map(|f| f.value_repr.as_str())));
    if let Some(f) = f {
        for c in comments(&f.trailing) {
            out.push(' ');
            out.push_str(&c);
        }
    }
}

fn value(v: &KdlValue, repr: Option<&str>) -> String {
    match v {
        KdlValue::String(s) => quote(s),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".into(),
        // Keep numbers as written (0o755 stays octal) when the repr is a plain number.
        _ => match repr {
            Some(r) if !r.is_empty() && !r.contains(char::is_whitespace) => r.to_string(),
            _ => v.to_string(),
        },
    }
}

/// The comments (and slashdashed text) in a decor string, each trimmed; whitespace and
/// line continuations dropped.
fn comments(decor: &str) -> Vec<String> {
    let t = decor.trim();
    if t.is_empty() || t == "\\" || t == ";" {
        return Vec::new();
    }
    let t = t.trim_start_matches(';').trim();
    if t.is_empty() {
        return Vec::new();
    }
    vec![
        t.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
    ]
}

/// Decor printed as whole lines at an indentation level (comments before a node).
fn decor_lines(decor: &str, level: usize, out: &mut String) {
    let indent = INDENT.repeat(level);
    for c in comments(decor) {
        for line in c.lines() {
            out.push_str(&indent);
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// A bare identifier when KDL 2 allows it, else a quoted string.
fn ident(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && !s.starts_with("-")
        && !s.starts_with(".")
        && !matches!(s, "true" | "false" | "null" | "inf" | "nan");
    if bare { s.to_string() } else { quote(s) }
}

/// A KDL 2 quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control()
                || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
