//! Deterministic fuzzing of everything that reads untrusted bytes: request heads, their
//! validation, the policy decision, chunked framing and response heads. cargo-fuzz needs
//! nightly; this runs on stable in every `cargo test`, from a fixed seed.

use std::io::Write as _;
use warden_egress::chunked::ChunkedFramer;
use warden_egress::head::{self, Framing, Plan};
use warden_wire::egress::{
    Action, Cidr, EgressPolicy, EgressRule, Host, HttpRule, MethodSet, Request, Target, Verdict,
    forbidden_class, normalize_host,
};
use warden_wire::orders::Autonomy;

const ITERATIONS: usize = 200_000;

/// xorshift64*: tiny, seeded, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
    "CONNECT [::ffff:10.0.0.1]:80 HTTP/1.1\r\n\r\n",
    "CONNECT 0x7f.1:22 HTTP/1.1\r\n\r\n",
    "GET http://api.example.com/v1/models?x=1 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n",
    "POST http://api.example.com:8080/v1/chat HTTP/1.1\r\nHost: api.example.com:8080\r\nContent-Length: 5\r\n\r\nhello",
    "POST http://a.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: x-a, close\r\nX-A: 1\r\n\r\n4\r\nwiki\r\n0\r\n\r\n",
    "GET http://user@evil.test/ HTTP/1.0\r\nProxy-Authorization: Basic x\r\n\r\n",
    "GET http://[::1]:80/a/../b HTTP/1.1\r\nHost: [::1]\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "GET http://2130706433/%2e%2e/x;y HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: b\r\n\r\n",
];

const TOKENS: &[&str] = &[
    ":",
    "\r\n",
    "\n",
    " ",
    "\t",
    "@",
    "%2e",
    "%2F",
    "..",
    "/",
    "[",
    "]",
    "0x",
    "0",
    "255",
    "4294967295",
    "99999",
    "::ffff:",
    "Host: ",
    "Content-Length: ",
    "Transfer-Encoding: chunked",
    "Connection: ",
    "Upgrade",
    "Proxy-",
    "http://",
    "https://",
    "CONNECT ",
    "\0",
    "\u{7f}",
    "é",
    ";",
    "?",
    "#",
    "*.",
    ".",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                let i = rng.below(len + 1);
                input.splice(i..i, t.iter().copied());
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + rng.below(16)).min(len);
                input.drain(a..b);
            }
            4 if len > 0 => {
                // Duplicate a slice (header lines, digits).
                let a = rng.below(len);
                let b = (a + rng.below(40)).min(len);
                let piece: Vec<u8> = input[a..b].to_vec();
                let i = rng.below(len + 1);
                input.splice(i..i, piece);
            }
            5 => input.truncate(rng.below(len + 1)),
            _ => {
                let n = rng.below(8);
                for _ in 0..n {
                    input.push(rng.next() as u8);
                }
            }
        }
    }
}

fn fuzz_policy() -> EgressPolicy {
    let rule = |action, target, ports: &[u16]| EgressRule {
        action,
        target,
        ports: ports.to_vec(),
        http: None,
        reason: None,
        order: None,
        autonomy: Autonomy::Auto,
        line: 1,
    };
    let mut api = rule(
        Action::Allow,
        Target::Host("api.example.com".into()),
        &[80, 8080],
    );
    api.http = Some(HttpRule {
        methods: MethodSet::from_names(["GET"]).expect("methods"),
        paths: vec!["/v1/**".into()],
    });
    EgressPolicy {
        version: 1,
        sandbox: "fuzz".into(),
        rules: vec![
            rule(Action::Deny, Target::Host("evil.test".into()), &[]),
            rule(
                Action::Allow,
                Target::Cidr(Cidr::parse("127.0.0.2/32").expect("cidr")),
                &[80],
            ),
            rule(Action::Allow, Target::Host("*.example.com".into()), &[443]),
            api,
        ],
        idle_timeout_secs: 60,
    }
}

/// What must hold for every request the proxy would act on.
fn check_plan(policy: &EgressPolicy, plan: &Plan, input: &[u8]) {
    let ctx = || String::from_utf8_lossy(input).into_owned();
    assert_ne!(plan.port(), 0, "port 0 accepted: {:?}", ctx());
    // The host is normalized: normalizing its printed form gives it back.
    assert_eq!(
        normalize_host(&plan.host().to_string()).as_ref(),
        Ok(plan.host()),
        "{:?}",
        ctx()
    );
    let http = match plan {
        Plan::Connect { .. } => None,
        Plan::Http {
            method,
            path,
            body,
            upstream_head,
            ..
        } => {
            assert!(
                head::check_path(path).is_ok(),
                "unsafe path accepted: {path:?}"
            );
            assert!(!matches!(body, Framing::UntilClose));
            // What goes upstream parses back to one request with the same method and path,
            // one Host, no hop-by-hop or proxy headers, and at most one framing header.
            let again = head::parse_request_head(upstream_head)
                .expect("upstream head parses")
                .expect("upstream head complete");
            assert_eq!(again.len, upstream_head.len());
            assert_eq!((&again.method, &again.target), (method, path));
            let count = |n: &str| again.headers.iter().filter(|(h, _)| h == n).count();
            assert_eq!(count("host"), 1);
            assert_eq!(count("connection"), 1);
            assert!(count("content-length") + count("transfer-encoding") <= 1);
            for (n, _) in &again.headers {
                assert!(
                    !n.starts_with("proxy-") && n != "keep-alive" && n != "te" && n != "trailer",
                    "{n} forwarded"
                );
            }
            assert_eq!(head::body_framing(&again).ok(), Some(*body));
            Some((method.as_str(), path.as_str()))
        }
    };
    let verdict = policy.decide(&Request {
        host: plan.host(),
        port: plan.port(),
        http,
    });
    // A forbidden address is never allowed unless a CIDR rule names it on this port.
    if let (Host::Ip(ip), Verdict::Allow { rule }) = (plan.host(), &verdict)
        && forbidden_class(*ip).is_some()
    {
        assert!(matches!(policy.rules[*rule].target, Target::Cidr(c) if c.contains(*ip)));
        assert!(policy.decide_resolved(*ip, plan.port()).is_ok());
    }
    // A denied name is denied whatever the request looks like.
    if plan.host() == &Host::Name("evil.test".into()) {
        assert!(!verdict.is_allow());
    }
}

#[test]
#[allow(clippy::print_stdout)] // the count is the point of this test's output
fn fuzz_heads_framing_and_policy() {
    let policy = fuzz_policy();
    let mut rng = Rng(0x005e_ed0f_3a77_0001);
    let (mut planned, mut refused, mut partial) = (0usize, 0usize, 0usize);
    for i in 0..ITERATIONS {
        let mut input: Vec<u8> = if i % 10 == 0 {
            // Pure noise now and then.
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            SEEDS[rng.below(SEEDS.len())].as_bytes().to_vec()
        };
        mutate(&mut rng, &mut input);
        match head::parse_request_head(&input) {
            Ok(Some(h)) => {
                assert!(h.len <= input.len());
                match head::plan_request(&h) {
                    Ok(plan) => {
                        planned += 1;
                        check_plan(&policy, &plan, &input);
                    }
                    Err(r) => {
                        refused += 1;
                        assert!(matches!(r.status, 400 | 403 | 431), "{r:?}");
                        assert!(r.reason.bytes().all(|b| (0x20..0x7f).contains(&b)), "{r:?}");
                        // What the audit line of the refusal names: visible ASCII, short.
                        if let (Some(host), _) = head::destination_named(&h) {
                            assert!(
                                host.len() <= 255 && host.bytes().all(|b| b.is_ascii_graphic()),
                                "{host:?}"
                            );
                        }
                    }
                }
                // Whatever follows the head, as requests pipelined after a refusal.
                let after = head::pipelined_after(&input[h.len..], head::body_framing(&h).ok());
                assert!(after.len() <= head::MAX_PIPELINED);
            }
            Ok(None) => partial += 1,
            Err(r) => {
                refused += 1;
                assert!(matches!(r.status, 400 | 431));
            }
        }
        // The same bytes as a chunked body and as a response head.
        let mut f = ChunkedFramer::new();
        let mut pos = 0;
        while pos < input.len() {
            let step = 1 + rng.below(input.len() - pos);
            match f.feed(&input[pos..pos + step]) {
                Ok(n) => {
                    assert!(n <= step);
                    if f.is_done() {
                        break;
                    }
                    assert_eq!(n, step, "framer stopped early without finishing");
                    pos += step;
                }
                Err(_) => break,
            }
        }
        let mut resp = input.clone();
        if i % 2 == 0 {
            resp.splice(0..0, b"HTTP/1.1 200 OK\r\n".iter().copied());
        }
        if let Ok(Some(r)) = head::parse_response_head(&resp, i % 3 == 0) {
            assert!(r.len <= resp.len());
            let text = String::from_utf8_lossy(&r.rewritten).to_ascii_lowercase();
            assert!(text.ends_with("\r\n\r\n"));
            assert!(!text.contains("\r\nkeep-alive:") && !text.contains("\r\nproxy-"));
        }
        // Host normalization on its own, on arbitrary text.
        if let Ok(s) = std::str::from_utf8(&input[..input.len().min(64)])
            && let Ok(h) = normalize_host(s)
        {
            assert_eq!(normalize_host(&h.to_string()), Ok(h));
        }
    }
    // Written to the process's stderr, past the test harness's capture, so the count
    // shows in every CI log.
    let _ = writeln!(
        std::io::stderr(),
        "fuzz: {ITERATIONS} inputs, {planned} planned and checked, {refused} refused, {partial} incomplete"
    );
    assert_eq!(planned + refused + partial, ITERATIONS);
    // The corpus must reach deep: plenty of inputs pass validation and get checked.
    assert!(
        planned > ITERATIONS / 20,
        "only {planned} inputs reached the policy"
    );
}
