//! A database of its own for each test, on the PostgreSQL server `WARDEN_TEST_POSTGRES`
//! names (`postgres://USER@HOST:PORT/DB`); `cargo xtask test` starts one and sets it.
//! Without it these tests fail: a store that was not tested is not passed.

use std::sync::atomic::{AtomicU32, Ordering};

pub const ENV: &str = "WARDEN_TEST_POSTGRES";

/// The server's URL; a missing one fails the test with how to start a server.
pub fn server_url() -> String {
    match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{ENV} is not set: the PostgreSQL audit tests need a server. `cargo xtask test` \
             starts one; by hand, run `cargo xtask postgres start` (as root, Debian's \
             `postgresql` package installed) and export the URL it prints"
        ),
    }
}

/// `url` with its database replaced by `db` (the query string kept).
pub fn with_database(url: &str, db: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let host_end = head[start..].find('/').map_or(head.len(), |i| start + i);
    format!("{}/{db}{query}", &head[..host_end])
}

/// A fresh database, dropped when the test ends.
pub struct Db {
    pub url: String,
    name: String,
}

impl Db {
    pub fn new() -> Db {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "warden_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = postgres::Client::connect(&server_url(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to {ENV}: {e}"));
        // One statement per call: a multi-statement string is one transaction, which
        // neither may run in.
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        Db {
            url: with_database(&server_url(), &name),
            name,
        }
    }

    pub fn count_events(&self) -> i64 {
        let mut c = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        c.query_one("SELECT count(*) FROM warden_audit.events", &[])
            .unwrap()
            .get(0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&server_url(), postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[test]
fn with_database_replaces_the_path_only() {
    assert_eq!(
        with_database("postgres://u@127.0.0.1:5432/postgres", "t1"),
        "postgres://u@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u@h/postgres?host=/tmp/x", "t1"),
        "postgres://u@h/t1?host=/tmp/x"
    );
    assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
}
