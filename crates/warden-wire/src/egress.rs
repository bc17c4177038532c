//! Egress policy: what a sandbox may reach. Read by the egress proxy and by `warden test`.
//!
//! Evaluation order: deny rules first (a matching deny always wins), then allow rules.
//! Forbidden address classes (loopback, private, metadata, ...) are refused unless an
//! explicit IP/CIDR rule names the address. Nothing matched means deny.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPolicy {
    pub version: u32,
    pub sandbox: String,
    pub rules: Vec<EgressRule>,
    /// Tunnels are closed after this many seconds without traffic in either direction.
    /// There is no total timeout.
    pub idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    pub action: Action,
    pub target: Target,
    /// Empty means any port.
    pub ports: Vec<u16>,
    /// `Some` for `http` rules: plain HTTP only, with method and path checks.
    pub http: Option<HttpRule>,
    pub reason: Option<String>,
    /// The standing order this rule serves; its autonomy gates the rule.
    pub order: Option<String>,
    /// Autonomy of that order, resolved by the compiler (`auto` when no order).
    pub autonomy: crate::orders::Autonomy,
    /// 1-based line in the source file, for messages.
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// `api.github.com` or `*.npmjs.org` (lower-case, no trailing dot).
    Host(String),
    /// `10.0.0.5/32` or `fd00::/8`, normalized.
    Cidr(Cidr),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRule {
    pub methods: MethodSet,
    /// Path globs (`*` within a segment, `**` across segments); empty allows every path.
    pub paths: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodSet(pub u16);

/// The methods an `http` rule can name, in bit order.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

impl MethodSet {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0u16;
        for n in names {
            let up = n.to_ascii_uppercase();
            match METHODS.iter().position(|m| *m == up) {
                Some(i) => bits |= 1 << i,
                None => return Err(n.to_string()),
            }
        }
        Ok(MethodSet(bits))
    }
    pub fn contains(&self, method: &str) -> bool {
        METHODS
            .iter()
            .position(|m| m.eq_ignore_ascii_case(method))
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
    pub fn names(&self) -> Vec<&'static str> {
        METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let a = a.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        if prefix > max {
            return None;
        }
        // `::ffff:a.b.c.d/104` names IPv4 addresses; `contains` compares canonical
        // addresses, so store it as the IPv4 network or it would never match.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        Some(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.addr.is_ipv4() == ip.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix as u32)
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(v) & m))
        }
        IpAddr::V6(v) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix as u32)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v) & m))
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is treated as the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// A destination as the proxy sees it, after normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Normalize a host as written in a URL, CONNECT line or `Host` header: lower-case,
/// trailing dot removed, IPv6 brackets removed, IPv4 literals in any inet_aton notation
/// (decimal `2130706433`, octal `0177.0.0.1`, hex `0x7f.1`, short `127.1`) turned into
/// an address. Anything that is not a valid DNS name or address is an error.
pub fn normalize_host(raw: &str) -> Result<Host, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty host".into());
    }
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("unterminated IPv6 literal `{raw}`"))?;
        let inner = inner.split('%').next().unwrap_or(inner);
        let v6: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("invalid IPv6 literal `{raw}`"))?;
        return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
    }
    if let Ok(v6) = s.parse::<Ipv6Addr>() {
        return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
    }
    let lower = s.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() {
        return Err(format!("invalid host `{raw}`"));
    }
    if let Some(v4) = parse_inet_aton(name) {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    // A name whose last label is numeric would be read as an address by some resolvers:
    // refuse it rather than guess.
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
        return Err(format!(
            "`{raw}` is neither a host name nor a valid address"
        ));
    }
    if name.len() > 253 {
        return Err(format!("host name `{raw}` is longer than 253 characters"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("invalid host name `{raw}`"));
        }
    }
    Ok(Host::Name(name.to_string()))
}

/// inet_aton semantics: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x);
/// the last part fills the remaining bytes.
pub fn parse_inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x") {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        // `from_str_radix` accepts a sign; an address part never has one.
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let n = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        if n > u32::MAX as u64 {
            return None;
        }
        nums.push(n as u32);
    }
    let last = nums.len() - 1;
    let mut value: u32 = 0;
    for (i, n) in nums.iter().enumerate() {
        if i < last {
            if *n > 255 {
                return None;
            }
            value |= n << (8 * (3 - i));
        } else {
            let room = 8 * (4 - i as u32);
            if room < 32 && (*n as u64) >= (1u64 << room) {
                return None;
            }
            value |= n;
        }
    }
    Some(Ipv4Addr::from(value))
}

/// Why an address is refused unless a rule names it explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForbiddenClass {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    Cgnat,
    Multicast,
    Broadcast,
    Reserved,
    Metadata,
    Documentation,
}

impl ForbiddenClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            ForbiddenClass::Unspecified => "unspecified address",
            ForbiddenClass::Loopback => "loopback address",
            ForbiddenClass::Private => "private address",
            ForbiddenClass::LinkLocal => "link-local address",
            ForbiddenClass::Cgnat => "carrier-grade NAT address",
            ForbiddenClass::Multicast => "multicast address",
            ForbiddenClass::Broadcast => "broadcast address",
            ForbiddenClass::Reserved => "reserved address",
            ForbiddenClass::Metadata => "cloud metadata address",
            ForbiddenClass::Documentation => "documentation address",
        }
    }
}

/// Address classes a sandbox never reaches by name. Each entry says why.
const V4_FORBIDDEN: &[(u32, u8, ForbiddenClass)] = &[
    // "this network"; 0.0.0.0 reaches the host's own services on Linux.
    (0x0000_0000, 8, ForbiddenClass::Unspecified),
    // RFC 1918 private networks: the operator's LAN.
    (0x0a00_0000, 8, ForbiddenClass::Private),
    // Shared address space (CGNAT), often internal to providers.
    (0x6440_0000, 10, ForbiddenClass::Cgnat),
    // The host's own services.
    (0x7f00_0000, 8, ForbiddenClass::Loopback),
    // AWS/GCP/Azure instance metadata: credentials live here (checked before link-local).
    (0xa9fe_a9fe, 32, ForbiddenClass::Metadata),
    // Link-local, including the metadata range.
    (0xa9fe_0000, 16, ForbiddenClass::LinkLocal),
    (0xac10_0000, 12, ForbiddenClass::Private),
    // IETF protocol assignments (includes 192.0.0.192 Oracle metadata).
    (0xc000_0000, 24, ForbiddenClass::Reserved),
    (0xc000_0200, 24, ForbiddenClass::Documentation),
    // Deprecated 6to4 relay anycast: traffic there is tunnelled somewhere unknown.
    (0xc058_6300, 24, ForbiddenClass::Reserved),
    (0xc0a8_0000, 16, ForbiddenClass::Private),
    // Benchmarking networks, used for internal test rigs.
    (0xc612_0000, 15, ForbiddenClass::Reserved),
    (0xc633_6400, 24, ForbiddenClass::Documentation),
    (0xcb00_7100, 24, ForbiddenClass::Documentation),
    // Multicast: no unicast peer to talk to.
    (0xe000_0000, 4, ForbiddenClass::Multicast),
    // Class E reserved and the limited broadcast address.
    (0xffff_ffff, 32, ForbiddenClass::Broadcast),
    (0xf000_0000, 4, ForbiddenClass::Reserved),
];

/// The class of an address that must not be dialled by name, if any. IPv6 forms that
/// embed an IPv4 address (mapped, compatible, 6to4, NAT64) are judged by that address.
pub fn forbidden_class(ip: IpAddr) -> Option<ForbiddenClass> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let n = u32::from(v4);
            V4_FORBIDDEN
                .iter()
                .find(|(net, len, _)| {
                    let m = if *len == 0 {
                        0
                    } else {
                        u32::MAX << (32 - *len as u32)
                    };
                    n & m == *net
                })
                .map(|(_, _, c)| *c)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let n = u128::from(v6);
            if v6.is_unspecified() {
                return Some(ForbiddenClass::Unspecified);
            }
            if v6.is_loopback() {
                return Some(ForbiddenClass::Loopback);
            }
            // IPv4-compatible ::a.b.c.d (deprecated) and NAT64 64:ff9b::/96 embed IPv4.
            if n >> 32 == 0 || n >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
                let v4 = Ipv4Addr::from((n & 0xffff_ffff) as u32);
                return forbidden_class(IpAddr::V4(v4)).or(Some(ForbiddenClass::Reserved));
            }
            // SIIT IPv4-translated ::ffff:0:a.b.c.d (RFC 2765) embeds IPv4.
            if n >> 32 == 0xffff_0000 {
                let v4 = Ipv4Addr::from((n & 0xffff_ffff) as u32);
                return forbidden_class(IpAddr::V4(v4)).or(Some(ForbiddenClass::Reserved));
            }
            // Local-use NAT64 64:ff9b:1::/48 (RFC 8215): translates to whatever the
            // operator's translator reaches, internal networks included.
            if n >> 80 == 0x0064_ff9b_0001 {
                return Some(ForbiddenClass::Reserved);
            }
            // Teredo 2001:0::/32 tunnels to an IPv4 address hidden in the bits.
            if seg[0] == 0x2001 && seg[1] == 0 {
                return Some(ForbiddenClass::Reserved);
            }
            // 6to4 2002:AABB:CCDD::/48 embeds AABB.CCDD.
            if seg[0] == 0x2002 {
                let v4 = Ipv4Addr::from(((seg[1] as u32) << 16) | seg[2] as u32);
                return forbidden_class(IpAddr::V4(v4));
            }
            // AWS IPv6 metadata endpoint fd00:ec2::254.
            if n == 0xfd00_0ec2_0000_0000_0000_0000_0000_0254 {
                return Some(ForbiddenClass::Metadata);
            }
            match seg[0] {
                s if s & 0xfe00 == 0xfc00 => Some(ForbiddenClass::Private), // ULA fc00::/7
                s if s & 0xffc0 == 0xfe80 => Some(ForbiddenClass::LinkLocal), // fe80::/10
                s if s & 0xffc0 == 0xfec0 => Some(ForbiddenClass::Private), // site-local
                s if s & 0xff00 == 0xff00 => Some(ForbiddenClass::Multicast),
                0x2001 if seg[1] == 0x0db8 => Some(ForbiddenClass::Documentation),
                0x0100 if seg[1..4] == [0, 0, 0] => Some(ForbiddenClass::Reserved), // discard
                _ => None,
            }
        }
    }
}

/// Is this host pattern well formed? `*.example.com` wildcards need at least two labels
/// after the star; a star anywhere else is refused.
pub fn check_host_pattern(p: &str) -> Result<(), String> {
    if p.contains("://") {
        return Err("a host pattern has no scheme: write the host name alone".into());
    }
    if p.contains('/') {
        return Err("a host pattern has no path".into());
    }
    if p.contains(':') {
        return Err("a host pattern has no port: use `port=`".into());
    }
    let (wild, rest) = match p.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, p),
    };
    if rest.contains('*') {
        return Err("`*` is only allowed as the whole first label, as in `*.example.com`".into());
    }
    match normalize_host(rest)? {
        Host::Ip(_) if wild => Err("a wildcard cannot apply to an address".into()),
        Host::Ip(_) => Ok(()),
        Host::Name(n) => {
            if wild && !n.contains('.') {
                return Err(format!(
                    "`*.{n}` would match every name under a top-level domain"
                ));
            }
            if n != rest.trim_end_matches('.')
                && n != rest.to_ascii_lowercase().trim_end_matches('.')
            {
                return Err("host pattern is not normalized".into());
            }
            Ok(())
        }
    }
}

/// Does a host-name pattern match a normalized name? `*.a.b` matches `x.a.b` and
/// `x.y.a.b`, never `a.b` itself.
pub fn host_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name.ends_with(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
        None => pattern == name,
    }
}

/// One request to decide on.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub host: &'a Host,
    pub port: u16,
    /// `Some` for plain-HTTP requests (method, path); `None` for CONNECT / raw TCP.
    pub http: Option<(&'a str, &'a str)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    Allow {
        rule: usize,
    },
    /// Matched a rule whose standing order needs a human first.
    Ask {
        rule: usize,
        order: String,
    },
    Deny {
        reason: DenyReason,
    },
}

impl Verdict {
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DenyReason {
    /// No rule names this destination.
    NoRule,
    /// A `deny` rule matched.
    DeniedByRule { rule: usize },
    /// The host is allowed, but not on this port.
    Port { rule: usize },
    /// An `http` rule matched the host but not the method.
    Method { rule: usize },
    /// An `http` rule matched the host but not the path.
    Path { rule: usize },
    /// The host has only `http` rules, which cannot be checked through a tunnel.
    HttpOnly { rule: usize },
    /// The address is in a class that is never reached by name.
    Forbidden { class: ForbiddenClass },
    /// The standing order behind the rule forbids it.
    OrderForbids { rule: usize, order: String },
}

impl DenyReason {
    /// Short, stable text for the `X-Warden-Reason` header and logs.
    pub fn describe(&self) -> String {
        match self {
            DenyReason::NoRule => "no egress rule allows this destination".into(),
            DenyReason::DeniedByRule { rule } => format!("denied by egress rule #{rule}"),
            DenyReason::Port { rule } => format!("port not allowed by egress rule #{rule}"),
            DenyReason::Method { rule } => format!("method not allowed by http rule #{rule}"),
            DenyReason::Path { rule } => format!("path not allowed by http rule #{rule}"),
            DenyReason::HttpOnly { rule } => {
                format!("http rule #{rule} allows plain HTTP only, not tunnels")
            }
            DenyReason::Forbidden { class } => format!("{} refused", class.as_str()),
            DenyReason::OrderForbids { order, .. } => {
                format!("standing order `{order}` forbids this")
            }
        }
    }
}

impl EgressPolicy {
    /// Decide on a request by destination (name or literal address), before any DNS.
    /// The proxy calls [`EgressPolicy::decide_resolved`] afterwards for names.
    pub fn decide(&self, req: &Request<'_>) -> Verdict {
        if let Host::Ip(ip) = req.host {
            let ip = canonical_ip(*ip);
            let explicit = self.matching(req, |t| matches!(t, Target::Cidr(c) if c.contains(ip)));
            if let (None, Some(class)) = (explicit, forbidden_class(ip)) {
                return Verdict::Deny {
                    reason: DenyReason::Forbidden { class },
                };
            }
            return self.evaluate(req, |t| matches!(t, Target::Cidr(c) if c.contains(ip)));
        }
        let Host::Name(name) = req.host else {
            return Verdict::Deny {
                reason: DenyReason::NoRule,
            };
        };
        self.evaluate(
            req,
            |t| matches!(t, Target::Host(p) if host_matches(p, name)),
        )
    }

    /// After resolving a name the proxy passes the address it is about to dial: refused
    /// if a `deny` CIDR rule covers it, or if it lies in a forbidden class and no allow
    /// CIDR rule names it explicitly.
    pub fn decide_resolved(&self, ip: IpAddr, port: u16) -> Result<(), DenyReason> {
        let ip = canonical_ip(ip);
        // A deny rule for an address range holds whatever name led there.
        if let Some(rule) = self.rules.iter().position(|r| {
            r.action == Action::Deny
                && matches!(&r.target, Target::Cidr(c) if c.contains(ip))
                && port_ok(r, port)
        }) {
            return Err(DenyReason::DeniedByRule { rule });
        }
        let Some(class) = forbidden_class(ip) else {
            return Ok(());
        };
        let named = self.rules.iter().any(|r| {
            r.action == Action::Allow
                && matches!(&r.target, Target::Cidr(c) if c.contains(ip))
                && (r.ports.is_empty() || r.ports.contains(&port))
        });
        if named {
            Ok(())
        } else {
            Err(DenyReason::Forbidden { class })
        }
    }

    fn matching(&self, req: &Request<'_>, target: impl Fn(&Target) -> bool) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.action == Action::Allow && target(&r.target) && port_ok(r, req.port))
    }

    fn evaluate(&self, req: &Request<'_>, target: impl Fn(&Target) -> bool) -> Verdict {
        // Deny rules win over any allow rule.
        for (i, r) in self.rules.iter().enumerate() {
            if r.action == Action::Deny && target(&r.target) && port_ok(r, req.port) {
                return Verdict::Deny {
                    reason: DenyReason::DeniedByRule { rule: i },
                };
            }
        }
        let mut best: Option<DenyReason> = None;
        for (i, r) in self.rules.iter().enumerate() {
            if r.action != Action::Allow || !target(&r.target) {
                continue;
            }
            if !port_ok(r, req.port) {
                best.get_or_insert(DenyReason::Port { rule: i });
                continue;
            }
            if let Some(http) = &r.http {
                match req.http {
                    None => {
                        best.get_or_insert(DenyReason::HttpOnly { rule: i });
                        continue;
                    }
                    Some((method, path)) => {
                        if !http.methods.contains(method) {
                            best = Some(DenyReason::Method { rule: i });
                            continue;
                        }
                        if !http.paths_allow(path) {
                            best = Some(DenyReason::Path { rule: i });
                            continue;
                        }
                    }
                }
            }
            return match r.autonomy {
                crate::orders::Autonomy::Auto => Verdict::Allow { rule: i },
                crate::orders::Autonomy::Ask => Verdict::Ask {
                    rule: i,
                    order: r.order.clone().unwrap_or_default(),
                },
                crate::orders::Autonomy::Never => Verdict::Deny {
                    reason: DenyReason::OrderForbids {
                        rule: i,
                        order: r.order.clone().unwrap_or_default(),
                    },
                },
            };
        }
        Verdict::Deny {
            reason: best.unwrap_or(DenyReason::NoRule),
        }
    }
}

fn port_ok(r: &EgressRule, port: u16) -> bool {
    r.ports.is_empty() || r.ports.contains(&port)
}

impl HttpRule {
    /// An `http` rule with no paths allows every path.
    pub fn paths_allow(&self, path: &str) -> bool {
        // Only the path part takes part; a query string never widens a match.
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.paths.is_empty() || self.paths.iter().any(|g| crate::glob_match(g, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: Action, target: Target, ports: &[u16]) -> EgressRule {
        EgressRule {
            action,
            target,
            ports: ports.to_vec(),
            http: None,
            reason: None,
            order: None,
            autonomy: crate::orders::Autonomy::Auto,
            line: 1,
        }
    }

    fn policy(rules: Vec<EgressRule>) -> EgressPolicy {
        EgressPolicy {
            version: 1,
            sandbox: "t".into(),
            rules,
            idle_timeout_secs: 60,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolved_address_in_a_denied_range_is_refused() {
        let p = policy(vec![
            rule(
                Action::Deny,
                Target::Cidr(Cidr::parse("203.0.114.0/24").unwrap()),
                &[],
            ),
            rule(Action::Allow, Target::Host("api.example.com".into()), &[]),
        ]);
        assert_eq!(
            p.decide_resolved(ip("203.0.114.9"), 443),
            Err(DenyReason::DeniedByRule { rule: 0 })
        );
        assert_eq!(p.decide_resolved(ip("8.8.8.8"), 443), Ok(()));
        assert_eq!(
            p.decide_resolved(ip("10.1.2.3"), 443),
            Err(DenyReason::Forbidden {
                class: ForbiddenClass::Private
            })
        );
    }

    #[test]
    fn address_literals_with_signs_are_not_addresses() {
        assert_eq!(parse_inet_aton("+127.0.0.1"), None);
        assert_eq!(parse_inet_aton("0x+7f.1"), None);
        assert!(normalize_host("+127.0.0.1").is_err());
        assert_eq!(parse_inet_aton("0x7f.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(
            parse_inet_aton("2130706433"),
            Some(Ipv4Addr::new(127, 0, 0, 1))
        );
        assert_eq!(
            parse_inet_aton("0177.0.0.1"),
            Some(Ipv4Addr::new(127, 0, 0, 1))
        );
    }

    #[test]
    fn mapped_cidr_names_ipv4_addresses() {
        let c = Cidr::parse("::ffff:127.0.0.2/128").unwrap();
        assert_eq!(c.to_string(), "127.0.0.2/32");
        assert!(c.contains(ip("127.0.0.2")));
        assert!(c.contains(ip("::ffff:127.0.0.2")));
    }

    #[test]
    fn embedded_ipv4_forms_are_forbidden() {
        let class = |s: &str| forbidden_class(ip(s));
        assert_eq!(class("::ffff:0:7f00:1"), Some(ForbiddenClass::Loopback));
        assert_eq!(class("::ffff:0:808:808"), Some(ForbiddenClass::Reserved));
        assert_eq!(class("64:ff9b:1::a00:1"), Some(ForbiddenClass::Reserved));
        assert_eq!(class("2001:0:4136:e378::1"), Some(ForbiddenClass::Reserved));
        assert_eq!(class("192.88.99.1"), Some(ForbiddenClass::Reserved));
        assert_eq!(class("64:ff9b::a9fe:a9fe"), Some(ForbiddenClass::Metadata));
        assert_eq!(class("2002:7f00:1::"), Some(ForbiddenClass::Loopback));
        assert_eq!(class("2606:4700::1111"), None);
        assert_eq!(class("1.1.1.1"), None);
    }

    #[test]
    fn literal_addresses_meet_forbidden_classes_unless_named() {
        let p = policy(vec![rule(
            Action::Allow,
            Target::Cidr(Cidr::parse("127.0.0.2/32").unwrap()),
            &[8080],
        )]);
        let decide = |h: &str, port| {
            let host = normalize_host(h).unwrap();
            p.decide(&Request {
                host: &host,
                port,
                http: None,
            })
        };
        assert_eq!(decide("127.0.0.2", 8080), Verdict::Allow { rule: 0 });
        assert_eq!(
            decide("127.0.0.2", 22),
            Verdict::Deny {
                reason: DenyReason::Forbidden {
                    class: ForbiddenClass::Loopback
                }
            }
        );
        assert_eq!(
            decide("0x7f.0.0.1", 8080),
            Verdict::Deny {
                reason: DenyReason::Forbidden {
                    class: ForbiddenClass::Loopback
                }
            }
        );
        assert_eq!(
            decide("[::ffff:10.0.0.1]", 80),
            Verdict::Deny {
                reason: DenyReason::Forbidden {
                    class: ForbiddenClass::Private
                }
            }
        );
    }
}
