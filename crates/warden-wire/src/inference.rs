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
    /// A streamed answer is cut after this many seconds without a byte (never a total
    /// timeout). `None`: the router's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Requests this sandbox may send per minute (sliding window); `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Input plus output tokens (from the upstream's usage) per minute; `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
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
    /// A file holding the key, readable by its owner only (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// A PEM file of extra certificate authorities trusted for this endpoint, besides
    /// the public roots (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A secret of the sandbox's tenant holding the key (`key-secret=`); the router gets
    /// it through the lookup its host hands it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Glob over the model name (`claude-*`).
    pub model: String,
    pub provider: String,
    /// The model name sent upstream instead of the requested one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_rewrite: Option<String>,
    /// Providers tried in order when `provider` cannot be reached, times out before
    /// answering, or answers 429 or 5xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
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
        if let Some((rule, detector)) = self.privacy_rule(&found) {
            return match &rule.action {
                PrivacyAction::Block => Routing::Blocked { detector },
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
        match self.model_route(model) {
            Some(p) => Routing::Provider {
                provider: p.to_string(),
                redacted: false,
            },
            None => Routing::NoRoute,
        }
    }

    fn model_route(&self, model: &str) -> Option<&str> {
        self.route_for(model).map(|r| r.provider.as_str())
    }

    /// The first route whose glob matches `model`.
    pub fn route_for(&self, model: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| crate::glob_match(&r.model, model))
    }

    /// The first privacy rule one of whose detectors is in `found`, and that detector.
    pub fn privacy_rule(&self, found: &[Detector]) -> Option<(&PrivacyRule, Detector)> {
        self.privacy.iter().find_map(|rule| {
            rule.detect
                .iter()
                .find(|d| found.contains(d))
                .map(|d| (rule, *d))
        })
    }

    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }
}

pub use crate::detect::detect;

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
            detect("key sk-ant-api03-abcdefghijklmnop1234"),
            vec![Detector::ApiKey]
        );
        assert_eq!(detect("ssn 123-45-6789"), vec![Detector::UsSsn]);
        assert_eq!(detect("iban GB82WEST12345698765432"), vec![Detector::Iban]);
        assert_eq!(detect("plain text about rust"), vec![]);
    }
}
