//! Differential test of the fast parser against `kdl`'s: mutations of every example,
//! layout and invalid file. Whenever the fast path returns a document, kdl must accept
//! the same text and build the same tree (names, entries, values, spans, children).
//! `WARDEN_FASTPARSE_ITERATIONS` sets the count (default 300,000).

use kdl::{KdlDocument, KdlEntry, KdlValue};
use miette::SourceSpan;
use std::path::Path;
use warden_lang::fast_parse_for_tests as fast;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that steer mutations toward the edges of the fast subset.
const TOKENS: &[&str] = &[
    "\"", "{", "}", "/-", "//", "/*", "*/", "#true", "#false", "#null", "#inf", "#-inf", "#nan",
    "=", "\\", "0x1", "0o7", "0b1", "1e5", "1.5", "1_000", "-", "+", ".", ";", "\r\n", "\r", "\n",
    " ", "\t", "\u{a0}", "\u{2028}", "\u{85}", "\u{feff}", "\u{200e}", "é", "(", ")", "(ty)", "[",
    "]", "#", "#\"", "\"\"\"", "true", "null", "inf", "nan", "-inf", "1abc", "\\u{", "\\u{41}",
    "\\/", "\\n", "\\s", "\\q", "\\\"", "k=", "=v", "x=1", "0x", "1.", "1e", "e", "_", "-.5", ".5",
    "..", "\u{7f}", "\u{0}", "\u{b}", "a", "\"a\"", "/-{ x }", "{ a 1 }", "/- ",
];

fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["../../examples", "../../layouts", "tests/invalid"] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
            .collect();
        paths.sort();
        for p in paths {
            out.push(std::fs::read_to_string(p).unwrap());
        }
    }
    assert!(out.len() >= 70, "corpus has {} files", out.len());
    out
}

/// The largest char boundary at or below `i`.
fn floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut Rng, base: &str) -> String {
    // Mostly a window of a file (small inputs make each mutation matter), sometimes whole.
    // Windows run from a line start to a line end.
    let mut s = if rng.below(2) == 0 {
        base.to_string()
    } else {
        let a = floor(base, rng.below(base.len()));
        let a = base[..a].rfind('\n').map_or(0, |i| i + 1);
        let b = floor(base, a + 1 + rng.below(400));
        let b = base[b..].find('\n').map_or(base.len(), |i| b + i + 1);
        base[a..b].to_string()
    };
    for _ in 0..1 + rng.below(3) {
        let at = floor(&s, rng.below(s.len() + 1));
        match rng.below(6) {
            0 => {
                // Flip a bit of an ASCII byte (keeps the text UTF-8).
                if let Some(&c) = s.as_bytes().get(at)
                    && c < 0x80
                {
                    let flipped = (c ^ (1 << rng.below(7))) as char;
                    s.replace_range(at..at + 1, flipped.encode_utf8(&mut [0; 4]));
                }
            }
            1 => {
                let end = floor(&s, at + 1 + rng.below(8));
                s.replace_range(at..end, "");
            }
            2 => {
                let end = floor(&s, at + rng.below(20));
                let dup = s[at..end].to_string();
                s.insert_str(at, &dup);
            }
            _ => s.insert_str(at, TOKENS[rng.below(TOKENS.len())]),
        }
    }
    s
}

fn sp(s: SourceSpan) -> (usize, usize) {
    (s.offset(), s.len())
}

fn key(e: &KdlEntry) -> Option<(String, (usize, usize))> {
    e.name().map(|k| (k.value().to_string(), sp(k.span())))
}

/// The first difference between two documents, or `None`.
fn diff(a: &KdlDocument, b: &KdlDocument) -> Option<String> {
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
        if (sp(x.name().span()), sp(x.span())) != (sp(y.name().span()), sp(y.span())) {
            return Some(format!(
                "{at}: name/node spans {:?}/{:?}",
                sp(x.name().span()),
                sp(x.span())
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

/// Runs `n` mutations from `seed`; returns (inputs, fast-path hits, sampled refusals
/// that kdl accepts, refusals sampled).
fn run(corpus: &[String], seed: u64, n: usize) -> (usize, usize, usize, usize) {
    let mut rng = Rng(seed);
    let (mut hits, mut valid_refused, mut sampled) = (0, 0, 0);
    for k in 0..n {
        let base = &corpus[rng.below(corpus.len())];
        let text = mutate(&mut rng, base);
        let Some(doc) = fast(&text) else {
            // Sample the refusals: how much valid KDL falls back to kdl's parser.
            if k % 16 == 0 {
                sampled += 1;
                valid_refused += usize::from(KdlDocument::parse_v2(&text).is_ok());
            }
            continue;
        };
        hits += 1;
        let slow = match KdlDocument::parse_v2(&text) {
            Ok(d) => d,
            Err(e) => panic!("fast path accepted what kdl refuses: {text:?}\n{e:?}"),
        };
        if let Some(d) = diff(&doc, &slow) {
            panic!("trees differ for {text:?}: {d}");
        }
    }
    (n, hits, valid_refused, sampled)
}

#[test]
fn fast_parser_agrees_with_kdl() {
    let corpus = corpus();
    // Unmutated, every file kdl accepts takes the fast path with the same tree.
    for text in &corpus {
        if let Ok(slow) = KdlDocument::parse_v2(text) {
            let doc = fast(text).unwrap_or_else(|| panic!("fast path refused:\n{text}"));
            assert_eq!(diff(&doc, &slow), None);
        } else {
            assert!(fast(text).is_none());
        }
    }
    let total: usize = std::env::var("WARDEN_FASTPARSE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let threads = 2;
    let results: Vec<(usize, usize, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let corpus = &corpus;
                s.spawn(move || {
                    run(
                        corpus,
                        0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1),
                        total / threads,
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (n, hits, valid_refused, sampled) = results.iter().fold((0, 0, 0, 0), |a, r| {
        (a.0 + r.0, a.1 + r.1, a.2 + r.2, a.3 + r.3)
    });
    println!(
        "fastparse differential: {n} inputs, {hits} took the fast path ({:.1}%), all equal to \
         kdl; of {sampled} sampled refusals, {valid_refused} were valid KDL (fell back to kdl)",
        100.0 * hits as f64 / n as f64
    );
    assert_eq!(n, total - total % threads);
    assert!(hits > n / 10, "too few inputs took the fast path: {hits}");
}
