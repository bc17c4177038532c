//! Benchmark: warden's inference router against the LiteLLM proxy, both routing to the
//! same mock provider on loopback, with a direct connection to the mock as the floor.
//!
//! `cargo xtask bench inference [--rates 100,500,1000] [--secs N] [--stream-rate N]
//! [--closed-secs N] [--clients N] [--no-litellm] [--debug-build]`
//!
//! - open-loop load (a request is due every 1/rate s, latency counted from that due
//!   time, not from when it was sent, so a slow path cannot hide its queue) at each rate
//!   for `--secs` per path: p50 and p99, and what each path adds to direct;
//! - streaming: time to the first byte of a server-sent-events answer, open loop at
//!   `--stream-rate`, added to direct;
//! - sustained rate: `--clients` concurrent clients in a closed loop for `--closed-secs`,
//!   requests per second and the CPU each path spends per request;
//! - memory of the router's process (VmRSS, VmHWM) after all the load, and of LiteLLM's;
//! - precision and recall of every privacy detector on the corpus in
//!   `crates/warden-wire/tests/detectors/`.
//!
//! The router runs as warden runs it (2 tokio workers, audit written as JSON lines to a
//! file) in a child process of its own, this binary started again with
//! `--serve-router`, so that its memory is its own. LiteLLM (`litellm[proxy]` pinned to
//! [`LITELLM_VERSION`]) is installed with pip into a venv under `target/` and started
//! with one worker and a local model cost map (nothing leaves the machine); when it
//! cannot be installed or started the bench says why and measures the rest. Every
//! server listens on 127.0.0.1 and every request goes there. Children are killed when
//! the bench ends, fails, or is killed (parent-death signal).
//!
//! A path is one entry of [`PATHS`]: who carries the call (direct, warden, LiteLLM),
//! the API the client speaks and the API of the provider. The translated paths (client
//! of one API, provider of the other) are compared with the pass-through path of the
//! client's API as well as with direct.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use warden_wire::inference::{
    Api, Detector, InferencePolicy, PrivacyAction, PrivacyRule, Provider, Route,
};

/// The LiteLLM release compared with. Never 1.82.7, 1.82.8 or any 1.107.x.
pub const LITELLM_VERSION: &str = "1.108.7";

/// A request not answered within this long counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections a client keeps to one path at most (requests beyond wait for one).
const MAX_CONNS: usize = 512;
/// Between two streamed events of the mock's answer.
const STREAM_GAP: Duration = Duration::from_millis(1);

const ANTHROPIC_KEY_ENV: &str = "WARDEN_BENCH_ANTHROPIC_KEY";
const OPENAI_KEY_ENV: &str = "WARDEN_BENCH_OPENAI_KEY";

/// Who carries a call to the mock provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Warden,
    Litellm,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Warden => "warden",
            Via::Litellm => "litellm",
        }
    }
}

/// One way a call reaches the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PathDef {
    via: Via,
    /// The API the client speaks.
    client: Api,
    /// The API of the provider the call is routed to.
    provider: Api,
}

const PATHS: &[PathDef] = &[
    PathDef {
        via: Via::Direct,
        client: Api::Anthropic,
        provider: Api::Anthropic,
    },
    PathDef {
        via: Via::Direct,
        client: Api::Openai,
        provider: Api::Openai,
    },
    PathDef {
        via: Via::Warden,
        client: Api::Anthropic,
        provider: Api::Anthropic,
    },
    PathDef {
        via: Via::Warden,
        client: Api::Openai,
        provider: Api::Openai,
    },
    // Translated by the router: a Messages client to an OpenAI provider, a Chat
    // Completions client to an Anthropic provider.
    PathDef {
        via: Via::Warden,
        client: Api::Anthropic,
        provider: Api::Openai,
    },
    PathDef {
        via: Via::Warden,
        client: Api::Openai,
        provider: Api::Anthropic,
    },
    PathDef {
        via: Via::Litellm,
        client: Api::Anthropic,
        provider: Api::Anthropic,
    },
    PathDef {
        via: Via::Litellm,
        client: Api::Openai,
        provider: Api::Openai,
    },
];

impl PathDef {
    fn label(&self) -> String {
        if self.client == self.provider {
            format!("{} {}", self.via.name(), api_name(self.client))
        } else {
            format!(
                "{} {}->{}",
                self.via.name(),
                api_name(self.client),
                api_name(self.provider)
            )
        }
    }

    /// The model the client asks for; each (client, provider) pair has its own route.
    fn model(&self) -> &'static str {
        model_for(self.client, self.provider)
    }

    /// The direct path this one is compared with: the client's own API, straight to
    /// the mock.
    fn baseline(&self) -> PathDef {
        PathDef {
            via: Via::Direct,
            client: self.client,
            provider: self.client,
        }
    }
}

fn model_for(client: Api, provider: Api) -> &'static str {
    match (client, provider) {
        (Api::Anthropic, Api::Anthropic) => "claude-bench",
        (Api::Openai, Api::Openai) => "gpt-bench",
        (Api::Anthropic, Api::Openai) => "claude-via-openai",
        (Api::Openai, Api::Anthropic) => "gpt-via-anthropic",
    }
}

fn api_name(api: Api) -> &'static str {
    match api {
        Api::Anthropic => "anthropic",
        Api::Openai => "openai",
    }
}

struct Opts {
    rates: Vec<u64>,
    secs: f64,
    stream_rate: u64,
    closed_secs: f64,
    clients: usize,
    litellm: bool,
    debug_build: bool,
    serve_router: Option<PathBuf>,
}

fn opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        rates: vec![100, 500, 1000],
        secs: 10.0,
        stream_rate: 100,
        closed_secs: 4.0,
        clients: 32,
        litellm: true,
        debug_build: false,
        serve_router: None,
    };
    let mut it = args
        .iter()
        .skip_while(|a| matches!(a.as_str(), "inference" | "all"));
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-litellm" => {
                o.litellm = false;
                continue;
            }
            "--debug-build" => {
                o.debug_build = true;
                continue;
            }
            _ => {}
        }
        let v = it
            .next()
            .with_context(|| format!("`{a}` needs a value"))?
            .as_str();
        let num = |v: &str| -> Result<f64> {
            let n: f64 = v
                .parse()
                .with_context(|| format!("`{a}` needs a number, not `{v}`"))?;
            if !n.is_finite() || n <= 0.0 {
                bail!("`{a}` needs a number above 0, not `{v}`");
            }
            Ok(n)
        };
        match a.as_str() {
            "--rates" => {
                o.rates = v
                    .split(',')
                    .map(|r| num(r.trim()).map(|n| n as u64))
                    .collect::<Result<_>>()?;
                if o.rates.contains(&0) || o.rates.iter().any(|r| *r > 100_000) {
                    bail!("`--rates` takes rates from 1 to 100000 requests/s");
                }
            }
            "--secs" => o.secs = num(v)?.min(600.0),
            "--stream-rate" => o.stream_rate = (num(v)? as u64).clamp(1, 100_000),
            "--closed-secs" => o.closed_secs = num(v)?.min(600.0),
            "--clients" => o.clients = (num(v)? as usize).clamp(1, MAX_CONNS),
            "--serve-router" => o.serve_router = Some(PathBuf::from(v)),
            other => bail!("unknown option `{other}` for `bench inference`"),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = opts(args)?;
    if let Some(policy) = &o.serve_router {
        return serve_router(policy);
    }
    if cfg!(debug_assertions) && !o.debug_build {
        return run_release(args);
    }
    bench(&o)
}

/// The router and the load are measured as warden ships: optimized. A debug build of
/// this task builds itself in release and runs that.
fn run_release(args: &[String]) -> Result<()> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot find the target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!(
        "inference bench: building the release build of xtask (the router as warden ships it)"
    );
    let mut build = Command::new(&cargo);
    // What `cargo run` set for this process is not the build's business: ring's build
    // script reruns when `CARGO_MANIFEST_DIR` changes, which would rebuild half the tree
    // on every switch between `cargo xtask` and a plain `cargo build`.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_PKG_")
            || matches!(
                k.as_str(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
            )
        {
            build.env_remove(k);
        }
    }
    let status = build
        .args(["build", "--release", "--quiet", "--package", "xtask"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .with_context(|| format!("cannot run `{cargo} build`"))?;
    if !status.success() {
        bail!("`cargo build --release --package xtask` failed ({status})");
    }
    let release = target.join("release").join("xtask");
    let mut args: Vec<String> = args.to_vec();
    if args.first().map(String::as_str) != Some("inference") {
        args.insert(0, "inference".into());
    }
    let status = die_with_parent(Command::new(&release).arg("bench").args(&args))
        .status()
        .with_context(|| format!("cannot run `{}`", release.display()))?;
    if !status.success() {
        bail!("the inference bench failed ({status})");
    }
    Ok(())
}

/// The child gets SIGKILL when this process ends, however it ends.
fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

// ---- the bench ---------------------------------------------------------------------

fn bench(o: &Opts) -> Result<()> {
    let scratch = Scratch(scratch_dir()?);
    bench_in(o, &scratch.0)
}

/// The bench's directory, removed however the bench ends (also on a panic, say a
/// closed stdout).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bench_in(o: &Opts, scratch: &Path) -> Result<()> {
    let load0 = load_average();
    let busy0 = (machine_busy_secs(), Instant::now());
    let own0 = process_cpu_secs();

    let mock_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-mock")
        .enable_all()
        .build()?;
    let mock = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        l.set_nonblocking(true)?;
        let _g = mock_rt.enter();
        let l = tokio::net::TcpListener::from_std(l)?;
        mock_rt.spawn(serve_mock(l, Arc::new(Answers::new())));
        addr
    };

    let mut router = RouterChild::start(mock, scratch)?;
    let litellm = if o.litellm {
        match Litellm::start(mock, scratch) {
            Ok(l) => Ok(l),
            Err(e) => Err(format!("{e:#}")),
        }
    } else {
        Err("--no-litellm".to_string())
    };

    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-load")
        .enable_all()
        .build()?;

    let mut paths: Vec<(PathDef, Arc<Target>, Option<u32>)> = Vec::new();
    for p in PATHS {
        let (addr, pid, key) = match p.via {
            Via::Direct => (mock, None, "sk-placeholder"),
            Via::Warden => (router.addr, Some(router.pid()), "sk-placeholder"),
            Via::Litellm => match &litellm {
                Ok(l) => (l.addr, Some(l.pid()), l.master_key.as_str()),
                Err(_) => continue,
            },
        };
        paths.push((*p, Arc::new(Target::new(addr, *p, key)), pid));
    }

    println!(
        "inference bench: mock provider at {mock} (1 tokio worker), load generator 1 tokio \
         worker, warden's router at {} (child process {}, 2 tokio workers, audit to a file)",
        router.addr,
        router.pid()
    );
    match &litellm {
        Ok(l) => println!(
            "LiteLLM {LITELLM_VERSION} at {} (child process {}, 1 uvicorn worker)",
            l.addr,
            l.pid()
        ),
        Err(why) => println!("LiteLLM: skipped ({why})"),
    }
    println!(
        "load average at start: {load0}; {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // Warm-up, not counted: connections, the router's pool, LiteLLM's first calls.
    for (p, t, _) in &paths {
        for stream in [false, true] {
            let out = closed_loop(&load_rt, t, stream, 8, Duration::from_millis(500));
            if out.ok == 0 {
                bail!(
                    "{}: no call succeeded during the warm-up: {}",
                    p.label(),
                    out.first_error.unwrap_or_default()
                );
            }
        }
    }

    // Closed loop: the rate each path sustains (before any path was overloaded).
    println!(
        "\nclosed loop, {} concurrent clients for {} s, non-streaming: sustained rate",
        o.clients, o.closed_secs
    );
    let mut sustained: Vec<(PathDef, f64)> = Vec::new();
    for (p, t, pid) in &paths {
        let c0 = pid.map(group_cpu_secs);
        let own0 = process_cpu_secs();
        let out = closed_loop(
            &load_rt,
            t,
            false,
            o.clients,
            Duration::from_secs_f64(o.closed_secs),
        );
        let cpu = match (pid, c0) {
            (Some(pid), Some(c0)) => group_cpu_secs(*pid) - c0,
            // Direct: the mock and the clients, both in this process.
            _ => process_cpu_secs() - own0,
        };
        let per = if out.ok > 0 {
            cpu / out.ok as f64 * 1e6
        } else {
            0.0
        };
        let whose = if p.via == Via::Direct {
            "mock + clients"
        } else {
            "its process"
        };
        println!(
            "  {:<26} {:>9.0} requests/s   {:>6} errors   CPU {:>7.1} µs/request ({whose})",
            p.label(),
            out.rate,
            out.errors,
            per
        );
        if let Some(e) = &out.first_error {
            println!("    first error: {e}");
        }
        sustained.push((*p, out.rate));
        settle(*pid);
    }

    // Open loop, each path at the same moment as direct: first every phase of warden,
    // then every phase of LiteLLM, whose overload (it sustains less than the lowest rate
    // on a small machine) would otherwise weigh on warden's next phases.
    let dur = Duration::from_secs_f64(o.secs);
    let mut at_rate: Vec<(u64, Vec<Pair>)> = o.rates.iter().map(|r| (*r, Vec::new())).collect();
    let mut streams: Vec<Pair> = Vec::new();
    for via in [Via::Warden, Via::Litellm] {
        for (rate, pairs) in at_rate.iter_mut() {
            pairs.extend(measure_pairs(&load_rt, &paths, via, false, *rate, dur));
        }
        streams.extend(measure_pairs(
            &load_rt,
            &paths,
            via,
            true,
            o.stream_rate,
            dur,
        ));
    }
    for (rate, pairs) in &at_rate {
        println!(
            "\nopen loop, {rate} requests/s for {} s per path, non-streaming (latency from each \
             request's due time):",
            o.secs
        );
        print_pairs(pairs, "latency");
    }
    println!(
        "\nopen loop, {} requests/s for {} s per path, streaming (server-sent events, {} ms \
         between events): time to first byte",
        o.stream_rate,
        o.secs,
        STREAM_GAP.as_millis()
    );
    print_pairs(&streams, "first byte");

    // Memory after all the load.
    let rss = proc_memory(router.pid());
    let lite_rss = litellm.as_ref().ok().map(|l| group_memory(l.pid()));
    println!("\nmemory after the load:");
    match rss {
        Some((rss, hwm)) => println!(
            "  warden router   VmRSS {:.1} MiB   VmHWM {:.1} MiB (its whole process)",
            mib(rss),
            mib(hwm)
        ),
        None => println!(
            "  warden router   cannot read /proc/{}/status",
            router.pid()
        ),
    }
    if let Some((rss, hwm)) = lite_rss {
        println!(
            "  litellm         VmRSS {:.1} MiB   VmHWM {:.1} MiB (its process group)",
            mib(rss),
            mib(hwm)
        );
    }

    let children_cpu = group_cpu_secs(router.pid())
        + litellm
            .as_ref()
            .ok()
            .map_or(0.0, |l| group_cpu_secs(l.pid()));
    let audit = router.stop()?;
    let calls: usize = at_rate
        .iter()
        .flat_map(|(_, pairs)| pairs.iter())
        .chain(&streams)
        .filter(|pair| pair.path.path.via == Via::Warden)
        .map(|pair| pair.path.ok + pair.path.errors)
        .sum();
    println!(
        "  router audit: {audit} events written (the measured phases sent it {calls} calls, plus \
         warm-up and the closed loop)"
    );
    drop(litellm);

    detector_scores()?;

    // Targets.
    println!("\ntargets:");
    let warden: Vec<&PathDef> = paths
        .iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.via == Via::Warden)
        .collect();
    let top = at_rate.iter().find(|(r, _)| *r == 1000).or(at_rate.last());
    if let Some((rate, pairs)) = top {
        for p in &warden {
            if let Some(added) = added(pairs, p, |ph| ph.p99) {
                println!(
                    "  p99 added at {rate} requests/s < 1 ms ({}): {:.3} ms  {}",
                    p.label(),
                    added,
                    verdict(added < 1.0 && *rate >= 1000)
                );
            }
        }
    }
    // Translation's own cost: what a translated path adds over the pass-through path
    // of the same client API, both measured against direct at the same moments.
    if let Some((rate, pairs)) = top {
        for p in warden.iter().filter(|p| p.client != p.provider) {
            let through = PathDef {
                via: Via::Warden,
                client: p.client,
                provider: p.client,
            };
            if let (Some(t), Some(pt)) = (
                added(pairs, p, |ph| ph.p99),
                added(pairs, &through, |ph| ph.p99),
            ) {
                println!(
                    "  translated p99 added over pass-through at {rate} requests/s < 1 ms ({} vs {}): {:.3} ms  {}",
                    p.label(),
                    through.label(),
                    t - pt,
                    verdict(t - pt < 1.0 && *rate >= 1000)
                );
            }
        }
    }
    for p in &warden {
        let p99 = added(&streams, p, |ph| ph.p99).unwrap_or(f64::NAN);
        if let Some(added) = added(&streams, p, |ph| ph.p50) {
            println!(
                "  time to first byte added (p50) < 1 ms ({}): {:.3} ms (p99 added {:.3} ms)  {}",
                p.label(),
                added,
                p99,
                verdict(added < 1.0)
            );
        }
    }
    for p in &warden {
        let lite = sustained
            .iter()
            .find(|(q, _)| {
                q.via == Via::Litellm && q.client == p.client && q.provider == p.provider
            })
            .map(|(_, r)| *r);
        let own = sustained
            .iter()
            .find(|(q, _)| q == *p)
            .map(|(_, r)| *r)
            .unwrap_or(0.0);
        match lite {
            Some(l) if l > 0.0 => println!(
                "  sustained rate >= 30x LiteLLM's ({}): {:.0} / {:.0} = {:.1}x  {}",
                p.label(),
                own,
                l,
                own / l,
                verdict(own / l >= 30.0)
            ),
            _ => println!(
                "  sustained rate >= 30x LiteLLM's ({}): {:.0} requests/s, LiteLLM not measured",
                p.label(),
                own
            ),
        }
    }
    match rss {
        Some((rss, hwm)) => println!(
            "  router RSS < 20 MiB (peak, VmHWM): {:.1} MiB (VmRSS now {:.1} MiB)  {}",
            mib(hwm),
            mib(rss),
            verdict(mib(hwm) < 20.0)
        ),
        None => println!("  router RSS < 20 MiB: not measured"),
    }

    let secs = busy0.1.elapsed().as_secs_f64();
    let others = ((machine_busy_secs() - busy0.0) - (process_cpu_secs() - own0) - children_cpu)
        .max(0.0)
        / secs;
    println!(
        "\nload average at the end: {}; processes outside the bench (not the load generator, \
         the mock, the router or LiteLLM) kept {others:.2} cores busy on average over {secs:.0} s",
        load_average()
    );
    Ok(())
}

fn verdict(pass: bool) -> &'static str {
    if pass { "pass" } else { "MISS" }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `f(path) - f(direct at the same moment)` in ms.
fn added(pairs: &[Pair], p: &PathDef, f: impl Fn(&Phase) -> f64) -> Option<f64> {
    let pair = pairs.iter().find(|pair| pair.path.path == *p)?;
    Some(f(&pair.path) - f(&pair.direct))
}

/// A path and its direct baseline, loaded at the same moment (their calls alternate),
/// so that whatever else the machine does weighs on both.
struct Pair {
    path: Phase,
    direct: Phase,
}

/// Every path carried by `via`, each paired with its direct baseline.
fn measure_pairs(
    rt: &tokio::runtime::Runtime,
    paths: &[(PathDef, Arc<Target>, Option<u32>)],
    via: Via,
    stream: bool,
    rate: u64,
    dur: Duration,
) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for (p, t, pid) in paths.iter().filter(|(p, _, _)| p.via == via) {
        let Some((_, base, _)) = paths.iter().find(|(q, _, _)| *q == p.baseline()) else {
            continue;
        };
        let mut r = open_loop(rt, &[base.clone(), t.clone()], stream, rate, dur);
        settle(*pid);
        let path = Phase::from(p, r.pop().unwrap_or_default());
        let direct = Phase::from(&p.baseline(), r.pop().unwrap_or_default());
        pairs.push(Pair { path, direct });
    }
    pairs
}

/// Results of one path in one open-loop phase, in ms.
struct Phase {
    path: PathDef,
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    p50: f64,
    p99: f64,
    max: f64,
    /// Completed calls per second over the phase.
    achieved: f64,
}

impl Phase {
    fn from(p: &PathDef, r: OpenLoop) -> Phase {
        let mut v = r.latencies;
        v.sort_by(f64::total_cmp);
        let q = |f: f64| {
            if v.is_empty() {
                f64::NAN
            } else {
                v[((v.len() - 1) as f64 * f).round() as usize]
            }
        };
        Phase {
            path: *p,
            ok: v.len(),
            errors: r.errors,
            first_error: r.first_error,
            p50: q(0.5),
            p99: q(0.99),
            max: q(1.0),
            achieved: r.achieved,
        }
    }
}

fn print_pairs(pairs: &[Pair], what: &str) {
    println!(
        "  {:<26} {:>8} {:>8} {:>8}   {:>8} {:>8}   {:>9} {:>9}   {:>6} {:>7}",
        "path",
        "p50",
        "p99",
        "max",
        "direct50",
        "direct99",
        "added p50",
        "added p99",
        "errors",
        "done/s"
    );
    for pair in pairs {
        let (ph, d) = (&pair.path, &pair.direct);
        // No call of the path succeeded: no percentile to print.
        let ms = |v: f64, prec: usize| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.prec$}")
            }
        };
        println!(
            "  {:<26} {:>8} {:>8} {:>8}   {:>8} {:>8}   {:>9} {:>9}   {:>6} {:>7.0}",
            ph.path.label(),
            ms(ph.p50, 3),
            ms(ph.p99, 3),
            ms(ph.max, 1),
            ms(d.p50, 3),
            ms(d.p99, 3),
            ms(ph.p50 - d.p50, 3),
            ms(ph.p99 - d.p99, 3),
            ph.errors + d.errors,
            ph.achieved
        );
        if let Some(e) = &ph.first_error {
            println!("    first error: {e}");
        }
        if let Some(e) = &d.first_error {
            println!("    first error (direct): {e}");
        }
    }
    println!(
        "  ({what} in ms; direct: the same API straight to the mock, its calls interleaved with \
         the path's; added = the path's percentile minus direct's)"
    );
}

/// After a phase, wait until the path's process is idle again (at most a minute): an
/// overloaded LiteLLM still works through abandoned calls, which would slow the next
/// phase of every path.
fn settle(pid: Option<u32>) {
    let Some(pid) = pid else {
        std::thread::sleep(Duration::from_millis(100));
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = group_cpu_secs(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = group_cpu_secs(pid);
        if now - last < 0.03 {
            return;
        }
        last = now;
    }
}

// ---- the mock provider -------------------------------------------------------------

/// The mock's answers, built once: the same bytes for every path.
struct Answers {
    anthropic_json: Bytes,
    openai_json: Bytes,
    anthropic_sse: Vec<Bytes>,
    openai_sse: Vec<Bytes>,
}

/// The words of every answer; a client checks that they arrived.
const ANSWER_WORDS: &[&str] = &[
    "bench",
    " answer:",
    " the",
    " function",
    " returns",
    " the",
    " sum",
    ".",
];

impl Answers {
    fn new() -> Answers {
        let text: String = ANSWER_WORDS.concat();
        let anthropic_json = serde_json::json!({
            "id": "msg_bench01", "type": "message", "role": "assistant", "model": "claude-bench",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 310, "output_tokens": 12}
        });
        let openai_json = serde_json::json!({
            "id": "chatcmpl-bench01", "object": "chat.completion", "created": 1_700_000_000,
            "model": "gpt-bench",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 310, "completion_tokens": 12, "total_tokens": 322}
        });
        let ev =
            |name: &str, v: serde_json::Value| Bytes::from(format!("event: {name}\ndata: {v}\n\n"));
        let mut anthropic_sse = vec![ev(
            "message_start",
            serde_json::json!({"type": "message_start", "message": {
                "id": "msg_bench01", "type": "message", "role": "assistant", "model": "claude-bench",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 310, "output_tokens": 1}}}),
        )];
        anthropic_sse.push(ev(
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0,
                               "content_block": {"type": "text", "text": ""}}),
        ));
        for w in ANSWER_WORDS {
            anthropic_sse.push(ev(
                "content_block_delta",
                serde_json::json!({"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": w}}),
            ));
        }
        anthropic_sse.push(Bytes::from(format!(
            "{}{}{}",
            String::from_utf8_lossy(&ev(
                "content_block_stop",
                serde_json::json!({"type": "content_block_stop", "index": 0})
            )),
            String::from_utf8_lossy(&ev(
                "message_delta",
                serde_json::json!({"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                                   "usage": {"output_tokens": 12}})
            )),
            String::from_utf8_lossy(&ev(
                "message_stop",
                serde_json::json!({"type": "message_stop"})
            )),
        )));
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            serde_json::json!({"id": "chatcmpl-bench01", "object": "chat.completion.chunk",
                "created": 1_700_000_000, "model": "gpt-bench",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let data = |v: serde_json::Value| Bytes::from(format!("data: {v}\n\n"));
        let mut openai_sse = vec![data(chunk(
            serde_json::json!({"role": "assistant", "content": ""}),
            None,
        ))];
        for w in ANSWER_WORDS {
            openai_sse.push(data(chunk(serde_json::json!({"content": w}), None)));
        }
        let mut last = chunk(serde_json::json!({}), Some("stop"));
        last["usage"] =
            serde_json::json!({"prompt_tokens": 310, "completion_tokens": 12, "total_tokens": 322});
        openai_sse.push(Bytes::from(format!("data: {last}\n\ndata: [DONE]\n\n")));
        Answers {
            anthropic_json: Bytes::from(anthropic_json.to_string()),
            openai_json: Bytes::from(openai_json.to_string()),
            anthropic_sse,
            openai_sse,
        }
    }
}

async fn serve_mock(listener: tokio::net::TcpListener, answers: Arc<Answers>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let answers = answers.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| mock_answer(req, answers.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn mock_answer(
    req: Request<Incoming>,
    answers: Arc<Answers>,
) -> Result<Response<MockBody>, std::convert::Infallible> {
    let api = match req.uri().path() {
        "/v1/messages" => Some(Api::Anthropic),
        "/v1/chat/completions" => Some(Api::Openai),
        _ => None,
    };
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let Some(api) = api else {
        let mut r = Response::new(MockBody::new(vec![Bytes::from_static(b"{}")], false));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    };
    let stream = contains(&body, b"\"stream\":true") || contains(&body, b"\"stream\": true");
    let (frames, content_type) = match (api, stream) {
        (Api::Anthropic, false) => (vec![answers.anthropic_json.clone()], "application/json"),
        (Api::Openai, false) => (vec![answers.openai_json.clone()], "application/json"),
        (Api::Anthropic, true) => (answers.anthropic_sse.clone(), "text/event-stream"),
        (Api::Openai, true) => (answers.openai_sse.clone(), "text/event-stream"),
    };
    let mut r = Response::new(MockBody::new(frames, stream));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(r)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// An answer sent frame by frame: a JSON answer in one frame (with its length), a
/// stream one event group at a time, [`STREAM_GAP`] apart.
struct MockBody {
    frames: Vec<Bytes>,
    next: usize,
    stream: bool,
    gap: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl MockBody {
    fn new(frames: Vec<Bytes>, stream: bool) -> MockBody {
        MockBody {
            frames,
            next: 0,
            stream,
            gap: None,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let me = self.get_mut();
        if me.next >= me.frames.len() {
            return Poll::Ready(None);
        }
        if let Some(gap) = &mut me.gap {
            if gap.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            me.gap = None;
        }
        let frame = me.frames[me.next].clone();
        me.next += 1;
        if me.stream && me.next < me.frames.len() {
            me.gap = Some(Box::pin(tokio::time::sleep(STREAM_GAP)));
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len()
    }

    fn size_hint(&self) -> SizeHint {
        if self.stream {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.frames.iter().map(|f| f.len() as u64).sum())
        }
    }
}

// ---- warden's router, in a child process -------------------------------------------

fn policy(mock: SocketAddr) -> InferencePolicy {
    let provider = |api: Api| Provider {
        name: format!("mock-{}", api_name(api)),
        api,
        endpoint: match api {
            Api::Anthropic => format!("http://{mock}"),
            Api::Openai => format!("http://{mock}/v1"),
        },
        key_env: Some(
            match api {
                Api::Anthropic => ANTHROPIC_KEY_ENV,
                Api::Openai => OPENAI_KEY_ENV,
            }
            .to_string(),
        ),
        key_file: None,
        ca: None,
        key_secret: None,
    };
    let mut routes: Vec<Route> = Vec::new();
    for p in PATHS.iter().filter(|p| p.via == Via::Warden) {
        if routes.iter().all(|r| r.model != p.model()) {
            routes.push(Route {
                model: p.model().to_string(),
                provider: format!("mock-{}", api_name(p.provider)),
                model_rewrite: None,
                fallback: Vec::new(),
            });
        }
    }
    InferencePolicy {
        version: warden_wire::WIRE_VERSION,
        sandbox: "bench".into(),
        providers: vec![provider(Api::Anthropic), provider(Api::Openai)],
        routes,
        // Rules as a real file would have them: every detector runs on every request
        // (the prompt sets none off).
        privacy: vec![
            PrivacyRule {
                detect: vec![Detector::ApiKey, Detector::CreditCard, Detector::UsSsn],
                action: PrivacyAction::Block,
            },
            PrivacyRule {
                detect: vec![Detector::Email, Detector::Phone, Detector::Iban],
                action: PrivacyAction::Redact,
            },
        ],
        idle_timeout_secs: None,
        requests_per_minute: None,
        tokens_per_minute: None,
    }
}

struct RouterChild {
    child: Child,
    addr: SocketAddr,
    audit: PathBuf,
}

impl RouterChild {
    fn start(mock: SocketAddr, scratch: &Path) -> Result<RouterChild> {
        let policy_path = scratch.join("inference-policy.json");
        std::fs::write(&policy_path, serde_json::to_vec_pretty(&policy(mock))?)?;
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["bench", "inference", "--serve-router"])
            .arg(&policy_path)
            .env(ANTHROPIC_KEY_ENV, "sk-ant-bench-provider-key")
            .env(OPENAI_KEY_ENV, "sk-bench-provider-key")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let mut child = die_with_parent(&mut cmd)
            .spawn()
            .context("start the router's process")?;
        let out = child.stdout.take().context("router stdout")?;
        let mut line = String::new();
        let read = std::io::BufReader::new(out).read_line(&mut line);
        let addr = match read
            .ok()
            .and_then(|_| line.trim().parse::<SocketAddr>().ok())
        {
            Some(a) => a,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the router's process did not say where it listens (`{}`)",
                    line.trim()
                );
            }
        };
        Ok(RouterChild {
            child,
            addr,
            audit: scratch.join("inference.jsonl"),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Close its stdin (it shuts down and flushes its audit), wait; the audit events.
    fn stop(&mut self) -> Result<usize> {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the router's process did not stop within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let audit = std::fs::read_to_string(&self.audit).unwrap_or_default();
        Ok(audit.lines().count())
    }
}

impl Drop for RouterChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The audit sink, shared so that it can be flushed before the process ends.
struct Audit(Arc<warden_router::JsonLines>);

impl warden_router::AuditSink for Audit {
    fn record(&self, event: warden_router::RouterEvent) {
        self.0.record(event);
    }
}

/// `--serve-router POLICY`: serve the policy as warden does (2 workers, audit as JSON
/// lines next to the policy file) on 127.0.0.1, print the address, stop when stdin
/// closes.
fn serve_router(policy_path: &Path) -> Result<()> {
    let policy: InferencePolicy = serde_json::from_slice(
        &std::fs::read(policy_path)
            .with_context(|| format!("cannot read `{}`", policy_path.display()))?,
    )
    .with_context(|| format!("`{}` is not an inference policy", policy_path.display()))?;
    let dir = policy_path.parent().unwrap_or(Path::new("."));
    let audit = Arc::new(warden_router::JsonLines::open(
        &dir.join("inference.jsonl"),
    )?);
    let router = warden_router::Router::new(
        policy,
        warden_router::RouterConfig::default(),
        Audit(audit.clone()),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("warden-services")
        .enable_all()
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let handle = {
        let _g = rt.enter();
        warden_router::spawn(listener, router)?
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{addr}")?;
        out.flush()?;
    }
    let mut sink = [0u8; 64];
    while let Ok(n) = std::io::stdin().read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    rt.block_on(handle.shutdown())?;
    audit.flush();
    Ok(())
}

// ---- LiteLLM -----------------------------------------------------------------------

struct Litellm {
    child: Child,
    addr: SocketAddr,
    /// Clients authenticate with it (LiteLLM refuses to start without a strong one).
    master_key: String,
}

impl Litellm {
    fn start(mock: SocketAddr, scratch: &Path) -> Result<Litellm> {
        let python = install_litellm()?;
        let mut config = String::from("model_list:\n");
        for p in PATHS.iter().filter(|p| p.via == Via::Litellm) {
            let (model, base) = match p.provider {
                Api::Anthropic => (format!("anthropic/{}", p.model()), format!("http://{mock}")),
                Api::Openai => (format!("openai/{}", p.model()), format!("http://{mock}/v1")),
            };
            config.push_str(&format!(
                "  - model_name: {}\n    litellm_params:\n      model: {model}\n      api_base: {base}\n      api_key: sk-bench-provider-key\n",
                p.model()
            ));
        }
        let master_key = random_key()?;
        config.push_str(&format!(
            "litellm_settings:\n  telemetry: false\n  drop_params: true\ngeneral_settings:\n  master_key: {master_key}\n"
        ));
        let dir = scratch.join("litellm");
        std::fs::create_dir_all(&dir)?;
        let config_path = dir.join("config.yaml");
        std::fs::write(&config_path, config)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.join("litellm.log"))?;
        let bin = python.with_file_name("litellm");
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&config_path)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--num_workers", "1"])
            .current_dir(&dir)
            .env("HOME", &dir)
            // Offline: the model cost map bundled with the package, no telemetry, no
            // proxy between LiteLLM and the mock.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY_DISABLED", "true")
            .env("LITELLM_LOG", "ERROR")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = die_with_parent(&mut cmd)
            .spawn()
            .with_context(|| format!("cannot start `{}`", bin.display()))?;
        let mut l = Litellm {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            master_key,
        };
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = l.child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("litellm.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "LiteLLM exited ({status}) before serving: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            if health(l.addr) {
                return Ok(l);
            }
            if Instant::now() > deadline {
                bail!("LiteLLM did not answer /health/liveliness within 180 s");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Litellm {
    fn drop(&mut self) {
        // SAFETY: signals the process group created for this child, and nothing else.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sk-` and 32 random bytes in hex.
fn random_key() -> Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(format!(
        "sk-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

fn health(addr: SocketAddr) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /health/liveliness HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200")
}

/// `litellm[proxy]` at [`LITELLM_VERSION`] in a venv under `target/`; its python.
fn install_litellm() -> Result<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-inference")
        .join(format!("litellm-{LITELLM_VERSION}"));
    let python = venv.join("bin/python");
    let installed = |python: &Path| -> Option<String> {
        let out = Command::new(python)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if installed(&python).as_deref() != Some(LITELLM_VERSION) {
        println!(
            "installing litellm[proxy]=={LITELLM_VERSION} into {} (once)",
            venv.display()
        );
        if !python.exists() {
            let out = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .output()
                .context("cannot run python3 -m venv")?;
            if !out.status.success() {
                bail!(
                    "python3 -m venv failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .arg(format!("litellm[proxy]=={LITELLM_VERSION}"))
            .output()
            .context("cannot run pip")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().take(3).collect();
            bail!(
                "pip install litellm[proxy]=={LITELLM_VERSION} failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
    }
    match installed(&python) {
        Some(v) if v == LITELLM_VERSION => Ok(python),
        other => bail!("the venv holds litellm {other:?}, not {LITELLM_VERSION}"),
    }
}

// ---- load generation ---------------------------------------------------------------

/// One path as the clients reach it: a pool of keep-alive connections and the request.
struct Target {
    addr: SocketAddr,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    body_stream: Bytes,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    slots: tokio::sync::Semaphore,
}

/// A prompt as an agent sends one: code, a log with dates, times, versions and hashes,
/// no personal data (every detector runs over it and none fires).
const SYSTEM: &str = "You are a careful coding assistant working in a sandboxed repository. \
Answer briefly, show code only when asked, and never run commands that reach the network.";
const PROMPT: &str = "Review this function and the CI log below; why does the test fail?\n\n\
```rust\npub fn add(a: i64, b: i64) -> i64 {\n    a.checked_add(b).unwrap_or(i64::MAX)\n}\n\n\
#[test]\nfn adds() {\n    assert_eq!(add(2, 3), 5);\n    assert_eq!(add(i64::MAX, 1), i64::MIN);\n}\n```\n\n\
CI log (run 4821, commit 9f2c4e1b7a3d, 2024-01-15 12:30:07 UTC, rustc 1.95.0):\n\
test adds ... FAILED\nthread 'adds' panicked at src/lib.rs:9:5:\nassertion `left == right` failed\n\
  left: 9223372036854775807\n right: -9223372036854775808\n\
error: test failed, to rerun pass `--lib`; took 0.42s on runner ubuntu-22.04 (4 cores, 16 GB)\n\
The previous run (2024-01-14 09:15) passed with version 0.3.1 of the crate.";

impl Target {
    /// `key`: the credential the client sends (a placeholder, or LiteLLM's master key).
    fn new(addr: SocketAddr, p: PathDef, key: &str) -> Target {
        let model = p.model();
        let body = |stream: bool| -> Bytes {
            let v = match p.client {
                Api::Anthropic => serde_json::json!({
                    "model": model, "max_tokens": 256, "system": SYSTEM,
                    "messages": [{"role": "user", "content": PROMPT}],
                    "stream": stream,
                }),
                Api::Openai => serde_json::json!({
                    "model": model, "max_tokens": 256,
                    "messages": [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": PROMPT}],
                    "stream": stream,
                }),
            };
            Bytes::from(v.to_string())
        };
        let (path, headers) = match p.client {
            Api::Anthropic => (
                "/v1/messages",
                vec![
                    ("content-type", "application/json".to_string()),
                    ("anthropic-version", "2023-06-01".to_string()),
                    ("x-api-key", key.to_string()),
                ],
            ),
            Api::Openai => (
                "/v1/chat/completions",
                vec![
                    ("content-type", "application/json".to_string()),
                    ("authorization", format!("Bearer {key}")),
                ],
            ),
        };
        Target {
            addr,
            path,
            headers,
            body: body(false),
            body_stream: body(true),
            idle: Mutex::new(Vec::new()),
            slots: tokio::sync::Semaphore::new(MAX_CONNS),
        }
    }

    fn request(&self, stream: bool) -> Result<Request<Full<Bytes>>, String> {
        let mut b = Request::post(self.path).header(http::header::HOST, self.addr.to_string());
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        let body = if stream {
            self.body_stream.clone()
        } else {
            self.body.clone()
        };
        b.body(Full::new(body)).map_err(|e| e.to_string())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn pooled(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// One call; the instants of its first body byte and of its end.
    async fn call(&self, stream: bool) -> Result<(Instant, Instant), String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let mut sender = None;
        let mut resp = None;
        // A pooled connection the server closed while idle fails at once: once more on
        // a fresh one.
        if let Some(mut s) = self.pooled()
            && s.ready().await.is_ok()
            && let Ok(r) = s.send_request(self.request(stream)?).await
        {
            sender = Some(s);
            resp = Some(r);
        }
        let (mut sender, resp) = match (sender, resp) {
            (Some(s), Some(r)) => (s, r),
            _ => {
                let mut s = self.connect().await?;
                let r = s
                    .send_request(self.request(stream)?)
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                (s, r)
            }
        };
        let status = resp.status();
        let mut body = resp.into_body();
        let mut first = None;
        let mut got: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("answer body: {e}"))?;
            if let Some(d) = frame.data_ref() {
                if first.is_none() && !d.is_empty() {
                    first = Some(Instant::now());
                }
                got.extend_from_slice(d);
            }
        }
        let end = Instant::now();
        if status != StatusCode::OK {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&got[..got.len().min(300)])
            ));
        }
        if !contains(&got, b"bench") || !contains(&got, b"sum") {
            return Err(format!(
                "the answer lacks the mock's words: {}",
                String::from_utf8_lossy(&got[..got.len().min(300)])
            ));
        }
        if sender.ready().await.is_ok() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(sender);
        }
        Ok((first.unwrap_or(end), end))
    }
}

#[derive(Default)]
struct OpenLoop {
    /// Per successful call, ms from its due time to its end (or to its first byte when
    /// streaming).
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    achieved: f64,
}

/// `rate` calls a second to each target for `dur`, each due at a fixed time and sent
/// then whatever happened to the ones before (open loop), the targets' calls
/// interleaved; latency counted from the due time.
fn open_loop(
    rt: &tokio::runtime::Runtime,
    targets: &[Arc<Target>],
    stream: bool,
    rate: u64,
    dur: Duration,
) -> Vec<OpenLoop> {
    let n = ((rate as f64 * dur.as_secs_f64()).round() as usize).max(1);
    let k = targets.len().max(1);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let (tx, rx) = mpsc::channel::<(usize, Result<f64, String>)>();
    let start = Instant::now() + Duration::from_millis(20);
    for i in 0..n {
        for (j, target) in targets.iter().enumerate() {
            let due = start + interval.mul_f64(i as f64 + j as f64 / k as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let t = target.clone();
            let tx = tx.clone();
            rt.spawn(async move {
                let r = match tokio::time::timeout(REQUEST_TIMEOUT, t.call(stream)).await {
                    Ok(Ok((first, end))) => {
                        let at = if stream { first } else { end };
                        Ok(at.saturating_duration_since(due).as_secs_f64() * 1e3)
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
                };
                let _ = tx.send((j, r));
            });
        }
    }
    drop(tx);
    let mut out: Vec<OpenLoop> = (0..targets.len())
        .map(|_| OpenLoop {
            latencies: Vec::with_capacity(n),
            ..OpenLoop::default()
        })
        .collect();
    let deadline = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(5);
    let mut seen = vec![0usize; targets.len()];
    while seen.iter().sum::<usize>() < n * targets.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((j, r)) => {
                seen[j] += 1;
                match r {
                    Ok(ms) => out[j].latencies.push(ms),
                    Err(e) => {
                        out[j].errors += 1;
                        out[j].first_error.get_or_insert(e);
                    }
                }
            }
            Err(_) => {
                for (o, s) in out.iter_mut().zip(&seen) {
                    o.errors += n - s;
                    if n > *s {
                        o.first_error
                            .get_or_insert_with(|| "calls never reported back".into());
                    }
                }
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    for o in &mut out {
        o.achieved = o.latencies.len() as f64 / secs;
    }
    out
}

struct ClosedLoop {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    rate: f64,
}

/// `clients` callers, each sending its next call when the last one ended, for `dur`.
fn closed_loop(
    rt: &tokio::runtime::Runtime,
    target: &Arc<Target>,
    stream: bool,
    clients: usize,
    dur: Duration,
) -> ClosedLoop {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let end = start + dur;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (t, ok, errors, first_error, stop) = (
                target.clone(),
                ok.clone(),
                errors.clone(),
                first_error.clone(),
                stop.clone(),
            );
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    match tokio::time::timeout(REQUEST_TIMEOUT, t.call(stream)).await {
                        Ok(Ok(_)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed) as usize;
    let first_error = first_error.lock().unwrap_or_else(|e| e.into_inner()).take();
    ClosedLoop {
        ok,
        errors: errors.load(Ordering::Relaxed) as usize,
        first_error,
        rate: ok as f64 / secs,
    }
}

// ---- detectors ---------------------------------------------------------------------

/// Precision and recall of each detector: its own corpus, plus the shared prompts that
/// must set off none.
fn detector_scores() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/warden-wire/tests/detectors");
    let read = |name: &str| {
        let p = dir.join(format!("{name}.txt"));
        std::fs::read_to_string(&p).with_context(|| format!("cannot read `{}`", p.display()))
    };
    let shared = read("prompts")?;
    println!(
        "\nprivacy detectors on the corpus ({}; each file's cases plus prompts.txt as negatives):",
        dir.display()
    );
    println!(
        "  {:<12} {:>9} {:>7}   {:>4} {:>4} {:>4} {:>4}",
        "detector", "precision", "recall", "TP", "FP", "FN", "TN"
    );
    for (name, d) in Detector::ALL {
        let (mut s, _) = warden_wire::detect::score_cases(d, &read(name)?);
        let (shared_score, _) = warden_wire::detect::score_cases(d, &shared);
        s.false_positives += shared_score.false_positives;
        s.true_negatives += shared_score.true_negatives;
        println!(
            "  {:<12} {:>9.3} {:>7.3}   {:>4} {:>4} {:>4} {:>4}",
            name,
            s.precision(),
            s.recall(),
            s.true_positives,
            s.false_positives,
            s.false_negatives,
            s.true_negatives
        );
    }
    Ok(())
}

// ---- /proc -------------------------------------------------------------------------

/// (VmRSS, VmHWM) in KiB.
fn proc_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Processes whose process group is `pgid`.
fn group_pids(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            // state ppid pgrp: pgrp is the third field after `(comm)`.
            after.split_whitespace().nth(2) == Some(pgid.to_string().as_str())
        })
        .collect()
}

fn group_memory(pgid: u32) -> (u64, u64) {
    group_pids(pgid)
        .into_iter()
        .filter_map(proc_memory)
        .fold((0, 0), |(r, h), (r2, h2)| (r + r2, h + h2))
}

fn group_cpu_secs(pgid: u32) -> f64 {
    group_pids(pgid)
        .into_iter()
        .map(crate::bench_egress::pid_cpu_secs)
        .sum()
}

fn process_cpu_secs() -> f64 {
    crate::bench_egress::process_cpu_secs()
}

fn machine_busy_secs() -> f64 {
    crate::bench_egress::machine_busy_secs()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn scratch_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("warden-bench-inference-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_are_read_and_bad_ones_refused_with_the_option_named() {
        let o = opts(&args(
            "inference --rates 100,2000 --secs 2.5 --stream-rate 50 --closed-secs 1 --clients 8 --no-litellm",
        ))
        .unwrap();
        assert_eq!(o.rates, vec![100, 2000]);
        assert_eq!(
            (o.secs, o.stream_rate, o.closed_secs, o.clients),
            (2.5, 50, 1.0, 8)
        );
        assert!(!o.litellm && !o.debug_build && o.serve_router.is_none());
        let o = opts(&args("all")).unwrap();
        assert_eq!(
            (o.rates, o.secs, o.litellm),
            (vec![100, 500, 1000], 10.0, true)
        );
        for (bad, says) in [
            ("--rates 0", "`--rates` needs a number above 0, not `0`"),
            ("--rates 100,x", "`--rates` needs a number, not `x`"),
            (
                "--rates 200000",
                "`--rates` takes rates from 1 to 100000 requests/s",
            ),
            ("--secs", "`--secs` needs a value"),
            ("--secs NaN", "`--secs` needs a number above 0, not `NaN`"),
            ("--secs -1", "`--secs` needs a number above 0, not `-1`"),
            (
                "--clients 1e400",
                "`--clients` needs a number above 0, not `1e400`",
            ),
            ("--wat 1", "unknown option `--wat` for `bench inference`"),
        ] {
            let err = opts(&args(bad)).err().map(|e| format!("{e:#}"));
            assert_eq!(
                err.as_deref().map(|e| e.starts_with(says)),
                Some(true),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn every_warden_path_has_its_route_to_the_provider_of_its_api() {
        let mock: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let p = policy(mock);
        for path in PATHS.iter().filter(|p| p.via == Via::Warden) {
            let route = p.route_for(path.model()).unwrap();
            let provider = p.provider(&route.provider).unwrap();
            assert_eq!(provider.api, path.provider);
        }
        assert_eq!(p.providers[0].endpoint, "http://127.0.0.1:9");
        assert_eq!(p.providers[1].endpoint, "http://127.0.0.1:9/v1");
    }

    /// The bench's plumbing end to end: the mock answers both APIs, plain and streamed,
    /// directly and through an in-process router with the bench's policy.
    #[test]
    fn calls_reach_the_mock_directly_and_through_the_router() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mock = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            l.set_nonblocking(true).unwrap();
            let _g = rt.enter();
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            rt.spawn(serve_mock(l, Arc::new(Answers::new())));
            addr
        };
        let (events_tx, events) = mpsc::channel();
        let router = warden_router::Router::with_env(
            policy(mock),
            warden_router::RouterConfig::default(),
            events_tx,
            |k| Some(format!("key-of-{k}")),
        )
        .unwrap();
        let handle = {
            let _g = rt.enter();
            warden_router::spawn(TcpListener::bind("127.0.0.1:0").unwrap(), router).unwrap()
        };
        let mut calls = 0;
        for p in PATHS.iter().filter(|p| p.via != Via::Litellm) {
            let addr = match p.via {
                Via::Warden => handle.local_addr(),
                _ => mock,
            };
            let t = Arc::new(Target::new(addr, *p, "sk-placeholder"));
            for stream in [false, true] {
                // Twice: the second call reuses the pooled connection.
                for _ in 0..2 {
                    let (first, end) = rt.block_on(t.call(stream)).unwrap();
                    assert!(first <= end, "{}", p.label());
                    calls += usize::from(p.via == Via::Warden);
                }
            }
            let out = open_loop(
                &rt,
                std::slice::from_ref(&t),
                false,
                200,
                Duration::from_millis(100),
            );
            assert_eq!(
                (out[0].latencies.len(), out[0].errors),
                (20, 0),
                "{}",
                p.label()
            );
            calls += 20 * usize::from(p.via == Via::Warden);
        }
        rt.block_on(handle.shutdown()).unwrap();
        let events: Vec<warden_router::RouterEvent> = events.try_iter().collect();
        assert_eq!(events.len(), calls);
        assert!(
            events
                .iter()
                .all(|e| e.status == 200 && e.decision == "route")
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e.input_tokens == Some(310))
                .count(),
            calls
        );
    }
}
