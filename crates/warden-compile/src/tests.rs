//! Inline policy tests (`test` nodes) evaluated against the compiled policy, exactly as
//! the enforcing components would decide, without running anything.

use crate::Compiled;
use serde::Serialize;
use warden_lang::model::InferenceTest;
use warden_lang::{Loc, Model, parse_url};
use warden_wire::egress::{Request, Verdict, normalize_host};
use warden_wire::inference::{Api, Routing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestKind {
    Egress,
    Inference,
    Order,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub kind: TestKind,
    pub sandbox: Option<String>,
    /// What was tested, e.g. `GET http://pypi.org/simple/`.
    pub subject: String,
    pub file: String,
    pub line: u32,
    pub expected: String,
    pub actual: String,
    /// Why the policy decided as it did.
    pub why: String,
    pub pass: bool,
}

fn result(
    kind: TestKind,
    sandbox: Option<&str>,
    subject: String,
    loc: &Loc,
    expected: &str,
    actual: String,
    why: String,
) -> TestResult {
    TestResult {
        kind,
        sandbox: sandbox.map(str::to_string),
        subject,
        file: loc.file.clone(),
        line: loc.line,
        pass: expected == actual,
        expected: expected.to_string(),
        actual,
        why,
    }
}

pub fn run_tests(model: &Model, compiled: &Compiled) -> Vec<TestResult> {
    let mut out = Vec::new();
    for (s, c) in model.sandboxes.iter().zip(&compiled.sandboxes) {
        if let (Some(eg), Some(policy)) = (&s.egress, &c.plan.egress) {
            for t in &eg.tests {
                let (actual, why, subject) = egress_outcome(policy, &t.url, t.method.as_deref());
                out.push(result(
                    TestKind::Egress,
                    Some(&s.name),
                    subject,
                    &t.loc,
                    t.expect.as_str(),
                    actual,
                    why,
                ));
            }
        }
        if let (Some(inf), Some(policy)) = (&s.inference, &c.plan.inference) {
            for t in &inf.tests {
                out.push(inference_outcome(&s.name, policy, t));
            }
        }
    }
    for t in &model.order_tests {
        if t.tool {
            let call = warden_wire::orders::ToolCall::parse(&t.order);
            let (actual, why) = match call {
                Some(mut call) => {
                    // As in a sandbox: relative rules and paths from the working directory.
                    call.cwd = Some("/sandbox/workspace".into());
                    let d = compiled.orders.decide_tool(&call);
                    (d.autonomy, d.reason)
                }
                None => (
                    warden_wire::orders::Autonomy::Never,
                    "not a tool call".to_string(),
                ),
            };
            out.push(result(
                TestKind::Order,
                None,
                format!("tool {}", t.order),
                &t.loc,
                t.expect.as_str(),
                actual.as_str().to_string(),
                why,
            ));
            continue;
        }
        let actual = compiled.orders.autonomy(&t.order);
        let why = match compiled.orders.orders.iter().find(|o| o.name == t.order) {
            Some(o) => format!("order `{}`: {}", o.name, o.bounds),
            None => "no standing order covers it: a human first".to_string(),
        };
        out.push(result(
            TestKind::Order,
            None,
            format!("order {}", t.order),
            &t.loc,
            t.expect.as_str(),
            actual.as_str().to_string(),
            why,
        ));
    }
    out
}

fn api_name(api: Api) -> &'static str {
    match api {
        Api::Anthropic => "anthropic",
        Api::Openai => "openai",
    }
}

/// A `test model=...` case as the router would decide it. With `api=` or `leaves=` the
/// outcome also names the API the request leaves in (the provider's) and whether the
/// router translates it; it passes when the provider and, if written, that API match.
fn inference_outcome(
    sandbox: &str,
    policy: &warden_wire::inference::InferencePolicy,
    t: &InferenceTest,
) -> TestResult {
    let show_api = t.api.is_some() || t.leaves.is_some();
    let (provider, mut actual, mut why) = match policy.route(&t.model, &t.prompt) {
        Routing::Provider { provider, redacted } => {
            let why = if redacted {
                "routed with personal data redacted".to_string()
            } else {
                "routed by model".to_string()
            };
            (Some(provider.clone()), provider, why)
        }
        Routing::Blocked { detector } => (
            None,
            "block".to_string(),
            format!("prompt contains {}", detector.as_str()),
        ),
        Routing::NoRoute => (
            None,
            "none".to_string(),
            "no route matches the model".to_string(),
        ),
    };
    let sent = provider
        .as_deref()
        .and_then(|p| policy.providers.iter().find(|x| x.name == p))
        .map(|p| p.api);
    if let (true, Some(sent)) = (show_api, sent) {
        actual = format!("{actual} in the {} API", api_name(sent));
        match t.api {
            Some(from) if from != sent => {
                actual.push_str(&format!(", translated from {}", api_name(from)));
                why.push_str("; the router translates between the two APIs");
            }
            Some(_) => why.push_str("; the request leaves as the caller wrote it"),
            None => {}
        }
    }
    let mut expected = t.expect.clone();
    if let Some(l) = t.leaves {
        expected = format!("{expected} in the {} API", api_name(l));
    }
    let pass = match (&provider, t.leaves) {
        (Some(p), leaves) => *p == t.expect && (leaves.is_none() || leaves == sent),
        (None, _) => actual == t.expect,
    };
    let mut subject = format!("model {}", t.model);
    if let Some(a) = t.api {
        subject.push_str(&format!(" from an {} caller", api_name(a)));
    }
    if !t.prompt.is_empty() {
        subject.push_str(&format!(" with prompt {:?}", t.prompt));
    }
    TestResult {
        kind: TestKind::Inference,
        sandbox: Some(sandbox.to_string()),
        subject,
        file: t.loc.file.clone(),
        line: t.loc.line,
        expected,
        actual,
        why,
        pass,
    }
}

/// The outcome (`allow`, `deny`, `ask`), the reason, and the request as tested.
pub fn egress_outcome(
    policy: &warden_wire::egress::EgressPolicy,
    url: &str,
    method: Option<&str>,
) -> (String, String, String) {
    let Ok(u) = parse_url(url) else {
        return (
            "deny".into(),
            "not a URL the proxy accepts".into(),
            url.to_string(),
        );
    };
    let plain_http = u.scheme == "http";
    let subject = if plain_http {
        format!("{} {url}", method.unwrap_or("GET"))
    } else {
        format!("CONNECT {url}")
    };
    if u.userinfo {
        return (
            "deny".into(),
            "userinfo in a URL is refused".into(),
            subject,
        );
    }
    let host = match normalize_host(&u.host) {
        Ok(h) => h,
        Err(e) => return ("deny".into(), e, subject),
    };
    let method = method.unwrap_or("GET");
    let req = Request {
        host: &host,
        port: u.port,
        http: plain_http.then_some((method, u.path.as_str())),
    };
    match policy.decide(&req) {
        Verdict::Allow { rule } => ("allow".into(), rule_why(policy, rule), subject),
        Verdict::Ask { rule, order } => (
            "ask".into(),
            format!(
                "{}; standing order `{order}` needs a human first",
                rule_why(policy, rule)
            ),
            subject,
        ),
        Verdict::Deny { reason } => ("deny".into(), reason.describe(), subject),
    }
}

fn rule_why(policy: &warden_wire::egress::EgressPolicy, rule: usize) -> String {
    match policy.rules.get(rule) {
        Some(r) => format!("allowed by the rule on line {}", r.line),
        None => "allowed".into(),
    }
}
