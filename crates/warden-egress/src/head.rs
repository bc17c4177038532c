//! Pure request/response head handling: parse, validate, and rewrite. No IO here, so
//! every refusal is unit-testable and the fuzz test can drive it directly.

use std::io::Write as _;
use warden_wire::egress::{Host, normalize_host};

/// Upper bound on header lines in one head (`httparse` needs a fixed array).
pub const MAX_HEADERS: usize = 128;

/// A parsed request head, owned so it can outlive the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request-target exactly as sent.
    pub target: String,
    /// Minor version: `HTTP/1.0` or `HTTP/1.1`.
    pub minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the buffer the head occupied (anything after it is body or tunnel data).
    pub len: usize,
}

/// Why a head cannot be served. Carries the status code to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Short text for the `X-Warden-Reason` header (single line, ASCII).
    pub reason: String,
}

impl Refusal {
    pub fn new(status: u16, reason: impl Into<String>) -> Refusal {
        let mut reason: String = reason.into();
        // The reason goes into a header: keep it to one line of visible ASCII.
        reason.retain(|c| c.is_ascii() && !c.is_ascii_control());
        Refusal { status, reason }
    }
}

/// Parse a request head from the start of `buf`. `Ok(None)` means more bytes are needed.
/// The caller enforces the size cap (431) before calling again.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<RequestHead>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let head = RequestHead {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                minor: req.version.unwrap_or(1),
                headers: req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                    .collect(),
                len,
            };
            Ok(Some(head))
        }
        Err(httparse::Error::TooManyHeaders) => Err(Refusal::new(
            431,
            format!("more than {MAX_HEADERS} header lines"),
        )),
        Err(e) => Err(Refusal::new(400, format!("malformed request head: {e}"))),
    }
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// What a client asked for, validated. The proxy asks the policy about it next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Connect {
        host: Host,
        port: u16,
    },
    Http {
        host: Host,
        port: u16,
        method: String,
        /// Origin-form target (path and query) as sent upstream and checked by the policy.
        path: String,
        body: Framing,
        /// The `Upgrade` value when the client asks for a protocol switch (WebSocket).
        upgrade: Option<String>,
        /// The head to send upstream: origin-form, canonical `Host`, no hop-by-hop or
        /// `Proxy-*` headers, `Connection: close` (or `Upgrade`).
        upstream_head: Vec<u8>,
    },
}

impl Plan {
    pub fn host(&self) -> &Host {
        match self {
            Plan::Connect { host, .. } | Plan::Http { host, .. } => host,
        }
    }
    pub fn port(&self) -> u16 {
        match self {
            Plan::Connect { port, .. } | Plan::Http { port, .. } => *port,
        }
    }
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), each with why.
const HOP_BY_HOP: &[&str] = &[
    // Connection management is between the client and us, and between us and upstream.
    "connection",
    "keep-alive",
    // Non-standard, sent by some clients to proxies.
    "proxy-connection",
    // Credentials meant for a proxy must never reach an origin.
    "proxy-authorization",
    "proxy-authenticate",
    // Transfer-coding negotiation and trailers are per hop.
    "te",
    "trailer",
    // Protocol switching is re-added explicitly when the client asks for it.
    "upgrade",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name) || name.starts_with("proxy-")
}

/// Split `host[:port]` (IPv6 in brackets). `default_port` is used when no port is given;
/// `None` makes the port mandatory (CONNECT).
pub fn parse_authority(raw: &str, default_port: Option<u16>) -> Result<(Host, u16), Refusal> {
    if raw.contains('@') {
        return Err(Refusal::new(403, "userinfo in the request target refused"));
    }
    let (host, port) = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => {
                let rest = &raw[end + 1..];
                let port = match rest.strip_prefix(':') {
                    Some(p) => Some(p),
                    None if rest.is_empty() => None,
                    None => {
                        return Err(Refusal::new(400, format!("invalid authority `{raw}`")));
                    }
                };
                (&raw[..=end], port)
            }
            None => return Err(Refusal::new(400, format!("invalid authority `{raw}`"))),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((_, _)) if raw.matches(':').count() > 1 => {
                return Err(Refusal::new(
                    400,
                    format!("IPv6 address without brackets in `{raw}`"),
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port {
        Some(p) => {
            parse_port(p).ok_or_else(|| Refusal::new(400, format!("invalid port in `{raw}`")))?
        }
        None => {
            default_port.ok_or_else(|| Refusal::new(400, format!("missing port in `{raw}`")))?
        }
    };
    if host.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(Refusal::new(400, "whitespace in host"));
    }
    let host = normalize_host(host).map_err(|e| Refusal::new(400, e))?;
    Ok((host, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// Validate a request head and turn it into a [`Plan`]. Everything that could let a
/// request mean one thing to us and another to the origin is refused here.
pub fn plan_request(head: &RequestHead) -> Result<Plan, Refusal> {
    let framing = body_framing(head)?;
    if head.method == "CONNECT" {
        if framing != Framing::Empty {
            return Err(Refusal::new(400, "CONNECT with a body refused"));
        }
        let (host, port) = parse_authority(&head.target, None)?;
        return Ok(Plan::Connect { host, port });
    }
    let target = head.target.as_str();
    let rest = strip_scheme(target, "http://").ok_or_else(|| {
        if strip_scheme(target, "https://").is_some() {
            Refusal::new(400, "https:// needs a CONNECT tunnel")
        } else if target.starts_with('/') || target == "*" {
            Refusal::new(
                400,
                "this is a proxy: the request target must be an absolute http:// URI",
            )
        } else {
            Refusal::new(400, "unsupported request target")
        }
    })?;
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let (host, port) = parse_authority(authority, Some(80))?;
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    check_path(&path)?;

    let mut host_headers = head.headers.iter().filter(|(n, _)| n == "host");
    if let Some((_, value)) = host_headers.next() {
        if host_headers.next().is_some() {
            return Err(Refusal::new(400, "more than one Host header"));
        }
        let value = std::str::from_utf8(value)
            .map_err(|_| Refusal::new(400, "Host header is not ASCII"))?;
        let agrees = parse_authority(value.trim(), Some(80))
            .map(|(h, p)| h == host && p == port)
            .unwrap_or(false);
        if !agrees {
            return Err(Refusal::new(
                403,
                format!(
                    "Host header `{}` does not match the request URI host `{host}:{port}`",
                    value.trim()
                ),
            ));
        }
    }

    // Tokens listed in `Connection` name further hop-by-hop headers.
    let mut listed: Vec<String> = Vec::new();
    for (n, v) in &head.headers {
        if n == "connection" {
            for tok in String::from_utf8_lossy(v).split(',') {
                let tok = tok.trim().to_ascii_lowercase();
                if !tok.is_empty() {
                    listed.push(tok);
                }
            }
        }
    }
    let upgrade = if listed.iter().any(|t| t == "upgrade") {
        head.headers
            .iter()
            .find(|(n, _)| n == "upgrade")
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    } else {
        None
    };
    if upgrade.is_some() && framing != Framing::Empty {
        return Err(Refusal::new(
            400,
            "protocol upgrade with a request body refused",
        ));
    }

    let mut out: Vec<u8> = Vec::with_capacity(256 + head.len);
    let _ = write!(out, "{} {} HTTP/1.1\r\n", head.method, path);
    let _ = write!(out, "host: {host}");
    if port != 80 {
        let _ = write!(out, ":{port}");
    }
    out.extend_from_slice(b"\r\n");
    for (n, v) in &head.headers {
        if n == "host" || is_hop_by_hop(n) || listed.iter().any(|t| t == n) {
            continue;
        }
        // Values are copied byte for byte (httparse already refused CR, LF and NUL).
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    match &upgrade {
        Some(u) => {
            let _ = write!(out, "connection: upgrade\r\nupgrade: {u}\r\n\r\n");
        }
        None => out.extend_from_slice(b"connection: close\r\n\r\n"),
    }
    Ok(Plan::Http {
        host,
        port,
        method: head.method.clone(),
        path,
        body: framing,
        upgrade,
        upstream_head: out,
    })
}

fn strip_scheme<'a>(target: &'a str, scheme: &str) -> Option<&'a str> {
    let n = scheme.len();
    (target.len() >= n && target.is_char_boundary(n) && target[..n].eq_ignore_ascii_case(scheme))
        .then(|| &target[n..])
}

/// A path must mean the same to us and to the origin: no dot segments (also encoded or
/// before `;`), no encoded or literal backslash or slash tricks, no fragment.
pub fn check_path(path: &str) -> Result<(), Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::new(400, "path must start with `/`"));
    }
    if !path.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(Refusal::new(400, "path has bytes outside visible ASCII"));
    }
    if path.contains('#') {
        return Err(Refusal::new(400, "fragment in request target refused"));
    }
    if path.contains('\\') {
        return Err(Refusal::new(400, "backslash in path refused"));
    }
    let only_path = path.split('?').next().unwrap_or(path);
    let lower = only_path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(Refusal::new(400, "encoded slash in path refused"));
    }
    for seg in lower.split('/') {
        let seg = seg.split(';').next().unwrap_or(seg);
        let seg = seg.replace("%2e", ".");
        if seg == "." || seg == ".." {
            return Err(Refusal::new(400, "dot segment in path refused"));
        }
    }
    Ok(())
}

/// Body framing of a request, refusing anything two parsers could read differently
/// (request smuggling): CL with TE, duplicate CL, TE other than plain `chunked`.
pub fn body_framing(head: &RequestHead) -> Result<Framing, Refusal> {
    let cls: Vec<&[u8]> = header_values(&head.headers, "content-length");
    let tes: Vec<&[u8]> = header_values(&head.headers, "transfer-encoding");
    if !cls.is_empty() && !tes.is_empty() {
        return Err(Refusal::new(
            400,
            "Content-Length together with Transfer-Encoding refused",
        ));
    }
    if cls.len() > 1 {
        return Err(Refusal::new(400, "duplicate Content-Length refused"));
    }
    if tes.len() > 1 {
        return Err(Refusal::new(400, "duplicate Transfer-Encoding refused"));
    }
    if let Some(te) = tes.first() {
        if head.minor == 0 {
            return Err(Refusal::new(400, "Transfer-Encoding in HTTP/1.0 refused"));
        }
        let te = String::from_utf8_lossy(te);
        if !te.trim().eq_ignore_ascii_case("chunked") {
            return Err(Refusal::new(
                400,
                "Transfer-Encoding other than `chunked` refused",
            ));
        }
        return Ok(Framing::Chunked);
    }
    match cls.first() {
        Some(cl) => match parse_content_length(cl) {
            Some(0) => Ok(Framing::Empty),
            Some(n) => Ok(Framing::Length(n)),
            None => Err(Refusal::new(400, "invalid Content-Length")),
        },
        None => Ok(Framing::Empty),
    }
}

fn header_values<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A parsed and rewritten response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Bytes of the buffer the head occupied.
    pub len: usize,
    /// The head to send to the client: hop-by-hop headers removed, `Connection: close`
    /// (or `upgrade` on 101).
    pub rewritten: Vec<u8>,
    pub body: Framing,
}

/// Parse and rewrite a response head. `head_request` marks a response to `HEAD`, which
/// never has a body whatever its headers say.
pub fn parse_response_head(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(e) => {
            return Err(Refusal::new(
                502,
                format!("malformed upstream response head: {e}"),
            ));
        }
    };
    let status = resp.code.unwrap_or(502);
    let pairs: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let mut listed: Vec<String> = Vec::new();
    for (n, v) in &pairs {
        if n == "connection" {
            listed.extend(
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    let cls = header_values(&pairs, "content-length");
    let tes = header_values(&pairs, "transfer-encoding");
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if let Some(te) = tes.last() {
        // The last coding decides; anything but chunked runs until close (RFC 9112 §6.3).
        let te = String::from_utf8_lossy(te).to_ascii_lowercase();
        if te.rsplit(',').next().map(str::trim) == Some("chunked") && tes.len() == 1 {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if !cls.is_empty() {
        let first = parse_content_length(cls[0]);
        if first.is_none() || cls.iter().any(|c| parse_content_length(c) != first) {
            return Err(Refusal::new(
                502,
                "upstream sent conflicting Content-Length",
            ));
        }
        match first {
            Some(0) | None => Framing::Empty,
            Some(n) => Framing::Length(n),
        }
    } else {
        Framing::UntilClose
    };
    let mut out: Vec<u8> = Vec::with_capacity(len + 32);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", resp.reason.unwrap_or(""));
    for (n, v) in &pairs {
        if is_hop_by_hop(n) || listed.iter().any(|t| t == n) {
            // On 101 the upgrade headers are re-added below.
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    if status == 101 {
        let up = pairs
            .iter()
            .find(|(n, _)| n == "upgrade")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let _ = write!(out, "connection: upgrade\r\nupgrade: {up}\r\n\r\n");
    } else if (100..200).contains(&status) {
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(b"connection: close\r\n\r\n");
    }
    Ok(Some(ResponseHead {
        status,
        len,
        rewritten: out,
        body,
    }))
}

/// The host and port a request names, as far as they can be read: for the audit record
/// of a request refused before it was planned (a Host mismatch, userinfo, bad framing).
/// The URI's authority (for CONNECT the target), else the `Host` header; userinfo is
/// dropped (never logged), a host that does not normalize is kept as visible ASCII.
pub fn destination_named(head: &RequestHead) -> (Option<String>, Option<u16>) {
    let authority_of = |rest: &str| {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let host_header = || {
        head.headers
            .iter()
            .find(|(n, _)| n == "host")
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_string())
    };
    let (authority, default) = if head.method == "CONNECT" {
        (head.target.clone(), None)
    } else if let Some(rest) = strip_scheme(&head.target, "http://") {
        (authority_of(rest), Some(80))
    } else if let Some(rest) = strip_scheme(&head.target, "https://") {
        (authority_of(rest), Some(443))
    } else {
        match host_header() {
            Some(h) => (h, Some(80)),
            None => return (None, None),
        }
    };
    let authority = authority
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, h)| h);
    if let Ok((host, port)) = parse_authority(authority, default) {
        return (Some(host.to_string()), Some(port));
    }
    // Not a valid authority: whatever parts of it can be read.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if authority.starts_with('[') == h.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let host = match normalize_host(host) {
        Ok(h) => h.to_string(),
        Err(_) => host
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect(),
    };
    let port = match port {
        Some(p) => parse_port(p),
        None => default,
    };
    ((!host.is_empty()).then_some(host), port)
}

/// Most requests read after a refused one (each gets an audit line).
pub const MAX_PIPELINED: usize = 16;

/// The complete request heads that follow a refused request in `rest` (the bytes after
/// its head), skipping the bodies whose framing is known. A body of unknown framing ends
/// the search: what follows it cannot be told apart from body bytes.
pub fn pipelined_after(rest: &[u8], framing: Option<Framing>) -> Vec<RequestHead> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut framing = framing.unwrap_or(Framing::Empty);
    while out.len() < MAX_PIPELINED {
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => match usize::try_from(n).ok().and_then(|n| at.checked_add(n)) {
                Some(end) if end <= rest.len() => at = end,
                _ => break,
            },
            Framing::Chunked => {
                let mut f = crate::chunked::ChunkedFramer::new();
                match f.feed(&rest[at..]) {
                    Ok(n) if f.is_done() => at += n,
                    _ => break,
                }
            }
            Framing::UntilClose => break,
        }
        match parse_request_head(&rest[at..]) {
            Ok(Some(h)) => {
                at += h.len;
                framing = match body_framing(&h) {
                    Ok(f) => f,
                    Err(_) => Framing::UntilClose,
                };
                out.push(h);
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(raw: &str) -> Result<Plan, Refusal> {
        let head = parse_request_head(raw.as_bytes())
            .expect("parses")
            .expect("complete");
        plan_request(&head)
    }

    fn refused(raw: &str) -> (u16, String) {
        let r = plan(raw).expect_err("refused");
        (r.status, r.reason)
    }

    #[test]
    fn connect_authority() {
        assert_eq!(
            plan("CONNECT api.example.com:443 HTTP/1.1\r\n\r\n").unwrap(),
            Plan::Connect {
                host: Host::Name("api.example.com".into()),
                port: 443
            }
        );
        assert_eq!(refused("CONNECT api.example.com HTTP/1.1\r\n\r\n").0, 400);
        assert_eq!(refused("CONNECT api.example.com:0 HTTP/1.1\r\n\r\n").0, 400);
        assert_eq!(refused("CONNECT ::1:80 HTTP/1.1\r\n\r\n").0, 400);
        let p = plan("CONNECT [::1]:80 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(p.host(), &Host::Ip("::1".parse().unwrap()));
        let p = plan("CONNECT 2130706433:80 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(p.host(), &Host::Ip("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn http_rewrites_to_origin_form() {
        let p = plan(
            "GET http://Example.COM./a/b?q=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: x\r\n\
             Connection: keep-alive, x-hop\r\nX-Hop: 1\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        let Plan::Http {
            upstream_head,
            path,
            host,
            port,
            ..
        } = p
        else {
            panic!()
        };
        assert_eq!(path, "/a/b?q=1");
        assert_eq!(host, Host::Name("example.com".into()));
        assert_eq!(port, 80);
        assert_eq!(
            String::from_utf8(upstream_head).unwrap(),
            "GET /a/b?q=1 HTTP/1.1\r\nhost: example.com\r\naccept: */*\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn bypasses_refused() {
        assert_eq!(
            refused("GET http://allowed.test@evil.test/ HTTP/1.1\r\n\r\n"),
            (403, "userinfo in the request target refused".into())
        );
        assert_eq!(
            refused("GET http://allowed.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            (
                403,
                "Host header `evil.test` does not match the request URI host `allowed.test:80`"
                    .into()
            )
        );
        assert_eq!(
            refused("GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n").1,
            "more than one Host header"
        );
        assert_eq!(
            refused("POST http://a.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").1,
            "Content-Length together with Transfer-Encoding refused"
        );
        assert_eq!(
            refused(
                "POST http://a.test/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"
            )
            .1,
            "duplicate Content-Length refused"
        );
        assert_eq!(
            refused("POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n")
                .1,
            "Transfer-Encoding other than `chunked` refused"
        );
        assert_eq!(
            refused("GET http://a.test/x/../y HTTP/1.1\r\n\r\n").1,
            "dot segment in path refused"
        );
        assert_eq!(
            refused("GET http://a.test/x/%2e%2E/y HTTP/1.1\r\n\r\n").1,
            "dot segment in path refused"
        );
        assert_eq!(
            refused("GET http://a.test/x/..;/y HTTP/1.1\r\n\r\n").1,
            "dot segment in path refused"
        );
        assert_eq!(
            refused("GET http://a.test/x%2f..%2fy HTTP/1.1\r\n\r\n").1,
            "encoded slash in path refused"
        );
        assert_eq!(refused("GET /x HTTP/1.1\r\n\r\n").0, 400);
        assert_eq!(
            refused("GET https://a.test/ HTTP/1.1\r\n\r\n").1,
            "https:// needs a CONNECT tunnel"
        );
        assert_eq!(
            refused("CONNECT a.test:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n").0,
            400
        );
    }

    #[test]
    fn host_header_with_default_port_agrees() {
        assert!(plan("GET http://a.test:80/ HTTP/1.1\r\nHost: a.test\r\n\r\n").is_ok());
        assert!(plan("GET http://a.test:8080/ HTTP/1.1\r\nHost: A.test.:8080\r\n\r\n").is_ok());
        assert_eq!(
            refused("GET http://a.test:8080/ HTTP/1.1\r\nHost: a.test\r\n\r\n").0,
            403
        );
    }

    #[test]
    fn response_rewrite() {
        let r = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, Framing::Length(5));
        assert_eq!(
            String::from_utf8(r.rewritten).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, Framing::Empty);
        assert_eq!(
            parse_response_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false
            )
            .unwrap_err()
            .status,
            502
        );
    }
}
