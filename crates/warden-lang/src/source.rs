//! The limits every file passes before it is parsed: size, UTF-8, no NUL byte, bounded
//! nesting. Every command reads its file through [`admit`] and every parse (layouts and
//! `fmt` included) checks [`limits`] first, so hostile input can neither exhaust the
//! parser's stack nor reach the terminal raw.

use crate::diag::{Diagnostic, FileCx, SourceFile, WithHelp};
use miette::SourceSpan;

/// Larger than any real file; refused before parsing. A reader need not read more than
/// one byte past it.
pub const MAX_BYTES: usize = 4 << 20;
/// Deeper nesting than any real file needs; refused before parsing so that hostile
/// input cannot exhaust the parser's stack.
pub const MAX_NESTING: usize = 64;
/// More words (runs of bytes between spaces, newlines and `;`) than any real file has: a
/// file of 1,000 sandboxes has about 60,000. The parsed tree costs about a kilobyte per
/// name or value, so 4 MiB of `a 1 1 1 ...` would take gigabytes; refused before parsing.
pub const MAX_WORDS: usize = 250_000;

/// A file's bytes as a [`SourceFile`], or the diagnostic that refuses them: larger than
/// [`MAX_BYTES`], not UTF-8 (pointing at the first invalid byte), or holding a NUL byte.
/// Nesting is checked when the file is parsed.
pub fn admit(name: impl Into<String>, bytes: Vec<u8>) -> Result<SourceFile, Box<Diagnostic>> {
    let name = name.into();
    if bytes.len() > MAX_BYTES {
        return Err(Box::new(too_large(&FileCx::new(SourceFile::new(name, "")))));
    }
    match String::from_utf8(bytes) {
        Ok(text) => {
            let file = FileCx::new(SourceFile::new(name, text));
            match nul(&file) {
                Some(d) => Err(Box::new(d)),
                None => Ok(file.file),
            }
        }
        Err(e) => {
            let bytes = e.into_bytes();
            let at = std::str::from_utf8(&bytes).map_or_else(|e| e.valid_up_to(), |_| 0);
            // The valid prefix, then a visible stand-in for the bad byte: the snippet and
            // the location are exact and nothing undecodable is echoed.
            let mut shown = String::from_utf8_lossy(&bytes[..at]).into_owned();
            if let Some(d) = nul(&FileCx::new(SourceFile::new(name.clone(), shown.clone()))) {
                return Err(Box::new(d));
            }
            shown.push('\u{fffd}');
            let file = FileCx::new(SourceFile::new(name, shown));
            Err(Box::new(
                file.diag(
                    "warden::syntax::utf8",
                    SourceSpan::new(at.into(), '\u{fffd}'.len_utf8()),
                    format!(
                        "file is not UTF-8: byte `0x{:02X}` is not valid here",
                        bytes[at]
                    ),
                    "invalid UTF-8",
                )
                .help("warden files are UTF-8 text; save the file as UTF-8"),
            ))
        }
    }
}

fn too_large(file: &FileCx) -> Diagnostic {
    file.diag(
        "warden::syntax::size",
        SourceSpan::new(0.into(), 0),
        format!("file is larger than {} MiB", MAX_BYTES >> 20),
        "too large",
    )
    .help(format!(
        "the limit is {MAX_BYTES} bytes; split the file into layouts"
    ))
}

/// The first NUL byte, named (its snippet shows `␀`, never the byte).
fn nul(file: &FileCx) -> Option<Diagnostic> {
    let at = file.file.text.bytes().position(|b| b == 0)?;
    Some(
        file.diag(
            "warden::syntax::nul",
            SourceSpan::new(at.into(), 1),
            "file contains a NUL byte",
            "NUL byte",
        )
        .help("warden files are text; is this a binary file?"),
    )
}

/// The limits a parsed text must meet, for files that did not come through [`admit`]
/// (tests, layouts from a [`crate::Loader`], an edited file).
pub(crate) fn limits(file: &FileCx) -> Option<Diagnostic> {
    if file.file.text.len() > MAX_BYTES {
        return Some(too_large(&FileCx::new(SourceFile::new(
            file.file.name.clone(),
            "",
        ))));
    }
    if let Some(d) = nul(file) {
        return Some(d);
    }
    if let Some(at) = too_deep(&file.file.text) {
        return Some(
            file.diag(
                "warden::syntax::depth",
                SourceSpan::new(at.into(), 1),
                format!("blocks nest more than {MAX_NESTING} deep"),
                "too deep",
            )
            .help("warden files nest a few levels at most"),
        );
    }
    let at = too_many_words(&file.file.text)?;
    Some(
        file.diag(
            "warden::syntax::size",
            SourceSpan::new(at.into(), 1),
            format!("file has more than {MAX_WORDS} words"),
            "too many",
        )
        .help("split it into layouts"),
    )
}

/// The offset of the word past [`MAX_WORDS`].
fn too_many_words(text: &str) -> Option<usize> {
    let mut words = 0usize;
    let mut gap = true;
    for (i, b) in text.bytes().enumerate() {
        let space = matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b';');
        if gap && !space {
            words += 1;
            if words > MAX_WORDS {
                return Some(i);
            }
        }
        gap = space;
    }
    None
}

/// The offset where nesting first exceeds [`MAX_NESTING`], skipping quoted strings and
/// comments roughly (an over-estimate only refuses absurd files). Block comments nest in
/// KDL and count as nesting too.
fn too_deep(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
                i += 1;
            }
            b'*' if b.get(i + 1) == Some(&b'/') => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(bytes: &[u8]) -> (String, u32, u32, &'static str) {
        let d = admit("w.kdl", bytes.to_vec()).expect_err("refused");
        (d.message.clone(), d.loc.line, d.loc.column, d.code)
    }

    #[test]
    fn invalid_utf8_is_located() {
        // A stray continuation byte.
        assert_eq!(
            refused(b"sandbox \"a\" {\n    image \"\x80\"\n}\n"),
            (
                "file is not UTF-8: byte `0x80` is not valid here".into(),
                2,
                12,
                "warden::syntax::utf8"
            )
        );
        // An overlong encoding of `/`, after a character of two bytes on the same line.
        assert_eq!(
            refused(b"// \xc3\xa9t\xc3\xa9\nimage \"\xc0\xaf\"\n"),
            (
                "file is not UTF-8: byte `0xC0` is not valid here".into(),
                2,
                8,
                "warden::syntax::utf8"
            )
        );
        // An encoded lone surrogate (U+D800).
        assert_eq!(
            refused(b"a\nb\nc \xed\xa0\x80\n"),
            (
                "file is not UTF-8: byte `0xED` is not valid here".into(),
                3,
                3,
                "warden::syntax::utf8"
            )
        );
        // Cut inside a character at the end of the file.
        let (_, line, column, _) = refused(b"abc\xe2\x82");
        assert_eq!((line, column), (1, 4));
    }

    #[test]
    fn nul_is_named_before_later_invalid_bytes() {
        assert_eq!(
            refused(b"image \"i\"\n  x\0y \xff\n"),
            (
                "file contains a NUL byte".into(),
                2,
                4,
                "warden::syntax::nul"
            )
        );
        let (_, line, column, _) = refused(b"\0");
        assert_eq!((line, column), (1, 1));
    }

    #[test]
    fn size_and_depth() {
        let d = admit("w.kdl", vec![b' '; MAX_BYTES + 1]).unwrap_err();
        assert_eq!(d.code, "warden::syntax::size");
        assert!(admit("w.kdl", vec![b' '; MAX_BYTES]).is_ok());
        let deep = "a {".repeat(MAX_NESTING + 1);
        let d = limits(&FileCx::new(SourceFile::new("w.kdl", deep))).unwrap();
        assert_eq!((d.code, d.loc.column), ("warden::syntax::depth", 195));
        let comments = "/*".repeat(MAX_NESTING + 1);
        let d = limits(&FileCx::new(SourceFile::new("w.kdl", comments))).unwrap();
        assert_eq!((d.code, d.loc.column), ("warden::syntax::depth", 129));
        let ok = "a {".repeat(MAX_NESTING) + &"}".repeat(MAX_NESTING);
        assert!(limits(&FileCx::new(SourceFile::new("w.kdl", ok))).is_none());
        let words = "a 1 2;".repeat(MAX_WORDS / 3) + "b c";
        let d = limits(&FileCx::new(SourceFile::new("w.kdl", words))).unwrap();
        assert_eq!(
            (d.code, d.message.as_str(), d.loc.column as usize),
            (
                "warden::syntax::size",
                "file has more than 250000 words",
                MAX_WORDS / 3 * 6 + 3
            )
        );
        let ok = "a 1 2;".repeat(MAX_WORDS / 3) + "b";
        assert!(limits(&FileCx::new(SourceFile::new("w.kdl", ok))).is_none());
    }
}
