//! The routes: each one checks the token's tenant and role, then asks the backend.

use crate::auth::{AuthError, Identity, bearer};
use crate::error::ApiError;
use crate::{App, Remote};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{QueryRejection, RawPathParamsRejection};
use axum::extract::{Query, RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;

/// What a token's subject may do within its tenant. Ordered: each role may do what the
/// ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: sandboxes, approvals, orders, audit, metrics, secret names.
    Viewer,
    /// Also approves and denies.
    Operator,
    /// Also grants and revokes orders and manages secrets.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Why the backend did not do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// No such approval, order or secret within the tenant: answered like a tenant that
    /// does not exist.
    NotFound,
    /// The change would break the file (invalid, or an inline test would fail).
    Refused(String),
    /// The request's content is not acceptable (a secret value too large, ...).
    Invalid(String),
    /// What it needs is missing on this host (the key-encryption key).
    Unavailable(String),
    Internal(String),
}

/// An audit query of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub sandbox: Option<String>,
    pub kind: Option<String>,
    /// Unix seconds.
    pub since: Option<u64>,
    pub limit: usize,
}

/// One sample of `/metrics`: `name{tenant="...",labels...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// Everything the API does, over warden's state and file. Calls block (files, control
/// sockets); the server makes them on blocking threads. Every call but `role` and
/// `refused_login` is scoped to one tenant, already checked against the token.
pub trait Backend: Send + Sync + 'static {
    /// The subject's role in the tenant, from the file's `tenant` nodes.
    fn role(&self, tenant: &str, subject: &str) -> Result<Option<Role>, BackendError>;
    /// What `warden ps` shows, for the tenant's applied sandboxes.
    fn sandboxes(&self, tenant: &str) -> Result<Value, BackendError>;
    fn approvals(&self, tenant: &str) -> Result<Value, BackendError>;
    fn approve(&self, tenant: &str, id: &str, actor: &str) -> Result<Value, BackendError>;
    fn deny(&self, tenant: &str, id: &str, actor: &str) -> Result<Value, BackendError>;
    fn orders(&self, tenant: &str) -> Result<Value, BackendError>;
    fn set_order(
        &self,
        tenant: &str,
        name: &str,
        grant: bool,
        actor: &str,
    ) -> Result<Value, BackendError>;
    fn audit(&self, tenant: &str, q: &AuditQuery) -> Result<Value, BackendError>;
    fn secrets(&self, tenant: &str) -> Result<Value, BackendError>;
    fn set_secret(
        &self,
        tenant: &str,
        name: &str,
        value: &[u8],
        actor: &str,
    ) -> Result<Value, BackendError>;
    fn remove_secret(&self, tenant: &str, name: &str, actor: &str) -> Result<Value, BackendError>;
    fn metrics(&self, tenant: &str) -> Result<Vec<Sample>, BackendError>;
    /// Records a refused login in the audit store; returns once it is durable.
    fn refused_login(&self, code: &str, method: &str, path: &str, remote: &str);
}

pub(crate) fn router(app: Arc<App>) -> Router {
    let tenant = Router::new()
        .route("/sandboxes", get(sandboxes))
        .route("/approvals", get(approvals))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
        .route("/orders", get(orders))
        .route("/orders/{name}/grant", post(grant))
        .route("/orders/{name}/revoke", post(revoke))
        .route("/audit", get(audit))
        .route("/secrets", get(secrets))
        .route("/secrets/{name}", put(set_secret).delete(remove_secret));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .nest("/v1/tenants/{tenant}", tenant)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .layer(middleware::from_fn_with_state(app.clone(), body_limit))
        .with_state(app)
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method",
    )
}

/// A body announced larger than the limit is refused before anything reads it.
async fn body_limit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.limits.max_body as u64) {
        return too_large(app.limits.max_body);
    }
    next.run(req).await
}

fn too_large(max: usize) -> Response {
    let mut r = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request bodies are at most {max} bytes"),
    )
    .into_response();
    // The rest of the body is not read: the connection ends with this answer.
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Every path but `/health` needs a valid token; a refusal is recorded before it is
/// answered. Answers are counted per tenant for `/metrics`.
async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let verified = bearer(header).and_then(|t| app.verifier.verify(t));
    let identity = match verified {
        Ok(id) => id,
        Err(e) => {
            let remote = req
                .extensions()
                .get::<Remote>()
                .map(|r| r.0.to_string())
                .unwrap_or_default();
            // The path as sent, cut short: it is the client's text.
            let path: String = req.uri().path().chars().take(256).collect();
            return refuse(&app, req.method().to_string(), path, remote, e).await;
        }
    };
    let tenant = identity.tenant.clone();
    req.extensions_mut().insert(identity);
    let response = next.run(req).await;
    app.count(&tenant, response.status().as_u16());
    response
}

async fn refuse(
    app: &Arc<App>,
    method: String,
    path: String,
    remote: String,
    e: AuthError,
) -> Response {
    let code = e.code();
    let backend = app.backend.clone();
    let _ = tokio::task::spawn_blocking(move || {
        backend.refused_login(code, &method, &path, &remote);
    })
    .await;
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string()).into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The path's named segments, percent-decoded; a segment that is not UTF-8 is a 400.
struct Segs(Vec<(String, String)>);

impl Segs {
    fn of(p: Result<RawPathParams, RawPathParamsRejection>) -> Result<Segs, ApiError> {
        let p = p.map_err(|_| ApiError::bad_name("segment"))?;
        Ok(Segs(
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Names in paths: what the language and the stores accept, nothing else (no `.`, `/`,
/// `%`, control or non-ASCII bytes).
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn approval_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The tenant of the path, once the token may act in it with `need`: another tenant
/// than the token's is not found, whatever exists.
async fn scope(app: &Arc<App>, id: &Identity, segs: &Segs, need: Role) -> Result<String, ApiError> {
    let tenant = segs.get("tenant");
    if !plain_name(tenant) {
        return Err(ApiError::bad_name("tenant name"));
    }
    if tenant != id.tenant {
        return Err(ApiError::not_found());
    }
    let role = {
        let (backend, t, s) = (app.backend.clone(), tenant.to_string(), id.subject.clone());
        blocking(move || backend.role(&t, &s)).await?
    };
    match role {
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no_role",
            "the token's subject has no role in this tenant",
        )),
        Some(r) if r < need => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {} role", role_name(need)),
        )),
        Some(_) => Ok(tenant.to_string()),
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(backend_error),
        Err(_) => Err(ApiError::internal("internal error")),
    }
}

fn backend_error(e: BackendError) -> ApiError {
    match e {
        BackendError::NotFound => ApiError::not_found(),
        BackendError::Refused(m) => ApiError::new(StatusCode::CONFLICT, "refused", m),
        BackendError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
        BackendError::Unavailable(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
        }
        BackendError::Internal(m) => ApiError::internal(m),
    }
}

type Ident = axum::Extension<Identity>;
type Path = Result<RawPathParams, RawPathParamsRejection>;
type Answer = Result<axum::Json<Value>, ApiError>;

async fn sandboxes(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    let t = scope(&app, &id, &Segs::of(p)?, Role::Viewer).await?;
    let b = app.backend.clone();
    Ok(axum::Json(blocking(move || b.sandboxes(&t)).await?))
}

async fn approvals(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    let t = scope(&app, &id, &Segs::of(p)?, Role::Viewer).await?;
    let b = app.backend.clone();
    Ok(axum::Json(blocking(move || b.approvals(&t)).await?))
}

async fn decide(app: Arc<App>, id: Ident, p: Path, approve: bool) -> Answer {
    let segs = Segs::of(p)?;
    let t = scope(&app, &id, &segs, Role::Operator).await?;
    let approval = segs.get("id").to_string();
    if !approval_id(&approval) {
        return Err(ApiError::bad_name("approval id"));
    }
    let (b, actor) = (app.backend.clone(), id.subject.clone());
    let _writing = app.writes.lock().await;
    Ok(axum::Json(
        blocking(move || {
            if approve {
                b.approve(&t, &approval, &actor)
            } else {
                b.deny(&t, &approval, &actor)
            }
        })
        .await?,
    ))
}

async fn approve(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    decide(app, id, p, true).await
}

async fn deny(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    decide(app, id, p, false).await
}

async fn orders(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    let t = scope(&app, &id, &Segs::of(p)?, Role::Viewer).await?;
    let b = app.backend.clone();
    Ok(axum::Json(blocking(move || b.orders(&t)).await?))
}

async fn set_order(app: Arc<App>, id: Ident, p: Path, grant: bool) -> Answer {
    let segs = Segs::of(p)?;
    let t = scope(&app, &id, &segs, Role::Admin).await?;
    let name = segs.get("name").to_string();
    if !plain_name(&name) {
        return Err(ApiError::bad_name("order name"));
    }
    let (b, actor) = (app.backend.clone(), id.subject.clone());
    let _writing = app.writes.lock().await;
    Ok(axum::Json(
        blocking(move || b.set_order(&t, &name, grant, &actor)).await?,
    ))
}

async fn grant(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    set_order(app, id, p, true).await
}

async fn revoke(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    set_order(app, id, p, false).await
}

const AUDIT_LIMIT: usize = 1000;
const AUDIT_LIMIT_MAX: usize = 10_000;

async fn audit(
    State(app): State<Arc<App>>,
    id: Ident,
    p: Path,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Answer {
    let t = scope(&app, &id, &Segs::of(p)?, Role::Viewer).await?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m);
    let Query(pairs) = q.map_err(|_| bad("the query string is not `key=value&...`".into()))?;
    let mut query = AuditQuery {
        limit: AUDIT_LIMIT,
        ..AuditQuery::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "sandbox" if plain_name(&v) => query.sandbox = Some(v),
            "sandbox" => return Err(ApiError::bad_name("sandbox name")),
            "kind" if v.len() <= 32 && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') => {
                query.kind = Some(v)
            }
            "since" => {
                query.since = Some(
                    v.parse()
                        .map_err(|_| bad(format!("`since` is unix seconds, not `{v}`")))?,
                )
            }
            "limit" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(format!("`limit` is a number, not `{v}`")))?;
                query.limit = n.clamp(1, AUDIT_LIMIT_MAX);
            }
            _ => return Err(bad(format!("unknown query parameter `{k}`"))),
        }
    }
    let b = app.backend.clone();
    Ok(axum::Json(blocking(move || b.audit(&t, &query)).await?))
}

async fn secrets(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    let t = scope(&app, &id, &Segs::of(p)?, Role::Viewer).await?;
    let b = app.backend.clone();
    Ok(axum::Json(blocking(move || b.secrets(&t)).await?))
}

async fn set_secret(State(app): State<Arc<App>>, id: Ident, p: Path, body: Body) -> Response {
    let answer = async {
        let segs = Segs::of(p)?;
        let t = scope(&app, &id, &segs, Role::Admin).await?;
        let name = segs.get("name").to_string();
        if !secret_name(&name) {
            return Err(ApiError::bad_name("secret name"));
        }
        let max = app.limits.max_body;
        let read = tokio::time::timeout(
            app.limits.body_timeout,
            http_body_util::Limited::new(body, max).collect(),
        )
        .await;
        let value = match read {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the body did not arrive in time",
                ));
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok(too_large(max));
            }
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the body could not be read",
                ));
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
        let (b, actor) = (app.backend.clone(), id.subject.clone());
        let _writing = app.writes.lock().await;
        let v = blocking(move || b.set_secret(&t, &name, &value, &actor)).await?;
        Ok(axum::Json(v).into_response())
    };
    match answer.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn remove_secret(State(app): State<Arc<App>>, id: Ident, p: Path) -> Answer {
    let segs = Segs::of(p)?;
    let t = scope(&app, &id, &segs, Role::Admin).await?;
    let name = segs.get("name").to_string();
    if !secret_name(&name) {
        return Err(ApiError::bad_name("secret name"));
    }
    let (b, actor) = (app.backend.clone(), id.subject.clone());
    let _writing = app.writes.lock().await;
    Ok(axum::Json(
        blocking(move || b.remove_secret(&t, &name, &actor)).await?,
    ))
}

/// Prometheus text: the token's tenant's samples only.
async fn metrics(State(app): State<Arc<App>>, id: Ident) -> Response {
    let answer = async {
        let t = id.tenant.clone();
        let (backend, s) = (app.backend.clone(), id.subject.clone());
        let role = blocking({
            let t = t.clone();
            move || backend.role(&t, &s)
        })
        .await?;
        if role.is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "no_role",
                "the token's subject has no role in this tenant",
            ));
        }
        let b = app.backend.clone();
        let mut samples = {
            let t = t.clone();
            blocking(move || b.metrics(&t)).await?
        };
        samples.extend(app.samples(&t));
        Ok(render(&samples))
    };
    match answer.await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut described: Vec<&str> = Vec::new();
    for s in samples {
        if !described.contains(&s.name) {
            described.push(s.name);
            let kind = if s.name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {kind}\n",
                s.name, s.help, s.name
            ));
        }
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{k}=\"{v}\"")
            })
            .collect();
        out.push_str(&format!("{}{{{}}} {}\n", s.name, labels.join(","), s.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_refuse_everything_odd() {
        for ok in ["acme", "a-1_b", "0x"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "A",
            "a.b",
            "a%2f",
            "-a",
            "a\0",
            "é",
            &"a".repeat(64),
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
        assert!(approval_id("0123456789ab"));
        for bad in [
            "0123456789a",
            "0123456789abc",
            "0123456789aB",
            "../../etc/x",
        ] {
            assert!(!approval_id(bad), "{bad}");
        }
        assert!(secret_name("GITHUB_TOKEN"));
        for bad in ["", "-x", "a.b", "../x", "a b"] {
            assert!(!secret_name(bad), "{bad}");
        }
    }

    #[test]
    fn metrics_render_as_prometheus_text() {
        let s = [
            Sample {
                name: "warden_sandboxes",
                help: "Applied sandboxes by state.",
                labels: vec![("tenant", "acme".into()), ("state", "running".into())],
                value: 2.0,
            },
            Sample {
                name: "warden_sandboxes",
                help: "Applied sandboxes by state.",
                labels: vec![("tenant", "a\"b".into()), ("state", "exited".into())],
                value: 0.0,
            },
        ];
        assert_eq!(
            render(&s),
            "# HELP warden_sandboxes Applied sandboxes by state.\n# TYPE warden_sandboxes gauge\nwarden_sandboxes{tenant=\"acme\",state=\"running\"} 2\nwarden_sandboxes{tenant=\"a\\\"b\",state=\"exited\"} 0\n"
        );
    }
}
