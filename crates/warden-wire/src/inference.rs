//! Inference routes: which provider serves which model, and what happens to prompts that
//! carry personal data. Read by the inference router and by `warden test`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InferencePolicy {
    pub version: u32,
    pub sandbox: String,
    pub providers: Vec<Provider>,
    /// First match wins.
    pub routes: Vec<Route>,
    /// Applied in order; the first rule whose detector fires decides.
    pub privacy: Vec<PrivacyRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    Anthropic,
    Openai,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub name: String,
    pub api: Api,
    pub endpoint: String,
    /// Environment variable of the router (never of the sandbox) holding the key.
    pub key_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Glob over the model name (`claude-*`).
    pub model: String,
    pub provider: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Detector {
    Email,
    CreditCard,
    ApiKey,
    Phone,
    Iban,
    UsSsn,
}

impl Detector {
    pub const ALL: [(&'static str, Detector); 6] = [
        ("email", Detector::Email),
        ("credit-card", Detector::CreditCard),
        ("api-key", Detector::ApiKey),
        ("phone", Detector::Phone),
        ("iban", Detector::Iban),
        ("us-ssn", Detector::UsSsn),
    ];
    pub fn parse(s: &str) -> Option<Detector> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, d)| *d)
    }
    pub fn as_str(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, d)| d == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum PrivacyAction {
    /// Refuse the request.
    Block,
    /// Replace each finding with `[REDACTED:<detector>]` and send on.
    Redact,
    /// Send to another provider (a local model) instead.
    Reroute { to: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyRule {
    pub detect: Vec<Detector>,
    #[serde(flatten)]
    pub action: PrivacyAction,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum Routing {
    Provider { provider: String, redacted: bool },
    Blocked { detector: Detector },
    NoRoute,
}

impl InferencePolicy {
    pub fn route(&self, model: &str, prompt: &str) -> Routing {
        let found = detect(prompt);
        for rule in &self.privacy {
            if let Some(d) = rule.detect.iter().find(|d| found.contains(d)) {
                return match &rule.action {
                    PrivacyAction::Block => Routing::Blocked { detector: *d },
                    PrivacyAction::Reroute { to } => Routing::Provider {
                        provider: to.clone(),
                        redacted: false,
                    },
                    PrivacyAction::Redact => match self.model_route(model) {
                        Some(p) => Routing::Provider {
                            provider: p.to_string(),
                            redacted: true,
                        },
                        None => Routing::NoRoute,
                    },
                };
            }
        }
        match self.model_route(model) {
            Some(p) => Routing::Provider {
                provider: p.to_string(),
                redacted: false,
            },
            None => Routing::NoRoute,
        }
    }

    fn model_route(&self, model: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| crate::glob_match(&r.model, model))
            .map(|r| r.provider.as_str())
    }
}

/// Which detectors fire on a text. Deliberately conservative patterns, no regex engine.
pub fn detect(text: &str) -> Vec<Detector> {
    let mut out = Vec::new();
    if has_email(text) {
        out.push(Detector::Email);
    }
    if has_card(text) {
        out.push(Detector::CreditCard);
    }
    if has_api_key(text) {
        out.push(Detector::ApiKey);
    }
    if has_digit_run(text, 10, 15, |c| {
        c == ' ' || c == '-' || c == '(' || c == ')' || c == '+'
    }) && text.contains(['+', '(', '-'])
    {
        out.push(Detector::Phone);
    }
    if has_iban(text) {
        out.push(Detector::Iban);
    }
    if has_ssn(text) {
        out.push(Detector::UsSsn);
    }
    out
}

fn has_email(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || "<>()[],;\"'".contains(c))
        .any(|w| {
            let Some((local, domain)) = w.split_once('@') else {
                return false;
            };
            !local.is_empty()
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c))
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        })
}

/// 13 to 19 digits, optionally separated by single spaces or dashes, passing Luhn.
fn has_card(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() || (i > 0 && chars[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let mut digits = Vec::new();
        let mut j = i;
        while j < chars.len() {
            if let Some(d) = chars[j].to_digit(10) {
                digits.push(d);
                j += 1;
            } else if (chars[j] == ' ' || chars[j] == '-')
                && j + 1 < chars.len()
                && chars[j + 1].is_ascii_digit()
            {
                j += 1;
            } else {
                break;
            }
            if digits.len() >= 13 && digits.len() <= 19 && luhn(&digits) {
                let next_is_digit = j < chars.len() && chars[j].is_ascii_digit();
                if !next_is_digit {
                    return true;
                }
            }
        }
        i = j.max(i + 1);
    }
    false
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Well-known key prefixes followed by a long token.
fn has_api_key(text: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "sk-ant-",
        "sk-proj-",
        "sk-",
        "ghp_",
        "github_pat_",
        "xoxb-",
        "AKIA",
        "AIza",
    ];
    text.split(|c: char| c.is_whitespace() || "\"'=:,;()[]{}<>".contains(c))
        .any(|w| {
            PREFIXES.iter().any(|p| {
                w.strip_prefix(p).is_some_and(|rest| {
                    rest.len() >= 16
                        && rest
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
            })
        })
}

fn has_digit_run(text: &str, min: usize, max: usize, sep: impl Fn(char) -> bool) -> bool {
    let mut count = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            count += 1;
        } else if sep(c) && count > 0 {
            continue;
        } else {
            if (min..=max).contains(&count) {
                return true;
            }
            count = 0;
        }
    }
    (min..=max).contains(&count)
}

fn has_iban(text: &str) -> bool {
    text.split_whitespace().any(|w| {
        let b = w.as_bytes();
        b.len() >= 15
            && b.len() <= 34
            && b[0].is_ascii_uppercase()
            && b[1].is_ascii_uppercase()
            && b[2].is_ascii_digit()
            && b[3].is_ascii_digit()
            && b.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && iban_checksum(w)
    })
}

fn iban_checksum(w: &str) -> bool {
    let (head, tail) = w.split_at(4);
    let mut rem: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let v = match c.to_digit(36) {
            Some(v) => v as u64,
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

fn has_ssn(text: &str) -> bool {
    let b = text.as_bytes();
    b.windows(11).enumerate().any(|(i, w)| {
        let shape = w.iter().enumerate().all(|(k, c)| {
            if k == 3 || k == 6 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
        let before = i == 0 || !b[i - 1].is_ascii_digit();
        let after = i + 11 >= b.len() || !b[i + 11].is_ascii_digit();
        shape && before && after && &w[0..3] != b"000" && &w[0..3] != b"666"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectors() {
        assert_eq!(detect("write to bob@example.com"), vec![Detector::Email]);
        assert_eq!(
            detect("card 4111 1111 1111 1111 ok"),
            vec![Detector::CreditCard]
        );
        assert_eq!(detect("card 4111 1111 1111 1112"), vec![]);
        assert_eq!(
            detect("key sk-ant-abcdefghijklmnop1234"),
            vec![Detector::ApiKey]
        );
        assert_eq!(detect("ssn 123-45-6789"), vec![Detector::UsSsn]);
        assert_eq!(detect("iban GB82WEST12345698765432"), vec![Detector::Iban]);
        assert_eq!(detect("plain text about rust"), vec![]);
    }
}
