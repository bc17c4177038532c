//! Diagnostics: every problem in a file is a [`Diagnostic`] with a stable code, the file,
//! a labelled span and help. All of them are collected; none stops the others.

use miette::{LabeledSpan, MietteError, MietteSpanContents, Severity, SourceSpan, SpanContents};
use std::fmt;
use std::sync::Arc;

/// Longest label shown; a longer span (a 200 KB string) is underlined at its start.
const MAX_LABEL_BYTES: usize = 80;
/// Lines longer than this are shown as a window around the label, not whole.
const MAX_LINE_BYTES: usize = 160;
/// Bytes of context either side of a label in a window.
const WINDOW_CONTEXT: usize = 40;
/// Longest literal (text in backticks) repeated in a message; longer ones are cut.
const MAX_LITERAL_CHARS: usize = 60;
/// Longest message, label or help kept whole.
const MAX_TEXT_CHARS: usize = 400;

/// A source file as read: its display name and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<String>,
    /// Byte offset where each line starts, for line/column lookups in O(log n).
    line_starts: Arc<Vec<usize>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        SourceFile {
            name: name.into(),
            text: Arc::new(text),
            line_starts: Arc::new(line_starts),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let (line, col) = self.line_col0(offset);
        (line as u32 + 1, col as u32 + 1)
    }

    /// 0-based line and column (in characters) of a byte offset.
    fn line_col0(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|s| *s <= offset).max(1) - 1;
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map(|l| l.chars().count())
            .unwrap_or(offset - start);
        (line, col)
    }

    /// 0-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|s| *s <= offset).max(1) - 1
    }

    /// Byte range of a 0-based line, its newline included.
    fn line_range(&self, line: usize) -> (usize, usize) {
        let start = self.line_starts[line];
        let end = self
            .line_starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.text.len());
        (start, end)
    }

    fn floor_boundary(&self, mut i: usize) -> usize {
        i = i.min(self.text.len());
        while !self.text.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    fn ceil_boundary(&self, mut i: usize) -> usize {
        i = i.min(self.text.len());
        while !self.text.is_char_boundary(i) {
            i += 1;
        }
        i
    }
}

/// The snippet miette shows around a label: whole lines (with `before` and `after` lines
/// of context) as miette's own reader would, but only a window of a line longer than
/// [`MAX_LINE_BYTES`], so a huge line is never echoed whole. Lines and columns come from
/// the line index (O(log n)) and count characters, as [`Loc`] does.
impl miette::SourceCode for SourceFile {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let len = self.text.len();
        if span.offset() > len {
            return Err(MietteError::OutOfBounds);
        }
        let s = span.offset();
        let e = (s + span.len()).min(len);
        let (first_line, col) = self.line_col0(s);
        let last_line = self.line_of(e.saturating_sub(1).max(s));
        let contents = |a: usize, b: usize, line: usize, column: usize| {
            let data = &self.text.as_bytes()[a..b];
            let lines = data.iter().filter(|c| **c == b'\n').count();
            Box::new(MietteSpanContents::new_named(
                self.name.clone(),
                data,
                SourceSpan::new(a.into(), b - a),
                line,
                column,
                lines,
            )) as Box<dyn SpanContents<'a> + 'a>
        };
        let from = first_line.saturating_sub(before);
        let to = (last_line + after).min(self.line_starts.len() - 1);
        let long = (from..=to).any(|l| {
            let (a, b) = self.line_range(l);
            b - a > MAX_LINE_BYTES
        });
        if !long {
            if before == 0 && after == 0 {
                return Ok(contents(s, e, first_line, col));
            }
            let (a, _) = self.line_range(from);
            let (_, b) = self.line_range(to);
            return Ok(contents(a, b, from, 0));
        }
        // A window of the label's line(s) around the label.
        let (line_start, _) = self.line_range(first_line);
        let (_, line_end) = self.line_range(last_line);
        let line_end = if self.text.as_bytes().get(line_end.wrapping_sub(1)) == Some(&b'\n') {
            line_end - 1
        } else {
            line_end
        };
        let a = if before == 0 && after == 0 {
            s
        } else {
            self.floor_boundary(s.saturating_sub(WINDOW_CONTEXT).max(line_start))
        };
        let b = self.ceil_boundary((e.max(s) + WINDOW_CONTEXT).min(line_end.max(e)));
        let column = self.line_col0(a).1;
        Ok(contents(a, b.max(a), first_line, column))
    }
}

/// Where something was declared: file, line, column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub code: &'static str,
    pub message: String,
    pub label: String,
    pub help: Option<String>,
    pub severity: Severity,
    pub span: SourceSpan,
    pub source: SourceFile,
    pub loc: Loc,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h.as_str()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        // A long span is underlined at its start only.
        let text = &self.source.text;
        let start = self.span.offset().min(text.len());
        let mut end = (start + self.span.len().min(MAX_LABEL_BYTES)).min(text.len());
        while end > start && !text.is_char_boundary(end) {
            end -= 1;
        }
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.label.clone()),
            SourceSpan::new(start.into(), end.saturating_sub(start)),
        ))))
    }
}

/// A file registered with the collector, so spans can be turned into diagnostics.
#[derive(Debug, Clone)]
pub struct FileCx {
    pub file: SourceFile,
}

impl FileCx {
    pub fn new(file: SourceFile) -> Self {
        FileCx { file }
    }

    pub fn loc(&self, span: SourceSpan) -> Loc {
        let (line, column) = self.file.line_col(span.offset());
        Loc {
            file: self.file.name.clone(),
            line,
            column,
        }
    }

    pub fn diag(
        &self,
        code: &'static str,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            message: shorten(message.into()),
            label: shorten(label.into()),
            help: None,
            severity: Severity::Error,
            span,
            source: self.file.clone(),
            loc: self.loc(span),
        }
    }
}

pub trait WithHelp {
    fn help(self, help: impl Into<String>) -> Self;
    fn warning(self) -> Self;
}

impl WithHelp for Diagnostic {
    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(shorten(help.into()));
        self
    }
    fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }
}

/// A message as shown: every literal in backticks longer than [`MAX_LITERAL_CHARS`] cut
/// (with its length), the whole capped at [`MAX_TEXT_CHARS`], so that a 200 KB name is
/// not repeated in every message that names it.
pub fn shorten(text: String) -> String {
    if text.len() <= MAX_LITERAL_CHARS {
        return text;
    }
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_CHARS * 4));
    let mut note = None;
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if let Some(n) = note.take() {
            out.push_str(&format!(" ({n} bytes)"));
        }
        // Odd parts sit between backticks.
        let count = part.chars().count();
        if i % 2 == 1 && count > MAX_LITERAL_CHARS {
            out.extend(part.chars().take(MAX_LITERAL_CHARS - 12));
            out.push('…');
            out.extend(part.chars().skip(count - 8));
            note = Some(part.len());
        } else {
            out.push_str(part);
        }
        if out.len() > MAX_TEXT_CHARS * 4 {
            break;
        }
    }
    if out.chars().count() > MAX_TEXT_CHARS {
        out = out.chars().take(MAX_TEXT_CHARS).collect();
        out.push('…');
    }
    out
}

/// "did you mean" by edit distance, for misspelled node and property names.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Render diagnostics as text without colour (what `warden check` prints, and what the
/// snapshot tests pin).
pub fn render(diags: &[Diagnostic]) -> String {
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_links(false);
    let mut out = String::new();
    for d in diags {
        let _ = handler.render_report(&mut out, d);
        out.push('\n');
    }
    visible(&out)
}

/// Control characters as their visible pictures (NUL as `␀`, ESC as `␛`): a file's bytes
/// echoed in a snippet never reach the terminal raw.
fn visible(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return text.to_string();
    }
    text.chars()
        .map(|c| match c {
            '\n' => c,
            '\t' => c,
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            '\u{7f}' => '\u{2421}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}
