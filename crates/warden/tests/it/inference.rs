//! The inference router served per sandbox (root): real clients, unmodified, inside a
//! sandbox reach mock providers on the host's loopback through the router, which adds
//! the real keys on the way out; the real keys appear nowhere the sandbox can look; an
//! edited route applies to the next call of a running sandbox, run or applied; a missing
//! key stops the start; Claude Code runs headless and interactive against a mock.
//!
//! The mocks speak just enough of the Anthropic Messages and OpenAI Chat Completions and
//! Responses APIs for the official SDKs and the agents: one plain HTTP, one HTTPS with a
//! certificate authority made here (the provider's `ca=`).

use super::egress::Env;
use super::run;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as a mock saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `POST /v1/messages?beta=true`
    pub line: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a mock answers one request with.
pub enum Answer {
    /// 200 with a JSON body.
    Json(String),
    /// 200 with server-sent events (`(name, data)`, no `event:` line when the name is
    /// empty), each in a chunk of its own.
    Sse(Vec<(String, String)>),
    /// Another status with a JSON body.
    Status(u16, String),
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A mock provider: by default answering every API call with `text` (split in two
/// deltas when streamed), or as a test's script says.
pub struct Mock {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn plain(text: &'static str) -> Mock {
        Mock::start(fixed(text), None, Pace::Quick)
    }

    pub fn tls(text: &'static str, ca: &TestCa) -> Mock {
        Mock::start(fixed(text), Some(ca.server_config()), Pace::Quick)
    }

    /// A plain mock whose streamed answers trickle: one event every `gap`.
    pub fn slow(text: &'static str, gap: Duration) -> Mock {
        Mock::start(fixed(text), None, Pace::Slow(gap))
    }

    /// A plain mock answering each request as `script` says.
    pub fn scripted(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Mock {
        Mock::start(Arc::new(script), None, Pace::Quick)
    }

    fn start(script: Script, tls: Option<Arc<rustls::ServerConfig>>, pace: Pace) -> Mock {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind mock");
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let (log, tls, script) = (log.clone(), tls.clone(), script.clone());
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = c.set_nodelay(true);
                    match tls {
                        Some(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                return;
                            };
                            serve(rustls::StreamOwned::new(conn, c), &*script, pace, &log);
                        }
                        None => serve(c, &*script, pace, &log),
                    }
                });
            }
        });
        Mock { port, seen }
    }
}

#[derive(Clone, Copy)]
pub enum Pace {
    Quick,
    Slow(Duration),
}

/// The request's `model` and whether it asks for a stream.
pub fn model_and_stream(seen: &Seen) -> (String, bool) {
    let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap_or_default();
    let model = body["model"].as_str().unwrap_or("model").to_string();
    (model, body["stream"].as_bool() == Some(true))
}

/// Every API answered with `text`, in the API the path names.
fn fixed(text: &'static str) -> Script {
    Arc::new(move |seen: &Seen| {
        let (model, stream) = model_and_stream(seen);
        let path = seen.line.split(' ').nth(1).unwrap_or("").to_string();
        let path = path.split('?').next().unwrap_or("").to_string();
        if path.ends_with("/messages/count_tokens") {
            Answer::Json(r#"{"input_tokens":12}"#.into())
        } else if path.ends_with("/messages") {
            if stream {
                Answer::Sse(anthropic_events(&model, text))
            } else {
                Answer::Json(anthropic_message(&model, text))
            }
        } else if path.ends_with("/chat/completions") {
            if stream {
                Answer::Sse(chat_events(&model, text))
            } else {
                Answer::Json(chat_completion(&model, text))
            }
        } else if path.ends_with("/responses") {
            if stream {
                Answer::Sse(responses_events(&model, text))
            } else {
                Answer::Json(response(&model, text, "completed").to_string())
            }
        } else {
            Answer::Status(
                404,
                r#"{"error":{"type":"not_found","message":"not here"}}"#.into(),
            )
        }
    })
}

fn serve<S: Read + Write>(
    mut s: S,
    script: &(dyn Fn(&Seen) -> Answer + Send + Sync),
    pace: Pace,
    log: &Mutex<Vec<Seen>>,
) {
    let mut buf = Vec::new();
    while let Some(seen) = read_request(&mut s, &mut buf) {
        log.lock().unwrap().push(seen.clone());
        let ok = match script(&seen) {
            Answer::Json(b) => json(&mut s, &b),
            Answer::Sse(events) => sse(&mut s, &events, pace),
            Answer::Status(status, b) => write!(
                s,
                "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                b.len()
            )
            .is_ok(),
        };
        if !ok || s.flush().is_err() {
            return;
        }
    }
}

pub fn read_request<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut b = [0u8; 8192];
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.trim_end_matches(" HTTP/1.1").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..head_end + 4);
    while buf.len() < len {
        let mut b = [0u8; 8192];
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let body = String::from_utf8_lossy(&buf.drain(..len).collect::<Vec<u8>>()).to_string();
    Some(Seen {
        line,
        headers,
        body,
    })
}

pub fn json<S: Write>(s: &mut S, body: &str) -> bool {
    write!(
        s,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .is_ok()
}

/// Server-sent events, each as one chunk of a chunked answer.
pub fn sse<S: Write>(s: &mut S, events: &[(String, String)], pace: Pace) -> bool {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
    if s.write_all(head.as_bytes()).is_err() {
        return false;
    }
    for (name, data) in events {
        let ev = if name.is_empty() {
            format!("data: {data}\n\n")
        } else {
            format!("event: {name}\ndata: {data}\n\n")
        };
        if write!(s, "{:x}\r\n{ev}\r\n", ev.len()).is_err() || s.flush().is_err() {
            return false;
        }
        if let Pace::Slow(gap) = pace {
            std::thread::sleep(gap);
        }
    }
    s.write_all(b"0\r\n\r\n").is_ok()
}

/// The answer's text in two deltas: `"hello from"` and `" plain"` for `"hello from plain"`.
fn halves(text: &str) -> (String, String) {
    match text.rfind(' ') {
        Some(i) => (text[..i].to_string(), text[i..].to_string()),
        None => (text.to_string(), String::new()),
    }
}

fn anthropic_message(model: &str, text: &str) -> String {
    serde_json::json!({
        "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    })
    .to_string()
}

fn anthropic_events(model: &str, text: &str) -> Vec<(String, String)> {
    let (a, b) = halves(text);
    let e = |n: &str, v: serde_json::Value| (n.to_string(), v.to_string());
    vec![
        e(
            "message_start",
            serde_json::json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 1}}}),
        ),
        e(
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
        e(
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": a}}),
        ),
        e(
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": b}}),
        ),
        e(
            "content_block_stop",
            serde_json::json!({"type": "content_block_stop", "index": 0}),
        ),
        e(
            "message_delta",
            serde_json::json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 3}}),
        ),
        e("message_stop", serde_json::json!({"type": "message_stop"})),
    ]
}

pub(super) fn chat_completion(model: &str, text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    })
    .to_string()
}

pub(super) fn chat_events(model: &str, text: &str) -> Vec<(String, String)> {
    let (a, b) = halves(text);
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        (
            String::new(),
            serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk",
                "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    };
    vec![
        chunk(
            serde_json::json!({"role": "assistant", "content": a}),
            serde_json::Value::Null,
        ),
        chunk(serde_json::json!({"content": b}), serde_json::Value::Null),
        chunk(serde_json::json!({}), serde_json::json!("stop")),
        (String::new(), "[DONE]".to_string()),
    ]
}

fn response(model: &str, text: &str, status: &str) -> serde_json::Value {
    let output = if status == "completed" {
        serde_json::json!([{"type": "message", "id": "msg_mock", "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}])
    } else {
        serde_json::json!([])
    };
    serde_json::json!({
        "id": "resp_mock", "object": "response", "created_at": 1, "status": status,
        "model": model, "output": output, "parallel_tool_calls": true, "tool_choice": "auto",
        "tools": [],
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0}},
    })
}

fn responses_events(model: &str, text: &str) -> Vec<(String, String)> {
    let (a, b) = halves(text);
    let item = |status: &str, text: &str| {
        serde_json::json!({"type": "message", "id": "msg_mock", "status": status,
            "role": "assistant",
            "content": if text.is_empty() { serde_json::json!([]) } else {
                serde_json::json!([{"type": "output_text", "text": text, "annotations": []}]) }})
    };
    let e = |n: &str, mut v: serde_json::Value, seq: u64| {
        v["type"] = serde_json::json!(n);
        v["sequence_number"] = serde_json::json!(seq);
        (n.to_string(), v.to_string())
    };
    vec![
        e(
            "response.created",
            serde_json::json!({"response": response(model, text, "in_progress")}),
            0,
        ),
        e(
            "response.output_item.added",
            serde_json::json!({"output_index": 0, "item": item("in_progress", "")}),
            1,
        ),
        e(
            "response.content_part.added",
            serde_json::json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []}}),
            2,
        ),
        e(
            "response.output_text.delta",
            serde_json::json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                "delta": a, "logprobs": []}),
            3,
        ),
        e(
            "response.output_text.delta",
            serde_json::json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                "delta": b, "logprobs": []}),
            4,
        ),
        e(
            "response.output_text.done",
            serde_json::json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                "text": text, "logprobs": []}),
            5,
        ),
        e(
            "response.content_part.done",
            serde_json::json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": text, "annotations": []}}),
            6,
        ),
        e(
            "response.output_item.done",
            serde_json::json!({"output_index": 0, "item": item("completed", text)}),
            7,
        ),
        e(
            "response.completed",
            serde_json::json!({"response": response(model, text, "completed")}),
            8,
        ),
    ]
}

/// A certificate authority made for one test: its PEM in a file (the provider's `ca=`)
/// and a certificate for 127.0.0.1 it signed.
pub struct TestCa {
    pub pem_path: PathBuf,
    _dir: tempfile::TempDir,
    leaf_der: rustls::pki_types::CertificateDer<'static>,
    leaf_key: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "warden inference test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, ca_cert.pem()).unwrap();
        TestCa {
            pem_path,
            _dir: dir,
            leaf_der: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.leaf_key.clone().into());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![self.leaf_der.clone()], key)
                .unwrap(),
        )
    }
}

/// A key no file and no image holds: only warden's environment.
pub(super) fn real_key(kind: &str) -> String {
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("sk-{kind}-real-{hex}")
}

pub(super) const PLACEHOLDER: &str = "sk-warden-placeholder-the-router-adds-the-real-key";

/// Every regular file below `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file()
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(e.path());
            }
        }
    }
    found
}

/// The bundles warden made for `sandbox` (in the test's shared cache).
fn bundles_of(sandbox: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("warden-cache")
        .join("bundles");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{sandbox}-"))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// The key is nowhere the sandbox can read or warden wrote: not in any bundle of the
/// sandbox, not in its state directory (audit logs), not in the environ dump.
pub(super) fn assert_key_kept_out(env: &Env, sandbox: &str, key: &str, dump: &str) {
    assert!(!dump.contains(key), "the sandbox saw the real key");
    let bundles = bundles_of(sandbox);
    assert!(!bundles.is_empty(), "no bundle of `{sandbox}` found");
    for b in bundles {
        assert_eq!(
            files_holding(&b, key),
            Vec::<PathBuf>::new(),
            "{}",
            b.display()
        );
    }
    let state = env.dir.path().join("state");
    assert_eq!(files_holding(&state, key), Vec::<PathBuf>::new());
}

/// The official `anthropic` and `openai` Python packages, installed once for the test
/// suite with the host's pip.
pub(super) fn python_sdks() -> PathBuf {
    static ONCE: Mutex<()> = Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-cache/python-sdks");
    let done = dir.join(".installed");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new("/usr/bin/python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                "--target",
            ])
            .arg(&dir)
            .args(["anthropic", "openai"])
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .status()
            .expect("these tests need pip for /usr/bin/python3 (Debian: python3-pip)");
        assert!(status.success(), "pip install anthropic openai failed");
        std::fs::write(&done, "").unwrap();
    }
    dir
}

/// Debian's Python 3.11 (what `with-libs "/usr/lib/python3.11"` copies the library of).
pub(super) fn assert_debian_python() {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", "import sys; print(sys.version_info[:2])"])
        .output()
        .expect("these tests need /usr/bin/python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "(3, 11)",
        "/usr/bin/python3 must be Debian's 3.11"
    );
}

/// What the Python client in the sandbox does: every API, plain and streamed, then a
/// dump of every process's environment it can read.
const CLIENT_PY: &str = r#"
import os, sys
import anthropic, openai

a = anthropic.Anthropic()
m = a.messages.create(model="claude-test", max_tokens=16,
                      messages=[{"role": "user", "content": "write a haiku about walls"}])
print("anthropic:", m.content[0].text)
with a.messages.stream(model="claude-test", max_tokens=16,
                       messages=[{"role": "user", "content": "and one about doors"}]) as s:
    print("anthropic-stream:", "".join(s.text_stream))

o = openai.OpenAI()
c = o.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
print("chat:", c.choices[0].message.content)
parts = []
for ch in o.chat.completions.create(model="gpt-test", stream=True,
                                    messages=[{"role": "user", "content": "hi"}]):
    if ch.choices and ch.choices[0].delta.content:
        parts.append(ch.choices[0].delta.content)
print("chat-stream:", "".join(parts))
r = o.responses.create(model="gpt-test", input="hi")
print("responses:", r.output_text)
parts = []
for ev in o.responses.create(model="gpt-test", input="hi", stream=True):
    if ev.type == "response.output_text.delta":
        parts.append(ev.delta)
print("responses-stream:", "".join(parts))
sys.stdout.flush()

read = 0
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    try:
        raw = open("/proc/%s/environ" % pid, "rb").read()
    except OSError as e:
        print("environ %s: unreadable (%s)" % (pid, e.strerror))
        continue
    read += 1
    for kv in raw.split(b"\0"):
        if kv:
            print("environ %s: %s" % (pid, kv.decode("utf-8", "replace")))
print("environs read:", read)
"#;

/// What the SDKs' compiled extensions (`pydantic_core`, `jiter`) link besides what
/// Python itself does.
const PY_EXT_LIBS: &str = "\"/lib/x86_64-linux-gnu/librt.so.1\" \"/lib/x86_64-linux-gnu/libgcc_s.so.1\" \"/lib/x86_64-linux-gnu/libpthread.so.0\" \"/lib/x86_64-linux-gnu/libdl.so.2\"";

pub(super) fn python_image(sdks: &Path, client: &Path) -> String {
    format!(
        "image \"py\" {{\n    from-host \"/usr/bin/python3\"\n    with-libs \"/usr/lib/python3.11\" {PY_EXT_LIBS}\n    copy {:?} to=\"/opt/sdk\"\n    copy {:?} to=\"/opt/client.py\"\n    env \"PYTHONPATH\" \"/opt/sdk\"\n    env \"PYTHONDONTWRITEBYTECODE\" \"1\"\n}}\n",
        sdks.display().to_string(),
        client.display().to_string()
    )
}

#[test]
fn official_sdks_reach_plain_and_tls_providers_with_keys_they_never_see() {
    assert_debian_python();
    let env = Env::new();
    let sdks = python_sdks();
    let ca = TestCa::new();
    let plain = Mock::plain("hello from plain");
    let tls = Mock::tls("hello over tls", &ca);
    let (anthropic_key, openai_key) = (real_key("ant"), real_key("oai"));
    let client = env.dir.path().join("client.py");
    std::fs::write(&client, CLIENT_PY).unwrap();
    let file = env.file();
    std::fs::write(
        &file,
        format!(
            "{}\nprovider \"anthropic\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_ANTHROPIC_KEY\"\nprovider \"openai\" api=\"openai\" endpoint=\"https://127.0.0.1:{}/v1\" key-env=\"WARDEN_TEST_OPENAI_KEY\" ca={:?}\n\nsandbox \"sdks\" {{\n    image \"py\"\n    command \"/usr/bin/python3\" \"/opt/client.py\"\n    inference {{\n        route \"claude-*\" to=\"anthropic\"\n        route \"gpt-*\" to=\"openai\"\n    }}\n}}\n",
            python_image(&sdks, &client),
            plain.port,
            tls.port,
            ca.pem_path.display().to_string()
        ),
    )
    .unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_ANTHROPIC_KEY", &anthropic_key)
        .env("WARDEN_TEST_OPENAI_KEY", &openai_key));
    assert_eq!(code, 0, "{out}\n{err}");
    let answers: Vec<&str> = out.lines().filter(|l| !l.starts_with("environ")).collect();
    assert_eq!(
        answers,
        [
            "anthropic: hello from plain",
            "anthropic-stream: hello from plain",
            "chat: hello over tls",
            "chat-stream: hello over tls",
            "responses: hello over tls",
            "responses-stream: hello over tls",
        ],
        "{err}"
    );
    // The sandbox's environment: the placeholder and the router's address, never a key.
    let environ: Vec<&str> = out.lines().filter(|l| l.starts_with("environ")).collect();
    let read: usize = environ
        .last()
        .and_then(|l| l.strip_prefix("environs read: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(read >= 2, "pid 1 and the client at least: {environ:?}");
    for var in [
        format!("ANTHROPIC_API_KEY={PLACEHOLDER}"),
        format!("OPENAI_API_KEY={PLACEHOLDER}"),
        "ANTHROPIC_BASE_URL=http://127.0.0.1:3129".to_string(),
        "OPENAI_BASE_URL=http://127.0.0.1:3129/v1".to_string(),
        "NO_PROXY=localhost,127.0.0.1,::1".to_string(),
    ] {
        let n = environ
            .iter()
            .filter(|l| l.split_once(": ").is_some_and(|(_, kv)| kv == var))
            .count();
        assert_eq!(n, read, "`{var}` in every environment: {environ:?}");
    }
    assert!(
        !environ.iter().any(|l| l.contains("WARDEN_TEST_")),
        "{environ:?}"
    );
    assert_key_kept_out(&env, "sdks", &anthropic_key, &out);
    assert_key_kept_out(&env, "sdks", &openai_key, &out);
    // Each provider saw its own real key on each of its three calls, and no placeholder.
    let a = plain.seen();
    assert_eq!(
        a.iter().map(|s| s.line.as_str()).collect::<Vec<_>>(),
        ["POST /v1/messages", "POST /v1/messages"]
    );
    for s in &a {
        assert_eq!(s.header("x-api-key"), Some(anthropic_key.as_str()));
        assert_eq!(s.header("authorization"), None);
        assert!(!s.headers.iter().any(|(_, v)| v.contains(PLACEHOLDER)));
    }
    let o = tls.seen();
    assert_eq!(
        o.iter().map(|s| s.line.as_str()).collect::<Vec<_>>(),
        [
            "POST /v1/chat/completions",
            "POST /v1/chat/completions",
            "POST /v1/responses",
            "POST /v1/responses"
        ]
    );
    let bearer = format!("Bearer {openai_key}");
    for s in &o {
        assert_eq!(s.header("authorization"), Some(bearer.as_str()));
        assert!(!s.headers.iter().any(|(_, v)| v.contains(PLACEHOLDER)));
    }
    // One audit event per call, in the sandbox's state directory, root's only; the
    // prompts are not in it.
    let state = env.dir.path().join("state/sandboxes/sdks");
    let audit_path = state.join("inference.jsonl");
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, String, u64)> = events
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap().to_string(),
                e["provider"].as_str().unwrap_or("-").to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let row = |e: &str, p: &str| (e.to_string(), p.to_string(), 200);
    assert_eq!(
        summary,
        [
            row("messages", "anthropic"),
            row("messages", "anthropic"),
            row("chat-completions", "openai"),
            row("chat-completions", "openai"),
            row("responses", "openai"),
            row("responses", "openai"),
        ]
    );
    assert!(!audit.contains("haiku"), "{audit}");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&audit_path).unwrap().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
}

/// A busybox image for sandboxes that call the router with `wget`.
const BUSYBOX: &str = "image \"bb\" {\n    from-host \"/bin/busybox\"\n}\n";

/// A shell loop calling `POST /v1/messages` through the router every quarter second and
/// printing each answer's text (the answer has no final newline: `echo` adds it), `n`
/// times.
fn calling_loop(n: u32) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do \
           busybox wget -q -O- --header 'content-type: application/json' --header 'anthropic-version: 2023-06-01' \
             --post-data '{{\"model\":\"claude-test\",\"max_tokens\":8,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}' \
             http://127.0.0.1:3129/v1/messages | busybox sed -n 's/.*\"text\":\"\\([^\"]*\\)\".*/\\1/p'; echo; \
           i=$((i+1)); busybox sleep 0.25; done"
    )
}

fn routed_file(script: &str, a: &Mock, b: &Mock, to: &str) -> String {
    format!(
        "{BUSYBOX}\nprovider \"a\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_KEY\"\nprovider \"b\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_KEY\"\n\nsandbox \"routed\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    filesystem {{\n        read-write \"/tmp\"\n    }}\n    inference {{\n        route \"claude-*\" to=\"{to}\"\n    }}\n}}\n",
        a.port, b.port
    )
}

/// Lines of `path` (a growing log) once `pred` holds for them, within `timeout`.
fn wait_for_lines(
    what: &str,
    timeout: Duration,
    mut read: impl FnMut() -> String,
    pred: impl Fn(&[&str]) -> bool,
) -> String {
    let start = Instant::now();
    loop {
        let text = read();
        if pred(&text.lines().collect::<Vec<_>>()) {
            return text;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_edited_route_applies_to_the_next_call_of_a_running_sandbox() {
    let env = Env::new();
    let (a, b) = (Mock::plain("answer from a"), Mock::plain("answer from b"));
    let key = real_key("route");
    let file = env.file();
    std::fs::write(&file, routed_file(&calling_loop(200), &a, &b, "a")).unwrap();
    let mut child = env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(String::new()));
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut s = lines.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
    }
    let read = || lines.lock().unwrap().clone();
    wait_for_lines("answers from a", Duration::from_secs(30), read, |l| {
        l.len() >= 2
    });
    assert!(b.seen().is_empty());
    // The edit: same file, the route now names `b`.
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("route \"claude-*\" to=\"a\"", "route \"claude-*\" to=\"b\"");
    std::fs::write(&file, edited).unwrap();
    let text = wait_for_lines("an answer from b", Duration::from_secs(20), read, |l| {
        l.iter().filter(|x| **x == "answer from b").count() >= 2
    });
    // SIGTERM: forwarded to the sandbox; the run then shuts its router down, which
    // writes the audit log out.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every answer before the edit came from `a`, every one after from `b`.
    let answers: Vec<&str> = text.lines().collect();
    let first_b = answers.iter().position(|x| *x == "answer from b").unwrap();
    assert!(first_b >= 2, "{answers:?}");
    assert!(
        answers[..first_b].iter().all(|x| *x == "answer from a"),
        "{answers:?}"
    );
    assert!(
        answers[first_b..].iter().all(|x| *x == "answer from b"),
        "{answers:?}"
    );
    assert!(
        stderr.contains("warden: inference policy of `routed` reloaded from"),
        "{stderr}"
    );
    // Both providers got the real key; the audit names who answered each call.
    for m in [&a, &b] {
        assert!(
            m.seen()
                .iter()
                .all(|s| s.header("x-api-key") == Some(key.as_str()))
        );
    }
    let audit = std::fs::read_to_string(
        env.dir
            .path()
            .join("state/sandboxes/routed/inference.jsonl"),
    )
    .unwrap();
    let providers: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["provider"].to_string())
        .collect();
    // The calls printed, in order (a call cut by the SIGTERM may follow).
    let expected: Vec<String> = answers
        .iter()
        .map(|a| format!("\"{}\"", a.trim_start_matches("answer from ")))
        .collect();
    assert_eq!(providers[..expected.len()], expected[..], "{audit}");
}

#[test]
fn a_missing_key_stops_the_run_naming_provider_and_variable() {
    let env = Env::new();
    let a = Mock::plain("unused");
    let file = env.file();
    std::fs::write(&file, routed_file("exit 0", &a, &a, "a")).unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env_remove("WARDEN_TEST_KEY"));
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err,
        "error: sandbox `routed`: provider `a`: no key: environment variable `WARDEN_TEST_KEY` is not set; the inference router reads provider keys from warden's environment when the sandbox starts\n"
    );
    assert!(a.seen().is_empty());
    // `apply` refuses before starting anything.
    let (code, _, err) = run(env
        .cmd()
        .args(["apply", "--yes"])
        .arg(&file)
        .env_remove("WARDEN_TEST_KEY"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "error: sandbox `routed`: provider `a`: no key: environment variable `WARDEN_TEST_KEY` is not set"
        ),
        "{err}"
    );
    let (_, ps, _) = run(env.cmd().args(["--json", "ps"]));
    assert_eq!(ps.trim(), "[]");
}

/// A sandbox of tenant `acme` whose provider takes its key from the tenant's secret store
/// (`key-secret`): calls once through the router, then dumps every environment it can
/// read.
fn keyed_file(mock: &Mock, secret: &str, then: &str) -> String {
    let call = calling_loop(1);
    format!(
        "{BUSYBOX}\nprovider \"a\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-secret=\"{secret}\"\n\nsandbox \"keyed\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {:?}\n    init grace=\"1s\"\n    inference {{\n        route \"claude-*\" to=\"a\"\n    }}\n}}\n\ntenant \"acme\" {{\n    sandboxes \"keyed\"\n    users uid=300000 count=65536\n}}\n",
        mock.port,
        format!("{call}; {DUMP_ENVIRON}; {then}")
    )
}

/// Root: the router of `run` and of an applied sandbox's supervisor reads a
/// `key-secret` key from the tenant's store; the upstream gets it, while no file under
/// the state, run and cache directories, no bundle and no environment in the sandbox
/// holds it. A secret the store lacks stops the run, naming provider, secret and tenant.
#[test]
fn a_key_secret_reaches_the_provider_and_nothing_else() {
    use super::secret::{kek, with_stdin};
    let env = Env::new();
    let kek = kek(env.dir.path(), "kek", 7);
    let key = real_key("secret");
    let mut set = env.cmd();
    set.env("WARDEN_KEK_FILE", &kek)
        .args(["secret", "set", "acme", "llm-key"]);
    assert_eq!(with_stdin(set, &key).0, 0);
    let mock = Mock::plain("answer through a secret key");
    let file = env.file();
    std::fs::write(&file, keyed_file(&mock, "llm-key", "true")).unwrap();
    let (code, out, err) = run(env
        .cmd()
        .env("WARDEN_KEK_FILE", &kek)
        .env_remove("WARDEN_TEST_KEY")
        .arg("run")
        .arg(&file));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().next(),
        Some("answer through a secret key"),
        "{out}"
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].header("x-api-key"), Some(key.as_str()));
    assert!(out.lines().any(|l| l.starts_with("environ")), "{out}");
    assert_key_kept_out(&env, "keyed", &key, &out);
    assert!(!err.contains(&key), "{err}");

    // Applied: the supervisor's router reads it too; its launch file names the secret.
    std::fs::write(
        &file,
        keyed_file(&mock, "llm-key", "exec busybox sleep 1000"),
    )
    .unwrap();
    let (code, _, err) = run(env
        .cmd()
        .env("WARDEN_KEK_FILE", &kek)
        .args(["apply", "--yes"])
        .arg(&file));
    let applied = Applied(&env, file.clone());
    assert_eq!(code, 0, "{err}");
    let logs = wait_for_lines(
        "the applied sandbox's answer and environ dump",
        Duration::from_secs(30),
        || logs(&env, "keyed"),
        |l| l.first() == Some(&"answer through a secret key") && l.len() > 2,
    );
    assert_eq!(mock.seen().len(), 2);
    assert_eq!(mock.seen()[1].header("x-api-key"), Some(key.as_str()));
    assert!(!logs.contains(&key));
    let naming = files_holding(env.dir.path(), "llm-key");
    assert!(
        naming.iter().any(|p| p.ends_with("launch.json")),
        "no launch file names the secret: {naming:?}"
    );
    // The sandbox's log holds what it printed (its own business, checked above); no
    // file warden wrote holds the key.
    drop(applied);
    let written: Vec<PathBuf> = files_holding(env.dir.path(), &key);
    assert_eq!(written, Vec::<PathBuf>::new());
    assert_key_kept_out(&env, "keyed", &key, &logs);

    // A secret the store does not hold.
    std::fs::write(&file, keyed_file(&mock, "nope", "true")).unwrap();
    let (code, _, err) = run(env.cmd().env("WARDEN_KEK_FILE", &kek).arg("run").arg(&file));
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "error: sandbox `keyed`: provider `a`: no key: the tenant's secret `nope` cannot be read: tenant `acme` has no secret `nope`\n"
        )
    );
    // Without the key-encryption key.
    std::fs::write(&file, keyed_file(&mock, "llm-key", "true")).unwrap();
    let (code, _, err) = run(env
        .cmd()
        .env_remove("WARDEN_KEK_FILE")
        .env_remove("CREDENTIALS_DIRECTORY")
        .arg("run")
        .arg(&file));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("error: sandbox `keyed`: provider `a`: no key: the tenant's secret `llm-key` cannot be read: no key-encryption key"),
        "{err}"
    );
    assert_eq!(mock.seen().len(), 2);
}

/// Destroys what a test applied from `file`, passed or not.
struct Applied<'a>(&'a Env, PathBuf);

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        let _ = run(self.0.cmd().args(["destroy", "--yes"]).arg(&self.1));
    }
}

fn logs(env: &Env, name: &str) -> String {
    run(env.cmd().args(["logs", name])).1
}

fn ps_row(env: &Env, name: &str) -> serde_json::Value {
    let (_, out, _) = run(env.cmd().args(["--json", "ps"]));
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    rows.as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or_default()
}

#[test]
fn an_applied_sandbox_calls_through_its_router_and_a_route_edit_is_a_reload() {
    let env = Env::new();
    let (a, b) = (Mock::plain("answer from a"), Mock::plain("answer from b"));
    let key = real_key("applied");
    let file = env.file();
    std::fs::write(&file, routed_file(&calling_loop(400), &a, &b, "a")).unwrap();
    let applied = Applied(&env, file.clone());
    let (code, out, err) = run(env
        .cmd()
        .args(["apply", "--yes"])
        .arg(&file)
        .env("WARDEN_TEST_KEY", &key));
    assert_eq!(code, 0, "{out}{err}");
    wait_for_lines(
        "answers from a",
        Duration::from_secs(30),
        || logs(&env, "routed"),
        |l| l.len() >= 2,
    );
    let pid = ps_row(&env, "routed")["pid"].clone();
    assert!(pid.is_i64(), "{pid}");
    std::fs::write(&file, routed_file(&calling_loop(400), &a, &b, "b")).unwrap();
    let (code, out, _) = run(env.cmd().arg("plan").arg(&file));
    assert_eq!(code, 0);
    assert!(
        out.starts_with("  ~ reload   routed  (inference)\n"),
        "{out}"
    );
    // The supervisor holds its own copy of the environment: this apply needs no key.
    let (code, out, err) = run(env
        .cmd()
        .args(["apply", "--yes"])
        .arg(&file)
        .env_remove("WARDEN_TEST_KEY"));
    assert_eq!(code, 0, "{out}{err}");
    let text = wait_for_lines(
        "answers from b",
        Duration::from_secs(30),
        || logs(&env, "routed"),
        |l| l.iter().filter(|x| **x == "answer from b").count() >= 2,
    );
    let answers: Vec<&str> = text.lines().collect();
    let first_b = answers.iter().position(|x| *x == "answer from b").unwrap();
    assert!(
        answers[..first_b].iter().all(|x| *x == "answer from a")
            && answers[first_b..].iter().all(|x| *x == "answer from b"),
        "{answers:?}"
    );
    let row = ps_row(&env, "routed");
    assert_eq!(row["pid"], pid, "reloaded, not restarted: {row}");
    assert_eq!(row["restarts"], 0, "{row}");
    for m in [&a, &b] {
        assert!(
            m.seen()
                .iter()
                .all(|s| s.header("x-api-key") == Some(key.as_str()))
        );
    }
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    std::mem::forget(applied);
    // The supervisor wrote the router's audit on its way out; the key is not in it.
    let audit = std::fs::read_to_string(
        env.dir
            .path()
            .join("state/sandboxes/routed/inference.jsonl"),
    )
    .unwrap();
    let providers: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["provider"].to_string())
        .collect();
    assert!(providers.len() >= answers.len(), "{audit}");
    assert!(providers.contains(&"\"a\"".into()) && providers.contains(&"\"b\"".into()));
    assert_key_kept_out(&env, "routed", &key, &text);
}

/// Claude Code's native binary from npm (`@anthropic-ai/claude-code`, whose package for
/// this platform carries it), installed once for the test suite.
pub(super) fn claude_code() -> PathBuf {
    static ONCE: Mutex<()> = Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-cache/claude-code");
    let bin = dir.join("node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@anthropic-ai/claude-code")
            .status()
            .expect("these tests need npm (Debian: npm)");
        assert!(
            status.success(),
            "npm install @anthropic-ai/claude-code failed"
        );
    }
    assert!(bin.exists(), "no native binary at `{}`", bin.display());
    bin
}

/// A sandbox running Claude Code as the file asks (`agent "claude-code"`), with busybox
/// for the shell around it.
fn claude_file(claude: &Path, mock: &Mock, script: &str) -> String {
    claude_file_with(
        claude,
        &format!(
            "provider \"anthropic\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_ANTHROPIC_KEY\"\n",
            mock.port
        ),
        "        route \"*\" to=\"anthropic\"\n",
        script,
    )
}

/// The same with the file's `provider` nodes and the `inference` block's children given.
pub(super) fn claude_file_with(
    claude: &Path,
    providers: &str,
    inference: &str,
    script: &str,
) -> String {
    format!(
        "image \"claude\" {{\n    from-host {:?} \"/bin/busybox\"\n    env \"PATH\" \"/usr/bin:/bin\"\n}}\n\n{providers}\nsandbox \"claude\" {{\n    image \"claude\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    workdir \"/sandbox\"\n    filesystem {{\n        read-write \"/home/agent\" \"/tmp\" \"/sandbox\"\n    }}\n    limits memory=\"2GiB\" pids=512 cpus=2 open-files=4096\n    init grace=\"2s\"\n    agent \"claude-code\"\n    inference {{\n{inference}    }}\n}}\n",
        claude.display().to_string(),
    )
}

/// Prints every variable of every process the sandbox's user can read, one per line.
pub(super) const DUMP_ENVIRON: &str = "for f in /proc/[0-9]*/environ; do busybox tr '\\000' '\\n' < $f | busybox sed \"s|^|environ $f: |\"; done";

#[test]
fn claude_code_answers_headless_through_the_router() {
    let env = Env::new();
    let claude = claude_code();
    let mock = Mock::plain("hello from the mock");
    let key = real_key("claude");
    let file = env.file();
    let script = format!(
        "{} -p 'say hi' > /tmp/answer 2> /tmp/errors & pid=$!; {DUMP_ENVIRON}; wait $pid; echo \"claude exit=$?\"; busybox cat /tmp/answer; busybox cat /tmp/errors >&2",
        claude.display()
    );
    std::fs::write(&file, claude_file(&claude, &mock, &script)).unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_ANTHROPIC_KEY", &key));
    assert_eq!(code, 0, "{out}\n{err}");
    let answer: Vec<&str> = out.lines().filter(|l| !l.starts_with("environ")).collect();
    assert_eq!(
        answer,
        ["claude exit=0", "hello from the mock"],
        "{err}\n{:#?}",
        mock.seen()
    );
    // Claude Code's call: streamed Messages with its beta header, the real key added.
    let calls: Vec<Seen> = mock
        .seen()
        .into_iter()
        .filter(|s| s.line == "POST /v1/messages?beta=true")
        .collect();
    assert!(!calls.is_empty(), "{:#?}", mock.seen());
    for s in &mock.seen() {
        assert_eq!(s.header("x-api-key"), Some(key.as_str()), "{}", s.line);
        assert!(!s.headers.iter().any(|(_, v)| v.contains(PLACEHOLDER)));
    }
    let streamed = calls.iter().any(|s| {
        serde_json::from_str::<serde_json::Value>(&s.body).unwrap()["stream"] == true
            && s.header("anthropic-beta").is_some()
    });
    assert!(streamed, "{calls:#?}");
    let environ: Vec<&str> = out.lines().filter(|l| l.starts_with("environ")).collect();
    assert!(
        environ
            .iter()
            .any(|l| l.ends_with(&format!("ANTHROPIC_API_KEY={PLACEHOLDER}"))),
        "{environ:?}"
    );
    assert_key_kept_out(&env, "claude", &key, &out);
}

/// A program on a pseudo-terminal the test types into, as a user at a terminal would.
struct Terminal {
    master: std::fs::File,
    child: std::process::Child,
    /// Everything written to the terminal.
    raw: Arc<Mutex<Vec<u8>>>,
    /// What a user would see: the output rendered by a terminal emulator (programs redraw
    /// only the cells that change, so the raw stream does not hold the words whole).
    screen: Arc<Mutex<vt100::Parser>>,
}

impl Terminal {
    fn spawn(cmd: &mut Command, rows: u16, cols: u16) -> Terminal {
        use std::os::unix::process::CommandExt;
        let (master, slave) = super::openpty(rows, cols);
        // SAFETY: setsid and the ioctl are async-signal-safe; the terminal becomes the
        // child's controlling terminal, as a login shell's is.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .expect("spawn warden");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let raw = Arc::new(Mutex::new(Vec::new()));
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        {
            let mut reader = master.try_clone().unwrap();
            let (raw, screen) = (raw.clone(), screen.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    raw.lock().unwrap().extend_from_slice(&buf[..n]);
                    screen.lock().unwrap().process(&buf[..n]);
                }
            });
        }
        Terminal {
            master,
            child,
            raw,
            screen,
        }
    }

    /// Everything written to the terminal so far, without escape sequences.
    fn written(&self) -> String {
        strip_escapes(&String::from_utf8_lossy(&self.raw.lock().unwrap()))
    }

    /// The screen as it looks now.
    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until `what` is on the screen.
    fn wait_for(&self, what: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let t = self.text();
            if t.contains(what) {
                return t;
            }
            assert!(
                start.elapsed() < timeout,
                "`{what}` never appeared on the terminal:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_keys(&mut self, keys: &str) {
        for b in keys.bytes() {
            self.master.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `text` without ANSI escape sequences (CSI, OSC) and carriage returns.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn claude_code_answers_a_typed_prompt_at_a_terminal() {
    let env = Env::new();
    let claude = claude_code();
    let mock = Mock::plain("hello from the mock");
    let key = real_key("claude");
    let file = env.file();
    // The environment of every process, then the interactive program itself.
    let script = format!("{DUMP_ENVIRON}; exec {}", claude.display());
    std::fs::write(&file, claude_file(&claude, &mock, &script)).unwrap();
    let mut term = Terminal::spawn(
        env.cmd()
            .arg("run")
            .arg(&file)
            .env("WARDEN_TEST_ANTHROPIC_KEY", &key)
            .env("TERM", "xterm-256color"),
        40,
        120,
    );
    // Straight into the prompt: no onboarding, no key question, no trust dialog.
    term.wait_for("? for shortcuts", Duration::from_secs(60));
    let before = term.written();
    assert!(!before.contains("trust"), "{before}");
    assert!(!before.contains("Not logged in"), "{before}");
    term.type_keys("say hi");
    std::thread::sleep(Duration::from_millis(300));
    term.type_keys("\r");
    term.wait_for("hello from the mock", Duration::from_secs(60));
    let after = term.written();
    let calls: Vec<Seen> = mock
        .seen()
        .into_iter()
        .filter(|s| s.line.starts_with("POST /v1/messages"))
        .collect();
    assert!(
        calls.iter().any(|s| s.body.contains("say hi")),
        "{calls:#?}"
    );
    for s in &mock.seen() {
        assert_eq!(s.header("x-api-key"), Some(key.as_str()), "{}", s.line);
    }
    drop(term);
    assert!(
        after.contains(&format!("ANTHROPIC_API_KEY={PLACEHOLDER}")),
        "{after}"
    );
    assert_key_kept_out(&env, "claude", &key, &after);
}

/// Codex's static binary from npm (`@openai/codex`, whose package for this platform
/// carries it), installed once for the test suite.
pub(super) fn codex() -> PathBuf {
    static ONCE: Mutex<()> = Mutex::new(());
    let _g = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-cache/codex");
    let bin =
        dir.join("node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg("@openai/codex")
            .status()
            .expect("these tests need npm (Debian: npm)");
        assert!(status.success(), "npm install @openai/codex failed");
    }
    assert!(bin.exists(), "no binary at `{}`", bin.display());
    bin
}

#[test]
fn codex_answers_through_the_router_from_its_rendered_configuration() {
    let env = Env::new();
    let codex = codex();
    let ca = TestCa::new();
    let mock = Mock::tls("hello from the responses mock", &ca);
    let key = real_key("codex");
    let file = env.file();
    let script = format!(
        "{} exec --skip-git-repo-check 'say hi' > /tmp/answer 2> /tmp/errors; echo \"codex exit=$?\"; busybox cat /tmp/answer; \
         echo \"CODEX_HOME=$CODEX_HOME\"; busybox head -n 4 \"$CODEX_HOME/config.toml\" | busybox grep model_provider; \
         echo x >> \"$CODEX_HOME/config.toml\" 2>/dev/null && echo config-writable || echo config-read-only; \
         busybox ls \"$CODEX_HOME\" > /dev/null && busybox touch \"$CODEX_HOME/mine\" && echo home-writable; \
         busybox cat /tmp/errors >&2",
        codex.display()
    );
    std::fs::write(
        &file,
        format!(
            "image \"codex\" {{\n    from-host {:?} \"/bin/busybox\"\n    env \"PATH\" \"/usr/bin:/bin\"\n}}\n\nprovider \"openai\" api=\"openai\" endpoint=\"https://127.0.0.1:{}/v1\" key-env=\"WARDEN_TEST_OPENAI_KEY\" ca={:?}\n\nsandbox \"codex\" {{\n    image \"codex\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    workdir \"/sandbox\"\n    filesystem {{\n        read-write \"/home/agent\" \"/tmp\" \"/sandbox\"\n    }}\n    limits memory=\"2GiB\" pids=512 cpus=2 open-files=4096\n    init grace=\"2s\"\n    agent \"codex\"\n    inference {{\n        route \"*\" to=\"openai\"\n    }}\n}}\n",
            codex.display().to_string(),
            mock.port,
            ca.pem_path.display().to_string()
        ),
    )
    .unwrap();
    let (code, out, err) = run(env
        .cmd()
        .arg("run")
        .arg(&file)
        .env("WARDEN_TEST_OPENAI_KEY", &key));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "codex exit=0",
            "hello from the responses mock",
            "CODEX_HOME=/home/agent/.codex",
            "model_provider = \"warden\"",
            "config-read-only",
            "home-writable",
        ],
        "{err}\n{:#?}",
        mock.seen()
    );
    let calls: Vec<Seen> = mock
        .seen()
        .into_iter()
        .filter(|s| s.line.starts_with("POST /v1/responses"))
        .collect();
    assert!(!calls.is_empty(), "{:#?}", mock.seen());
    let bearer = format!("Bearer {key}");
    for s in &mock.seen() {
        assert_eq!(
            s.header("authorization"),
            Some(bearer.as_str()),
            "{}",
            s.line
        );
    }
    assert_key_kept_out(&env, "codex", &key, &out);
}

/// Restarts the churn test waits for.
const RESTARTS: u64 = 300;

/// A supervisor restarts its sandbox hundreds of times while its router is busy: each run
/// starts a streamed call that trickles from the provider and exits in the middle of it,
/// so calls of the previous run are still being relayed, cut and audited when the next
/// container is cloned, and `warden ps` keeps the control socket busy all along. A lock
/// held by one of those threads at a clone would leave the copy hung and the restarts
/// would stop.
#[test]
fn hundreds_of_restarts_under_router_load_never_hang() {
    let env = Env::new();
    let mock = Mock::slow("a slow answer in many words", Duration::from_millis(40));
    let key = real_key("churn");
    let file = env.file();
    let script = "busybox wget -q -O- --header 'content-type: application/json' --header 'anthropic-version: 2023-06-01' \
        --post-data '{\"model\":\"claude-test\",\"max_tokens\":8,\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}' \
        http://127.0.0.1:3129/v1/messages > /dev/null & busybox usleep 60000; exit 0";
    std::fs::write(
        &file,
        format!(
            "{BUSYBOX}\nprovider \"a\" api=\"anthropic\" endpoint=\"http://127.0.0.1:{}\" key-env=\"WARDEN_TEST_KEY\"\n\nsandbox \"churn\" {{\n    image \"bb\"\n    command \"/bin/busybox\" \"sh\" \"-c\" {script:?}\n    restart \"always\" backoff=\"0ms\"\n    init grace=\"1s\"\n    inference {{\n        route \"claude-*\" to=\"a\"\n    }}\n}}\n",
            mock.port
        ),
    )
    .unwrap();
    let applied = Applied(&env, file.clone());
    let (code, out, err) = run(env
        .cmd()
        .args(["apply", "--yes"])
        .arg(&file)
        .env("WARDEN_TEST_KEY", &key));
    assert_eq!(code, 0, "{out}{err}");
    let start = Instant::now();
    let (mut last, mut last_change) = (0u64, Instant::now());
    loop {
        let row = ps_row(&env, "churn");
        let restarts = row["restarts"].as_u64().unwrap_or(0);
        if restarts >= RESTARTS {
            break;
        }
        if restarts != last {
            (last, last_change) = (restarts, Instant::now());
        }
        let supervisor =
            std::fs::read_to_string(env.dir.path().join("run/supervisors/churn/supervisor.log"))
                .unwrap_or_default();
        assert!(
            last_change.elapsed() < Duration::from_secs(30),
            "no restart for 30 s after {restarts} (a cloned process hung?): {row}\n{}",
            supervisor
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {restarts} restarts in 10 minutes: {row}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, err) = run(env.cmd().args(["destroy", "--yes"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    std::mem::forget(applied);
    // The router was at work throughout: most runs' calls reached the provider, and each
    // call it saw is in the audit.
    let calls = mock.seen().len() as u64;
    eprintln!(
        "{RESTARTS} restarts in {:.1} s, {calls} calls reached the provider",
        start.elapsed().as_secs_f64()
    );
    assert!(calls >= RESTARTS / 2, "only {calls} calls reached the mock");
    let audit =
        std::fs::read_to_string(env.dir.path().join("state/sandboxes/churn/inference.jsonl"))
            .unwrap();
    assert!(
        audit.lines().count() as u64 >= calls,
        "{} events for {calls} calls",
        audit.lines().count()
    );
}
