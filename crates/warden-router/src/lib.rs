//! warden-router: the inference router. Model calls leave a sandbox only through it.
//!
//! Like the egress proxy, the router is served from a listener the caller binds (inside
//! the sandbox's network namespace) and hands over; it runs on the caller's tokio
//! runtime and dials providers from wherever that runtime runs.
//!
//! # Use
//!
//! ```no_run
//! # async fn run(policy: warden_wire::inference::InferencePolicy) -> Result<(), warden_router::RouterError> {
//! use warden_router::{Router, RouterConfig, JsonLines};
//! let audit = JsonLines::open("/var/lib/warden/sandboxes/agent/inference.jsonl".as_ref())
//!     .expect("audit file");
//! // Keys are read now: a missing one is an error here, not a 401 later.
//! let router = Router::new(policy, RouterConfig::default(), audit)?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:4000").expect("bind");
//! let handle = warden_router::spawn(listener, router.clone())?;
//! // Later: `router.reload(new_policy)?` takes effect on the next request.
//! handle.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What it does with a request
//!
//! 1. The path names the API: Anthropic Messages (`/v1/messages`,
//!    `/v1/messages/count_tokens`), OpenAI Chat Completions (`/v1/chat/completions`),
//!    OpenAI Responses (`/v1/responses`), or the model list (`GET /v1/models`). Every
//!    refusal is written in that API's error format.
//! 2. Rate limits (`requests_per_minute`, `tokens_per_minute`) answer 429 with
//!    `retry-after`.
//! 3. The body must be JSON with a `model` (fail closed: 400 otherwise).
//! 4. Privacy: detectors run over every text of the request; the first privacy rule with
//!    a detector that fired decides: `block` (403, naming the detector, never the
//!    text), `redact` (`[REDACTED:<detector>]` in the JSON strings) or `reroute`.
//! 5. The first route whose glob matches picks the provider; `model_rewrite` changes
//!    the model sent. A provider of the other API gets the request translated
//!    ([`translate::Crossing`]): what cannot be translated is refused (400, naming the
//!    feature) and nothing is sent; `count_tokens` to an OpenAI provider is answered
//!    here with an estimate marked `"estimated": true` and `x-warden-estimated: true`.
//! 6. The caller's credentials (`x-api-key`, `authorization`) are dropped and the
//!    provider's key is added. Query strings and the API headers (`anthropic-version`,
//!    `anthropic-beta`, `openai-beta`) pass through.
//! 7. Connection errors, timeouts before the answer's head, 429 and 5xx move on to the
//!    route's `fallback` providers in order. Once an answer is being relayed nothing is
//!    retried.
//! 8. The answer is relayed frame by frame (server-sent events arrive as sent), with an
//!    idle timeout and no total timeout. A caller that goes away drops the upstream
//!    connection, which cancels the request there. A translated stream is rewritten
//!    event by event as its frames arrive; a translated JSON answer is read whole, then
//!    written in the caller's API (an error keeps its status).
//! 9. One [`RouterEvent`] per call goes to the [`AuditSink`].

pub mod api;
pub mod audit;
mod limits;
mod relay;
pub mod translate;
mod upstream;

pub use audit::{AuditSink, JsonLines, NoAudit, RouterEvent};
pub use relay::RouterBody;

use api::Endpoint;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use limits::{Exceeded, Limits};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use translate::Crossing;
pub use upstream::KeySource;
use upstream::{KeyLookup, Upstream};
use warden_wire::inference::{Api, Detector, InferencePolicy, PrivacyAction};

/// Errors from making, reloading or serving a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("inference policy has wire version {found}, this warden reads version {expected}")]
    Version { found: u32, expected: u32 },
    #[error("inference policy is for sandbox `{found}`, this router serves `{expected}`")]
    Sandbox { found: String, expected: String },
    #[error("provider `{provider}`: no key: {reason}")]
    Key { provider: String, reason: String },
    #[error("provider `{provider}`: endpoint `{endpoint}`: {reason}")]
    Endpoint {
        provider: String,
        endpoint: String,
        reason: String,
    },
    #[error("provider `{provider}`: TLS: {reason}")]
    Tls { provider: String, reason: String },
    #[error("the inference policy names provider `{0}` but does not declare it")]
    UnknownProvider(String),
    #[error("cannot serve the router listener: {0}")]
    Listener(io::Error),
}

/// Tunables. [`RouterConfig::default`] gives the production values.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Per TCP connect and TLS handshake to a provider.
    pub connect_timeout: Duration,
    /// From sending a request to the head of the answer. Generous: a non-streaming
    /// answer's head comes only when the whole completion is done.
    pub first_byte_timeout: Duration,
    /// An answer is cut after this long without a byte, unless the policy sets its own.
    pub idle_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Whole request head must arrive within this.
    pub header_timeout: Duration,
    /// On shutdown, open calls get this long to finish before being cut.
    pub shutdown_grace: Duration,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            max_body_bytes: 32 << 20,
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A policy with its providers ready to dial; swapped whole on reload.
struct Live {
    policy: InferencePolicy,
    upstreams: HashMap<String, Arc<Upstream>>,
}

impl Live {
    fn new(policy: InferencePolicy, env: &KeyLookup) -> Result<Live, RouterError> {
        if policy.version != warden_wire::WIRE_VERSION {
            return Err(RouterError::Version {
                found: policy.version,
                expected: warden_wire::WIRE_VERSION,
            });
        }
        let mut upstreams = HashMap::new();
        for p in &policy.providers {
            upstreams.insert(p.name.clone(), Arc::new(Upstream::new(p, env)?));
        }
        let named = policy
            .routes
            .iter()
            .flat_map(|r| std::iter::once(&r.provider).chain(&r.fallback))
            .chain(policy.privacy.iter().filter_map(|r| match &r.action {
                PrivacyAction::Reroute { to } => Some(to),
                _ => None,
            }));
        for name in named {
            if !upstreams.contains_key(name) {
                return Err(RouterError::UnknownProvider(name.clone()));
            }
        }
        Ok(Live { policy, upstreams })
    }
}

/// The router of one sandbox: its policy, provider connections, limits and audit sink.
pub struct Router {
    live: ArcSwap<Live>,
    config: RouterConfig,
    pub(crate) audit: Box<dyn AuditSink>,
    pub(crate) limits: Limits,
    keys: Box<KeyLookup>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("sandbox", &self.live.load().policy.sandbox)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router whose `key-env` keys come from this process's environment.
    pub fn new(
        policy: InferencePolicy,
        config: RouterConfig,
        audit: impl AuditSink,
    ) -> Result<Arc<Router>, RouterError> {
        Router::with_env(policy, config, audit, |k| std::env::var(k).ok())
    }

    /// A router reading `key-env` keys through `env` (at start and on each reload); a
    /// provider with `key-secret` fails.
    pub fn with_env(
        policy: InferencePolicy,
        config: RouterConfig,
        audit: impl AuditSink,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Arc<Router>, RouterError> {
        Router::with_keys(policy, config, audit, move |k| match k {
            KeySource::Env(var) => env(var),
            KeySource::Secret(_) => None,
        })
    }

    /// A router asking `keys` for `key-env` and `key-secret` keys (at start and on each
    /// reload): its host reads its environment and the tenant's secret store.
    pub fn with_keys(
        policy: InferencePolicy,
        config: RouterConfig,
        audit: impl AuditSink,
        keys: impl Fn(KeySource<'_>) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Arc<Router>, RouterError> {
        let keys: Box<KeyLookup> = Box::new(keys);
        let live = Live::new(policy, &*keys)?;
        Ok(Arc::new(Router {
            live: ArcSwap::from_pointee(live),
            config,
            audit: Box::new(audit),
            limits: Limits::default(),
            keys,
        }))
    }

    /// The policy the next request is decided by.
    pub fn policy(&self) -> InferencePolicy {
        self.live.load().policy.clone()
    }

    /// Swap in a new policy (routes, providers, privacy, limits): keys are read again
    /// and every provider prepared before the swap, so a failing reload changes nothing.
    /// The next request uses it; calls in flight finish with the old one.
    pub fn reload(&self, policy: InferencePolicy) -> Result<(), RouterError> {
        let current = self.live.load();
        if policy.sandbox != current.policy.sandbox {
            return Err(RouterError::Sandbox {
                found: policy.sandbox,
                expected: current.policy.sandbox.clone(),
            });
        }
        let live = Live::new(policy, &*self.keys)?;
        self.live.store(Arc::new(live));
        Ok(())
    }

    /// Answer one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<RouterBody> {
        let start = Instant::now();
        let live = self.live.load_full();
        let mut ev = RouterEvent {
            ts_ms: unix_ms(),
            sandbox: live.policy.sandbox.clone(),
            endpoint: "unknown".into(),
            decision: "invalid".into(),
            ..RouterEvent::default()
        };
        let anthropic_version = req.headers().contains_key("anthropic-version");
        let Some(endpoint) = Endpoint::parse(req.method(), req.uri().path()) else {
            let api = if anthropic_version || req.uri().path().starts_with("/v1/messages") {
                Api::Anthropic
            } else {
                Api::Openai
            };
            ev.decision = "not-found".into();
            let msg = format!(
                "`{} {}` is not served here: /v1/messages, /v1/messages/count_tokens, /v1/chat/completions, /v1/responses, /v1/models",
                req.method(),
                req.uri().path()
            );
            return self.refuse(ev, start, api, 404, "not_found", &msg);
        };
        ev.endpoint = endpoint.as_str().into();
        let api = endpoint.api(anthropic_version);
        if endpoint == Endpoint::Models {
            ev.decision = "list".into();
            ev.status = 200;
            ev.latency_ms = start.elapsed().as_millis() as u64;
            self.audit.record(ev);
            let body = api::models_body(api, &live.policy.routes);
            return json_response(200, body);
        }

        if let Err(e) = self.limits.admit(
            Instant::now(),
            live.policy.requests_per_minute,
            live.policy.tokens_per_minute,
        ) {
            ev.decision = "limit".into();
            let (what, limit, retry) = match e {
                Exceeded::Requests { limit, retry_after } => {
                    ("requests", u64::from(limit), retry_after)
                }
                Exceeded::Tokens { limit, retry_after } => ("tokens", limit, retry_after),
            };
            let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
            let msg = format!("this sandbox may send {limit} {what} per minute; retry in {secs} s");
            let mut resp = self.refuse(ev, start, api, 429, "rate_limit_exceeded", &msg);
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return resp;
        }

        let (parts, body) = req.into_parts();
        let bytes = match Limited::new(body, self.config.max_body_bytes)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let too_big = e.is::<http_body_util::LengthLimitError>();
                let (status, msg) = if too_big {
                    (
                        413,
                        format!("request body over {} bytes", self.config.max_body_bytes),
                    )
                } else {
                    (400, format!("could not read the request body: {e}"))
                };
                return self.refuse(ev, start, api, status, "invalid_body", &msg);
            }
        };
        let mut json: Value = match serde_json::from_slice(&bytes) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                let msg = "the request body must be a JSON object";
                return self.refuse(ev, start, api, 400, "invalid_json", msg);
            }
            Err(e) => {
                let msg = format!("the request body is not JSON ({e}); nothing was sent");
                return self.refuse(ev, start, api, 400, "invalid_json", &msg);
            }
        };
        let Some(model) = json
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            let msg = "the request body has no `model`";
            return self.refuse(ev, start, api, 400, "invalid_json", msg);
        };
        ev.requested_model = Some(model.clone());

        // Privacy: every detector over every text; the first rule that applies decides.
        let mut found: Vec<Detector> = Vec::new();
        for t in api::texts(&json) {
            for d in warden_wire::detect::detect(t) {
                if !found.contains(&d) {
                    found.push(d);
                }
            }
        }
        found.sort();
        ev.detectors = found.iter().map(|d| d.as_str().to_string()).collect();
        let rule = live
            .policy
            .privacy_rule(&found)
            .map(|(r, d)| (r.action.clone(), r.detect.clone(), d));
        let mut changed = false;
        let route = live.policy.route_for(&model);
        let (candidates, upstream_model, decision): (Vec<String>, String, &str) = match rule {
            Some((PrivacyAction::Block, _, d)) => {
                ev.decision = "block".into();
                let msg = format!(
                    "blocked by the sandbox's privacy policy: the request contains data the `{}` detector found",
                    d.as_str()
                );
                return self.refuse(ev, start, api, 403, "privacy_block", &msg);
            }
            Some((PrivacyAction::Reroute { to }, _, _)) => (vec![to], model.clone(), "reroute"),
            Some((PrivacyAction::Redact, detect, _)) => {
                api::redact(&mut json, &detect);
                changed = true;
                match route {
                    Some(r) => (
                        std::iter::once(r.provider.clone())
                            .chain(r.fallback.iter().cloned())
                            .collect(),
                        r.model_rewrite.clone().unwrap_or_else(|| model.clone()),
                        "redact",
                    ),
                    None => (Vec::new(), model.clone(), "redact"),
                }
            }
            None => match route {
                Some(r) => (
                    std::iter::once(r.provider.clone())
                        .chain(r.fallback.iter().cloned())
                        .collect(),
                    r.model_rewrite.clone().unwrap_or_else(|| model.clone()),
                    "route",
                ),
                None => (Vec::new(), model.clone(), "route"),
            },
        };
        if candidates.is_empty() {
            ev.decision = "no-route".into();
            let msg = format!("no inference route of this sandbox admits model `{model}`");
            return self.refuse(ev, start, api, 404, "no_route", &msg);
        }
        ev.decision = decision.into();
        let upstreams: Vec<Arc<Upstream>> = candidates
            .iter()
            .filter_map(|c| live.upstreams.get(c).cloned())
            .collect();
        if upstream_model != model {
            json["model"] = Value::String(upstream_model.clone());
            changed = true;
        }
        ev.upstream_model = Some(upstream_model);

        // OpenAI has no way to count a request's tokens: warden estimates them.
        if endpoint == Endpoint::CountTokens
            && let Some(first) = upstreams.first()
            && first.provider.api != Api::Anthropic
        {
            ev.decision = "estimate".into();
            ev.provider = Some(first.provider.name.clone());
            ev.status = 200;
            ev.latency_ms = start.elapsed().as_millis() as u64;
            ev.notes.push(format!(
                "input tokens estimated: provider `{}` speaks the OpenAI API, which cannot count them",
                first.provider.name
            ));
            self.audit.record(ev);
            let n = translate::estimate_input_tokens(&json);
            let body = serde_json::json!({"input_tokens": n, "estimated": true});
            let mut resp = json_response(200, serde_json::to_vec(&body).unwrap_or_default());
            resp.headers_mut()
                .insert("x-warden-estimated", HeaderValue::from_static("true"));
            return resp;
        }

        // Each attempt's body in its provider's API, made once per API. A fallback of
        // the other API is translated too; one the request cannot be translated for is
        // passed over (the first provider's refusal is the caller's).
        let mut passthrough: Option<Bytes> = None;
        let mut crossed: Option<Result<Bytes, translate::Untranslatable>> = None;
        let mut attempts: Vec<(Arc<Upstream>, Option<Crossing>, Bytes)> =
            Vec::with_capacity(upstreams.len());
        for (i, up) in upstreams.into_iter().enumerate() {
            let crossing = match Crossing::between(endpoint, up.provider.api) {
                Ok(c) => c,
                Err(e) => {
                    ev.notes
                        .push(format!("fallback `{}` passed over: {e}", up.provider.name));
                    continue;
                }
            };
            let body = match crossing {
                None => passthrough
                    .get_or_insert_with(|| {
                        if changed {
                            Bytes::from(serde_json::to_vec(&json).unwrap_or_default())
                        } else {
                            bytes.clone()
                        }
                    })
                    .clone(),
                Some(c) => {
                    let made = crossed.get_or_insert_with(|| {
                        let mut notes = translate::Notes::default();
                        let r = c.request(&json, &mut notes);
                        if notes.dropped_thinking > 0 {
                            ev.notes.push(format!(
                                "dropped {} thinking block(s) of the request: the provider's API has none",
                                notes.dropped_thinking
                            ));
                        }
                        r.map(|v| Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
                    });
                    match made {
                        Ok(b) => b.clone(),
                        Err(e) if i == 0 => {
                            ev.decision = "untranslatable".into();
                            ev.provider = Some(up.provider.name.clone());
                            ev.translated = Some(c.as_str().into());
                            let msg = format!(
                                "model `{model}` is routed to provider `{}`, which speaks the {} API, and {e}; nothing was sent",
                                up.provider.name,
                                api_name(up.provider.api),
                            );
                            return self.refuse(ev, start, api, 400, "untranslatable", &msg);
                        }
                        Err(e) => {
                            ev.notes
                                .push(format!("fallback `{}` passed over: {e}", up.provider.name));
                            continue;
                        }
                    }
                }
            };
            attempts.push((up, crossing, body));
        }
        let sse = json.get("stream").and_then(Value::as_bool) == Some(true);
        drop(json);

        let idle = live
            .policy
            .idle_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(self.config.idle_timeout);
        let mut last_error = String::new();
        let mut last_status = 502;
        for (i, (up, crossing, body)) in attempts.iter().enumerate() {
            let last = i + 1 == attempts.len();
            ev.attempts.push(up.provider.name.clone());
            ev.provider = Some(up.provider.name.clone());
            ev.translated = crossing.map(|c| c.as_str().into());
            match self.send(up, &parts, body.clone(), *crossing).await {
                Ok((resp, sender)) => {
                    let status = resp.status().as_u16();
                    if !last && (status == 429 || status >= 500) {
                        last_error = format!("provider `{}` answered {status}", up.provider.name);
                        continue; // the answer and its connection are dropped
                    }
                    ev.status = status;
                    let is_sse = resp
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/event-stream"))
                        || sse && status == 200;
                    let (mut rparts, incoming) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    let translator = match crossing {
                        None => None,
                        Some(c) if is_sse && status < 300 => {
                            rparts.headers.remove(http::header::CONTENT_LENGTH);
                            Some(translate::StreamTranslator::new(*c))
                        }
                        Some(c) => {
                            let answer = Answer {
                                crossing: *c,
                                sender,
                                up: up.clone(),
                                idle,
                            };
                            return self
                                .translate_whole(answer, rparts, incoming, ev, start)
                                .await;
                        }
                    };
                    let relay = relay::Relay::new(
                        incoming,
                        (sender, up.clone()),
                        is_sse,
                        idle,
                        self.clone(),
                        ev,
                        start,
                    );
                    let relay = match translator {
                        Some(t) => relay.translating(t),
                        None => relay,
                    };
                    return Response::from_parts(rparts, RouterBody::Relay(Box::new(relay)));
                }
                Err(e) => {
                    last_status = if e.kind() == io::ErrorKind::TimedOut {
                        504
                    } else {
                        502
                    };
                    last_error = format!("provider `{}`: {e}", up.provider.name);
                }
            }
        }
        if attempts.is_empty() {
            last_error = "no provider of the route serves this call".into();
        }
        ev.decision = "upstream-error".into();
        let msg = format!("no provider answered: {last_error}");
        self.refuse(ev, start, api, last_status, "upstream_unreachable", &msg)
    }

    /// Send one attempt: a pooled connection first (retried once on a fresh one if the
    /// provider had closed it), the head of the answer within the first-byte timeout.
    async fn send(
        &self,
        up: &Upstream,
        parts: &http::request::Parts,
        body: Bytes,
        crossing: Option<Crossing>,
    ) -> io::Result<(Response<Incoming>, upstream::Sender)> {
        let req = || upstream_request(up, parts, body.clone(), crossing);
        let deadline = self.config.first_byte_timeout;
        let timed_out = || {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", deadline.as_secs()),
            )
        };
        if let Some(mut s) = up.pooled() {
            let r = req()?;
            match tokio::time::timeout(deadline, s.send_request(r)).await {
                Ok(Ok(resp)) => return Ok((resp, s)),
                // Closed by the provider while idle: a fresh connection below.
                Ok(Err(_)) => {}
                Err(_) => return Err(timed_out()),
            }
        }
        let mut s = up.connect(self.config.connect_timeout).await?;
        let r = req()?;
        match tokio::time::timeout(deadline, s.send_request(r)).await {
            Ok(Ok(resp)) => Ok((resp, s)),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(timed_out()),
        }
    }

    /// A whole (non-streamed) answer of the other API: read to its end, then written
    /// in the caller's API. An error keeps its status and reaches the caller in the
    /// caller's format.
    async fn translate_whole(
        self: &Arc<Self>,
        answer: Answer,
        mut rparts: http::response::Parts,
        incoming: Incoming,
        ev: RouterEvent,
        start: Instant,
    ) -> Response<RouterBody> {
        let mut pending = Unfinished {
            router: self.clone(),
            ev: Some(ev),
            start,
        };
        let Answer {
            crossing,
            sender,
            up,
            idle,
        } = answer;
        let read = tokio::time::timeout(
            idle,
            Limited::new(incoming, self.config.max_body_bytes).collect(),
        )
        .await;
        let Some(mut ev) = pending.ev.take() else {
            return json_response(500, Vec::new());
        };
        ev.ttfb_ms = Some(start.elapsed().as_millis() as u64);
        let caller = crossing.caller();
        let status = rparts.status.as_u16();
        let bytes = match read {
            Ok(Ok(b)) => {
                up.release(sender);
                b.to_bytes()
            }
            Ok(Err(e)) => {
                let msg = format!(
                    "provider `{}` failed during the answer: {e}",
                    up.provider.name
                );
                return self.refuse(ev, start, caller, 502, "upstream_failed", &msg);
            }
            Err(_) => {
                let msg = format!(
                    "no byte from provider `{}` for {} s, answer cut",
                    up.provider.name,
                    idle.as_secs()
                );
                return self.refuse(ev, start, caller, 504, "upstream_timeout", &msg);
            }
        };
        let mut usage = api::Usage::default();
        let (status, body) = if !(200..300).contains(&status) {
            let msg = translate::error_message(&bytes)
                .unwrap_or_else(|| format!("provider `{}` answered {status}", up.provider.name));
            ev.error = Some(msg.clone());
            (
                status,
                api::error_body(caller, status, "upstream_error", &msg),
            )
        } else {
            let mut notes = translate::Notes::default();
            let translated = serde_json::from_slice::<Value>(&bytes)
                .map_err(|_| translate::Untranslatable("an answer that is not JSON".into()))
                .and_then(|v| crossing.answer(&v, &mut notes));
            if notes.dropped_thinking > 0 {
                ev.notes.push(format!(
                    "dropped {} thinking block(s) of the answer: the caller's API has none",
                    notes.dropped_thinking
                ));
            }
            match translated {
                Ok(v) => {
                    usage.take(&v);
                    (status, serde_json::to_vec(&v).unwrap_or_default())
                }
                Err(e) => {
                    let msg = format!("the provider's answer could not be translated: {e}");
                    ev.error = Some(msg.clone());
                    (502, api::error_body(caller, 502, "untranslatable", &msg))
                }
            }
        };
        ev.status = status;
        ev.latency_ms = start.elapsed().as_millis() as u64;
        ev.input_tokens = usage.input;
        ev.output_tokens = usage.output;
        if usage.total() > 0 {
            self.limits.add_tokens(Instant::now(), usage.total());
        }
        self.audit.record(ev);
        rparts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        rparts.headers.remove(http::header::CONTENT_LENGTH);
        rparts.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Response::from_parts(rparts, RouterBody::Full(Some(Bytes::from(body))))
    }

    fn refuse(
        &self,
        mut ev: RouterEvent,
        start: Instant,
        api: Api,
        status: u16,
        code: &str,
        message: &str,
    ) -> Response<RouterBody> {
        ev.status = status;
        ev.latency_ms = start.elapsed().as_millis() as u64;
        ev.error = Some(message.to_string());
        self.audit.record(ev);
        let mut resp = json_response(status, api::error_body(api, status, code, message));
        resp.headers_mut().insert(
            "x-warden-reason",
            HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("refused")),
        );
        resp
    }
}

/// A whole answer to translate: from which provider, over which connection.
struct Answer {
    crossing: Crossing,
    sender: upstream::Sender,
    up: Arc<Upstream>,
    idle: Duration,
}

/// The audit event of a call whose future may be dropped (the caller went away while
/// the router read a whole answer): written then, with that as its error.
struct Unfinished {
    router: Arc<Router>,
    ev: Option<RouterEvent>,
    start: Instant,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(mut ev) = self.ev.take() {
            ev.latency_ms = self.start.elapsed().as_millis() as u64;
            ev.error
                .get_or_insert_with(|| "caller went away before the answer ended".into());
            self.router.audit.record(ev);
        }
    }
}

fn api_name(api: Api) -> &'static str {
    match api {
        Api::Anthropic => "Anthropic",
        Api::Openai => "OpenAI",
    }
}

/// Caller headers that reach the provider; everything else (credentials first of
/// all, but also cookies and proxy headers) stays behind.
const PASS_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "user-agent",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "idempotency-key",
];

/// What reaches a provider of the other API: the caller's API headers and query mean
/// nothing there.
const PASS_HEADERS_TRANSLATED: &[&str] = &["user-agent", "idempotency-key"];

/// The `anthropic-version` a translated request is written for.
const ANTHROPIC_VERSION: &str = "2023-06-01";

fn upstream_request(
    up: &Upstream,
    parts: &http::request::Parts,
    body: Bytes,
    crossing: Option<Crossing>,
) -> io::Result<Request<Full<Bytes>>> {
    let (path, pass) = match crossing {
        None => (
            up.path_for(parts.uri.path(), parts.uri.query()),
            PASS_HEADERS,
        ),
        Some(c) => (
            up.path_for(c.upstream_path(), None),
            PASS_HEADERS_TRANSLATED,
        ),
    };
    let mut b = Request::builder().method(parts.method.clone()).uri(path);
    let headers = b.headers_mut().ok_or_else(|| io::Error::other("request"))?;
    for name in pass {
        for v in parts.headers.get_all(*name) {
            headers.append(*name, v.clone());
        }
    }
    if crossing.is_some() {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if up.provider.api == Api::Anthropic {
            headers.insert(
                "anthropic-version",
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
    }
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(up.authority()).map_err(io::Error::other)?,
    );
    // Identity, so usage can be read from the answer as it passes.
    headers.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if parts.method == http::Method::POST {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    up.authorize(headers);
    b.body(Full::new(body)).map_err(io::Error::other)
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(name);
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response<RouterBody> {
    let mut resp = Response::new(RouterBody::Full(Some(Bytes::from(body))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serve `listener` until the process ends. Must run inside a tokio runtime.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Arc<Router>,
) -> Result<(), RouterError> {
    serve_until(listener, router, std::future::pending()).await
}

/// Serve until `shutdown` resolves, then stop accepting, give open calls
/// [`RouterConfig::shutdown_grace`] to finish and cut the rest.
pub async fn serve_until(
    listener: std::net::TcpListener,
    router: Arc<Router>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RouterError> {
    listener
        .set_nonblocking(true)
        .map_err(RouterError::Listener)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(RouterError::Listener)?;
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    while conns.try_join_next().is_some() {}
                    let _ = stream.set_nodelay(true);
                    let r = router.clone();
                    conns.spawn(serve_connection(r, stream));
                }
                // Out of descriptors or a transient error: back off, keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
        }
    }
    drop(listener);
    let grace = router.config.shutdown_grace;
    let _ = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    conns.shutdown().await;
    Ok(())
}

async fn serve_connection(router: Arc<Router>, stream: tokio::net::TcpStream) {
    let header_timeout = router.config.header_timeout;
    let svc = hyper::service::service_fn(move |req| {
        let r = router.clone();
        async move { Ok::<_, std::convert::Infallible>(r.handle(req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// A running router, from [`spawn`].
#[derive(Debug)]
pub struct RouterHandle {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), RouterError>>,
}

impl RouterHandle {
    /// The address the listener is bound to (inside the sandbox's namespace).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, let open calls finish (up to the grace period).
    pub async fn shutdown(mut self) -> Result<(), RouterError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(RouterError::Listener(io::Error::other(e))),
        }
    }
}

/// Start serving `listener` on the current tokio runtime (panics outside one, like
/// `tokio::spawn`). Dropping the handle without [`RouterHandle::shutdown`] leaves the
/// router serving.
pub fn spawn(
    listener: std::net::TcpListener,
    router: Arc<Router>,
) -> Result<RouterHandle, RouterError> {
    let local_addr = listener.local_addr().map_err(RouterError::Listener)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_until(listener, router, async move {
        if rx.await.is_err() {
            // The handle was dropped: keep serving.
            std::future::pending::<()>().await;
        }
    }));
    Ok(RouterHandle {
        local_addr,
        stop: Some(tx),
        task,
    })
}
