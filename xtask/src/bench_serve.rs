//! Benchmark: the control plane.
//!
//! - `warden serve` answering `GET /v1/tenants/acme/approvals` (token checked, role
//!   looked up in the file, pending approvals read) to 200 concurrent keep-alive
//!   clients: p50, p99 and requests/s (target p99 < 5 ms), against `GET /health` (no
//!   token, no file: the server's floor) measured the same way in the same run.
//! - Audit writes: events/s through `warden_audit::Store::append` into SQLite (target
//!   20,000/s), one event per append (each acknowledged with its own fsync) and 100 per
//!   append, against plain `rusqlite` inserts of the same rows with the same WAL and
//!   `synchronous=FULL` settings (the spool's price); into PostgreSQL the same way when
//!   a server is at hand (`WARDEN_TEST_POSTGRES`, or one started from Debian's
//!   `postgresql` package), against plain `INSERT`s.

use crate::bench_lang::release_warden;
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: usize = 200;
/// Requests each client sends, after one warm-up request.
const REQUESTS: usize = 50;
const PENDING: usize = 20;
const KEY: &[u8] = b"bench-hs256-secret-of-at-least-32-bytes!";

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("warden-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = audit(&dir).and_then(|()| serve(&release_warden()?, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    result
}

// ---- warden serve -------------------------------------------------------------------

const FILE: &str = "image \"bb\" {\n    from-host \"/bin/sh\"\n}\n\nsandbox \"acme-agent\" {\n    image \"bb\"\n    command \"/bin/sh\"\n    egress {\n        allow \"deploy.example\"\n    }\n}\n\ntenant \"acme\" {\n    sandboxes \"acme-agent\"\n    users uid=300000 count=65536\n    role \"operator\" subject=\"olga@acme.example\"\n}\n\nauth {\n    issuer \"https://login.bench\"\n    audience \"warden\"\n    hs256-key-file \"./hs256.key\"\n}\n";

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join("warden.kdl"), FILE)?;
    let key = dir.join("hs256.key");
    std::fs::write(&key, KEY)?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    pending(&dir.join("state"), PENDING)?;
    let mut child = Command::new(bin)
        .env("WARDEN_STATE_DIR", dir.join("state"))
        .env("WARDEN_RUN_DIR", dir.join("run"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg(dir.join("warden.kdl"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start warden serve")?;
    let mut err = BufReader::new(child.stderr.take().context("stderr")?);
    let served = Served(child);
    let mut line = String::new();
    let addr: SocketAddr = loop {
        line.clear();
        if err.read_line(&mut line)? == 0 {
            bail!("warden serve ended before serving");
        }
        if let Some(a) = line.trim().strip_prefix("serving the control API on ") {
            break a.rsplit("//").next().unwrap_or_default().parse()?;
        }
    };
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let token = hs256_token();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    const APPROVALS: &str = "/v1/tenants/acme/approvals";
    println!(
        "warden serve, {CLIENTS} concurrent keep-alive clients, {REQUESTS} requests each (target: approvals p99 < 5 ms):"
    );
    for (label, pace) in [
        ("back to back", None),
        (
            "one every 200 ms each (1,000 req/s offered)",
            Some(Duration::from_millis(200)),
        ),
    ] {
        let health = rt.block_on(load(addr, "/health", None, pace))?;
        let approvals = rt.block_on(load(addr, APPROVALS, Some(&token), pace))?;
        println!("  {label}:");
        for (what, r) in [
            ("GET /health (floor)", &health),
            ("GET approvals (20 pending)", &approvals),
        ] {
            println!(
                "    {what:<28} p50 {:>7.2} ms  p99 {:>7.2} ms  {:>7.0} req/s",
                ms(r.p50),
                ms(r.p99),
                r.rate
            );
        }
        println!(
            "    approvals/health: p99 {:.2}  req/s {:.2}",
            ms(approvals.p99) / ms(health.p99).max(1e-9),
            approvals.rate / health.rate.max(1e-9)
        );
    }
    drop(served);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Pending approvals of `acme-agent`, as its egress proxy writes them.
fn pending(state: &Path, n: usize) -> anyhow::Result<()> {
    let dir = state.join("sandboxes/acme-agent");
    std::fs::create_dir_all(&dir)?;
    let approvals: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "id": format!("{i:012x}"), "sandbox": "acme-agent",
                "host": format!("host-{i}.example"), "port": 443, "method": null,
                "reason": "no rule allows it", "order": null, "count": 1,
                "first_seen": 1_800_000_000u64, "last_seen": 1_800_000_000u64,
                "sample": format!("CONNECT host-{i}.example:443"), "status": "pending"
            })
        })
        .collect();
    std::fs::write(
        dir.join("approvals.json"),
        serde_json::to_vec(&serde_json::json!({"version": 1, "approvals": approvals}))?,
    )?;
    Ok(())
}

struct Load {
    p50: Duration,
    p99: Duration,
    rate: f64,
}

/// `CLIENTS` connections, each sending `REQUESTS` requests one after another
/// (`pace: None`: as fast as answers come, so latency is mostly queueing behind the
/// other 199), or one every `pace`, the clients spread evenly over it.
async fn load(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    pace: Option<Duration>,
) -> anyhow::Result<Load> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n").into_bytes();
    let mut conns = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        // Warm-up: the connection is accepted and served once before the clock starts.
        one(&mut s, &request).await?;
        conns.push(s);
    }
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for (k, mut s) in conns.into_iter().enumerate() {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(REQUESTS);
            for i in 0..REQUESTS {
                if let Some(pace) = pace {
                    let offset = pace * k as u32 / CLIENTS as u32;
                    tokio::time::sleep_until((start + pace * i as u32 + offset).into()).await;
                }
                let t = Instant::now();
                one(&mut s, &request).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(CLIENTS * REQUESTS);
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = start.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Ok(Load {
        p50: pct(0.50),
        p99: pct(0.99),
        rate: all.len() as f64 / wall.as_secs_f64(),
    })
}

/// One request and its whole answer (which must be 200) on a kept-alive connection.
async fn one(s: &mut tokio::net::TcpStream, request: &[u8]) -> anyhow::Result<()> {
    s.write_all(request).await?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        bail!("answered {}", head.lines().next().unwrap_or_default());
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no content-length")?;
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// An operator's token of tenant `acme`, valid for an hour.
fn hs256_token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64url(
        serde_json::json!({
            "iss": "https://login.bench", "aud": "warden", "sub": "olga@acme.example",
            "tenant": "acme", "iat": now, "exp": now + 3600
        })
        .to_string()
        .as_bytes(),
    );
    let signed = format!("{header}.{claims}");
    let sig = b64url(&hmac_sha256(KEY, signed.as_bytes()));
    format!("{signed}.{sig}")
}

// ---- audit writes -------------------------------------------------------------------

/// Events per round; rounds per measurement.
const EVENTS: usize = 20_000;
const SINGLES: usize = 2_000;
const BATCH: usize = 100;

fn events(n: usize) -> Vec<warden_audit::Event> {
    (0..n)
        .map(|i| {
            warden_audit::Event::new(
                "olga@acme.example",
                Some("acme"),
                Some("acme-agent"),
                warden_audit::Detail::ApprovalDenied {
                    approval: format!("{i:012x}"),
                    destination: format!("host-{i}.example:443"),
                    order: None,
                },
            )
        })
        .collect()
}

/// Events/s appending `n` events `batch` at a time.
fn rate(
    n: usize,
    batch: usize,
    mut append: impl FnMut(&[warden_audit::Event]) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let evs = events(n);
    let t = Instant::now();
    for chunk in evs.chunks(batch) {
        append(chunk)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Batch sizes measured, with how many events each measurement appends.
const SIZES: &[(usize, usize)] = &[(1, SINGLES), (BATCH, EVENTS), (1000, 5 * EVENTS)];

fn rates(
    mut append: impl FnMut(&[warden_audit::Event]) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    SIZES
        .iter()
        .map(|&(batch, n)| rate(n, batch, &mut append))
        .collect()
}

fn row(what: &str, r: &[f64]) {
    let cells: Vec<String> = r.iter().map(|x| format!("{x:>9.0}")).collect();
    println!("  {what:<28}{}", cells.join(""));
}

fn ratio(what: &str, a: &[f64], b: &[f64]) {
    let cells: Vec<String> = a
        .iter()
        .zip(b)
        .map(|(x, y)| format!("{:>9.2}", x / y))
        .collect();
    println!("  {what:<28}{}", cells.join(""));
}

fn audit(dir: &Path) -> anyhow::Result<()> {
    let sizes: Vec<String> = SIZES.iter().map(|(b, _)| format!("{b:>9}")).collect();
    println!(
        "audit writes, events/s (an append returns once its events are spooled and fsynced; target 20,000/s into SQLite):"
    );
    println!("  {:<28}{}", "events per append:", sizes.join(""));
    let mut store = warden_audit::Store::open(&dir.join("audit-sqlite"))?;
    let lite = rates(|e| Ok(store.append(e)?))?;
    let peer = rusqlite_peer(&dir.join("peer.db"))?;
    row("SQLite: warden store", &lite);
    row("SQLite: plain rusqlite tx", &peer);
    ratio("SQLite: store/plain", &lite, &peer);
    let (url, _cluster) = match std::env::var(crate::postgres::ENV) {
        Ok(u) if !u.is_empty() => (u, None),
        _ if crate::postgres::bin_dir().is_some() => {
            let c = crate::postgres::Cluster::start()?;
            (c.url.clone(), Some(c))
        }
        _ => {
            println!(
                "  PostgreSQL: skipped, no server (set {} or install `postgresql`)",
                crate::postgres::ENV
            );
            return Ok(());
        }
    };
    let mut store = warden_audit::Store::open_postgres(&dir.join("audit-pg"), &url)?;
    let pg = rates(|e| Ok(store.append(e)?))?;
    let peer = postgres_peer(&url)?;
    row("PostgreSQL: warden store", &pg);
    row("PostgreSQL: plain INSERT tx", &peer);
    ratio("PostgreSQL: store/plain", &pg, &peer);
    Ok(())
}

/// The same rows inserted straight into SQLite (WAL, `synchronous=FULL`), one
/// transaction per batch.
fn rusqlite_peer(path: &Path) -> anyhow::Result<Vec<f64>> {
    let mut db = rusqlite::Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch(
        "CREATE TABLE events (id TEXT PRIMARY KEY, version INTEGER NOT NULL, at_ms INTEGER NOT NULL,
         tenant TEXT, sandbox TEXT, actor TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL)",
    )?;
    let insert = |evs: &[warden_audit::Event]| -> anyhow::Result<()> {
        let tx = db.transaction()?;
        for e in evs {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(rusqlite::params![
                e.id,
                e.version,
                e.at_ms as i64,
                e.tenant,
                e.sandbox,
                e.actor,
                e.detail.kind(),
                serde_json::to_string(&e.detail)?
            ])?;
        }
        tx.commit()?;
        Ok(())
    };
    rates(insert)
}

/// The same rows `INSERT`ed straight into PostgreSQL, one statement per row, one
/// transaction per batch.
fn postgres_peer(url: &str) -> anyhow::Result<Vec<f64>> {
    let mut c = postgres::Client::connect(url, postgres::NoTls)?;
    c.batch_execute(
        "DROP TABLE IF EXISTS bench_peer;
         CREATE TABLE bench_peer (id TEXT PRIMARY KEY, version INTEGER NOT NULL, at_ms BIGINT NOT NULL,
         tenant TEXT, sandbox TEXT, actor TEXT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL)",
    )?;
    let stmt = c.prepare(
        "INSERT INTO bench_peer VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )?;
    let insert = |evs: &[warden_audit::Event]| -> anyhow::Result<()> {
        let mut tx = c.transaction()?;
        for e in evs {
            tx.execute(
                &stmt,
                &[
                    &e.id,
                    &(e.version as i32),
                    &(e.at_ms as i64),
                    &e.tenant,
                    &e.sandbox,
                    &e.actor,
                    &e.detail.kind(),
                    &serde_json::to_string(e)?,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    };
    let r = rates(insert)?;
    c.batch_execute("DROP TABLE bench_peer")?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_base64url_match_known_answers() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
