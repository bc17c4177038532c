//! Root: the multi-tenant example's two tenants run side by side and stay apart. From
//! inside one tenant's sandbox, the other's egress proxy, inference router and volume
//! are out of reach: `127.0.0.1:3128` and `:3129` are the sandbox's own listeners (the
//! other tenant's sit on the same addresses in another network namespace), and the
//! other tenant's volume is neither mounted nor reachable by its host path.

use super::egress::Env;
use super::examples::{CASES, stage, with_keys};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Python run in each sandbox, with `ME`, `OTHER` (tenant names) and `OTHER_VOLUME` (the
/// host path of the other tenant's volume) set by the template. Prints `ready` once
/// its marker is in its volume, probes after `WAIT` seconds, then stays up `HOLD`
/// seconds so the other tenant can probe while it runs.
const PROBE: &str = r#"
import os, socket, time
open("/sandbox/data/marker-ME", "w").write("ME's data")
print("ready", flush=True)
time.sleep(WAIT)
def connect(port, payload):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as e:
        return type(e).__name__
    s.sendall(payload)
    d = b""
    while b"\r\n" not in d:
        c = s.recv(4096)
        if not c: break
        d += c
    return d.split(b"\r\n")[0].decode("latin1")
# The proxy at 3128 is this tenant's: it refuses the other tenant's allowed host.
print("proxy:", connect(3128, b"CONNECT api.OTHER.example:443 HTTP/1.1\r\nHost: api.OTHER.example:443\r\n\r\n"), flush=True)
# The router at 3129 (only acme declares inference).
print("router:", connect(3129, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), flush=True)
print("volume:", sorted(n for n in os.listdir("/sandbox/data") if n.startswith("marker-")), flush=True)
for p in ("OTHER_VOLUME", "OTHER_VOLUME/marker-OTHER", "/proc/1/root/OTHER_VOLUME"):
    try:
        open(p).read()
        print("other volume: read", p, flush=True)
    except OSError as e:
        print("other volume:", type(e).__name__, flush=True)
print("interfaces:", sorted(n for _, n in socket.if_nameindex()), flush=True)
print("done", flush=True)
time.sleep(HOLD)
"#;

fn probe(me: &str, other: &str, other_volume: &str, wait: u32, hold: u32) -> String {
    PROBE
        .replace("OTHER_VOLUME", other_volume)
        .replace("OTHER", other)
        .replace("ME", me)
        .replace("WAIT", &wait.to_string())
        .replace("HOLD", &hold.to_string())
}

/// The sandbox's stdout, line by line, as it comes.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// Lines up to and including `last`.
fn until(rx: &mpsc::Receiver<String>, last: &str, what: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => {
                let end = l == last;
                got.push(l);
                if end {
                    return got;
                }
            }
            Err(_) => panic!("{what}: no `{last}` line; got {got:?}"),
        }
    }
}

/// Kills a child left running by a failed assertion.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tenants_of_the_multi_tenant_example_cannot_reach_each_other() {
    let env = Env::new();
    let case = CASES
        .iter()
        .find(|c| c.file == "examples/multi-tenant.kdl")
        .unwrap();
    let file = stage(env.dir.path(), case);
    let state = env.dir.path().join("state");
    let volume = |t: &str| state.join(format!("tenants/{t}/volumes/data"));
    let start = |sandbox: &str, script: String| {
        let mut cmd = env.cmd();
        with_keys(&mut cmd);
        let child = cmd
            .arg("run")
            .arg(&file)
            .args(["--sandbox", sandbox, "--", "/usr/bin/python3", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Reap(child)
    };
    // acme first: up, its router listening, while globex probes; then it probes while
    // globex is up.
    let acme_volume = volume("acme").display().to_string();
    let globex_volume = volume("globex").display().to_string();
    let mut acme = start("acme-agent", probe("acme", "globex", &globex_volume, 6, 8));
    let acme_out = lines(&mut acme.0);
    assert_eq!(until(&acme_out, "ready", "acme"), ["ready"]);
    let mut globex = start("globex-agent", probe("globex", "acme", &acme_volume, 0, 12));
    let globex_out = lines(&mut globex.0);
    let g = until(&globex_out, "done", "globex");
    assert!(
        acme.0.try_wait().unwrap().is_none(),
        "acme ended before globex probed"
    );
    let a = until(&acme_out, "done", "acme");
    assert!(
        globex.0.try_wait().unwrap().is_none(),
        "globex ended before acme probed"
    );
    // acme: its own proxy refuses globex's host; its own router answers; its volume
    // holds its marker only; globex's volume is not there by its host path nor through
    // another process's root.
    assert_eq!(
        a,
        [
            "proxy: HTTP/1.1 403 Forbidden",
            "router: HTTP/1.1 200 OK",
            "volume: ['marker-acme']",
            "other volume: FileNotFoundError",
            "other volume: FileNotFoundError",
            "other volume: FileNotFoundError",
            "interfaces: ['lo']",
            "done",
        ]
    );
    // globex: acme's router address is refused (nothing listens there in globex's
    // namespace); its proxy refuses acme's host.
    assert_eq!(
        g,
        [
            "ready",
            "proxy: HTTP/1.1 403 Forbidden",
            "router: ConnectionRefusedError",
            "volume: ['marker-globex']",
            "other volume: FileNotFoundError",
            "other volume: FileNotFoundError",
            "other volume: FileNotFoundError",
            "interfaces: ['lo']",
            "done",
        ]
    );
    // On the host each volume is its own tenant's: owned by an id of its range, closed
    // to everyone else.
    for (t, first) in [("acme", 200_000), ("globex", 300_000)] {
        let md = std::fs::metadata(volume(t)).unwrap();
        assert!(
            (first..first + 65_536).contains(&md.uid()),
            "{t}: uid {}",
            md.uid()
        );
        assert_eq!(md.mode() & 0o777, 0o700, "{t}");
    }
}
