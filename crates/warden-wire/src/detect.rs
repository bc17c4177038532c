//! Personal-data detectors: where in a text an email address, card number, API key,
//! phone number, IBAN or US social security number appears.
//!
//! Hand-written scanners, no regex engine: each one looks for the shape *and* a check
//! the shape alone cannot pass (Luhn for cards, mod-97 and the country's length for
//! IBANs, an issuer prefix, a known key prefix), and refuses candidates glued to other
//! digits or letters. They run on every prompt the router sees, which is mostly code,
//! logs and prose full of dates, versions, hashes and timestamps, so precision matters
//! as much as recall. The corpus in `tests/detectors/` keeps both measured
//! ([`score_cases`]).

use crate::inference::Detector;

/// One finding: `text[start..end]` is what `detector` matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub detector: Detector,
    pub start: usize,
    pub end: usize,
}

/// Every finding in `text`, ordered by start; overlapping findings of different
/// detectors are all reported.
pub fn find(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    emails(b, &mut out);
    cards(b, &mut out);
    api_keys(b, &mut out);
    phones(b, &mut out);
    ibans(b, &mut out);
    ssns(b, &mut out);
    out.sort_by_key(|f| (f.start, f.end));
    out
}

/// Which detectors fire on `text`, each once, in [`Detector::ALL`] order.
pub fn detect(text: &str) -> Vec<Detector> {
    let found = find(text);
    Detector::ALL
        .iter()
        .map(|(_, d)| *d)
        .filter(|d| found.iter().any(|f| f.detector == *d))
        .collect()
}

/// `text` with each finding of one of `only` replaced by `[REDACTED:<detector>]`
/// (overlaps merged, the first detector naming the span), and the detectors that fired.
pub fn redact(text: &str, only: &[Detector]) -> (String, Vec<Detector>) {
    let found: Vec<Finding> = find(text)
        .into_iter()
        .filter(|f| only.contains(&f.detector))
        .collect();
    let mut fired: Vec<Detector> = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in &found {
        if !fired.contains(&f.detector) {
            fired.push(f.detector);
        }
        if f.start < at {
            continue; // inside a span already replaced
        }
        out.push_str(&text[at..f.start]);
        out.push_str("[REDACTED:");
        out.push_str(f.detector.as_str());
        out.push(']');
        at = f.end;
        // Merge overlapping findings into this one replacement.
        for g in &found {
            if g.start < at && g.end > at {
                at = g.end;
            }
        }
    }
    out.push_str(&text[at..]);
    (out, fired)
}

fn alnum(c: Option<&u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric())
}

fn digit(c: Option<&u8>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// `b[i]` followed by a digit: `-5`, `.5`, `:5` continue a number, date or time.
fn continues_number(b: &[u8], i: usize) -> bool {
    matches!(b.get(i), Some(b'-' | b'.' | b':' | b'/' | b',')) && digit(b.get(i + 1))
}

fn push(out: &mut Vec<Finding>, detector: Detector, start: usize, end: usize) {
    out.push(Finding {
        detector,
        start,
        end,
    });
}

// ---- email ----------------------------------------------------------------------

fn emails(b: &[u8], out: &mut Vec<Finding>) {
    let local_ok = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    for (at, _) in b.iter().enumerate().filter(|(_, c)| **c == b'@') {
        let mut s = at;
        while s > 0 && local_ok(b[s - 1]) {
            s -= 1;
        }
        // Trim leading dots of the local part (`...bob@x.org`).
        while s < at && b[s] == b'.' {
            s += 1;
        }
        let mut e = at + 1;
        while e < b.len() && domain_ok(b[e]) {
            e += 1;
        }
        // A sentence may end right after the address.
        while e > at + 1 && (b[e - 1] == b'.' || b[e - 1] == b'-') {
            e -= 1;
        }
        if s == at || e == at + 1 {
            continue;
        }
        let domain = &b[at + 1..e];
        let labels: Vec<&[u8]> = domain.split(|c| *c == b'.').collect();
        let tld = labels.last().copied().unwrap_or_default();
        let ok = labels.len() >= 2
            && labels
                .iter()
                .all(|l| !l.is_empty() && l[0] != b'-' && l[l.len() - 1] != b'-')
            // `lodash@4.17.21`, `root@10.0.0.1` are not addresses: the TLD is letters.
            && tld.len() >= 2
            && tld.iter().all(|c| c.is_ascii_alphabetic())
            // `user@host:path` (scp, git remotes) is a location, not an address.
            && b.get(e) != Some(&b':')
            // `icon@2x.png`: retina image names, not addresses.
            && !FILE_EXTENSIONS.iter().any(|x| tld.eq_ignore_ascii_case(x.as_bytes()));
        if ok {
            push(out, Detector::Email, s, e);
        }
    }
}

/// File name extensions that are no top-level domain in use for mail.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "mjs", "ts", "tsx", "jsx", "json",
    "css", "scss", "html", "txt", "rs", "py", "go", "java", "rb", "lock", "yaml", "yml", "toml",
    "tgz", "gz", "zip", "wasm",
];

// ---- credit card ----------------------------------------------------------------

/// 13 to 19 digits, alone or in groups joined by single spaces or dashes, with an
/// issuer's prefix and a valid Luhn check digit.
fn cards(b: &[u8], out: &mut Vec<Finding>) {
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (alnum(b.get(i - 1)) || b[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let mut digits: Vec<u8> = Vec::new();
        let mut j = i;
        let mut sep: Option<u8> = None;
        let mut group = 0;
        let mut found = None;
        while j < b.len() {
            if b[j].is_ascii_digit() {
                digits.push(b[j] - b'0');
                group += 1;
                j += 1;
                if (13..=19).contains(&digits.len())
                    && !alnum(b.get(j))
                    && !continues_number(b, j)
                    && issuer(&digits)
                    && luhn(&digits)
                {
                    found = Some(j);
                }
            } else if (b[j] == b' ' || b[j] == b'-')
                && sep.is_none_or(|s| s == b[j])
                // Printed cards group digits by four (Amex and Diners 4-6-5, 4-6-4).
                && (4..=6).contains(&group)
                && digit(b.get(j + 1))
            {
                sep = Some(b[j]);
                group = 0;
                j += 1;
            } else {
                break;
            }
            if digits.len() > 19 {
                break;
            }
        }
        if let Some(e) = found {
            push(out, Detector::CreditCard, i, e);
            i = e;
        } else {
            // Skip the rest of this digit run.
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
}

/// Issuer prefixes of the card networks (Visa 4, Mastercard 51-55 and 2221-2720,
/// Amex 34/37, Diners 30/36/38, Discover 6011/644-649/65, JCB 35, UnionPay 62).
fn issuer(d: &[u8]) -> bool {
    let n = |k: usize| d[..k].iter().fold(0u32, |a, x| a * 10 + u32::from(*x));
    match d[0] {
        4 => true,
        5 => (1..=5).contains(&d[1]),
        2 => (2221..=2720).contains(&n(4)),
        3 => matches!(d[1], 0 | 4 | 5 | 6 | 7 | 8),
        6 => n(4) == 6011 || (644..=649).contains(&n(3)) || n(2) == 65 || n(2) == 62,
        _ => false,
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// ---- API keys -------------------------------------------------------------------

/// Well-known key prefixes followed by a long random-looking token.
fn api_keys(b: &[u8], out: &mut Vec<Finding>) {
    // (prefix, minimum length of the rest, maximum length of the rest)
    const PREFIXES: [(&[u8], usize, usize); 10] = [
        (b"sk-ant-", 20, 200),
        (b"sk-proj-", 20, 200),
        (b"sk-", 20, 200),
        (b"ghp_", 36, 36),
        (b"gho_", 36, 36),
        (b"github_pat_", 40, 120),
        (b"xoxb-", 20, 200),
        (b"xoxp-", 20, 200),
        (b"AKIA", 16, 16),
        (b"AIza", 35, 35),
    ];
    let tok = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
    let shortest = PREFIXES
        .iter()
        .map(|(p, min, _)| p.len() + min)
        .min()
        .unwrap_or(0);
    let mut i = 0;
    while i < b.len() {
        if i > 0 && tok(b[i - 1]) {
            i += 1;
            continue;
        }
        let mut e = i;
        while e < b.len() && tok(b[e]) {
            e += 1;
        }
        let w = &b[i..e];
        // Most words of a prompt are shorter than any key: no prefix to compare.
        let hit = (w.len() >= shortest).then_some(()).and_then(|()| {
            PREFIXES.iter().find_map(|(p, min, max)| {
                let rest = w.strip_prefix(*p)?;
                let random = rest.iter().any(u8::is_ascii_digit)
                && rest.iter().any(u8::is_ascii_alphabetic)
                // `sk-my-very-long-descriptive-name`: words, not a key.
                && rest.split(|c| *c == b'-' || *c == b'_').any(|part| part.len() >= 12);
                ((*min..=*max).contains(&rest.len()) && random).then_some(())
            })
        });
        if hit.is_some() {
            push(out, Detector::ApiKey, i, e);
        }
        i = e.max(i + 1);
    }
}

// ---- phone ----------------------------------------------------------------------

/// International numbers (`+` and a country code, 8 to 15 digits in groups) and the
/// North American shapes (`(415) 555-2671`, `415-555-2671`, `415.555.2671`,
/// `415 555 2671`, with an optional leading `1`). Dates, times, versions, addresses and
/// bare digit runs are not phone numbers: a candidate glued to more digits by `-`, `.`,
/// `:` or `/` is refused.
fn phones(b: &[u8], out: &mut Vec<Finding>) {
    let mut i = 0;
    while i < b.len() {
        let boundary = i == 0 || !(alnum(b.get(i - 1)) || b"+-./:_".contains(&b[i - 1]));
        let m = if !boundary {
            None
        } else if b[i] == b'+' {
            international(b, i)
        } else if b[i] == b'(' || b[i].is_ascii_digit() {
            north_american(b, i)
        } else {
            None
        };
        match m {
            Some(e) if !alnum(b.get(e)) && !continues_number(b, e) => {
                push(out, Detector::Phone, i, e);
                i = e;
            }
            _ => i += 1,
        }
    }
}

/// `+CC` then groups of digits separated by one space, dash or dot (or a parenthesized
/// area code), 8 to 15 digits in all. Returns the end.
fn international(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    let mut digits = 0;
    let mut groups = 0;
    let mut end = None;
    loop {
        let paren = b.get(j) == Some(&b'(');
        if paren {
            j += 1;
        }
        let g = j;
        while digit(b.get(j)) {
            j += 1;
        }
        let n = j - g;
        if n == 0 || n > 8 && groups > 0 || n > 15 {
            break;
        }
        if paren {
            if b.get(j) != Some(&b')') {
                break;
            }
            j += 1;
        }
        digits += n;
        groups += 1;
        if (8..=15).contains(&digits) && groups >= 2 || (10..=15).contains(&digits) {
            end = Some(j);
        }
        match b.get(j) {
            Some(b' ' | b'-' | b'.') if matches!(b.get(j + 1), Some(c) if c.is_ascii_digit() || *c == b'(') =>
            {
                j += 1;
            }
            Some(b'(') => {}
            _ => break,
        }
    }
    end.filter(|_| digits <= 15)
}

/// `[1 ](ddd) ddd-dddd`, `[1-]ddd-ddd-dddd`, `ddd.ddd.dddd`, `ddd ddd dddd`.
fn north_american(b: &[u8], start: usize) -> Option<usize> {
    let group = |j: usize, n: usize| -> bool {
        (j..j + n).all(|k| digit(b.get(k))) && !digit(b.get(j + n))
    };
    let mut j = start;
    // Optional trunk prefix `1` and a separator.
    if b.get(j) == Some(&b'1') && matches!(b.get(j + 1), Some(b' ' | b'-' | b'.')) {
        let k = j + 2;
        if b.get(k) == Some(&b'(') || group(k, 3) {
            j = k;
        }
    }
    let sep;
    if b.get(j) == Some(&b'(') {
        if !(group(j + 1, 3) && b.get(j + 4) == Some(&b')')) {
            return None;
        }
        j += 5;
        if b.get(j) == Some(&b' ') {
            j += 1;
        }
        sep = b'-';
        if !group(j, 3) {
            return None;
        }
        j += 3;
        if !matches!(b.get(j), Some(b'-' | b' ' | b'.')) {
            return None;
        }
        j += 1;
    } else {
        if !group(j, 3) {
            return None;
        }
        j += 3;
        sep = *b.get(j).filter(|c| matches!(c, b'-' | b'.' | b' '))?;
        j += 1;
        if !group(j, 3) || b.get(j + 3) != Some(&sep) {
            return None;
        }
        j += 4;
    }
    let _ = sep;
    if !group(j, 4) {
        return None;
    }
    // Area and exchange codes never start with 0 or 1.
    let digits: Vec<u8> = b[start..j + 4]
        .iter()
        .filter(|c| c.is_ascii_digit())
        .copied()
        .collect();
    let local = &digits[digits.len() - 10..];
    if local[0] < b'2' || local[3] < b'2' {
        return None;
    }
    Some(j + 4)
}

// ---- IBAN -----------------------------------------------------------------------

/// Countries using IBANs and the length of theirs (SWIFT's IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// An IBAN written compact (`GB82WEST12345698765432`) or in groups of four
/// (`GB82 WEST 1234 5698 7654 32`): the country's length and the mod-97 check.
fn ibans(b: &[u8], out: &mut Vec<Finding>) {
    let up = |c: &u8| c.is_ascii_uppercase() || c.is_ascii_digit();
    for i in 0..b.len().saturating_sub(3) {
        if alnum(i.checked_sub(1).and_then(|k| b.get(k)))
            || !(b[i].is_ascii_uppercase()
                && b[i + 1].is_ascii_uppercase()
                && b[i + 2].is_ascii_digit()
                && b[i + 3].is_ascii_digit())
        {
            continue;
        }
        let Some(len) = IBAN_LENGTHS
            .iter()
            .find(|(cc, _)| cc[..] == b[i..i + 2])
            .map(|(_, n)| *n)
        else {
            continue;
        };
        let mut compact = Vec::with_capacity(34);
        let mut j = i;
        while j < b.len() && compact.len() < len {
            if up(&b[j]) {
                compact.push(b[j]);
                j += 1;
            } else if b[j] == b' ' && compact.len() % 4 == 0 && b.get(j + 1).is_some_and(up) {
                j += 1;
            } else {
                break;
            }
        }
        if compact.len() == len && !alnum(b.get(j)) && iban_checksum(&compact) {
            push(out, Detector::Iban, i, j);
        }
    }
}

fn iban_checksum(w: &[u8]) -> bool {
    let mut rem: u64 = 0;
    for c in w[4..].iter().chain(&w[..4]) {
        let v = match (*c as char).to_digit(36) {
            Some(v) => u64::from(v),
            None => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

// ---- US SSN ---------------------------------------------------------------------

/// `ddd-dd-dddd` with the numbers the SSA never issues left out (area 000, 666, 9xx;
/// group 00; serial 0000), not glued to other digits or dashes.
fn ssns(b: &[u8], out: &mut Vec<Finding>) {
    for i in 0..b.len().saturating_sub(10) {
        let w = &b[i..i + 11];
        let shape = w.iter().enumerate().all(|(k, c)| {
            if k == 3 || k == 6 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
        if !shape {
            continue;
        }
        let before = i == 0 || !(alnum(b.get(i - 1)) || b"-./:".contains(&b[i - 1]));
        let after = !alnum(b.get(i + 11)) && !continues_number(b, i + 11);
        let valid = &w[0..3] != b"000"
            && &w[0..3] != b"666"
            && w[0] != b'9'
            && &w[4..6] != b"00"
            && &w[7..11] != b"0000";
        if before && after && valid {
            push(out, Detector::UsSsn, i, i + 11);
        }
    }
}

// ---- measuring ------------------------------------------------------------------

/// Precision and recall of one detector on a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Score {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub true_negatives: usize,
}

impl Score {
    /// Of what fired, the share that should have (1 when nothing fired).
    pub fn precision(&self) -> f64 {
        let fired = self.true_positives + self.false_positives;
        if fired == 0 {
            1.0
        } else {
            self.true_positives as f64 / fired as f64
        }
    }
    /// Of what should have fired, the share that did (1 when nothing should have).
    pub fn recall(&self) -> f64 {
        let due = self.true_positives + self.false_negatives;
        if due == 0 {
            1.0
        } else {
            self.true_positives as f64 / due as f64
        }
    }
}

/// Score `detector` on a corpus: one case per line, `+ text` must fire, `- text` must
/// not; blank lines and lines starting with `#` are skipped. Also returns the lines it
/// got wrong, for a useful failure message.
pub fn score_cases(detector: Detector, corpus: &str) -> (Score, Vec<String>) {
    let mut s = Score::default();
    let mut wrong = Vec::new();
    for line in corpus.lines() {
        let (want, text) = if let Some(t) = line.strip_prefix("+ ") {
            (true, t)
        } else if let Some(t) = line.strip_prefix("- ") {
            (false, t)
        } else {
            continue;
        };
        let text = text.replace("\\n", "\n");
        let got = find(&text).iter().any(|f| f.detector == detector);
        match (want, got) {
            (true, true) => s.true_positives += 1,
            (true, false) => s.false_negatives += 1,
            (false, true) => s.false_positives += 1,
            (false, false) => s.true_negatives += 1,
        }
        if want != got {
            wrong.push(line.to_string());
        }
    }
    (s, wrong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_are_not_phone_numbers() {
        assert_eq!(detect("meeting on 2024-01-15 12:30 in room 4"), vec![]);
        assert_eq!(
            detect("call +1 (415) 555-2671 today"),
            vec![Detector::Phone]
        );
    }

    #[test]
    fn redaction_replaces_each_finding_and_keeps_the_rest() {
        let (out, fired) = redact(
            "mail bob@example.com or alice@example.org, card 4111 1111 1111 1111.",
            &[Detector::Email, Detector::CreditCard],
        );
        assert_eq!(
            out,
            "mail [REDACTED:email] or [REDACTED:email], card [REDACTED:credit-card]."
        );
        assert_eq!(fired, vec![Detector::Email, Detector::CreditCard]);
        let (out, fired) = redact("mail bob@example.com", &[Detector::Phone]);
        assert_eq!(out, "mail bob@example.com");
        assert!(fired.is_empty());
    }
}
