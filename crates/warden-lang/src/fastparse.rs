//! A fast path for parsing: a hand-written, single-pass KDL 2 parser for the subset that
//! warden files use, building the same [`KdlDocument`] (names, values, spans) that
//! `KdlDocument::parse_v2` builds. Anything outside the subset, and anything invalid,
//! returns `None` and the caller falls back to kdl's parser, which owns the error
//! diagnostics. Correctness rule: whenever [`parse`] returns `Some(doc)`, `parse_v2`
//! succeeds with the same tree.
//!
//! The subset: bare identifiers and quoted strings (escapes `\" \\ \n \t \r \b \f \s`
//! and `\u{...}`; `\/` is not a KDL 2 escape, kdl refuses it) as node names, values and
//! property keys; decimal, hex, octal and binary integers; decimal floats; `#true`
//! `#false` `#null`; properties `key=value` with nothing around `=`; children blocks;
//! `;`; `//` and nested `/* */` comments;
//! `/-` on nodes, entries and children blocks; `\n` and `\r\n` newlines; spaces and
//! tabs. Nesting is bounded at [`MAX_DEPTH`].
//!
//! Spans (as kdl computes them): a node runs from its name to the end of the
//! whitespace, block comments and slashdashed entries/blocks before its terminator; a
//! name or key is its token; an entry runs from its key (or value) to the end of its
//! value; a document (or children block) runs from its first node's start to its last
//! node's end, or is empty where its first node would start.

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

/// Deeper blocks (or block comments) return `None`.
const MAX_DEPTH: usize = 64;

/// Parse `text` if it lies in the fast subset; `None` means "use kdl's parser".
pub(crate) fn parse(text: &str) -> Option<KdlDocument> {
    let mut p = P {
        s: text,
        b: text.as_bytes(),
        i: 0,
        nodes: Vec::new(),
        entries: Vec::new(),
    };
    let doc = p.nodes(0, false, true)?;
    if p.i == p.b.len() { doc } else { None }
}

struct P<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// Nodes and entries parsed but not yet placed in their document or node: each
    /// block and node takes its own off the top when it ends, so their vectors are
    /// allocated once, at their final size.
    nodes: Vec<KdlNode>,
    entries: Vec<KdlEntry>,
}

/// The items above `mark`, moved into a vector of exactly their number.
fn take<T>(stack: &mut Vec<T>, mark: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(stack.len().saturating_sub(mark));
    v.extend(stack.drain(mark..));
    v
}

fn span(start: usize, end: usize) -> SourceSpan {
    SourceSpan::new(start.into(), end.saturating_sub(start))
}

/// Non-ASCII characters that kdl treats specially (unicode spaces and newlines,
/// direction controls, BOM, C1 controls, noncharacters): refused everywhere.
fn odd_char(c: char) -> bool {
    matches!(c,
        '\u{0080}'..='\u{00A0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{206F}'
        | '\u{3000}'
        | '\u{FEFF}'
        | '\u{FFF0}'..='\u{FFFF}'
    )
}

/// ASCII bytes that may appear in a bare identifier.
fn ident_byte(c: u8) -> bool {
    c > b' '
        && c < 0x7f
        && !matches!(
            c,
            b'\\' | b'/' | b'(' | b')' | b'{' | b'}' | b'[' | b']' | b';' | b'"' | b'#' | b'='
        )
}

/// A parsed token value (node names and keys must be strings).
enum Tok {
    Str(String),
    Val(KdlValue),
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn at(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }
    fn starts(&self, pat: &[u8]) -> bool {
        self.b.get(self.i..).is_some_and(|r| r.starts_with(pat))
    }

    /// The next character, when it is not ASCII (and not an odd one).
    fn non_ascii(&self) -> Option<char> {
        let c = self.s.get(self.i..)?.chars().next()?;
        if odd_char(c) { None } else { Some(c) }
    }

    /// What may follow a value, name or key: kdl's value terminators, minus `=`, `)`,
    /// lone `\r` and unicode spaces/newlines (those return `None`).
    fn at_value_end(&self) -> bool {
        match self.peek() {
            None => true,
            Some(b' ' | b'\t' | b'\n' | b';' | b'{' | b'}') => true,
            Some(b'\r') => self.at(1) == Some(b'\n'),
            Some(b'/') => matches!(self.at(1), Some(b'/' | b'*')),
            _ => false,
        }
    }

    /// `/* ... */`, nested; `self.i` is at `/*`.
    fn block_comment(&mut self) -> Option<()> {
        self.i += 2;
        let mut depth = 1usize;
        loop {
            let c = self.peek()?;
            match c {
                b'*' if self.at(1) == Some(b'/') => {
                    self.i += 2;
                    depth -= 1;
                    if depth == 0 {
                        return Some(());
                    }
                }
                b'/' if self.at(1) == Some(b'*') => {
                    self.i += 2;
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return None;
                    }
                }
                b'\t' | b'\n' => self.i += 1,
                b'\r' if self.at(1) == Some(b'\n') => self.i += 2,
                0..=0x1f | 0x7f => return None,
                0x80.. => self.i += self.non_ascii()?.len_utf8(),
                _ => self.i += 1,
            }
        }
    }

    /// `// ...` through the newline (or end of input); `self.i` is at `//`.
    fn line_comment(&mut self) -> Option<()> {
        self.i += 2;
        loop {
            let Some(c) = self.peek() else {
                return Some(());
            };
            match c {
                b'\n' => {
                    self.i += 1;
                    return Some(());
                }
                b'\r' if self.at(1) == Some(b'\n') => {
                    self.i += 2;
                    return Some(());
                }
                b'\t' => self.i += 1,
                0..=0x1f | 0x7f => return None,
                0x80.. => self.i += self.non_ascii()?.len_utf8(),
                _ => self.i += 1,
            }
        }
    }

    /// node-space*: spaces, tabs and block comments. Returns whether any was skipped.
    fn node_space(&mut self) -> Option<bool> {
        let start = self.i;
        loop {
            match self.peek() {
                Some(b' ' | b'\t') => self.i += 1,
                Some(b'/') if self.at(1) == Some(b'*') => self.block_comment()?,
                _ => return Some(self.i > start),
            }
        }
    }

    /// line-space*: node-space, newlines and line comments.
    fn line_space(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n') => self.i += 1,
                Some(b'\r') if self.at(1) == Some(b'\n') => self.i += 2,
                Some(b'/') if self.at(1) == Some(b'*') => self.block_comment()?,
                Some(b'/') if self.at(1) == Some(b'/') => self.line_comment()?,
                _ => return Some(()),
            }
        }
    }

    /// Line-space and slashdashed nodes, as kdl skips before a node.
    fn leading(&mut self, depth: usize) -> Option<()> {
        loop {
            self.line_space()?;
            if self.starts(b"/-") {
                self.i += 2;
                self.line_space()?;
                self.base_node(depth, false)?;
            } else {
                return Some(());
            }
        }
    }

    /// `nodes`: the top level or the inside of a block (then ending at `}`, not
    /// consumed). Returns the document when `keep`.
    fn nodes(&mut self, depth: usize, block: bool, keep: bool) -> Option<Option<KdlDocument>> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mark = self.nodes.len();
        self.leading(depth)?;
        let start = self.i;
        let mut end = start;
        loop {
            match self.peek() {
                None if block => return None,
                None => break,
                Some(b'}') if block => break,
                Some(b'}') => return None,
                _ => {}
            }
            let node = self.base_node(depth, keep)?;
            end = self.i;
            if let Some(node) = node {
                self.nodes.push(node);
            }
            // The node terminator.
            match self.peek() {
                None | Some(b'}') => {}
                Some(b';' | b'\n') => self.i += 1,
                Some(b'\r') if self.at(1) == Some(b'\n') => self.i += 2,
                Some(b'/') if self.at(1) == Some(b'/') => self.line_comment()?,
                _ => return None,
            }
            self.leading(depth)?;
        }
        if !keep {
            return Some(None);
        }
        let mut doc = KdlDocument::new();
        *doc.nodes_mut() = take(&mut self.nodes, mark);
        doc.set_span(span(start, end));
        Some(Some(doc))
    }

    /// `{ nodes }`; `self.i` is at `{`.
    fn children(&mut self, depth: usize, keep: bool) -> Option<Option<KdlDocument>> {
        self.i += 1;
        let doc = self.nodes(depth + 1, true, keep)?;
        if self.peek() != Some(b'}') {
            return None;
        }
        self.i += 1;
        Some(doc)
    }

    /// A node without its terminator, with the node-space after it.
    fn base_node(&mut self, depth: usize, keep: bool) -> Option<Option<KdlNode>> {
        let start = self.i;
        let name = match self.token()? {
            Tok::Str(s) => s,
            Tok::Val(_) => return None,
        };
        let name_span = span(start, self.i);
        if !self.at_value_end() {
            return None;
        }
        let mark = self.entries.len();
        let mut node = if keep {
            let mut n = KdlNode::new(name);
            // Only spans are read from this tree; formatting goes through kdl's parser.
            n.clear_format();
            n.name_mut().set_span(name_span);
            Some(n)
        } else {
            None
        };
        // Entries, then slashdashed blocks, then the block, then slashdashed blocks.
        let mut children = None;
        loop {
            let spaced = self.node_space()?;
            match self.peek() {
                None | Some(b';' | b'\n' | b'}') => break,
                Some(b'\r') if self.at(1) == Some(b'\n') => break,
                Some(b'/') if self.at(1) == Some(b'/') => break,
                Some(b'{') => {
                    children = self.children(depth, keep)?;
                    self.after_block(depth, true, keep)?;
                    break;
                }
                _ if !spaced => return None,
                Some(b'/') if self.at(1) == Some(b'-') => {
                    self.i += 2;
                    self.node_space()?;
                    if self.peek() == Some(b'{') {
                        self.children(depth, false)?;
                        children = self.after_block(depth, false, keep)?;
                        break;
                    }
                    self.entry(false)?;
                }
                _ => {
                    if let Some(e) = self.entry(keep)? {
                        self.entries.push(e);
                    }
                }
            }
        }
        match self.peek() {
            None | Some(b';' | b'\n' | b'}') => {}
            Some(b'\r') if self.at(1) == Some(b'\n') => {}
            Some(b'/') if self.at(1) == Some(b'/') => {}
            _ => return None,
        }
        if let Some(n) = node.as_mut() {
            *n.entries_mut() = take(&mut self.entries, mark);
            n.set_span(span(start, self.i));
            if let Some(c) = children {
                n.set_children(c);
            }
        }
        Some(node)
    }

    /// After a (slashdashed, unless `real`) block: more slashdashed blocks and, when
    /// none was real yet, the real block. Returns that block if one was parsed here.
    fn after_block(&mut self, depth: usize, real: bool, keep: bool) -> Option<Option<KdlDocument>> {
        let mut found = None;
        let mut real = real;
        loop {
            self.node_space()?;
            if self.starts(b"/-") {
                self.i += 2;
                self.node_space()?;
                if self.peek() != Some(b'{') {
                    return None;
                }
                self.children(depth, false)?;
            } else if !real && self.peek() == Some(b'{') {
                found = self.children(depth, keep)?;
                real = true;
            } else {
                return Some(found);
            }
        }
    }

    /// An argument or property; `self.i` is at its first byte.
    fn entry(&mut self, keep: bool) -> Option<Option<KdlEntry>> {
        let start = self.i;
        let first = self.token()?;
        if self.peek() == Some(b'=') {
            let Tok::Str(key) = first else { return None };
            let key_end = self.i;
            self.i += 1;
            let value = match self.token()? {
                Tok::Str(s) => KdlValue::String(s),
                Tok::Val(v) => v,
            };
            if !self.at_value_end() {
                return None;
            }
            if !keep {
                return Some(None);
            }
            let mut e = KdlEntry::new_prop(key, value);
            if let Some(k) = e.name_mut() {
                k.set_span(span(start, key_end));
            }
            e.set_span(span(start, self.i));
            return Some(Some(e));
        }
        if !self.at_value_end() {
            return None;
        }
        if !keep {
            return Some(None);
        }
        let value = match first {
            Tok::Str(s) => KdlValue::String(s),
            Tok::Val(v) => v,
        };
        let mut e = KdlEntry::new(value);
        e.set_span(span(start, self.i));
        Some(Some(e))
    }

    /// A string (bare or quoted), number or keyword.
    fn token(&mut self) -> Option<Tok> {
        match self.peek()? {
            b'"' => self.quoted().map(Tok::Str),
            b'#' => self.keyword().map(Tok::Val),
            b'0'..=b'9' => self.number().map(Tok::Val),
            b'+' | b'-' if self.at(1).is_some_and(|c| c.is_ascii_digit()) => {
                self.number().map(Tok::Val)
            }
            _ => self.bare().map(Tok::Str),
        }
    }

    fn keyword(&mut self) -> Option<KdlValue> {
        let rest = self.b.get(self.i + 1..)?;
        let (v, n) = if rest.starts_with(b"true") {
            (KdlValue::Bool(true), 4)
        } else if rest.starts_with(b"false") {
            (KdlValue::Bool(false), 5)
        } else if rest.starts_with(b"null") {
            (KdlValue::Null, 4)
        } else {
            return None;
        };
        self.i += 1 + n;
        Some(v)
    }

    /// A bare identifier (never one that kdl would read as a number or keyword).
    fn bare(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek()? {
            // Signed or dotted identifiers: refuse the shapes near numbers (`-.5`, `.5`,
            // `+.x`, `..`); kdl decides those.
            b'+' | b'-' | b'.' if self.at(1).is_some_and(|c| c.is_ascii_digit() || c == b'.') => {
                return None;
            }
            c if c.is_ascii_digit() => return None,
            _ => {}
        }
        loop {
            match self.peek() {
                Some(c) if c < 0x80 => {
                    if ident_byte(c) {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Some(_) => self.i += self.non_ascii()?.len_utf8(),
                None => break,
            }
        }
        let s = self.s.get(start..self.i)?;
        if s.is_empty()
            || matches!(
                s,
                "true" | "false" | "null" | "inf" | "-inf" | "+inf" | "nan"
            )
        {
            return None;
        }
        Some(s.to_string())
    }

    /// A single-line quoted string with simple escapes; `self.i` is at `"`.
    fn quoted(&mut self) -> Option<String> {
        if self.starts(b"\"\"\"") {
            return None;
        }
        self.i += 1;
        let mut out = String::new();
        let mut run = self.i;
        loop {
            let c = self.peek()?;
            match c {
                b'"' => {
                    out.push_str(self.s.get(run..self.i)?);
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(self.s.get(run..self.i)?);
                    let ch = match self.at(1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b's' => ' ',
                        b'u' => {
                            self.i += 2;
                            if self.peek() != Some(b'{') {
                                return None;
                            }
                            self.i += 1;
                            let mut v = 0u32;
                            let mut n = 0;
                            while let Some(d) = self.peek().and_then(|d| (d as char).to_digit(16)) {
                                v = v * 16 + d;
                                n += 1;
                                self.i += 1;
                                if n > 6 {
                                    return None;
                                }
                            }
                            if n == 0 || self.peek() != Some(b'}') {
                                return None;
                            }
                            // Leave `self.i` at the last byte of the escape.
                            self.i -= 1;
                            char::from_u32(v)?
                        }
                        _ => return None,
                    };
                    out.push(ch);
                    self.i += 2;
                    run = self.i;
                }
                b'\t' => self.i += 1,
                0..=0x1f | 0x7f => return None,
                0x80.. => self.i += self.non_ascii()?.len_utf8(),
                _ => self.i += 1,
            }
        }
    }

    /// Digits of `radix` with `_` after the first, as a checked i128 magnitude.
    fn digits(&mut self, radix: u32) -> Option<i128> {
        let mut v: i128 = 0;
        let first = self.peek().and_then(|d| (d as char).to_digit(radix))?;
        v += i128::from(first);
        self.i += 1;
        loop {
            match self.peek() {
                Some(b'_') => self.i += 1,
                Some(d) => match (d as char).to_digit(radix) {
                    Some(d) => {
                        v = v
                            .checked_mul(i128::from(radix))?
                            .checked_add(i128::from(d))?;
                        self.i += 1;
                    }
                    None => return Some(v),
                },
                None => return Some(v),
            }
        }
    }

    /// An integer or decimal float; `self.i` is at a digit or a sign before one.
    fn number(&mut self) -> Option<KdlValue> {
        let start = self.i;
        let neg = match self.peek() {
            Some(b'-') => {
                self.i += 1;
                true
            }
            Some(b'+') => {
                self.i += 1;
                false
            }
            _ => false,
        };
        let radix = match (self.peek(), self.at(1)) {
            (Some(b'0'), Some(b'x' | b'X')) => 16,
            (Some(b'0'), Some(b'o' | b'O')) => 8,
            (Some(b'0'), Some(b'b' | b'B')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.i += 2;
            let v = self.digits(radix)?;
            return Some(KdlValue::Integer(if neg { -v } else { v }));
        }
        let v = self.digits(10)?;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits(10)?;
            float = true;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits(10)?;
            float = true;
        }
        if !float {
            return Some(KdlValue::Integer(if neg { -v } else { v }));
        }
        let text: String = self
            .s
            .get(start..self.i)?
            .chars()
            .filter(|&c| c != '_')
            .collect();
        text.parse::<f64>().ok().map(KdlValue::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use kdl::{KdlDocument, KdlValue};

    /// Walks both documents and compares names, entries, values, spans and children;
    /// the first difference, or `None` when equal.
    pub(crate) fn diff(a: &KdlDocument, b: &KdlDocument) -> Option<String> {
        let sp = |s: miette::SourceSpan| (s.offset(), s.len());
        if sp(a.span()) != sp(b.span()) {
            return Some(format!(
                "document span {:?} != {:?}",
                sp(a.span()),
                sp(b.span())
            ));
        }
        if a.nodes().len() != b.nodes().len() {
            return Some(format!("{} nodes != {}", a.nodes().len(), b.nodes().len()));
        }
        for (x, y) in a.nodes().iter().zip(b.nodes()) {
            let at = format!("node `{}` at {:?}", y.name().value(), sp(y.span()));
            if x.name().value() != y.name().value() {
                return Some(format!("{at}: name `{}`", x.name().value()));
            }
            if sp(x.name().span()) != sp(y.name().span()) || sp(x.span()) != sp(y.span()) {
                return Some(format!(
                    "{at}: spans {:?}/{:?} != {:?}/{:?}",
                    sp(x.name().span()),
                    sp(x.span()),
                    sp(y.name().span()),
                    sp(y.span())
                ));
            }
            if x.entries().len() != y.entries().len() {
                return Some(format!(
                    "{at}: {} entries != {}",
                    x.entries().len(),
                    y.entries().len()
                ));
            }
            for (e, f) in x.entries().iter().zip(y.entries()) {
                let key =
                    |e: &kdl::KdlEntry| e.name().map(|k| (k.value().to_string(), sp(k.span())));
                let same_value = match (e.value(), f.value()) {
                    (KdlValue::Float(p), KdlValue::Float(q)) => p.to_bits() == q.to_bits(),
                    (p, q) => p == q,
                };
                if key(e) != key(f) || !same_value || sp(e.span()) != sp(f.span()) {
                    return Some(format!(
                        "{at}: entry {:?}={:?}@{:?} != {:?}={:?}@{:?}",
                        key(e),
                        e.value(),
                        sp(e.span()),
                        key(f),
                        f.value(),
                        sp(f.span())
                    ));
                }
            }
            match (x.children(), y.children()) {
                (None, None) => {}
                (Some(c), Some(d)) => {
                    if let Some(m) = diff(c, d) {
                        return Some(format!("{at} > {m}"));
                    }
                }
                (c, d) => {
                    return Some(format!("{at}: children {} != {}", c.is_some(), d.is_some()));
                }
            }
        }
        None
    }

    fn same(text: &str) {
        let fast = parse(text).unwrap_or_else(|| panic!("fast path refused {text:?}"));
        let slow =
            KdlDocument::parse_v2(text).unwrap_or_else(|e| panic!("kdl refused {text:?}: {e:?}"));
        if let Some(d) = diff(&fast, &slow) {
            panic!("{text:?}: {d}");
        }
    }

    const SNIPPETS: &[&str] = &[
        "",
        "\n\n",
        "a",
        "a;",
        "a;b;c",
        "foo bar  \n",
        "a 1 k=v \"x\"=#true  /* c */ // hi\nb",
        "x {\n  a 1 \n  b;\n}\n",
        "x { a 1 }",
        "x {\n}",
        "x { /-a }",
        "x {a}",
        "a /-1",
        "a /-1 {}",
        "a /-1 /-2 3 /-k=v",
        "a{}",
        "a 1{ b }",
        "a /-{ b } { c } /-{d}  \n",
        "a /-{ b } /-{ c }\n",
        "a {}/-{}",
        "/-a\nb",
        "/- a 1 { b }\nb",
        "a\r\nb 1\r\n// c\r\nd",
        "a \"\" \"q\\\"\\\\\\n\\t\\r\\b\\f\\s\" \"\\u{48}\\u{10FFFF}\\u{0}\"",
        "\"quoted name\" \"é\" \"日本\"",
        "a 0 -0 +5 -17 1_000 1_ 0x1F 0XdEaD_bEeF -0x10 0o17 0b1010_1 0b1",
        "a 1.5 -1.5 +0.25 1e5 1E-5 2.5e+3 1_0.5_0 1_.5 -0.0 1e400 170141183460469231731687303715884105727",
        "a -170141183460469231731687303715884105727",
        "a #true #false #null k=#null",
        "a b c-d .e - + -x +y ._ a.b < > ! @ $ % ^ & * ~ ` | ? : , ' é",
        "nullx truey falsey inf1 nan2",
        "a /* nested /* comment */ still */ 1",
        "a/* c */1",
        "a 1// c",
        "a 1/* c */{ }",
        "node \"x\"{}",
        "a k=\"v\" \"k 2\"=1 k3=v3 k4=1.5 k5=-2",
        "a {\n    b {\n        c 1 {\n            d\n        }\n    }\n}\n",
        "// only a comment",
        "/* only */",
        "a\t1\t2",
        "a; /-b\nc",
        "a \"x\"{}",
        "a k=v{}",
        "a #true{ }",
        "\"a\"{}",
        "a /*c*/",
        "a /*c*/ ;b",
        "a\t;",
        "a { }",
        "a {\n// c\n}",
        "a {\n  /* c */\n  b /* d */ // e\n}\n",
        "/-a {\n b\n}\nc",
        "/- a\n/-b 1 {}\nc 2",
        "- 1",
        "- - -",
        "a -",
        "a - b",
        "a +",
        "a .",
        "x {a};y{b}",
        "x {a\n}\n\n\n",
        "a \"\" \"\"=\"\"",
        "a ab=cd",
        "a 1 /-2 3 /-{} {x} /-{y}",
        "a /-\t1",
        "a /* /* */ */ 1",
        "a /**/1",
        "a 1/**/",
        "a 0x1_",
        "a 00 0_0 1__2",
        "a 1e-0 1e+00 1.0e1_0",
        "a \"tab\there\"",
        "é ü=ö",
    ];

    #[test]
    fn snippets_match_kdl() {
        for s in SNIPPETS {
            same(s);
        }
    }

    #[test]
    fn corpus_files_match_kdl() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for dir in ["../../examples", "../../layouts", "tests/invalid"] {
            let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
                .collect();
            paths.sort();
            for p in paths {
                let text = std::fs::read_to_string(&p).unwrap();
                if KdlDocument::parse_v2(&text).is_ok() {
                    same(&text);
                    n += 1;
                } else {
                    assert!(parse(&text).is_none(), "{}", p.display());
                }
            }
        }
        assert!(n >= 70, "only {n} corpus files parsed");
    }

    #[test]
    fn values_are_exact() {
        let d =
            parse("a 0x7fffffffffffffffffffffffffffffff -5 2.5 \"\\u{1F600}\" k=#false").unwrap();
        let e = d.nodes()[0].entries();
        assert_eq!(e[0].value(), &KdlValue::Integer(i128::MAX));
        assert_eq!(e[1].value(), &KdlValue::Integer(-5));
        assert_eq!(e[2].value(), &KdlValue::Float(2.5));
        assert_eq!(e[3].value(), &KdlValue::String("\u{1F600}".into()));
        assert_eq!(e[4].value(), &KdlValue::Bool(false));
        assert_eq!(e[4].name().unwrap().value(), "k");
        assert_eq!((e[4].span().offset(), e[4].span().len()), (56, 8));
        assert_eq!(d.nodes()[0].span().len(), 64);
    }

    #[test]
    fn outside_the_subset_is_refused() {
        for s in [
            "a #\"raw\"#",
            "a \"\"\"\n  multi\n  \"\"\"",
            "(ty)node",
            "a (ty)1",
            "a \\\n  1",
            "a true",
            "true",
            "a 1abc",
            "1abc",
            "a #inf",
            "a \"\\/\"",
            "a \"\\q\"",
            "a \"\\u{D800}\"",
            "a \"\\u{1234567}\"",
            "a \"\\ \n\"",
            "\u{feff}a",
            "a\u{a0}1",
            "a\u{2028}b",
            "a\rb",
            "a k = 1",
            "a k= 1",
            "a 1=2",
            "a \"unterminated",
            "a {",
            "a }",
            "}",
            "a {} b",
            "a;;b",
            "a 0x",
            "a 1.",
            "a 1e",
            "a .5",
            "a -.5",
            "a 0b12",
            "a 170141183460469231731687303715884105728",
            "a [x]",
            "a b#c",
            "a /-",
            "a /-\n1",
            "/-a;b",
            "a \u{7}",
            "a /* open",
        ] {
            assert!(parse(s).is_none(), "{s:?} should take kdl's path");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let ok = format!("{}{}", "a {".repeat(64), "}".repeat(64));
        assert!(parse(&ok).is_some());
        let deep = format!("{}{}", "a {".repeat(65), "}".repeat(65));
        assert!(parse(&deep).is_none());
        let comment = format!("{}{}", "/*".repeat(100), "*/".repeat(100));
        assert!(parse(&comment).is_none());
    }
}
