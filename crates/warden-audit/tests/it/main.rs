//! The audit store against its files: queries, crash safety (a writer SIGKILLed while
//! appending), egress imports; each against SQLite and against PostgreSQL (the server
//! `WARDEN_TEST_POSTGRES` names, see `pg.rs`).

mod pg;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use warden_audit::{CRASH_ENV, Detail, Event, Filter, SPOOL_FILE, Store, import_egress};

const CHILD_ENV: &str = "WARDEN_AUDIT_TEST_CHILD_STATE";
const CHILD_PG_ENV: &str = "WARDEN_AUDIT_TEST_CHILD_POSTGRES";

fn granted(order: &str) -> Detail {
    Detail::OrderGranted {
        order: order.into(),
    }
}

fn ev(tenant: &str, sandbox: &str, detail: Detail, at_ms: u64) -> Event {
    let mut e = Event::new("alice", Some(tenant), Some(sandbox), detail);
    e.at_ms = at_ms;
    e
}

#[test]
fn events_come_back_filtered_oldest_first() {
    events_come_back_filtered(None);
}

#[test]
fn events_come_back_filtered_oldest_first_from_postgres() {
    let db = pg::Db::new();
    events_come_back_filtered(Some(&db.url));
}

fn events_come_back_filtered(pg: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open_at(tmp.path(), pg).unwrap();
    let events = [
        ev("acme", "a1", granted("x"), 1_000),
        ev(
            "acme",
            "a2",
            Detail::OrderRevoked { order: "x".into() },
            2_000,
        ),
        ev("globex", "g1", granted("y"), 3_000),
        ev(
            "acme",
            "a1",
            Detail::SecretSet {
                name: "K".into(),
                key_version: 1,
            },
            4_000,
        ),
    ];
    s.append(&events[..2]).unwrap();
    s.append(&events[2..]).unwrap();
    let ids = |f: Filter| -> Vec<String> {
        s.query(&f)
            .unwrap()
            .into_iter()
            .map(|e| e.sandbox.unwrap())
            .collect()
    };
    assert_eq!(ids(Filter::default()), ["a1", "a2", "g1", "a1"]);
    let acme = || Filter {
        tenant: Some("acme".into()),
        ..Filter::default()
    };
    assert_eq!(ids(acme()), ["a1", "a2", "a1"]);
    assert_eq!(
        ids(Filter {
            sandbox: Some("a1".into()),
            ..acme()
        }),
        ["a1", "a1"]
    );
    assert_eq!(
        ids(Filter {
            kind: Some("order-revoked".into()),
            ..Filter::default()
        }),
        ["a2"]
    );
    assert_eq!(
        ids(Filter {
            since_ms: Some(2_000),
            ..acme()
        }),
        ["a2", "a1"]
    );
    assert_eq!(
        ids(Filter {
            limit: Some(2),
            ..Filter::default()
        }),
        ["g1", "a1"]
    );
    // Read back whole, through a second handle on the same database.
    let again = Store::open_at(tmp.path(), pg).unwrap();
    assert_eq!(again.query(&Filter::default()).unwrap(), events.to_vec());
    // Root's only.
    let dir = tmp.path().join("audit");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.path().display());
    }
}

/// Not a test of its own: the writer the crash tests start and kill. Appends events one
/// at a time and prints `ack ID` after each append returned.
#[test]
fn child_writer() {
    let Ok(state) = std::env::var(CHILD_ENV) else {
        return;
    };
    let pg = std::env::var(CHILD_PG_ENV).ok();
    let mut s = Store::open_at(Path::new(&state), pg.as_deref()).unwrap();
    for i in 0..1_000_000u64 {
        let e = ev("acme", &format!("s{i}"), granted("x"), i);
        s.append(std::slice::from_ref(&e)).unwrap();
        println!("ack {}", e.id);
    }
}

fn start_writer(state: &Path, pg: Option<&str>, crash_after: Option<u64>) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = crash_after {
        c.env(CRASH_ENV, n.to_string());
    }
    if let Some(url) = pg {
        c.env(CHILD_PG_ENV, url);
    }
    c.spawn().unwrap()
}

fn acks(child: &mut std::process::Child, stop_after: Option<usize>) -> Vec<String> {
    let mut acked = Vec::new();
    let out = BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let Ok(line) = line else { break };
        // The harness prints `test child_writer ... ` before the first one.
        if let Some((_, id)) = line.split_once("ack ") {
            acked.push(id.to_string());
            if Some(acked.len()) == stop_after {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                // Whatever it printed before the signal landed was acknowledged too.
                continue;
            }
        }
    }
    acked
}

#[test]
fn a_writer_killed_mid_stream_loses_nothing_it_acknowledged() {
    killed_writer_loses_nothing(None);
}

#[test]
fn a_postgres_writer_killed_mid_stream_loses_nothing_it_acknowledged() {
    let db = pg::Db::new();
    killed_writer_loses_nothing(Some(&db.url));
}

fn killed_writer_loses_nothing(pg: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = start_writer(tmp.path(), pg, None);
    let acked = acks(&mut child, Some(200));
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(acked.len() >= 200, "{}", acked.len());
    let s = Store::open_at(tmp.path(), pg).unwrap();
    let stored: std::collections::HashSet<String> = s
        .query(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "lost {} acknowledged events", lost.len());
    // At most the one in flight was stored without its acknowledgement reaching us.
    assert!(
        stored.len() <= acked.len() + 1,
        "{} {}",
        stored.len(),
        acked.len()
    );
}

#[test]
fn an_event_spooled_but_not_inserted_is_recovered_on_open() {
    spooled_event_recovered(None);
}

#[test]
fn an_event_spooled_but_not_inserted_into_postgres_is_recovered_on_open() {
    let db = pg::Db::new();
    spooled_event_recovered(Some(&db));
}

fn spooled_event_recovered(pg: Option<&pg::Db>) {
    let url = pg.map(|d| d.url.as_str());
    let tmp = tempfile::tempdir().unwrap();
    // Killed right after the third event reached the spool, before its insert.
    let mut child = start_writer(tmp.path(), url, Some(3));
    let acked = acks(&mut child, None);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_eq!(acked.len(), 2);
    // The database holds two; the spool the third.
    let count = match pg {
        Some(db) => db.count_events(),
        None => {
            let db = rusqlite::Connection::open(tmp.path().join("audit/audit.db")).unwrap();
            db.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
                .unwrap()
        }
    };
    assert_eq!(count, 2);
    let spool = std::fs::read_to_string(tmp.path().join("audit").join(SPOOL_FILE)).unwrap();
    assert_eq!(spool.lines().count(), 1);
    assert!(spool.contains("\"sandbox\":\"s2\""), "{spool}");
    // Opening recovers it and empties the spool.
    let s = Store::open_at(tmp.path(), url).unwrap();
    let sandboxes: Vec<String> = s
        .query(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.sandbox.unwrap())
        .collect();
    assert_eq!(sandboxes, ["s0", "s1", "s2"]);
    assert_eq!(
        std::fs::metadata(tmp.path().join("audit").join(SPOOL_FILE))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_torn_spool_line_is_dropped_and_complete_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(tmp.path()).unwrap());
    let e = ev("acme", "a", granted("x"), 5);
    let mut line = serde_json::to_string(&e).unwrap();
    line.push('\n');
    line.push_str("{\"version\":1,\"id\":\"torn");
    std::fs::write(tmp.path().join("audit").join(SPOOL_FILE), line).unwrap();
    let s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.query(&Filter::default()).unwrap(), [e]);
}

#[test]
fn egress_decisions_are_imported_once_across_a_rotation() {
    egress_imported_once(None);
}

#[test]
fn egress_decisions_are_imported_into_postgres_once_across_a_rotation() {
    let db = pg::Db::new();
    egress_imported_once(Some(&db.url));
}

fn egress_imported_once(pg: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let sandbox_dir = tmp.path().join("sandboxes/agent");
    std::fs::create_dir_all(&sandbox_dir).unwrap();
    let line = |host: &str, decision: &str, status: u16| {
        format!(
            "{{\"ts_ms\":7,\"sandbox\":\"agent\",\"kind\":\"connect\",\"host\":\"{host}\",\"port\":443,\"method\":null,\"path\":null,\"decision\":\"{decision}\",\"rule\":null,\"reason\":\"not allowed\",\"status\":{status},\"addr\":null,\"bytes_up\":0,\"bytes_down\":0,\"duration_ms\":0,\"approval\":null}}\n"
        )
    };
    let file = sandbox_dir.join("audit.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}{}{{\"partial",
            line("a.example", "allow", 200),
            line("b.example", "deny", 403)
        ),
    )
    .unwrap();
    let mut s = Store::open_at(tmp.path(), pg).unwrap();
    assert_eq!(
        import_egress(&mut s, "agent", Some("acme"), &sandbox_dir).unwrap(),
        2
    );
    assert_eq!(
        import_egress(&mut s, "agent", Some("acme"), &sandbox_dir).unwrap(),
        0
    );
    let got = s
        .query(&Filter {
            kind: Some("egress".into()),
            tenant: Some("acme".into()),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].actor, "proxy");
    assert_eq!(
        got[1].detail,
        Detail::Egress {
            decision: "deny".into(),
            host: Some("b.example".into()),
            port: Some(443),
            method: None,
            status: 403,
            reason: Some("not allowed".into()),
        }
    );
    // The partial line is completed, then the file is rotated and a new one begun.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.truncate(text.rfind("{\"partial").unwrap());
    text.push_str(&line("c.example", "allow", 200));
    std::fs::write(&file, &text).unwrap();
    std::fs::rename(&file, sandbox_dir.join("audit.jsonl.1")).unwrap();
    std::fs::write(&file, line("d.example", "ask", 403)).unwrap();
    assert_eq!(
        import_egress(&mut s, "agent", Some("acme"), &sandbox_dir).unwrap(),
        2
    );
    let hosts: Vec<String> = s
        .query(&Filter::default())
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.detail {
            Detail::Egress { host, .. } => host,
            _ => None,
        })
        .collect();
    assert_eq!(hosts, ["a.example", "b.example", "c.example", "d.example"]);
}

/// The same events, odd bytes included, appended to both stores come back the same
/// from both, for every filter.
#[test]
fn sqlite_and_postgres_return_the_same_events() {
    let db = pg::Db::new();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut lite = Store::open(a.path()).unwrap();
    let mut post = Store::open_postgres(b.path(), &db.url).unwrap();
    assert_eq!((lite.backend(), post.backend()), ("sqlite", "postgres"));
    let mut odd = ev("acme", "a1", granted("x\0y"), 2_000);
    odd.actor = "bob\0\u{202e}\n'; DROP TABLE events; --".into();
    let events = [
        ev("acme", "a1", granted("x"), 2_000),
        odd,
        ev(
            "globex",
            "g1",
            Detail::OrderRevoked { order: "y".into() },
            1_000,
        ),
        ev(
            "acme",
            "a2",
            Detail::LoginRefused {
                code: "bad_signature".into(),
                method: "GET".into(),
                path: "/v1/../x".into(),
                remote: "127.0.0.1:1".into(),
            },
            3_000,
        ),
    ];
    for s in [&mut lite, &mut post] {
        s.append(&events[..1]).unwrap();
        s.append(&events[1..]).unwrap();
        // Appending again adds nothing (ids are unique).
        s.append(&events[2..3]).unwrap();
    }
    let filters = [
        Filter::default(),
        Filter {
            tenant: Some("acme".into()),
            ..Filter::default()
        },
        Filter {
            sandbox: Some("a1".into()),
            since_ms: Some(2_000),
            ..Filter::default()
        },
        Filter {
            kind: Some("order-granted".into()),
            limit: Some(1),
            ..Filter::default()
        },
        Filter {
            tenant: Some("nobody\0".into()),
            ..Filter::default()
        },
    ];
    for f in &filters {
        let (l, p) = (lite.query(f).unwrap(), post.query(f).unwrap());
        assert_eq!(l, p, "{f:?}");
    }
    let all = lite.query(&Filter::default()).unwrap();
    assert_eq!(all.len(), 4);
    // Same instant: in order of arrival.
    assert_eq!(all[0].at_ms, 1_000);
    assert_eq!(all[1], events[0]);
    assert_eq!(all[2], events[1]);
}

#[test]
fn an_unreachable_postgres_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://warden:hunter2@127.0.0.1:{port}/audit");
    let e = Store::open_postgres(tmp.path(), &url)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "audit database `postgres://warden:***@127.0.0.1:{port}/audit`: cannot connect to it"
        )),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let e = Store::open_postgres(tmp.path(), "postgres://h/db?sslmode=nonsense")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the URL of it"), "{e}");
}
