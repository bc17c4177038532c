//! Benchmark: the egress proxy against a direct connection, a minimal splice relay and
//! tinyproxy, measured interleaved in one run on loopback.
//!
//! `cargo xtask bench egress [--gib N | --mib N] [--rounds N] [--rtts N] [--requests N]
//! [--tunnels N] [--no-tinyproxy]`
//!
//! - bulk throughput (1 GiB per transfer by default) of a CONNECT download and of a
//!   plain-HTTP download (`Content-Length` body), through each proxy vs direct: every
//!   round runs each way once, the order alternating between rounds, and the ratio to
//!   direct is taken per round (same moment, same load) and its median reported, with
//!   the CPU each way costs per GiB (a measure the load of other processes moves less);
//! - added latency of a small round trip inside an open tunnel, and of a whole plain-HTTP
//!   request (new connection each), p50/p99, vs direct;
//! - 1,000 concurrent tunnels held open and used at once.
//!
//! `relay` is the floor for any proxy that ends TCP: blocking threads moving bytes with
//! `splice(2)`, no policy, no timeouts, no audit. On loopback the sender, the receiver
//! and the proxy share the machine's cores, and a proxy adds a second TCP connection
//! (twice the packets, the same bytes copied), so the gap between `direct` and `relay`
//! is the kernel's, and the gap between `relay` and `warden` is warden's.
//!
//! Upstreams listen on 127.0.0.2 and every proxy is configured to allow exactly that
//! address. The proxy runs in-process on a 2-worker tokio runtime; clients and upstreams
//! are plain threads.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_egress::{ProxyConfig, ProxyState, StaticResolver};
use warden_wire::egress::{Action, Cidr, EgressPolicy, EgressRule, Target};
use warden_wire::orders::Autonomy;

const UPSTREAM_IP: &str = "127.0.0.2";

struct Opts {
    bytes: u64,
    rounds: usize,
    tinyproxy: bool,
    rtts: usize,
    requests: usize,
    tunnels: usize,
}

fn opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        bytes: 1 << 30,
        rounds: 9,
        tinyproxy: true,
        rtts: 20_000,
        requests: 2_000,
        tunnels: 1_000,
    };
    let mut it = args.iter().skip_while(|a| a.as_str() == "egress");
    while let Some(a) = it.next() {
        if a == "--no-tinyproxy" {
            o.tinyproxy = false;
            continue;
        }
        let mut val = || -> Result<u64> {
            it.next()
                .with_context(|| format!("`{a}` needs a value"))?
                .parse::<u64>()
                .with_context(|| format!("`{a}` needs a number"))
        };
        match a.as_str() {
            "--mib" => o.bytes = val()? << 20,
            "--gib" => o.bytes = val()? << 30,
            "--rounds" => o.rounds = (val()? as usize).max(1),
            "--rtts" => o.rtts = val()? as usize,
            "--requests" => o.requests = val()? as usize,
            "--tunnels" => o.tunnels = val()? as usize,
            other => bail!("unknown option `{other}` for `bench egress`"),
        }
    }
    Ok(o)
}

/// A way to reach the upstream: directly, or through a proxy at an address.
#[derive(Clone, Copy)]
enum Via {
    Direct,
    Proxy(SocketAddr),
}

pub fn run(args: &[String]) -> Result<()> {
    let o = opts(args)?;
    let up = Upstreams::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let state_dir = scratch_dir("warden-bench-egress")?;
    let warden = {
        let _guard = rt.enter();
        let policy = EgressPolicy {
            version: warden_wire::WIRE_VERSION,
            sandbox: "bench".into(),
            rules: vec![EgressRule {
                action: Action::Allow,
                target: Target::Cidr(Cidr::parse("127.0.0.2/32").context("cidr")?),
                ports: vec![
                    up.source.port(),
                    up.sink.port(),
                    up.echo.port(),
                    up.http.port(),
                    up.bulk.port(),
                ],
                http: None,
                reason: None,
                order: None,
                autonomy: Autonomy::Auto,
                line: 1,
            }],
            idle_timeout_secs: 300,
        };
        let mut config = ProxyConfig::new(&state_dir);
        config.max_connections = o.tunnels * 2 + 64;
        let state = ProxyState::with_resolver(policy, config, Arc::new(StaticResolver::new()))?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        warden_egress::spawn(listener, state)?
    };
    let warden_addr = warden.local_addr();
    let tiny = if o.tinyproxy {
        TinyProxy::start(&up, o.tunnels)?
    } else {
        Err("--no-tinyproxy".into())
    };

    let relay = splice_relay()?;
    let mut peers: Vec<(&str, Via)> = vec![
        ("direct", Via::Direct),
        ("warden", Via::Proxy(warden_addr)),
        ("relay", Via::Proxy(relay)),
    ];
    match &tiny {
        Ok(t) => peers.push(("tinyproxy", Via::Proxy(t.addr))),
        Err(why) => println!("tinyproxy: skipped ({why})"),
    }

    println!(
        "egress bench: upstream {UPSTREAM_IP}, warden at {warden_addr} (2 tokio workers); \
         relay: blocking threads, splice(2), no checks: what the kernel's second TCP \
         connection costs any proxy"
    );

    let cpu_pids: Vec<Option<u32>> = peers
        .iter()
        .map(|(name, _)| match &tiny {
            Ok(t) if *name == "tinyproxy" => Some(t.child.id()),
            _ => None,
        })
        .collect();
    let connect = |via: Via, bytes: u64| download(via, up.source, bytes);
    throughput(
        &format!("one CONNECT download of {} MiB", o.bytes >> 20),
        &peers,
        &cpu_pids,
        &o,
        &connect,
    )?;
    let upload = |via: Via, bytes: u64| upload(via, up.sink, bytes);
    throughput(
        &format!("one CONNECT upload of {} MiB", o.bytes >> 20),
        &peers,
        &cpu_pids,
        &o,
        &upload,
    )?;
    let plain = |via: Via, bytes: u64| http_download(via, up.bulk, bytes);
    throughput(
        &format!(
            "one plain-HTTP download of {} MiB (Content-Length body, connection included)",
            o.bytes >> 20
        ),
        &peers,
        &cpu_pids,
        &o,
        &plain,
    )?;

    // Round trip of 64 bytes inside an open tunnel, interleaved.
    let mut streams: Vec<TcpStream> = peers
        .iter()
        .map(|(_, via)| open(*via, up.echo))
        .collect::<Result<_>>()?;
    let mut rtt: Vec<Vec<Duration>> = vec![Vec::with_capacity(o.rtts); peers.len()];
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..o.rtts {
        for (i, s) in streams.iter_mut().enumerate() {
            let t = Instant::now();
            s.write_all(&msg)?;
            s.read_exact(&mut back)?;
            rtt[i].push(t.elapsed());
        }
    }
    drop(streams);
    report("round trip of 64 bytes in an open tunnel", &peers, &mut rtt);

    // A whole plain-HTTP request on a new connection each time, interleaved.
    let mut req: Vec<Vec<Duration>> = vec![Vec::with_capacity(o.requests); peers.len()];
    for _ in 0..o.requests {
        for (i, (_, via)) in peers.iter().enumerate() {
            let t = Instant::now();
            http_get(*via, up.http)?;
            req[i].push(t.elapsed());
        }
    }
    report("plain-HTTP GET, new connection each", &peers, &mut req);

    // Many tunnels at once.
    let t = Instant::now();
    let (ok, errors) = concurrent_tunnels(warden_addr, up.echo, o.tunnels);
    println!(
        "\nconcurrent tunnels through warden: {ok}/{} held and echoed, {errors} errors, {:.0} ms",
        o.tunnels,
        t.elapsed().as_secs_f64() * 1e3
    );

    rt.block_on(warden.shutdown())?;
    if let Ok(mut t) = tiny {
        t.stop();
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    if errors > 0 {
        bail!("{errors} of {} concurrent tunnels failed", o.tunnels);
    }
    Ok(())
}

/// Other processes under this many cores during every run of a round: a quiet round.
const QUIET_CORES: f64 = 0.25;

/// Bulk transfers, `o.rounds` rounds of one transfer per peer, the order alternating
/// between rounds so that neither side always runs first. `run` returns GB/s. Ratios to
/// direct are taken per round, and also over the quiet rounds only: on a shared machine
/// another process's burst slows whichever run it meets.
fn throughput(
    title: &str,
    peers: &[(&str, Via)],
    cpu_pids: &[Option<u32>],
    o: &Opts,
    run: &dyn Fn(Via, u64) -> Result<f64>,
) -> Result<()> {
    let n = peers.len();
    // Warm-up, not counted: first connections, socket buffer autotuning, pipe pages.
    for (name, via) in peers {
        run(*via, o.bytes.min(64 << 20)).with_context(|| format!("{name}: {title} (warm-up)"))?;
    }
    let gib = o.bytes as f64 / (1u64 << 30) as f64;
    let mut gbps: Vec<Vec<f64>> = vec![Vec::with_capacity(o.rounds); n];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::with_capacity(o.rounds); n];
    let mut workers: Vec<f64> = Vec::with_capacity(o.rounds);
    let mut others: Vec<f64> = Vec::with_capacity(o.rounds * n);
    let mut quiet: Vec<bool> = Vec::with_capacity(o.rounds);
    for round in 0..o.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..n).collect()
        } else {
            (0..n).rev().collect()
        };
        let mut calm = true;
        for i in order {
            let (name, via) = peers[i];
            let own = || process_cpu_secs() + cpu_pids[i].map_or(0.0, pid_cpu_secs);
            let (w0, c0, m0, t0) = (
                worker_cpu_secs(),
                own(),
                machine_busy_secs(),
                Instant::now(),
            );
            gbps[i].push(run(via, o.bytes).with_context(|| format!("{name}: {title}"))?);
            let (c1, m1, secs) = (own(), machine_busy_secs(), t0.elapsed().as_secs_f64());
            cpu[i].push((c1 - c0) / gib);
            if name == "warden" {
                workers.push((worker_cpu_secs() - w0) / gib);
            }
            let busy = ((m1 - m0) - (c1 - c0)).max(0.0) / secs;
            calm &= busy < QUIET_CORES;
            others.push(busy);
        }
        quiet.push(calm);
    }
    println!(
        "\nthroughput, {title}, {} rounds, order alternating:",
        o.rounds
    );
    let quiet_n = quiet.iter().filter(|q| **q).count();
    for (i, (name, _)) in peers.iter().enumerate() {
        let (lo, med, hi) = spread(&gbps[i]);
        let line = format!(
            "  {name:<10} median {med:>5.2} GB/s  (min {lo:.2}, max {hi:.2})  CPU {:.2} s/GiB",
            spread(&cpu[i]).1
        );
        if i == 0 {
            println!("{line}");
            continue;
        }
        let ratios: Vec<f64> = gbps[i].iter().zip(&gbps[0]).map(|(a, d)| a / d).collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
        let calm: Vec<f64> = ratios
            .iter()
            .zip(&quiet)
            .filter(|(_, q)| **q)
            .map(|(r, _)| *r)
            .collect();
        let calm = match calm.len() {
            0 => "no quiet round".to_string(),
            k => format!("quiet rounds {:.2} ({k} of {})", spread(&calm).1, o.rounds),
        };
        println!(
            "{line}   ratio to direct: median {:.2} (quartiles {:.2}..{:.2}), {calm}",
            q(0.5),
            q(0.25),
            q(0.75)
        );
    }
    let index = |name: &str| peers.iter().position(|(n, _)| *n == name);
    if let (Some(w), Some(r)) = (index("warden"), index("relay")) {
        let mut v: Vec<f64> = gbps[w].iter().zip(&gbps[r]).map(|(a, b)| a / b).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "  warden / relay per round: median {:.2} (quartiles {:.2}..{:.2}): warden's own \
             share of the gap",
            q(0.5),
            q(0.25),
            q(0.75)
        );
    }
    let (_, busy_med, busy_max) = spread(&others);
    println!(
        "  other processes kept {busy_med:.2} cores busy (median of runs; max {busy_max:.2}) \
         of {}; {quiet_n} of {} rounds quiet (under {QUIET_CORES} cores in every run){}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        o.rounds,
        if quiet_n * 2 < o.rounds {
            "; ratios are unreliable, rerun on a quieter machine or with more --rounds"
        } else {
            ""
        }
    );
    if !workers.is_empty() {
        println!(
            "  warden's proxy threads: {:.2} CPU-seconds per GiB (CPU above: sender, \
             receiver and in-process proxy, or tinyproxy's process)",
            spread(&workers).1,
        );
    }
    Ok(())
}

/// (min, median, max).
fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        n => (v[0], v[n / 2], v[n - 1]),
    }
}

fn report(title: &str, peers: &[(&str, Via)], samples: &mut [Vec<Duration>]) {
    println!("\n{title} ({} samples each):", samples[0].len());
    let pct = |v: &mut Vec<Duration>, p: f64| -> f64 {
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).map(|d| d.as_secs_f64() * 1e3).unwrap_or(f64::NAN)
    };
    let base50 = pct(&mut samples[0], 0.50);
    let base99 = pct(&mut samples[0], 0.99);
    for (i, (name, _)) in peers.iter().enumerate() {
        let p50 = pct(&mut samples[i], 0.50);
        let p99 = pct(&mut samples[i], 0.99);
        if i == 0 {
            println!("  {name:<10} p50 {p50:.3} ms  p99 {p99:.3} ms");
        } else {
            println!(
                "  {name:<10} p50 {p50:.3} ms  p99 {p99:.3} ms   added p50 {:+.3} ms  p99 {:+.3} ms",
                p50 - base50,
                p99 - base99
            );
        }
    }
}

/// The floor for any proxy that ends TCP: answers CONNECT, or rewrites an absolute-form
/// request line to origin form, dials the target and moves bytes with `splice(2)` on two
/// blocking threads. No policy, no timeouts, no audit.
fn splice_relay() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || relay_one(s));
        }
    });
    Ok(addr)
}

fn relay_one(mut client: TcpStream) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut line = text.split(' ');
    let (method, target) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
    let (authority, mut first) = if method == "CONNECT" {
        (target.to_string(), Vec::new())
    } else {
        let rest = target
            .strip_prefix("http://")
            .ok_or_else(|| std::io::Error::other("not an absolute-form request"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        (
            authority.to_string(),
            text.replacen(target, path, 1).into_bytes(),
        )
    };
    first.extend_from_slice(&head[end..]);
    let mut up = TcpStream::connect(authority.as_str())?;
    up.set_nodelay(true)?;
    if method == "CONNECT" {
        client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")?;
    }
    up.write_all(&first)?;
    let (c, u) = (client.try_clone()?, up.try_clone()?);
    let t = std::thread::spawn(move || splice_all(&c, &u));
    let r = splice_all(&up, &client);
    let _ = t.join();
    r
}

/// Socket to socket through a 1 MiB pipe until the end of `from`, then half-close `to`.
fn splice_all(from: &TcpStream, to: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded; both descriptors are ours alone.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own, integer argument.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    let splice = |a: i32, b: i32, len: usize| -> std::io::Result<usize> {
        // SAFETY: plain descriptors, null offsets (sockets and pipes).
        let n = unsafe {
            libc::splice(
                a,
                std::ptr::null_mut(),
                b,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    };
    loop {
        let mut n = splice(from.as_raw_fd(), w.as_raw_fd(), 1 << 20)?;
        if n == 0 {
            return to.shutdown(Shutdown::Write);
        }
        while n > 0 {
            n -= splice(r.as_raw_fd(), to.as_raw_fd(), n)?;
        }
    }
}

/// Connect to `target`, directly or through a CONNECT tunnel.
fn open(via: Via, target: SocketAddr) -> Result<TcpStream> {
    let s = match via {
        Via::Direct => TcpStream::connect(target)?,
        Via::Proxy(proxy) => {
            let mut s = TcpStream::connect(proxy)?;
            s.set_nodelay(true)?;
            write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")?;
            let head = read_head(&mut s)?;
            if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
                bail!(
                    "CONNECT {target} via {proxy}: {}",
                    head.lines().next().unwrap_or("")
                );
            }
            s
        }
    };
    s.set_nodelay(true)?;
    Ok(s)
}

/// Read a response head byte by byte (so no tunnel bytes are consumed).
fn read_head(s: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            bail!("closed during the response head");
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Download `bytes` from the source upstream; returns GB/s.
fn download(via: Via, source: SocketAddr, bytes: u64) -> Result<f64> {
    let mut s = open(via, source)?;
    let t = Instant::now();
    s.write_all(&bytes.to_le_bytes())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("download ended after {got} of {bytes} bytes");
        }
        got += n as u64;
    }
    Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e9)
}

/// Upload `bytes` to the sink upstream and wait for its count; returns GB/s.
fn upload(via: Via, sink: SocketAddr, bytes: u64) -> Result<f64> {
    let mut s = open(via, sink)?;
    let buf = vec![0x5au8; 256 * 1024];
    let t = Instant::now();
    s.write_all(&bytes.to_le_bytes())?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let took = t.elapsed();
    let got = u64::from_le_bytes(count);
    if got != bytes {
        bail!("the sink received {got} of {bytes} bytes");
    }
    Ok(bytes as f64 / took.as_secs_f64() / 1e9)
}

/// Download `bytes` as the body of one plain-HTTP response, connecting included (the
/// same for every way); returns GB/s.
fn http_download(via: Via, bulk: SocketAddr, bytes: u64) -> Result<f64> {
    let t = Instant::now();
    let (mut s, target) = match via {
        Via::Direct => (TcpStream::connect(bulk)?, format!("/{bytes}")),
        Via::Proxy(p) => (TcpStream::connect(p)?, format!("http://{bulk}/{bytes}")),
    };
    s.set_nodelay(true)?;
    write!(s, "GET {target} HTTP/1.1\r\nHost: {bulk}\r\n\r\n")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0;
    let body_at = loop {
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            bail!("closed during the response head");
        }
        have += n;
        if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if have == buf.len() {
            bail!("response head too large");
        }
    };
    let head = String::from_utf8_lossy(&buf[..body_at]).into_owned();
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {target}: {}", head.lines().next().unwrap_or(""));
    }
    let mut got = (have - body_at) as u64;
    while got < bytes {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("body ended after {got} of {bytes} bytes");
        }
        got += n as u64;
    }
    if got != bytes {
        bail!("body of {got} bytes, {bytes} expected");
    }
    Ok(bytes as f64 / t.elapsed().as_secs_f64() / 1e9)
}

fn http_get(via: Via, http: SocketAddr) -> Result<()> {
    let (mut s, target) = match via {
        Via::Direct => (TcpStream::connect(http)?, "/".to_string()),
        Via::Proxy(p) => (TcpStream::connect(p)?, format!("http://{http}/")),
    };
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::with_capacity(256);
    s.read_to_end(&mut out)?;
    if !out.starts_with(b"HTTP/1.1 200") && !out.starts_with(b"HTTP/1.0 200") {
        bail!(
            "GET via {}: {}",
            match via {
                Via::Direct => "direct".into(),
                Via::Proxy(p) => p.to_string(),
            },
            String::from_utf8_lossy(&out[..out.len().min(200)])
        );
    }
    Ok(())
}

fn concurrent_tunnels(proxy: SocketAddr, echo: SocketAddr, n: usize) -> (usize, usize) {
    let mut streams = Vec::with_capacity(n);
    let mut errors = 0;
    for _ in 0..n {
        match open(Via::Proxy(proxy), echo) {
            Ok(s) => streams.push(s),
            Err(_) => errors += 1,
        }
    }
    // All open at once: send on every one, then read every echo.
    let msg = *b"hold";
    for s in streams.iter_mut() {
        if s.write_all(&msg).is_err() {
            errors += 1;
        }
    }
    let mut ok = 0;
    for s in streams.iter_mut() {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut back = [0u8; 4];
        match s.read_exact(&mut back) {
            Ok(()) if back == msg => ok += 1,
            _ => errors += 1,
        }
    }
    (ok, errors)
}

struct Upstreams {
    /// Reads an 8-byte little-endian length, then sends that many bytes.
    source: SocketAddr,
    /// Reads a length (8 bytes, little-endian), then that many bytes, then answers with
    /// the count it read (no half-close needed: tinyproxy closes a tunnel on one).
    sink: SocketAddr,
    echo: SocketAddr,
    /// Answers any request with a tiny 200 and closes.
    http: SocketAddr,
    /// Answers `GET /N` with a body of N bytes (`Content-Length`) and closes.
    bulk: SocketAddr,
}

impl Upstreams {
    fn start() -> Result<Upstreams> {
        let serve = |handler: fn(TcpStream) -> std::io::Result<()>| -> Result<SocketAddr> {
            let l = TcpListener::bind((UPSTREAM_IP, 0)).context("bind an upstream on 127.0.0.2")?;
            let addr = l.local_addr()?;
            std::thread::spawn(move || {
                for s in l.incoming().flatten() {
                    let _ = s.set_nodelay(true);
                    std::thread::spawn(move || handler(s));
                }
            });
            Ok(addr)
        };
        Ok(Upstreams {
            source: serve(|mut s| {
                let mut len = [0u8; 8];
                s.read_exact(&mut len)?;
                let mut left = u64::from_le_bytes(len);
                let buf = vec![0x5au8; 256 * 1024];
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    s.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                s.shutdown(Shutdown::Write)
            })?,
            sink: serve(|mut s| {
                let mut len = [0u8; 8];
                s.read_exact(&mut len)?;
                let want = u64::from_le_bytes(len);
                let mut buf = vec![0u8; 256 * 1024];
                let mut got = 0u64;
                while got < want {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    got += n as u64;
                }
                s.write_all(&got.to_le_bytes())?;
                s.shutdown(Shutdown::Write)
            })?,
            echo: serve(|mut s| {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    s.write_all(&buf[..n])?;
                }
            })?,
            http: serve(|mut s| {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                )?;
                s.shutdown(Shutdown::Write)
            })?,
            bulk: serve(|mut s| {
                let mut head = Vec::new();
                let mut buf = vec![0x5au8; 256 * 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                buf.fill(0x5a);
                let line = String::from_utf8_lossy(&head);
                let target = line.split(' ').nth(1).unwrap_or("");
                let Ok(mut left) = target.rsplit('/').next().unwrap_or("").parse::<u64>() else {
                    return s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                };
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {left}\r\nConnection: close\r\n\r\n"
                )?;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    s.write_all(&buf[..n])?;
                    left -= n as u64;
                }
                s.shutdown(Shutdown::Write)
            })?,
        })
    }
}

struct TinyProxy {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl TinyProxy {
    /// `Ok(Err(why))` when tinyproxy is not installed or does not come up.
    fn start(up: &Upstreams, max_clients: usize) -> Result<std::result::Result<TinyProxy, String>> {
        let Some(bin) = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
        else {
            return Ok(Err("not installed: apt-get install tinyproxy".into()));
        };
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = scratch_dir("warden-bench-tinyproxy")?;
        let filter = dir.join("filter");
        std::fs::write(&filter, "^127\\.0\\.0\\.2$\n")?;
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients {}\nLogLevel Critical\n\
             Allow 127.0.0.1\nFilter \"{}\"\nFilterDefaultDeny Yes\nFilterType ere\n\
             DisableViaHeader Yes\n",
            max_clients * 2 + 64,
            filter.display()
        );
        for p in [
            up.source.port(),
            up.sink.port(),
            up.echo.port(),
            up.http.port(),
        ] {
            conf.push_str(&format!("ConnectPort {p}\n"));
        }
        // As root tinyproxy drops to an unprivileged user.
        if is_root() {
            conf.push_str("User nobody\nGroup nogroup\n");
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf)?;
        // Its own process group, so `stop` reaches any process tinyproxy forks.
        let child = Command::new(bin)
            .process_group(0)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start tinyproxy")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut t = TinyProxy { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                t.stop();
                return Ok(Err("did not start listening within 5 s".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Ok(t))
    }

    fn stop(&mut self) {
        // SAFETY: signals the process group created for this child, and nothing else.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGTERM) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TinyProxy {
    // Also on early returns (`?`), so no tinyproxy outlives the bench.
    fn drop(&mut self) {
        if self.dir.exists() {
            self.stop();
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// CPU time (user + system) of this whole process.
pub(crate) fn process_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid initial value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time the whole machine spent busy (all processes, interrupts, and time the
/// hypervisor gave to others), from /proc/stat.
pub(crate) fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    // cpu user nice system idle iowait irq softirq steal ...
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) as f64 / 100.0
}

/// CPU time (user + system) of another process, all its threads, from /proc.
pub(crate) fn pid_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_cpu_secs(&stat)
}

/// utime + stime from a `/proc/.../stat` line.
fn stat_cpu_secs(stat: &str) -> f64 {
    // Fields after `(comm)`: state is field 3, utime 14, stime 15 (1-based).
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (num(11) + num(12)) as f64 / 100.0
}

/// CPU time (user + system) of this process's tokio worker threads, from /proc.
fn worker_cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut secs = 0.0;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("tokio-r") {
            continue;
        }
        secs += stat_cpu_secs(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default());
    }
    secs
}

fn scratch_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
