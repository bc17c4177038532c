//! One client connection: read the head, decide, resolve once, dial the checked address,
//! then tunnel (CONNECT) or forward one request (plain HTTP).

use crate::ProxyState;
use crate::approvals::Sighting;
use crate::audit::AuditEvent;
use crate::chunked::ChunkedFramer;
use crate::head::{self, Framing, Plan, Refusal};
use crate::tunnel::{self, Activity, Side, Tracked};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use warden_wire::egress::{DenyReason, Host, Request, Verdict};

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Fills the audit event as the connection goes.
struct Outcome {
    ev: AuditEvent,
    start: Instant,
}

impl Outcome {
    fn new(sandbox: &str) -> Outcome {
        Outcome {
            ev: AuditEvent {
                ts_ms: unix_ms(),
                sandbox: sandbox.to_string(),
                kind: "invalid".into(),
                host: None,
                port: None,
                method: None,
                path: None,
                decision: "deny".into(),
                rule: None,
                reason: None,
                status: 0,
                addr: None,
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: 0,
                approval: None,
            },
            start: Instant::now(),
        }
    }
}

pub(crate) async fn handle(state: Arc<ProxyState>, mut client: TcpStream) {
    // Snapshot: a reload affects the next connection, never one in flight.
    let policy = state.policy();
    let mut out = Outcome::new(&policy.sandbox);
    let _ = tunnel::setup_socket(&client);
    let mut buf = Vec::with_capacity(4096);
    let head = match tokio::time::timeout(
        state.config.header_timeout,
        read_head(&mut client, &mut buf, state.config.max_head_bytes),
    )
    .await
    {
        Ok(Ok(Some(h))) => h,
        Ok(Ok(None)) => return, // closed before a full head: nothing to decide
        Ok(Err(r)) => return refuse(&state, client, &mut out, r).await,
        Err(_) => {
            let r = Refusal::new(
                408,
                format!(
                    "request head not complete within {} ms",
                    state.config.header_timeout.as_millis()
                ),
            );
            return refuse(&state, client, &mut out, r).await;
        }
    };
    out.ev.method = Some(head.method.clone());
    // What the client sent past this head: the body, and maybe requests pipelined after
    // it, which a refusal leaves unserved (each gets an audit line of its own).
    let after = |buf: &[u8]| After {
        bytes: buf.get(head.len..).unwrap_or_default().to_vec(),
        framing: head::body_framing(&head).ok(),
    };
    let plan = match head::plan_request(&head) {
        Ok(p) => p,
        Err(r) => {
            out.ev.kind = if head.method == "CONNECT" {
                "connect"
            } else {
                "http"
            }
            .into();
            (out.ev.host, out.ev.port) = head::destination_named(&head);
            let rest = after(&buf);
            return refuse_then(&state, client, &mut out, r, rest).await;
        }
    };
    let (host, port) = (plan.host().clone(), plan.port());
    out.ev.host = Some(host.to_string());
    out.ev.port = Some(port);
    let http = match &plan {
        Plan::Connect { .. } => {
            out.ev.kind = "connect".into();
            out.ev.method = None;
            None
        }
        Plan::Http { method, path, .. } => {
            out.ev.kind = "http".into();
            out.ev.path = Some(path.clone());
            Some((method.as_str(), path.as_str()))
        }
    };
    let sample = match &plan {
        Plan::Connect { .. } => format!("CONNECT {host}:{port}"),
        Plan::Http { method, path, .. } => format!("{method} http://{host}:{port}{path}"),
    };
    let verdict = policy.decide(&Request {
        host: &host,
        port,
        http,
    });
    let rule = match verdict {
        Verdict::Allow { rule } => rule,
        Verdict::Ask { rule, order } => {
            out.ev.decision = "ask".into();
            out.ev.rule = Some(rule);
            let reason = format!("standing order `{order}` needs a human to approve this");
            let id = state.approvals.record(Sighting {
                sandbox: &policy.sandbox,
                host: host.to_string(),
                port,
                method: http.map(|h| h.0),
                reason: reason.clone(),
                order: Some(order),
                sample,
                now: out.ev.ts_ms / 1000,
            });
            out.ev.approval = id;
            let r = Refusal::new(403, reason);
            return refuse_then(&state, client, &mut out, r, after(&buf)).await;
        }
        Verdict::Deny { reason } => {
            out.ev.rule = rule_of(&reason);
            if approvable(&reason) {
                let id = state.approvals.record(Sighting {
                    sandbox: &policy.sandbox,
                    host: host.to_string(),
                    port,
                    method: http.map(|h| h.0),
                    reason: reason.describe(),
                    order: None,
                    sample,
                    now: out.ev.ts_ms / 1000,
                });
                out.ev.approval = id;
            }
            let r = Refusal::new(403, reason.describe());
            return refuse_then(&state, client, &mut out, r, after(&buf)).await;
        }
    };
    out.ev.rule = Some(rule);

    // Resolve once; every address must pass, and only those addresses are dialled.
    let addrs: Vec<IpAddr> = match &host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => {
            let looked =
                tokio::time::timeout(state.config.connect_timeout, state.resolver.resolve(name))
                    .await;
            match looked {
                Ok(Ok(a)) if !a.is_empty() => a,
                Ok(Ok(_)) | Ok(Err(_)) => {
                    let r = Refusal::new(502, format!("could not resolve `{name}`"));
                    return refuse_then(&state, client, &mut out, r, after(&buf)).await;
                }
                Err(_) => {
                    let r = Refusal::new(504, format!("resolving `{name}` timed out"));
                    return refuse_then(&state, client, &mut out, r, after(&buf)).await;
                }
            }
        }
    };
    for ip in &addrs {
        if let Err(reason) = policy.decide_resolved(*ip, port) {
            out.ev.addr = Some(SocketAddr::new(*ip, port).to_string());
            let r = Refusal::new(403, reason.describe());
            return refuse_then(&state, client, &mut out, r, after(&buf)).await;
        }
    }
    let mut upstream = None;
    let mut last_err = String::new();
    for ip in &addrs {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout(state.config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                out.ev.addr = Some(addr.to_string());
                upstream = Some(s);
                break;
            }
            Ok(Err(e)) => last_err = e.kind().to_string(),
            Err(_) => last_err = "timed out".into(),
        }
    }
    let Some(mut upstream) = upstream else {
        let r = Refusal::new(
            502,
            format!("could not connect to {host}:{port}: {last_err}"),
        );
        return refuse_then(&state, client, &mut out, r, after(&buf)).await;
    };
    let _ = tunnel::setup_socket(&upstream);
    out.ev.decision = "allow".into();

    let idle = match policy.idle_timeout_secs {
        0 => None,
        s => Some(Duration::from_secs(s)),
    };
    let act = Activity::new();
    let leftover = buf.split_off(head.len);
    let mut linger = None;
    match plan {
        Plan::Connect { .. } => {
            out.ev.status = 200;
            let ok = client
                .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                .await
                .is_ok()
                && (leftover.is_empty() || upstream.write_all(&leftover).await.is_ok());
            act.up.fetch_add(leftover.len() as u64, Ordering::Relaxed);
            if !ok {
                // The client or upstream went away before the tunnel started.
            } else if let Err(e) = tunnel::tunnel(&mut client, &mut upstream, &act, idle).await {
                out.ev.reason = Some(format!("tunnel ended: {}", e.kind()));
            }
        }
        Plan::Http {
            upstream_head,
            body,
            upgrade,
            method,
            ..
        } => {
            let job = Forward {
                head: &upstream_head,
                body,
                upgrade: upgrade.is_some(),
                head_request: method == "HEAD",
                max_head: state.config.max_head_bytes,
                act: &act,
            };
            let r = tokio::select! {
                r = forward_http(job, client, leftover, upstream, &mut linger) => r,
                _ = act.idle(idle) => Err(Refusal::new(504, "idle timeout")),
            };
            match r {
                Ok(status) => out.ev.status = status,
                Err(r) => {
                    out.ev.status = r.status;
                    out.ev.reason = Some(r.reason);
                }
            }
        }
    }
    out.ev.bytes_up = act.up.load(Ordering::Relaxed);
    out.ev.bytes_down = act.down.load(Ordering::Relaxed);
    out.ev.duration_ms = out.start.elapsed().as_millis() as u64;
    state.recorder.send(out.ev);
    if let Some((rest, mut bytes)) = linger {
        // Requests the client sent after this one are not served (one request per
        // connection); each gets an audit line.
        let first = head::pipelined_after(&bytes, None);
        audit_unserved(&state, &policy.sandbox, &first);
        bytes.truncate(MAX_AFTER);
        drain(rest, Some(&mut bytes)).await;
        let all = head::pipelined_after(&bytes, None);
        audit_unserved(
            &state,
            &policy.sandbox,
            all.get(first.len()..).unwrap_or_default(),
        );
    }
}

/// Refusals a human could turn into a rule; explicit denials and forbidden addresses
/// are final and not surfaced.
fn approvable(r: &DenyReason) -> bool {
    matches!(
        r,
        DenyReason::NoRule
            | DenyReason::Port { .. }
            | DenyReason::Method { .. }
            | DenyReason::Path { .. }
            | DenyReason::HttpOnly { .. }
    )
}

fn rule_of(r: &DenyReason) -> Option<usize> {
    match r {
        DenyReason::NoRule | DenyReason::Forbidden { .. } => None,
        DenyReason::DeniedByRule { rule }
        | DenyReason::Port { rule }
        | DenyReason::Method { rule }
        | DenyReason::Path { rule }
        | DenyReason::HttpOnly { rule }
        | DenyReason::OrderForbids { rule, .. } => Some(*rule),
    }
}

/// Read until a complete head, the size cap (431), or the peer closing (`None`).
async fn read_head(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Option<head::RequestHead>, Refusal> {
    let mut chunk = [0u8; 8192];
    loop {
        let n = match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => n,
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        // Parse only once a blank line may have arrived: keeps a trickled head linear.
        let tail = &buf[from..];
        let ended =
            tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n");
        if ended && let Some(h) = head::parse_request_head(buf)? {
            if h.len > max {
                return Err(too_large(max));
            }
            return Ok(Some(h));
        }
        if buf.len() > max {
            return Err(too_large(max));
        }
    }
}

fn too_large(max: usize) -> Refusal {
    Refusal::new(431, format!("request head larger than {max} bytes"))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The bytes of a refusal: status, `X-Warden-Reason`, a one-line body naming the outcome.
pub fn refusal_response(r: &Refusal, approval: Option<&str>) -> Vec<u8> {
    let outcome = match r.status {
        403 => "denied",
        400 | 431 | 408 => "refused",
        _ => "failed",
    };
    let body = format!("warden egress {outcome}: {}\n", r.reason);
    let mut s = format!(
        "HTTP/1.1 {} {}\r\nx-warden-reason: {}\r\n",
        r.status,
        reason_phrase(r.status),
        r.reason
    );
    if let Some(id) = approval {
        s.push_str(&format!("x-warden-approval: {id}\r\n"));
    }
    s.push_str(&format!(
        "content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.into_bytes()
}

async fn refuse(state: &ProxyState, client: TcpStream, out: &mut Outcome, r: Refusal) {
    refuse_then(state, client, out, r, After::default()).await;
}

/// The bytes a client sent after a refused head, and how that request's body is framed
/// (`None`: unknown).
#[derive(Default)]
struct After {
    bytes: Vec<u8>,
    framing: Option<Framing>,
}

/// Bytes past a refused head kept to look for pipelined requests.
const MAX_AFTER: usize = 64 * 1024;

/// Answer a refusal, half-close, and drain what the client still sends for a moment (so
/// that closing does not reset the connection before it has read the answer). Requests
/// pipelined after the refused one are not served (the answer said `connection: close`);
/// each is audited as such, with the host and port it named (as after a served one).
async fn refuse_then(
    state: &ProxyState,
    mut client: TcpStream,
    out: &mut Outcome,
    r: Refusal,
    mut after: After,
) {
    let bytes = refusal_response(&r, out.ev.approval.as_deref());
    let _ = client.write_all(&bytes).await;
    out.ev.status = r.status;
    out.ev.reason = Some(r.reason);
    out.ev.duration_ms = out.start.elapsed().as_millis() as u64;
    state.recorder.send(out.ev.clone());
    let _ = client.shutdown().await;
    // What was read with the head is audited at once; what arrives while the connection
    // drains, after.
    let first = head::pipelined_after(&after.bytes, after.framing);
    let seen = first.len();
    audit_unserved(state, &out.ev.sandbox, &first);
    after.bytes.truncate(MAX_AFTER);
    drain(client, Some(&mut after.bytes)).await;
    if seen < head::MAX_PIPELINED {
        let all = head::pipelined_after(&after.bytes, after.framing);
        audit_unserved(state, &out.ev.sandbox, all.get(seen..).unwrap_or_default());
    }
}

/// The audit reason of a request pipelined after another: not served.
const UNSERVED: &str = "pipelined: not served, the proxy answers one request per connection";

fn audit_unserved(state: &ProxyState, sandbox: &str, heads: &[head::RequestHead]) {
    for h in heads {
        let (host, port) = head::destination_named(h);
        let connect = h.method == "CONNECT";
        state.recorder.send(AuditEvent {
            ts_ms: unix_ms(),
            sandbox: sandbox.to_string(),
            kind: if connect { "connect" } else { "http" }.into(),
            host,
            port,
            method: (!connect).then(|| h.method.clone()),
            decision: "deny".into(),
            reason: Some(UNSERVED.into()),
            ..AuditEvent::default()
        });
    }
}

/// Read and drop what the client still sends, for a moment: a socket closed with unread
/// bytes is reset, and a reset discards whatever of our answer is still queued. The
/// first bytes are kept in `keep` (up to [`MAX_AFTER`]) when asked.
async fn drain(mut client: impl AsyncRead + Unpin, mut keep: Option<&mut Vec<u8>>) {
    let mut sink = [0u8; 16 * 1024];
    let mut drained = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while drained < 4 * 1024 * 1024 {
        match tokio::time::timeout_at(deadline, client.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {
                drained += n;
                if let Some(k) = keep.as_deref_mut() {
                    let room = MAX_AFTER.saturating_sub(k.len()).min(n);
                    k.extend_from_slice(&sink[..room]);
                }
            }
            _ => break,
        }
    }
}

struct Forward<'a> {
    head: &'a [u8],
    body: Framing,
    upgrade: bool,
    head_request: bool,
    max_head: usize,
    act: &'a Activity,
}

enum ResponseEnd {
    Done(u16),
    /// 101 Switching Protocols: both halves go on as a tunnel.
    Upgraded(OwnedReadHalf, OwnedWriteHalf),
}

/// Send one request upstream and relay its response. The request body is delimited by
/// its framing; nothing the client sends after it is forwarded, and the connection
/// closes after the response (`Connection: close` both ways), so every request the
/// origin sees was checked. After a complete exchange the client's read half is left in
/// `linger` with the bytes read past the request, to be drained before it is closed
/// (the answer is already shut down).
async fn forward_http(
    job: Forward<'_>,
    client: TcpStream,
    leftover: Vec<u8>,
    mut upstream: TcpStream,
    linger: &mut Option<(OwnedReadHalf, Vec<u8>)>,
) -> Result<u16, Refusal> {
    let act = job.act;
    upstream
        .write_all(job.head)
        .await
        .map_err(|e| Refusal::new(502, format!("upstream write failed: {}", e.kind())))?;
    act.up.fetch_add(job.head.len() as u64, Ordering::Relaxed);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();

    let req = send_body(job.body, leftover, cr, uw, act);
    let resp = relay_response(ur, cw, job.head_request, job.upgrade, job.max_head, act);
    tokio::pin!(req);
    tokio::pin!(resp);
    let mut sent: Option<(OwnedReadHalf, OwnedWriteHalf, Vec<u8>)> = None;
    let end = loop {
        tokio::select! {
            // A failed request body ends the exchange; the client sees the close.
            r = &mut req, if sent.is_none() => sent = Some(r?),
            r = &mut resp => break r?,
        }
    };
    match end {
        ResponseEnd::Done(status) => {
            *linger = sent.map(|(cr, _, rest)| (cr, rest));
            Ok(status)
        }
        ResponseEnd::Upgraded(ur, cw) => {
            // The request side finished first or finishes now (an upgrade has no body).
            let (cr, mut uw, rest) = match sent {
                Some(v) => v,
                None => req.await?,
            };
            if !rest.is_empty() {
                let _ = uw.write_all(&rest).await;
                act.up.fetch_add(rest.len() as u64, Ordering::Relaxed);
            }
            // Whole sockets again, so the tunnel is the same as CONNECT's (the idle
            // timeout around this exchange still applies).
            if let (Ok(mut client), Ok(mut upstream)) = (cr.reunite(cw), ur.reunite(uw)) {
                let _ = tunnel::tunnel(&mut client, &mut upstream, act, None).await;
            }
            Ok(101)
        }
    }
}

/// Forward the request body. Returns the halves and any client bytes past the body.
async fn send_body(
    framing: Framing,
    mut leftover: Vec<u8>,
    cr: OwnedReadHalf,
    mut uw: OwnedWriteHalf,
    act: &Activity,
) -> Result<(OwnedReadHalf, OwnedWriteHalf, Vec<u8>), Refusal> {
    let werr = |e: io::Error| Refusal::new(502, format!("upstream write failed: {}", e.kind()));
    let mut cr = Tracked::new(cr, act, Side::Up);
    match framing {
        Framing::Empty | Framing::UntilClose => Ok((cr.inner, uw, leftover)),
        Framing::Length(n) => {
            let now = (n.min(leftover.len() as u64)) as usize;
            uw.write_all(&leftover[..now]).await.map_err(werr)?;
            act.up.fetch_add(now as u64, Ordering::Relaxed);
            let rest = leftover.split_off(now);
            let want = n - now as u64;
            if want > 0 {
                let copied = tunnel::copy_body(&mut cr, &mut uw, Some(want))
                    .await
                    .map_err(werr)?;
                if copied < want {
                    return Err(Refusal::new(
                        400,
                        "client closed before the end of the body",
                    ));
                }
            }
            Ok((cr.inner, uw, rest))
        }
        Framing::Chunked => {
            let mut f = ChunkedFramer::new();
            let n = f.feed(&leftover)?;
            uw.write_all(&leftover[..n]).await.map_err(werr)?;
            act.up.fetch_add(n as u64, Ordering::Relaxed);
            let rest = leftover.split_off(n);
            let mut chunk = vec![0u8; 64 * 1024];
            while !f.is_done() {
                let got = cr
                    .read(&mut chunk)
                    .await
                    .map_err(|e| Refusal::new(400, format!("client read failed: {}", e.kind())))?;
                if got == 0 {
                    return Err(Refusal::new(
                        400,
                        "client closed before the end of the body",
                    ));
                }
                let n = f.feed(&chunk[..got])?;
                uw.write_all(&chunk[..n]).await.map_err(werr)?;
            }
            Ok((cr.inner, uw, rest))
        }
    }
}

async fn relay_response(
    ur: OwnedReadHalf,
    mut cw: OwnedWriteHalf,
    head_request: bool,
    upgrade: bool,
    max_head: usize,
    act: &Activity,
) -> Result<ResponseEnd, Refusal> {
    let mut ur = Tracked::new(ur, act, Side::Down);
    let mut wrote = false;
    match relay_inner(
        &mut ur,
        &mut cw,
        head_request,
        upgrade,
        max_head,
        &mut wrote,
    )
    .await
    {
        Ok(Some(status)) => {
            let _ = cw.shutdown().await;
            Ok(ResponseEnd::Done(status))
        }
        Ok(None) => Ok(ResponseEnd::Upgraded(ur.inner, cw)),
        Err(e) => {
            if !wrote {
                let _ = cw.write_all(&refusal_response(&e, None)).await;
            }
            Err(e)
        }
    }
}

/// `Ok(None)` after a 101 the client asked for; `Ok(Some(status))` when the response
/// was relayed completely.
async fn relay_inner(
    ur: &mut Tracked<'_, OwnedReadHalf>,
    cw: &mut OwnedWriteHalf,
    head_request: bool,
    upgrade: bool,
    max_head: usize,
    wrote: &mut bool,
) -> Result<Option<u16>, Refusal> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    let cerr = |e: io::Error| Refusal::new(502, format!("client write failed: {}", e.kind()));
    loop {
        let head = loop {
            if let Some(h) = head::parse_response_head(&buf, head_request)? {
                break h;
            }
            if buf.len() > max_head {
                return Err(Refusal::new(502, "upstream response head too large"));
            }
            let n = ur
                .read(&mut chunk)
                .await
                .map_err(|e| Refusal::new(502, format!("upstream read failed: {}", e.kind())))?;
            if n == 0 {
                return Err(Refusal::new(502, "upstream closed without a response"));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if head.status == 101 && !upgrade {
            return Err(Refusal::new(502, "upstream switched protocols unasked"));
        }
        buf.drain(..head.len);
        if head.status == 101 {
            *wrote = true;
            let mut out = head.rewritten;
            out.extend_from_slice(&buf);
            cw.write_all(&out).await.map_err(cerr)?;
            return Ok(None);
        }
        if (100..200).contains(&head.status) {
            // Interim response (100 Continue, 103): the final one follows.
            *wrote = true;
            cw.write_all(&head.rewritten).await.map_err(cerr)?;
            continue;
        }
        // The head and the body bytes already read go out in one write (one packet for
        // small answers: latency).
        let mut framer = ChunkedFramer::new();
        let now = match head.body {
            Framing::Empty => 0,
            Framing::Length(n) => n.min(buf.len() as u64) as usize,
            Framing::Chunked => framer.feed(&buf).map_err(|r| Refusal::new(502, r.reason))?,
            Framing::UntilClose => buf.len(),
        };
        *wrote = true;
        let mut out = head.rewritten;
        out.extend_from_slice(&buf[..now]);
        cw.write_all(&out).await.map_err(cerr)?;
        match head.body {
            Framing::Empty => {}
            Framing::Length(n) => {
                let want = n - now as u64;
                if want > 0 {
                    let copied = tunnel::copy_body(ur, cw, Some(want))
                        .await
                        .map_err(relay_err)?;
                    if copied < want {
                        return Err(Refusal::new(
                            502,
                            "upstream closed before the end of the body",
                        ));
                    }
                }
            }
            Framing::Chunked => {
                while !framer.is_done() {
                    let got = ur.read(&mut chunk).await.map_err(|e| {
                        Refusal::new(502, format!("upstream read failed: {}", e.kind()))
                    })?;
                    if got == 0 {
                        return Err(Refusal::new(502, "upstream closed inside a chunked body"));
                    }
                    let n = framer
                        .feed(&chunk[..got])
                        .map_err(|r| Refusal::new(502, r.reason))?;
                    cw.write_all(&chunk[..n]).await.map_err(cerr)?;
                }
            }
            Framing::UntilClose => {
                tunnel::copy_body(ur, cw, None).await.map_err(relay_err)?;
            }
        }
        return Ok(Some(head.status));
    }
}

fn relay_err(e: io::Error) -> Refusal {
    Refusal::new(502, format!("relaying the response failed: {}", e.kind()))
}
