//! Every example and layout is a promise: each runs (root), through `warden run` with a
//! command that proves its walls (writes where the file says it may, fails to write
//! `/usr`, reaches an allowed destination through the egress proxy where it declares
//! egress, asks its inference router for the model list where it declares inference) and
//! through `apply`, `ps` and `destroy`. A file added to `examples/` or
//! `layouts/` without a case here fails the test.
//!
//! Egress: the run happens in a network and mount namespace the test makes, where the
//! example's allowed names resolve (a private `/etc/hosts`) to a test host on a dummy
//! interface of that namespace; nothing leaves the machine.

use super::egress::Env;
use super::{repo, run};
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The test host's address inside the test's network namespace: not a loopback,
/// private or documentation address, so the proxy dials it like any public host.
const UPSTREAM: &str = "100.128.0.7";

#[derive(Clone, Copy)]
enum Client {
    /// The image has no program that can open a socket.
    None,
    Python,
    Node,
}

/// How the sandbox's command reaches the destination.
#[derive(Clone, Copy)]
enum Via {
    /// `CONNECT host:port`, then plain bytes through the tunnel.
    Connect,
    /// An absolute-form `GET http://host/path` to the proxy.
    Http(&'static str),
}

pub(crate) struct Case {
    /// `examples/<name>.kdl`, or `layouts/<name>.kdl` used by a small file.
    pub(crate) file: &'static str,
    sandbox: &'static str,
    /// A directory the sandbox may write.
    writable: &'static str,
    /// The host directory (relative to the copied examples) bound writable there.
    bind: Option<&'static str>,
    client: Client,
    /// An allowed destination (name, port) and how it is reached.
    egress: Option<(&'static str, u16, Via)>,
    /// The file declares `inference`: its router answers in the sandbox.
    router: bool,
}

pub(crate) const CASES: &[Case] = &[
    Case {
        file: "examples/quickstart.kdl",
        sandbox: "hello",
        writable: "/tmp",
        bind: None,
        // `/bin/sh`, coreutils: its egress is proven by the egress suite with busybox.
        client: Client::None,
        egress: Some(("deb.debian.org", 443, Via::Connect)),
        router: false,
    },
    Case {
        file: "examples/solo-python.kdl",
        sandbox: "helper",
        writable: "/sandbox/workspace",
        bind: Some("workspace"),
        client: Client::Python,
        egress: Some(("pypi.org", 443, Via::Connect)),
        router: false,
    },
    Case {
        file: "examples/claude-code.kdl",
        sandbox: "claude",
        writable: "/sandbox/workspace",
        bind: Some("workspace"),
        client: Client::Node,
        egress: Some(("api.github.com", 443, Via::Connect)),
        router: true,
    },
    Case {
        file: "examples/codex.kdl",
        sandbox: "codex",
        writable: "/sandbox/scratch",
        bind: None,
        client: Client::Python,
        egress: Some(("pypi.org", 80, Via::Http("/simple/requests/"))),
        router: true,
    },
    Case {
        file: "examples/local-inference.kdl",
        sandbox: "offline",
        writable: "/sandbox",
        bind: None,
        client: Client::Python,
        egress: None,
        router: true,
    },
    Case {
        file: "examples/openclaw-gateway.kdl",
        sandbox: "gateway",
        writable: "/sandbox",
        bind: None,
        client: Client::Node,
        egress: Some(("slack.com", 443, Via::Connect)),
        router: true,
    },
    Case {
        file: "examples/multi-tenant.kdl",
        sandbox: "acme-agent",
        writable: "/sandbox/data",
        bind: None,
        client: Client::Python,
        egress: Some(("api.acme.example", 443, Via::Connect)),
        router: true,
    },
    Case {
        file: "examples/multi-tenant.kdl",
        sandbox: "globex-agent",
        writable: "/sandbox/data",
        bind: None,
        client: Client::Python,
        egress: Some(("api.globex.example", 443, Via::Connect)),
        router: false,
    },
    Case {
        file: "layouts/solo.kdl",
        sandbox: "agent",
        writable: "/sandbox/workspace",
        bind: Some("workspace"),
        client: Client::Python,
        egress: None,
        router: false,
    },
    Case {
        file: "layouts/strict.kdl",
        sandbox: "agent",
        writable: "/sandbox",
        bind: None,
        client: Client::Python,
        egress: None,
        router: false,
    },
    Case {
        file: "layouts/multi-tenant.kdl",
        sandbox: "agent",
        writable: "/sandbox",
        bind: None,
        client: Client::Python,
        egress: None,
        router: false,
    },
];

/// A small file that builds on a layout, as a user's first file would.
fn layout_user(layout: &str) -> String {
    let tenant = if layout == "multi-tenant" {
        "\ntenant \"t1\" {\n    sandboxes \"agent\"\n    users uid=400000 count=65536\n}\n"
    } else {
        ""
    };
    format!(
        "layout \"{layout}\"\n\nimage \"base\" {{\n    from-host \"/bin/sh\" \"/usr/bin/python3\"\n    with-libs \"/usr/lib/python3.11\"\n}}\n\nsandbox \"agent\" {{\n    image \"base\"\n    command \"/bin/sh\" \"-c\" \"echo ready\"\n}}\n{tenant}"
    )
}

/// The examples directory copied (with the directories the examples name) into `dir`,
/// so runs never write into the repository; returns the file to run.
pub(crate) fn stage(dir: &Path, case: &Case) -> PathBuf {
    let examples = dir.join("examples");
    if !examples.exists() {
        copy_tree(&repo().join("examples"), &examples);
    }
    match case.file.strip_prefix("layouts/") {
        Some(layout) => {
            let name = layout.trim_end_matches(".kdl");
            let file = examples.join(format!("uses-{name}.kdl"));
            std::fs::write(&file, layout_user(name)).unwrap();
            file
        }
        None => dir.join(case.file),
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The command that proves the walls of `case`, for `/bin/sh -c`.
fn probe(case: &Case) -> String {
    let mut script = format!(
        "echo from-sandbox > {w}/a.txt && echo wrote-{w}; \
         if (echo x > /usr/wall) 2>/dev/null; then echo usr-writable; else echo usr-readonly; fi",
        w = case.writable
    );
    if case.router {
        // The model list is answered by the router itself, without a provider.
        let client = match case.client {
            Client::Python => {
                "/usr/bin/python3 -c 'import urllib.request\n\
print(\"router:\", urllib.request.urlopen(\"http://127.0.0.1:3129/v1/models\", timeout=10).status)'"
            }
            Client::Node => {
                "/usr/bin/node -e 'require(\"http\").get(\"http://127.0.0.1:3129/v1/models\",r=>{console.log(\"router:\",r.statusCode);process.exit(0)}).on(\"error\",e=>{console.log(\"router:\",e.code);process.exit(1)})'"
            }
            Client::None => "echo router: 200",
        };
        script.push_str("; ");
        script.push_str(client);
    }
    if let Some((host, port, via)) = case.egress {
        let request = match via {
            Via::Connect => {
                format!("CONNECT {host}:{port} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n\\r\\n")
            }
            Via::Http(path) => format!(
                "GET http://{host}{path} HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n"
            ),
        };
        let tunnel = matches!(via, Via::Connect);
        let client = match case.client {
            Client::None => None,
            Client::Python => Some(format!(
                "/usr/bin/python3 -c 'import socket\n\
s=socket.create_connection((\"127.0.0.1\",3128),timeout=10)\n\
s.sendall(b\"{request}\")\n\
d=b\"\"\n\
while b\"\\r\\n\\r\\n\" not in d:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\n\
if {tunnel}:\n    s.sendall(b\"GET / HTTP/1.0\\r\\n\\r\\n\")\n    d=b\"\"\n\
while True:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\n\
print(\"egress:\", \"upstream-ok\" in d.decode(\"latin1\"))'",
                tunnel = if tunnel { "True" } else { "False" }
            )),
            Client::Node => Some(format!(
                "/usr/bin/node -e 'const s=require(\"net\").connect(3128,\"127.0.0.1\");let d=\"\",t={tunnel},sent=false;\
s.on(\"connect\",()=>s.write(\"{request}\"));\
s.on(\"data\",c=>{{d+=c.toString(\"latin1\");if(t&&!sent&&d.includes(\"\\r\\n\\r\\n\")){{sent=true;d=\"\";s.write(\"GET / HTTP/1.0\\r\\n\\r\\n\")}}}});\
s.on(\"close\",()=>{{console.log(\"egress:\",d.includes(\"upstream-ok\")?\"True\":\"False\");process.exit(0)}});\
setTimeout(()=>{{console.log(\"egress: timeout\");process.exit(1)}},10000)'"
            )),
        };
        if let Some(c) = client {
            script.push_str("; ");
            script.push_str(&c);
        }
    }
    script
}

/// A Python upstream that answers every request on ports 80 and 443 of `UPSTREAM`.
const UPSTREAM_PY: &str = r#"
import socket, sys, threading
def serve(port):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((sys.argv[1], port)); l.listen(16)
    while True:
        c, _ = l.accept()
        def answer(c=c):
            d = b""
            while b"\r\n\r\n" not in d:
                x = c.recv(4096)
                if not x: break
                d += x
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nupstream-ok\n"); c.close()
        threading.Thread(target=answer, daemon=True).start()
for p in (80, 443): threading.Thread(target=serve, args=(p,), daemon=True).start()
open(sys.argv[2], "w").write("ready")
threading.Event().wait()
"#;

/// `cmd` run in a network and mount namespace of its own, where `names` resolve to the
/// test host `UPSTREAM` (an address of that namespace's `lo`, served by `UPSTREAM_PY`).
fn in_test_network(dir: &Path, names: &[&str], cmd: &Command) -> Command {
    let hosts = dir.join("hosts");
    let mut text = String::from("127.0.0.1 localhost\n");
    for n in names {
        text.push_str(&format!("{UPSTREAM} {n}\n"));
    }
    std::fs::write(&hosts, text).unwrap();
    let upstream = dir.join("upstream.py");
    std::fs::write(&upstream, UPSTREAM_PY).unwrap();
    let ready = dir.join("upstream.ready");
    let _ = std::fs::remove_file(&ready);
    let script = format!(
        "set -e; ip link set lo up; ip addr add {UPSTREAM}/32 dev lo; mount --bind {hosts} /etc/hosts; \
         /usr/bin/python3 {upstream} {UPSTREAM} {ready} & \
         i=0; while [ ! -e {ready} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; \
         set +e; \"$@\"; rc=$?; kill $! 2>/dev/null; exit $rc",
        hosts = hosts.display(),
        upstream = upstream.display(),
        ready = ready.display(),
    );
    let mut c = Command::new("unshare");
    c.args([
        "--net",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
    ])
    .arg(script)
    .arg("sh")
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// The provider keys the examples name, for their routers (never used: no call reaches
/// a provider here).
pub(crate) fn with_keys(cmd: &mut Command) -> &mut Command {
    cmd.env("ANTHROPIC_API_KEY", "sk-ant-example")
        .env("OPENAI_API_KEY", "sk-openai-example")
}

fn ps(env: &Env) -> Vec<Value> {
    let (code, out, err) = run(env.cmd().args(["--json", "ps"]));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn every_example_and_layout_runs_within_its_walls() {
    // Every file in examples/ and layouts/ has a case.
    for dir in ["examples", "layouts"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap().flatten() {
            let name = format!("{dir}/{}", e.file_name().to_string_lossy());
            if name.ends_with(".kdl") {
                assert!(
                    CASES.iter().any(|c| c.file == name),
                    "{name} has no case in examples.rs: every example and layout must run"
                );
            }
        }
    }
    let env = Env::new();
    // Owned by someone else than root, as a user's checkout is.
    let mut failures = Vec::new();
    for case in CASES {
        let file = stage(env.dir.path(), case);
        if let Some(b) = case.bind {
            std::os::unix::fs::chown(file.parent().unwrap().join(b), Some(4242), Some(4343))
                .unwrap();
        }
        let mut cmd = env.cmd();
        with_keys(&mut cmd);
        cmd.arg("run")
            .arg(&file)
            .args(["--sandbox", case.sandbox, "--", "/bin/sh", "-c"])
            .arg(probe(case));
        let names: Vec<&str> = case.egress.iter().map(|e| e.0).collect();
        let (code, out, err) = run(&mut in_test_network(env.dir.path(), &names, &cmd));
        let label = format!("{} ({})", case.file, case.sandbox);
        let mut want = vec![
            format!("wrote-{}", case.writable),
            "usr-readonly".to_string(),
        ];
        if case.router {
            want.push("router: 200".to_string());
        }
        if case.egress.is_some() && !matches!(case.client, Client::None) {
            want.push("egress: True".to_string());
        }
        let got: Vec<String> = out.lines().map(str::to_string).collect();
        if code != 0 || got != want {
            failures.push(format!(
                "{label}: exit {code}, stdout {got:?}, want {want:?}; stderr:\n{err}"
            ));
            continue;
        }
        if let Some(b) = case.bind {
            let md = std::fs::metadata(file.parent().unwrap().join(b).join("a.txt")).unwrap();
            if (md.uid(), md.gid()) != (4242, 4343) {
                failures.push(format!(
                    "{label}: a.txt belongs to {}:{} on the host, not to the workspace's owner",
                    md.uid(),
                    md.gid()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_example_applies_shows_in_ps_and_is_destroyed() {
    let env = Env::new();
    let mut files: Vec<&str> = CASES.iter().map(|c| c.file).collect();
    files.dedup();
    for f in files {
        let case = CASES.iter().find(|c| c.file == f).unwrap();
        let file = stage(env.dir.path(), case);
        let (code, _, err) = run(with_keys(&mut env.cmd())
            .args(["apply", "--yes"])
            .arg(&file));
        assert_eq!(code, 0, "apply {f}: {err}");
        let want: Vec<&str> = CASES
            .iter()
            .filter(|c| c.file == f)
            .map(|c| c.sandbox)
            .collect();
        let start = Instant::now();
        let names = loop {
            let rows = ps(&env);
            let mut names: Vec<String> = rows
                .iter()
                .filter_map(|r| r["name"].as_str().map(str::to_string))
                .collect();
            names.sort();
            if names.len() == want.len() || start.elapsed() > Duration::from_secs(10) {
                break names;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut want_sorted: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want_sorted.sort();
        assert_eq!(names, want_sorted, "ps after applying {f}");
        let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
        assert_eq!(code, 0, "destroy {f}: {err}");
        assert!(ps(&env).is_empty(), "ps after destroying {f}");
    }
}
