//! The standing orders endpoint: served to a sandbox that runs an agent, on loopback in
//! its network namespace ([`warden_wire::sandbox::ORDERS_ADDR`]), from the host side
//! beside its egress proxy and inference router.
//!
//! `POST /v1/decide` asks "may I do X": either an agent's tool call
//! (`{"tool": "Bash", "input": {"command": "git push"}, "cwd": "/w"}`, judged by the
//! orders' `tool=` rules) or an action under a named order (`{"order": "deploy",
//! "action": "release 1.2"}`). The answer names the order's autonomy (`auto`, `ask`,
//! `never`), whether the caller may go ahead now, and the reason in words (the order's
//! bounds). An `ask` is a pending approval in the same queue as the egress proxy's
//! refusals (`warden approvals`), per sandbox: `warden approve ID` lets the next
//! identical call of that sandbox through, once; `warden deny ID` refuses it from then
//! on. The caller may wait for the decision (`"wait": SECONDS`, at most
//! [`MAX_WAIT`]). `GET /v1/orders` returns the orders in force; a reload (`warden orders
//! grant|revoke`, an edit of the file) applies to the next question.

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use warden_egress::approvals::{ApprovalStatus, ToolAsk, approval_status, ask_tool};
use warden_wire::orders::{Autonomy, OrdersPolicy, ToolCall};

/// The longest a caller may wait for a human.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How often a waiting call looks at the queue.
const POLL: Duration = Duration::from_millis(100);
/// Bodies larger than this are refused (a tool call's input is small).
const MAX_BODY: usize = 1 << 20;

/// One sandbox's endpoint.
#[derive(Debug)]
pub struct Endpoint {
    sandbox: String,
    state_dir: PathBuf,
    policy: ArcSwap<OrdersPolicy>,
}

/// A question, as `POST /v1/decide` takes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// A tool call: Claude Code's tool name and its input.
    pub tool: Option<String>,
    #[serde(default)]
    pub input: serde_json::Value,
    pub cwd: Option<String>,
    pub home: Option<String>,
    /// An action under a named order.
    pub order: Option<String>,
    pub action: Option<String>,
    /// Seconds to wait for a human when the answer is `ask`.
    #[serde(default)]
    pub wait: f64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The autonomy of the order that decided: `auto`, `ask` or `never`.
    pub decision: Autonomy,
    /// Whether the caller may go ahead now.
    pub allowed: bool,
    /// `auto`, `pending`, `approved` (this call is the approved one), `denied` or
    /// `never`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    pub reason: String,
    /// The pending approval's ID (`warden approve ID`), for `ask`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The call as the queue lists it.
    pub call: String,
}

/// Why a question got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn bad(message: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_question",
            message: message.into(),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Endpoint {
    pub fn new(sandbox: &str, state_dir: PathBuf, policy: OrdersPolicy) -> Endpoint {
        Endpoint {
            sandbox: sandbox.to_string(),
            state_dir,
            policy: ArcSwap::from_pointee(policy),
        }
    }

    /// The orders from now on.
    pub fn reload(&self, policy: OrdersPolicy) {
        self.policy.store(Arc::new(policy));
    }

    pub fn policy(&self) -> Arc<OrdersPolicy> {
        self.policy.load_full()
    }

    /// Answers `q`, waiting up to its `wait` for a human when the answer is `ask`.
    pub async fn decide(&self, q: &Question) -> Result<Answer, Refusal> {
        let policy = self.policy.load_full();
        let (decision, order, reason, call) = match (&q.tool, &q.order) {
            (Some(tool), None) => {
                if q.action.is_some() {
                    return Err(Refusal::bad("`action` goes with `order`, not with `tool`"));
                }
                if tool.is_empty() || tool.len() > 256 || tool.chars().any(char::is_control) {
                    return Err(Refusal::bad("`tool` must be a tool's name"));
                }
                let mut call = ToolCall::from_claude(tool, &q.input, q.cwd.as_deref());
                call.home = q.home.clone();
                let d = policy.decide_tool(&call);
                (d.autonomy, d.order, d.reason, call.describe())
            }
            (None, Some(order)) => {
                let action = q.action.as_deref().unwrap_or("").trim();
                if action.is_empty() {
                    return Err(Refusal::bad("an `order` question names its `action`"));
                }
                let (decision, reason) = match policy.orders.iter().find(|o| &o.name == order) {
                    Some(o) => (
                        o.autonomy,
                        format!(
                            "standing order `{}` ({}): {}",
                            o.name,
                            o.autonomy.in_words(),
                            o.bounds
                        ),
                    ),
                    None => (
                        Autonomy::Ask,
                        format!("no standing order `{order}`: a human first"),
                    ),
                };
                let call = format!("order {order}: {}", action.replace(['\n', '\r'], " "));
                (decision, Some(order.clone()), reason, call)
            }
            _ => {
                return Err(Refusal::bad(
                    "ask about a `tool` call (with its `input`) or an `action` under an `order`",
                ));
            }
        };
        if call.len() > 4096 {
            return Err(Refusal::bad("the call is longer than 4096 bytes"));
        }
        let answer = |allowed: bool, status: &'static str, approval: Option<String>| Answer {
            decision,
            allowed,
            status,
            order: order.clone(),
            reason: reason.clone(),
            approval,
            call: call.clone(),
        };
        match decision {
            Autonomy::Auto => return Ok(answer(true, "auto", None)),
            Autonomy::Never => return Ok(answer(false, "never", None)),
            Autonomy::Ask => {}
        }
        let ask = || {
            ask_tool(
                &self.state_dir,
                &self.sandbox,
                &call,
                order.as_deref(),
                &reason,
                now(),
            )
            .map_err(|e| Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "queue_unavailable",
                message: format!("the approvals queue cannot be written: {e}"),
            })
        };
        let (id, first) = ask()?;
        let outcome = match first {
            ToolAsk::Pending if q.wait > 0.0 => {
                let wait = Duration::from_secs_f64(q.wait.min(MAX_WAIT.as_secs_f64()));
                let deadline = tokio::time::Instant::now() + wait;
                loop {
                    if tokio::time::Instant::now() >= deadline {
                        break ToolAsk::Pending;
                    }
                    tokio::time::sleep(POLL).await;
                    match approval_status(&self.state_dir, &id) {
                        Some(ApprovalStatus::Approved) => break ask()?.1,
                        Some(ApprovalStatus::Denied) => break ToolAsk::Denied,
                        _ => {}
                    }
                }
            }
            other => other,
        };
        Ok(match outcome {
            ToolAsk::Proceed => answer(true, "approved", Some(id)),
            ToolAsk::Pending => answer(false, "pending", Some(id)),
            ToolAsk::Denied => answer(false, "denied", Some(id)),
        })
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"ok": true})),
            (Method::GET, "/v1/orders") => json(StatusCode::OK, &*self.policy.load_full()),
            (Method::POST, "/v1/decide") => {
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return refuse(&Refusal {
                            status: StatusCode::PAYLOAD_TOO_LARGE,
                            code: "body_too_large",
                            message: format!("a question is at most {MAX_BODY} bytes"),
                        });
                    }
                };
                let q: Question = match serde_json::from_slice(&body) {
                    Ok(q) => q,
                    Err(e) => return refuse(&Refusal::bad(format!("not a question: {e}"))),
                };
                if !q.wait.is_finite() || q.wait < 0.0 {
                    return refuse(&Refusal::bad("`wait` is a number of seconds, 0 or more"));
                }
                match self.decide(&q).await {
                    Ok(a) => json(StatusCode::OK, &a),
                    Err(r) => refuse(&r),
                }
            }
            (_, "/healthz" | "/v1/orders" | "/v1/decide") => refuse(&Refusal {
                status: StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                message: "GET /v1/orders, POST /v1/decide".into(),
            }),
            _ => refuse(&Refusal {
                status: StatusCode::NOT_FOUND,
                code: "not_found",
                message: "the orders endpoint serves GET /v1/orders and POST /v1/decide".into(),
            }),
        }
    }
}

fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn refuse(r: &Refusal) -> Response<Full<Bytes>> {
    json(
        r.status,
        &serde_json::json!({"error": {"code": r.code, "message": r.message}}),
    )
}

/// Serve `listener` until `shutdown` resolves; open questions (a waiting caller) are
/// cut then. Must run inside a tokio runtime.
pub async fn serve_until(
    listener: std::net::TcpListener,
    endpoint: Arc<Endpoint>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    while conns.try_join_next().is_some() {}
                    let e = endpoint.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let e = e.clone();
                            async move { Ok::<_, std::convert::Infallible>(e.handle(req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(Duration::from_secs(10))
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
        }
    }
    conns.shutdown().await;
    Ok(())
}

/// A running endpoint, from [`spawn`].
#[derive(Debug)]
pub struct EndpointHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl EndpointHandle {
    /// Stop serving; waiting callers are cut.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Start serving `listener` on the current tokio runtime.
pub fn spawn(listener: std::net::TcpListener, endpoint: Arc<Endpoint>) -> EndpointHandle {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_until(listener, endpoint, async move {
        if rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }));
    EndpointHandle {
        stop: Some(tx),
        task,
    }
}

#[cfg(test)]
mod tests;
