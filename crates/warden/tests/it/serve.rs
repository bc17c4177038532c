//! `warden serve`, attacked through real HTTP on loopback: every refused token, tenants
//! probing each other on every endpoint, roles, odd names in paths, a 100 MiB body, slow
//! clients, TLS. Test keys are made here (Ed25519, P-256) or fixed test PEMs (RSA,
//! `keys/`).

use super::audit::{FILE, pending};
use super::egress::Env;
use super::run;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ISSUER: &str = "https://login.test";
const AUDIENCE: &str = "warden";
const RSA_PEM: &[u8] = include_bytes!("keys/rsa-test.pem");
const RSA_PUBLIC_PEM: &[u8] = include_bytes!("keys/rsa-test.pub.pem");
/// Modulus and exponent of `keys/rsa-test.pem`, base64url.
const RSA_N: &str = "6J16CeT3Ylii3qJ3vRiWp7i05i8v6-EpQxx512NNPceizb5Ey80xldAsQtPnuMmBj6FYCesidSylBD4uE5cDRMys1cE9upX1pxEGJOAai_fzz1JOFesA-1EnOrA0gdmpmq9mm47nUuLT3Ms-XNotSr_--BI6ttf4TctfVT4leDhPmPQauyuVkB3h3VUuN0EqLAYWW20Jc66bZFwzN_vTzqXmcjCVaK-qSPHpGqtu5tO4Qa__ddDpSv_vXUBQeCDIYR0GGkYY7LhAaqvZDhNEXiPAytxJZ88_ccWRD8PJBGI4hXON9I0-ccSxHLp6bPc7DMaQ04KgDHu-Sd4hQ3dcLQ";
const HS_SECRET: &[u8] = b"hs256-test-secret-of-at-least-32-bytes!!";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The signing side of the test: one key of each type the server accepts.
struct Keys {
    ed: rcgen::KeyPair,
    ec: rcgen::KeyPair,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            ed: rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            ec: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        }
    }

    fn jwks(&self) -> String {
        let ec = self.ec.public_key_raw();
        json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(self.ed.public_key_raw())},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(&ec[1..33]), "y": b64(&ec[33..65])},
            {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": RSA_N, "e": "AQAB"},
        ]})
        .to_string()
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let (alg, key) = match kid {
            "ed" => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(&self.ed.serialize_der()),
            ),
            "ec" => (
                Algorithm::ES256,
                EncodingKey::from_ec_der(&self.ec.serialize_der()),
            ),
            _ => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(RSA_PEM).unwrap(),
            ),
        };
        let mut h = Header::new(alg);
        h.kid = Some(kid.to_string());
        encode(&h, claims, &key).unwrap()
    }
}

fn claims(sub: &str, tenant: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "tenant": tenant, "exp": now() + 600, "iat": now()})
}

/// A token signed by hand: `header` and `claims` as given, HMAC-SHA256 with `secret`.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret);
    let mut h = Header::new(Algorithm::HS256);
    h.kid = header["kid"].as_str().map(str::to_string);
    encode(&h, claims, &key).unwrap()
}

/// A running `warden serve`, stopped when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    env: Env,
    keys: Keys,
    kek: PathBuf,
}

impl Setup {
    /// The two tenants of `audit::FILE`, each with a pending approval and a secret, and
    /// `auth` naming `extra_auth` besides the JWKS.
    fn new(extra_auth: &str) -> Setup {
        let env = Env::new();
        let keys = Keys::new();
        let dir = env.dir.path();
        std::fs::write(dir.join("jwks.json"), keys.jwks()).unwrap();
        std::fs::write(
            env.file(),
            format!(
                "{FILE}\nauth {{\n    issuer \"{ISSUER}\"\n    audience \"{AUDIENCE}\"\n    jwks \"./jwks.json\"\n{extra_auth}}}\n"
            ),
        )
        .unwrap();
        let state = dir.join("state");
        pending(&state, "acme-agent", "aaaaaaaaaaa1", "pypi.org");
        pending(&state, "globex-agent", "bbbbbbbbbbb1", "crates.io");
        let kek = dir.join("kek");
        std::fs::write(&kek, [8u8; 32]).unwrap();
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Setup { env, keys, kek };
        for (tenant, name) in [("acme", "ACME_TOKEN"), ("globex", "GLOBEX_TOKEN")] {
            let mut c = s.env.cmd();
            c.env("WARDEN_KEK_FILE", &s.kek)
                .args(["secret", "set", tenant, name])
                .stdin(Stdio::piped())
                .stderr(Stdio::null());
            let mut child = c.spawn().unwrap();
            child.stdin.take().unwrap().write_all(b"value").unwrap();
            assert!(child.wait().unwrap().success());
        }
        s
    }

    fn serve(&self) -> Served {
        let mut child = self
            .env
            .cmd()
            .env("WARDEN_KEK_FILE", &self.kek)
            .args(["serve", "--listen", "127.0.0.1:0", "--header-timeout", "2s"])
            .arg(self.env.file())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("warden serve ended before serving");
            }
            if let Some(a) = line.trim().strip_prefix("serving the control API on ") {
                break a.rsplit("//").next().unwrap().parse().unwrap();
            }
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Served { child, addr }
    }

    fn token(&self, sub: &str, tenant: &str) -> String {
        self.keys.sign("ed", &claims(sub, tenant))
    }

    fn state(&self) -> PathBuf {
        self.env.dir.path().join("state")
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection, the path written as given (no normalization).
fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(t) = token {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        req += &format!("Content-Length: {}\r\n", body.len());
    }
    req += "\r\n";
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    read_response(&mut s)
}

fn read_response(s: &mut impl Read) -> Resp {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Resp {
        status,
        head,
        body: all[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str, token: &str) -> Resp {
    call(addr, "GET", path, Some(token), b"")
}

fn post(addr: SocketAddr, path: &str, token: &str) -> Resp {
    call(addr, "POST", path, Some(token), b"")
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn audit(env: &Env, args: &[&str]) -> Vec<Value> {
    let (code, out, err) = run(env.cmd().args(["audit", "--json"]).args(args));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn every_refused_token_is_401_with_its_code_and_audited() {
    let s = Setup::new("");
    let srv = s.serve();
    let path = "/v1/tenants/acme/sandboxes";
    // Health needs nothing.
    let h = call(srv.addr, "GET", "/health", None, b"");
    assert_eq!((h.status, h.text().as_str()), (200, "{\"status\":\"ok\"}"));
    // Each key type works.
    for kid in ["ed", "ec", "rsa"] {
        let r = get(
            srv.addr,
            path,
            &s.keys.sign(kid, &claims("victor@acme.example", "acme")),
        );
        assert_eq!(r.status, 200, "{kid}: {}", r.text());
        assert_eq!(r.json(), json!([]));
    }
    let ok = claims("alice@acme.example", "acme");
    let with = |k: &str, v: Value| {
        let mut c = ok.clone();
        c[k] = v;
        c
    };
    let mut no_tenant = ok.clone();
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let header = |h: Value| b64(h.to_string().as_bytes());
    let none = format!(
        "{}.{}.",
        header(json!({"alg": "none"})),
        b64(ok.to_string().as_bytes())
    );
    let none_kid = format!(
        "{}.{}.",
        header(json!({"alg": "none", "kid": "rsa"})),
        b64(ok.to_string().as_bytes())
    );
    // RS256 → HS256: HMAC with the RSA public key as the secret, as a confused verifier
    // would check it.
    let confused = hs256(&json!({"kid": "rsa"}), &ok, RSA_PUBLIC_PEM);
    let confused_no_kid = hs256(&json!({}), &ok, RSA_PUBLIC_PEM);
    // A forged signature: a valid token's signature replaced by another Ed25519 key's.
    let other = Keys::new();
    let forged = {
        let real = s.keys.sign("ed", &ok);
        let fake = other.sign("ed", &ok);
        let (head, _) = real.rsplit_once('.').unwrap();
        format!("{head}.{}", fake.rsplit_once('.').unwrap().1)
    };
    let tampered = {
        // The signed claims of a viewer, with the payload swapped for an admin's.
        let real = s.keys.sign("ed", &claims("victor@acme.example", "acme"));
        let parts: Vec<&str> = real.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(ok.to_string().as_bytes()),
            parts[2]
        )
    };
    let cases: Vec<(&str, Option<String>, &str, &str)> = vec![
        (
            "no token",
            None,
            "missing_token",
            "the request carries no `Authorization: Bearer` token",
        ),
        (
            "alg none",
            Some(none),
            "algorithm_not_allowed",
            "the token's algorithm `none` is not accepted for these keys",
        ),
        (
            "alg none, kid",
            Some(none_kid),
            "algorithm_not_allowed",
            "the token's algorithm `none` is not accepted for these keys",
        ),
        (
            "RS256 to HS256",
            Some(confused),
            "algorithm_not_allowed",
            "the token's algorithm `HS256` is not accepted for these keys",
        ),
        (
            "RS256 to HS256, no kid",
            Some(confused_no_kid),
            "algorithm_not_allowed",
            "the token's algorithm `HS256` is not accepted for these keys",
        ),
        (
            "forged",
            Some(forged),
            "bad_signature",
            "the token's signature does not verify",
        ),
        (
            "tampered",
            Some(tampered),
            "bad_signature",
            "the token's signature does not verify",
        ),
        (
            "expired",
            Some(s.keys.sign("ec", &with("exp", (now() - 3600).into()))),
            "token_expired",
            "the token has expired",
        ),
        (
            "nbf",
            Some(s.keys.sign("rsa", &with("nbf", (now() + 3600).into()))),
            "token_not_yet_valid",
            "the token is not valid yet (`nbf`)",
        ),
        (
            "issuer",
            Some(s.keys.sign("ed", &with("iss", "https://evil.test".into()))),
            "wrong_issuer",
            "the token's issuer is not the one this server accepts",
        ),
        (
            "audience",
            Some(s.keys.sign("ed", &with("aud", "other".into()))),
            "wrong_audience",
            "the token's audience is not this server",
        ),
        (
            "no tenant",
            Some(s.keys.sign("ed", &no_tenant)),
            "no_tenant",
            "the token names no tenant (`tenant` claim)",
        ),
        (
            "unknown kid",
            Some({
                let mut h = Header::new(Algorithm::EdDSA);
                h.kid = Some("gone".into());
                encode(
                    &h,
                    &ok,
                    &EncodingKey::from_ed_der(&s.keys.ed.serialize_der()),
                )
                .unwrap()
            }),
            "unknown_key",
            "no key with the token's `kid`",
        ),
        (
            "garbage",
            Some("not.a.jwt".into()),
            "malformed_token",
            "the token is not a JWT",
        ),
    ];
    for (what, token, code, message) in &cases {
        let r = call(srv.addr, "GET", path, token.as_deref(), b"");
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(
            r.text(),
            format!(
                "{{\"error\":{{\"code\":\"{code}\",\"message\":\"{}\"}}}}",
                message.replace('"', "\\\"")
            ),
            "{what}"
        );
        assert!(
            r.head.contains("www-authenticate: Bearer"),
            "{what}: {}",
            r.head
        );
    }
    // Every endpoint, not only one: a POST without a token changes nothing either.
    let before = std::fs::read(s.env.file()).unwrap();
    for (m, p) in [
        ("POST", "/v1/tenants/acme/approvals/aaaaaaaaaaa1/approve"),
        ("POST", "/v1/tenants/acme/orders/deploy/grant"),
        ("DELETE", "/v1/tenants/acme/secrets/ACME_TOKEN"),
        ("GET", "/metrics"),
        ("GET", "/no/such/path"),
    ] {
        assert_eq!(
            call(srv.addr, m, p, None, b"").code(),
            "missing_token",
            "{m} {p}"
        );
    }
    assert_eq!(std::fs::read(s.env.file()).unwrap(), before);
    // Every refusal is in the audit store, in order, with the peer and the path.
    let refused = audit(&s.env, &["--kind", "login-refused"]);
    let codes: Vec<&str> = refused
        .iter()
        .map(|e| e["detail"]["code"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = cases.iter().map(|c| c.2).collect();
    expected.extend(["missing_token"; 5]);
    assert_eq!(codes, expected);
    assert_eq!(refused[0]["actor"], "anonymous");
    assert_eq!(refused[0]["tenant"], Value::Null);
    assert_eq!(refused[0]["detail"]["path"], path);
    assert_eq!(refused[0]["detail"]["method"], "GET");
    assert!(
        refused[0]["detail"]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[test]
fn an_hs256_key_is_the_only_way_to_hs256_and_never_an_rsa_key() {
    let s = Setup::new("    hs256-key-file \"./hs.key\"\n");
    let hs = s.env.dir.path().join("hs.key");
    std::fs::write(&hs, HS_SECRET).unwrap();
    std::fs::set_permissions(&hs, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A key file others can read is refused at start.
    let (code, _, err) = run(s
        .env
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg(s.env.file()));
    assert_eq!(code, 1);
    assert!(err.contains("has mode 644"), "{err}");
    std::fs::set_permissions(&hs, std::fs::Permissions::from_mode(0o600)).unwrap();
    let srv = s.serve();
    let ok = claims("alice@acme.example", "acme");
    let path = "/v1/tenants/acme/sandboxes";
    assert_eq!(
        get(srv.addr, path, &hs256(&json!({}), &ok, HS_SECRET)).status,
        200
    );
    // The RSA public key as an HMAC secret: with the RSA key's kid the algorithm does not
    // fit the key; without it, the HS256 key checks it and the signature fails.
    let r = get(
        srv.addr,
        path,
        &hs256(&json!({"kid": "rsa"}), &ok, RSA_PUBLIC_PEM),
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (401, "algorithm_not_allowed")
    );
    let r = get(srv.addr, path, &hs256(&json!({}), &ok, RSA_PUBLIC_PEM));
    assert_eq!((r.status, r.code().as_str()), (401, "bad_signature"));
}

#[test]
fn a_tenant_sees_and_changes_nothing_of_another() {
    let s = Setup::new("");
    let srv = s.serve();
    let acme = s.token("alice@acme.example", "acme");
    let state = s.state();
    let before_file = std::fs::read(s.env.file()).unwrap();
    let before_state: Vec<(PathBuf, Vec<u8>)> = snapshot(&state)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(state.join("audit")))
        .collect();
    // Another tenant in the path: answered exactly as a tenant that does not exist.
    let requests: [(&str, &str, &[u8]); 11] = [
        ("GET", "/v1/tenants/{t}/sandboxes", b""),
        ("GET", "/v1/tenants/{t}/approvals", b""),
        (
            "POST",
            "/v1/tenants/{t}/approvals/bbbbbbbbbbb1/approve",
            b"",
        ),
        ("POST", "/v1/tenants/{t}/approvals/bbbbbbbbbbb1/deny", b""),
        ("GET", "/v1/tenants/{t}/orders", b""),
        ("POST", "/v1/tenants/{t}/orders/ship/grant", b""),
        ("POST", "/v1/tenants/{t}/orders/ship/revoke", b""),
        ("GET", "/v1/tenants/{t}/audit", b""),
        ("GET", "/v1/tenants/{t}/secrets", b""),
        ("PUT", "/v1/tenants/{t}/secrets/GLOBEX_TOKEN", b"stolen"),
        ("DELETE", "/v1/tenants/{t}/secrets/GLOBEX_TOKEN", b""),
    ];
    let not_found = "{\"error\":{\"code\":\"not_found\",\"message\":\"not found\"}}";
    for (m, p, body) in requests {
        let theirs = call(srv.addr, m, &p.replace("{t}", "globex"), Some(&acme), body);
        let nobody = call(srv.addr, m, &p.replace("{t}", "nosuch"), Some(&acme), body);
        assert_eq!(
            (theirs.status, theirs.text().as_str()),
            (404, not_found),
            "{m} {p}"
        );
        assert_eq!(
            (nobody.status, nobody.text()),
            (404, theirs.text()),
            "{m} {p}"
        );
    }
    // Their objects under our own tenant: answered as objects that do not exist.
    for (m, theirs, nothing) in [
        (
            "POST",
            "/v1/tenants/acme/approvals/bbbbbbbbbbb1/approve",
            "/v1/tenants/acme/approvals/ccccccccccc9/approve",
        ),
        (
            "POST",
            "/v1/tenants/acme/approvals/bbbbbbbbbbb1/deny",
            "/v1/tenants/acme/approvals/ccccccccccc9/deny",
        ),
        (
            "POST",
            "/v1/tenants/acme/orders/ship/grant",
            "/v1/tenants/acme/orders/nosuch/grant",
        ),
        (
            "POST",
            "/v1/tenants/acme/orders/ship/revoke",
            "/v1/tenants/acme/orders/nosuch/revoke",
        ),
        (
            "DELETE",
            "/v1/tenants/acme/secrets/GLOBEX_TOKEN",
            "/v1/tenants/acme/secrets/NOSUCH",
        ),
    ] {
        let a = call(srv.addr, m, theirs, Some(&acme), b"");
        let b = call(srv.addr, m, nothing, Some(&acme), b"");
        assert_eq!((a.status, a.text().as_str()), (404, not_found), "{theirs}");
        assert_eq!((b.status, b.text()), (404, a.text()), "{nothing}");
    }
    // Lists hold only our own.
    let approvals = get(srv.addr, "/v1/tenants/acme/approvals", &acme).json();
    let ids: Vec<&str> = approvals
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["aaaaaaaaaaa1"]);
    let orders = get(srv.addr, "/v1/tenants/acme/orders", &acme).json();
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1);
    assert_eq!(orders["orders"][0]["name"], "deploy");
    let secrets = get(srv.addr, "/v1/tenants/acme/secrets", &acme).json();
    assert_eq!(secrets.as_array().unwrap().len(), 1);
    assert_eq!(secrets[0]["name"], "ACME_TOKEN");
    let audit_theirs = get(
        srv.addr,
        "/v1/tenants/acme/audit?sandbox=globex-agent",
        &acme,
    );
    assert_eq!((audit_theirs.status, audit_theirs.json()), (200, json!([])));
    let metrics = get(srv.addr, "/metrics", &acme).text();
    assert!(!metrics.contains("globex"), "{metrics}");
    // Nothing changed: the file, the approvals, the secrets.
    assert_eq!(std::fs::read(s.env.file()).unwrap(), before_file);
    let after_state: Vec<(PathBuf, Vec<u8>)> = snapshot(&state)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(state.join("audit")))
        .collect();
    assert_eq!(after_state, before_state);
    assert!(
        audit(
            &s.env,
            &["--tenant", "globex", "--kind", "approval-approved"]
        )
        .is_empty()
    );

    // Our own approval, through the same edit as the CLI, recorded with the subject.
    let r = post(
        srv.addr,
        "/v1/tenants/acme/approvals/aaaaaaaaaaa1/approve",
        &acme,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sandbox"], "acme-agent");
    assert_eq!(r.json()["file"], Value::Null, "the server's path leaked");
    let file = std::fs::read_to_string(s.env.file()).unwrap();
    assert!(
        file.contains("allow \"pypi.org\" port=443 reason=\"approved "),
        "{file}"
    );
    let events = audit(&s.env, &["--kind", "approval-approved"]);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], "alice@acme.example");
    assert_eq!(events[0]["tenant"], "acme");
    // Approved once: gone from the list, and a second approval is not found.
    let again = post(
        srv.addr,
        "/v1/tenants/acme/approvals/aaaaaaaaaaa1/approve",
        &acme,
    );
    assert_eq!(again.status, 404);
    // The tenant's audit through the API holds it; globex's token sees none of it.
    let mine = get(
        srv.addr,
        "/v1/tenants/acme/audit?kind=approval-approved",
        &acme,
    )
    .json();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let globex = s.token("gina@globex.example", "globex");
    let theirs = get(srv.addr, "/v1/tenants/globex/audit", &globex).json();
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "globex"),
        "{theirs}"
    );
}

#[test]
fn roles_decide_who_reads_approves_and_grants() {
    let s = Setup::new("");
    pending(&s.state(), "acme-agent", "aaaaaaaaaaa2", "evil.example");
    let srv = s.serve();
    let viewer = s.token("victor@acme.example", "acme");
    let operator = s.token("olga@acme.example", "acme");
    let admin = s.token("alice@acme.example", "acme");
    let stranger = s.token("mallory@acme.example", "acme");
    let before = std::fs::read(s.env.file()).unwrap();
    let approve = "/v1/tenants/acme/approvals/aaaaaaaaaaa1/approve";
    let forbidden = |r: &Resp, need: &str| {
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(
            r.text(),
            format!(
                "{{\"error\":{{\"code\":\"forbidden\",\"message\":\"this needs the {need} role\"}}}}"
            )
        );
    };
    assert_eq!(
        get(srv.addr, "/v1/tenants/acme/approvals", &viewer).status,
        200
    );
    forbidden(&post(srv.addr, approve, &viewer), "operator");
    forbidden(
        &post(
            srv.addr,
            "/v1/tenants/acme/approvals/aaaaaaaaaaa2/deny",
            &viewer,
        ),
        "operator",
    );
    forbidden(
        &post(srv.addr, "/v1/tenants/acme/orders/deploy/grant", &operator),
        "admin",
    );
    forbidden(
        &call(
            srv.addr,
            "PUT",
            "/v1/tenants/acme/secrets/X",
            Some(&operator),
            b"v",
        ),
        "admin",
    );
    forbidden(
        &call(
            srv.addr,
            "DELETE",
            "/v1/tenants/acme/secrets/ACME_TOKEN",
            Some(&viewer),
            b"",
        ),
        "admin",
    );
    let r = get(srv.addr, "/v1/tenants/acme/sandboxes", &stranger);
    assert_eq!((r.status, r.code().as_str()), (403, "no_role"));
    assert_eq!(get(srv.addr, "/metrics", &stranger).status, 403);
    // A valid token of a tenant the file does not declare has no role anywhere.
    let r = get(
        srv.addr,
        "/v1/tenants/nosuch/sandboxes",
        &s.token("x", "nosuch"),
    );
    assert_eq!((r.status, r.code().as_str()), (403, "no_role"));
    assert_eq!(std::fs::read(s.env.file()).unwrap(), before);
    assert!(audit(&s.env, &["--kind", "approval-approved"]).is_empty());

    // The operator approves and denies; the admin grants and manages secrets.
    assert_eq!(post(srv.addr, approve, &operator).status, 200);
    let d = post(
        srv.addr,
        "/v1/tenants/acme/approvals/aaaaaaaaaaa2/deny",
        &operator,
    );
    assert_eq!((d.status, d.json()["denied"].clone()), (200, json!(true)));
    let g = post(srv.addr, "/v1/tenants/acme/orders/deploy/grant", &admin);
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(g.json()["autonomy"], "auto");
    assert!(
        std::fs::read_to_string(s.env.file())
            .unwrap()
            .contains("order \"deploy\" bounds=\"Staging first.\" autonomy=\"auto\"")
    );
    let p = call(
        srv.addr,
        "PUT",
        "/v1/tenants/acme/secrets/NEW",
        Some(&admin),
        b"s3cr3t-new-value",
    );
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(
        p.json(),
        json!({"name": "NEW", "key_version": 1, "replaced": false})
    );
    let del = call(
        srv.addr,
        "DELETE",
        "/v1/tenants/acme/secrets/NEW",
        Some(&admin),
        b"",
    );
    assert_eq!(del.json(), json!({"name": "NEW", "removed": true}));
    let actors: Vec<(String, String)> = audit(&s.env, &["--tenant", "acme"])
        .iter()
        .map(|e| {
            (
                e["detail"]["kind"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(_, a)| a.ends_with("@acme.example"))
        .collect();
    assert_eq!(
        actors,
        [
            ("approval-approved".into(), "olga@acme.example".into()),
            ("approval-denied".into(), "olga@acme.example".into()),
            ("order-granted".into(), "alice@acme.example".into()),
            ("secret-set".into(), "alice@acme.example".into()),
            ("secret-removed".into(), "alice@acme.example".into()),
        ]
    );
    // The value never reached a file in the clear.
    assert!(
        snapshot(&s.state())
            .iter()
            .all(|(_, b)| !b.windows(16).any(|w| w == b"s3cr3t-new-value"))
    );
}

#[test]
fn traversal_and_odd_bytes_in_every_name_change_nothing() {
    let s = Setup::new("");
    let srv = s.serve();
    let admin = s.token("alice@acme.example", "acme");
    let state = s.state();
    let before_file = std::fs::read(s.env.file()).unwrap();
    let before = snapshot(&state);
    let bad_name = |r: &Resp, what: &str| {
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.code(), "bad_name", "{what}");
    };
    for t in [
        "..",
        "..%2Fglobex",
        "%2e%2e",
        "ACME",
        "acme%00",
        "ac%20me",
        "%C3%A9",
        "a%ff",
        "-acme",
    ] {
        for (m, p) in [
            ("GET", format!("/v1/tenants/{t}/sandboxes")),
            (
                "POST",
                format!("/v1/tenants/{t}/approvals/aaaaaaaaaaa1/approve"),
            ),
            ("POST", format!("/v1/tenants/{t}/orders/deploy/grant")),
            ("PUT", format!("/v1/tenants/{t}/secrets/X")),
        ] {
            bad_name(&call(srv.addr, m, &p, Some(&admin), b"v"), &p);
        }
    }
    for id in [
        "..",
        "..%2F..%2Fapply%2Fstate",
        "AAAAAAAAAAA1",
        "aaaaaaaaaaa1%00",
        "aaaaaaaaaaa",
        "aaaaaaaaaaa1x",
        "%2e%2e",
    ] {
        for verb in ["approve", "deny"] {
            let p = format!("/v1/tenants/acme/approvals/{id}/{verb}");
            bad_name(&post(srv.addr, &p, &admin), &p);
        }
    }
    for o in [
        "..",
        "..%2F..%2Fx",
        "Deploy",
        "deploy%0a",
        "de%2Fploy",
        "%00",
    ] {
        let p = format!("/v1/tenants/acme/orders/{o}/grant");
        bad_name(&post(srv.addr, &p, &admin), &p);
    }
    for n in [
        "..",
        "..%2F..%2Fkeyring",
        "%2e%2e%2fkeyring",
        "a.secret",
        "-x",
        "a%20b",
        "a%ff",
    ] {
        let p = format!("/v1/tenants/acme/secrets/{n}");
        bad_name(&call(srv.addr, "PUT", &p, Some(&admin), b"v"), &p);
        bad_name(&call(srv.addr, "DELETE", &p, Some(&admin), b""), &p);
    }
    let r = get(srv.addr, "/v1/tenants/acme/audit?sandbox=..%2Fx", &admin);
    bad_name(&r, "audit sandbox");
    // Paths the routes do not know, and bytes HTTP does not allow in a path.
    for p in [
        "/v1/tenants/acme/../globex/sandboxes",
        "/v1/tenants/acme/sandboxes/..",
        "/v1/tenants//sandboxes",
        "/v1/tenants/acme/secrets/a/b",
        "/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let r = get(srv.addr, p, &admin);
        assert!(matches!(r.status, 400 | 404), "{p}: {}", r.status);
    }
    for raw in [
        "/v1/tenants/ac\x01me/sandboxes",
        "/v1/tenants/acme\x7f/sandboxes",
        "/v1/tenants/a\tb/sandboxes",
    ] {
        let r = call(srv.addr, "GET", raw, Some(&admin), b"");
        assert!(matches!(r.status, 400 | 404), "{raw:?}: {}", r.status);
    }
    assert_eq!(std::fs::read(s.env.file()).unwrap(), before_file);
    assert_eq!(snapshot(&state), before);
    // The server still answers.
    assert_eq!(
        get(srv.addr, "/v1/tenants/acme/approvals", &admin).status,
        200
    );
}

#[test]
fn a_100_mib_body_is_refused_without_being_read() {
    let s = Setup::new("");
    let srv = s.serve();
    let admin = s.token("alice@acme.example", "acme");
    // Announced: 413 before a byte of the body is sent.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "PUT /v1/tenants/acme/secrets/BIG HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    )
    .unwrap();
    let r = read_response(&mut c);
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    assert_eq!(
        r.text(),
        "{\"error\":{\"code\":\"body_too_large\",\"message\":\"request bodies are at most 65536 bytes\"}}"
    );
    // Chunked, so the size is not announced: the server stops reading past the limit
    // and the sender cannot push 100 MiB into it.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "PUT /v1/tenants/acme/secrets/BIG HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let mut writer = c.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let mut sent = 0usize;
        while sent < 100 << 20 {
            let head = format!("{:x}\r\n", chunk.len());
            if writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(&chunk))
                .and_then(|()| writer.write_all(b"\r\n"))
                .is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let r = read_response(&mut c);
    drop(c);
    let sent = sender.join().unwrap();
    assert_eq!((r.status, r.code().as_str()), (413, "body_too_large"));
    assert!(sent < 100 << 20, "all of the 100 MiB went in");
    // Nothing was stored; a body within the limit is taken.
    assert!(!secret_exists(&s, "BIG"));
    let fits = vec![b'y'; 60_000];
    let r = call(
        srv.addr,
        "PUT",
        "/v1/tenants/acme/secrets/FITS",
        Some(&admin),
        &fits,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Unauthenticated, the size alone is refused first.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST /v1/tenants/acme/approvals/aaaaaaaaaaa1/approve HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        100 << 20
    )
    .unwrap();
    assert_eq!(read_response(&mut c).status, 413);
}

fn secret_exists(s: &Setup, name: &str) -> bool {
    warden_secrets_dir(s)
        .join(format!("{name}.secret"))
        .exists()
}

fn warden_secrets_dir(s: &Setup) -> PathBuf {
    s.state().join("tenants/acme/secrets")
}

#[test]
fn slow_clients_are_cut_off_while_others_are_served() {
    let s = Setup::new("");
    let srv = s.serve();
    let viewer = s.token("victor@acme.example", "acme");
    // Twenty clients sending a request head one byte a second.
    let addr = srv.addr;
    let slow: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let start = Instant::now();
                for b in
                    b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
                {
                    if c.write_all(&[*b]).is_err() {
                        return (start.elapsed(), false);
                    }
                    let mut buf = [0u8; 64];
                    match c.read(&mut buf) {
                        // Closed (or answered) by the server.
                        Ok(0) | Ok(_) => return (start.elapsed(), false),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return (start.elapsed(), false),
                    }
                    std::thread::sleep(Duration::from_millis(900));
                }
                (start.elapsed(), true)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile, others get their answers at once.
    for _ in 0..10 {
        let t = Instant::now();
        let r = get(addr, "/v1/tenants/acme/approvals", &viewer);
        assert_eq!(r.status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // A connection kept open after its answer is cut off the same way.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: idle\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(1500) && t.elapsed() < Duration::from_secs(5),
        "idle connection closed after {:?}",
        t.elapsed()
    );
    for h in slow {
        let (took, finished) = h.join().unwrap();
        assert!(!finished, "a slow client sent its whole head");
        // The head timeout is 2 s; the client notices within a second of it.
        assert!(took < Duration::from_secs(5), "held the server {took:?}");
        assert!(
            took >= Duration::from_millis(1500),
            "cut off early: {took:?}"
        );
    }
}

/// Destroys what the test applied, passed or not.
struct Applied<'a>(&'a Setup);

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        let _ = run(self
            .0
            .env
            .cmd()
            .args(["destroy", "--yes"])
            .arg(self.0.env.file()));
    }
}

/// Root: applies both tenants' sandboxes.
#[test]
fn sandboxes_and_metrics_are_the_tenants_own() {
    let s = Setup::new("");
    let (code, _, err) = run(s.env.cmd().args(["apply", "--yes"]).arg(s.env.file()));
    let _applied = Applied(&s);
    assert_eq!(code, 0, "{err}");
    let srv = s.serve();
    let viewer = s.token("victor@acme.example", "acme");
    let r = get(srv.addr, "/v1/tenants/acme/sandboxes", &viewer);
    assert_eq!(r.status, 200);
    let rows = r.json();
    let names: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme-agent"]);
    assert_eq!(rows[0]["tenant"], "acme");
    // The same row `warden ps --json` shows.
    let (_, ps, _) = run(s.env.cmd().args(["--json", "ps"]));
    let ps: Value = serde_json::from_str(&ps).unwrap();
    let theirs = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "acme-agent")
        .unwrap();
    assert_eq!(theirs["image_digest"], rows[0]["image_digest"]);
    assert_eq!(theirs["file"], rows[0]["file"]);
    let r = get(srv.addr, "/metrics", &viewer);
    assert_eq!(r.status, 200);
    assert!(
        r.head.contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    let text = r.text();
    assert!(
        text.contains(
            "# TYPE warden_approvals_pending gauge\nwarden_approvals_pending{tenant=\"acme\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("warden_api_requests_total{tenant=\"acme\",code=\"200\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE warden_sandboxes gauge\nwarden_sandboxes{tenant=\"acme\",state=\""),
        "{text}"
    );
    assert!(!text.contains("globex"), "{text}");
}

#[test]
fn tls_is_served_when_the_file_names_a_certificate() {
    let s = Setup::new("    tls cert=\"./cert.pem\" key=\"./key.pem\"\n");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = s.env.dir.path();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    let srv = s.serve();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let tcp = TcpStream::connect(srv.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let token = s.token("victor@acme.example", "acme");
    write!(
        tls,
        "GET /v1/tenants/acme/approvals HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut tls);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["id"], "aaaaaaaaaaa1");
    // Plain HTTP to the TLS port gets no answer.
    let mut plain = TcpStream::connect(srv.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");
}

#[test]
fn serve_needs_an_auth_node() {
    let env = Env::new();
    std::fs::write(env.file(), FILE).unwrap();
    let (code, _, err) = run(env.cmd().args(["serve"]).arg(env.file()));
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "error: `{}` has no `auth` node: the control API serves only requests whose tokens it can check\n",
            env.file().display()
        )
    );
}

/// The server reuses the file it loaded only while the file is byte for byte the same:
/// a role removed from the file is gone at the next request, and back when restored.
#[test]
fn an_edit_of_the_roles_takes_effect_at_the_next_request() {
    let s = Setup::new("");
    let srv = s.serve();
    let viewer = s.token("victor@acme.example", "acme");
    let path = "/v1/tenants/acme/approvals";
    assert_eq!(get(srv.addr, path, &viewer).status, 200);
    assert_eq!(get(srv.addr, path, &viewer).status, 200);
    let before = std::fs::read_to_string(s.env.file()).unwrap();
    let role = "    role \"viewer\" subject=\"victor@acme.example\"\n";
    assert!(before.contains(role));
    std::fs::write(s.env.file(), before.replace(role, "")).unwrap();
    let r = get(srv.addr, path, &viewer);
    assert_eq!((r.status, r.code().as_str()), (403, "no_role"));
    std::fs::write(s.env.file(), &before).unwrap();
    assert_eq!(get(srv.addr, path, &viewer).status, 200);
}
