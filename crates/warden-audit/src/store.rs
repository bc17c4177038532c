//! The store: a spool file that makes an event durable, and a SQLite database (WAL) that
//! makes it queryable.
//!
//! Appending a batch: take the spool's `flock`, append the batch as JSON lines and
//! `fdatasync` (from here the events survive a SIGKILL), insert every line the spool
//! holds into SQLite in one transaction (`INSERT OR IGNORE` by id, so a line left by a
//! writer killed after its insert is not counted twice), truncate the spool (unsynced:
//! lines it brings back after a power cut are inserted again as no-ops), release the
//! lock. Opening the store does the same with whatever a killed writer left.

use crate::error::AuditError;
use crate::event::{Detail, EVENT_VERSION, Event};
use rusqlite::{Connection, OptionalExtension, params};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DB_FILE: &str = "audit.db";
pub const SPOOL_FILE: &str = "spool.jsonl";
/// The schema this crate writes; a database of another is refused.
const SCHEMA: i64 = 1;
/// Test hook: the process kills itself (SIGKILL) after spooling its Nth batch, before
/// inserting it.
pub const CRASH_ENV: &str = "WARDEN_AUDIT_CRASH_AFTER_SPOOL";

/// What to read back; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tenant: Option<String>,
    pub sandbox: Option<String>,
    pub kind: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<u64>,
    /// The newest this many (all when `None`), returned oldest first.
    pub limit: Option<usize>,
}

#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: Db,
    crash_after: Option<u64>,
    spooled: u64,
}

/// Where the events are kept once spooled.
#[derive(Debug)]
enum Db {
    Sqlite(Connection),
    Postgres(Box<crate::pg::Pg>),
}

impl Store {
    /// Opens (making it if needed, 0700) `<state>/audit/` with its SQLite database and
    /// recovers the spool.
    pub fn open(state_dir: &Path) -> Result<Store, AuditError> {
        let dir = audit_dir(state_dir)?;
        let db = open_sqlite(&dir)?;
        Store::recover(dir, Db::Sqlite(db))
    }

    /// Opens the store in the PostgreSQL database at `url` (tables made on first use),
    /// with its spool under `<state>/audit/`, and recovers the spool.
    pub fn open_postgres(state_dir: &Path, url: &str) -> Result<Store, AuditError> {
        let dir = audit_dir(state_dir)?;
        let pg = crate::pg::Pg::connect(url)?;
        Store::recover(dir, Db::Postgres(Box::new(pg)))
    }

    /// [`Store::open_postgres`] when the file names a URL, else [`Store::open`].
    pub fn open_at(state_dir: &Path, postgres: Option<&str>) -> Result<Store, AuditError> {
        match postgres {
            Some(url) => Store::open_postgres(state_dir, url),
            None => Store::open(state_dir),
        }
    }

    /// Which database: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    fn recover(dir: PathBuf, db: Db) -> Result<Store, AuditError> {
        let crash_after = std::env::var(CRASH_ENV).ok().and_then(|v| v.parse().ok());
        let mut store = Store {
            dir,
            db,
            crash_after,
            spooled: 0,
        };
        let spool = store.lock_spool()?;
        store.drain(spool)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `events` durable (spool + fsync), then queryable. When this returns `Ok`,
    /// the events survive the process being killed at any instant.
    pub fn append(&mut self, events: &[Event]) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(events.len() * 256);
        for e in events {
            serde_json::to_writer(&mut bytes, e).map_err(|e| AuditError::Encode(e.to_string()))?;
            bytes.push(b'\n');
        }
        let mut spool = self.lock_spool()?;
        let path = self.dir.join(SPOOL_FILE);
        spool
            .file
            .write_all(&bytes)
            .and_then(|()| spool.file.sync_data())
            .map_err(|source| AuditError::Io {
                op: "append to",
                path: path.clone(),
                source,
            })?;
        self.spooled += 1;
        if self.crash_after == Some(self.spooled) {
            // SAFETY: kill(2) on ourselves, as the test hook asks.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        self.drain(spool)
    }

    /// Inserts every complete line of the (locked) spool, then empties it. A torn last
    /// line (a writer killed inside `write`) was never acknowledged and is dropped.
    fn drain(&mut self, mut spool: Spool) -> Result<(), AuditError> {
        let path = self.dir.join(SPOOL_FILE);
        let io = |op| {
            let path = path.clone();
            move |source| AuditError::Io { op, path, source }
        };
        let mut text = Vec::new();
        spool.file.seek(SeekFrom::Start(0)).map_err(io("read"))?;
        spool.file.read_to_end(&mut text).map_err(io("read"))?;
        if text.is_empty() {
            return Ok(());
        }
        // Lines that do not read as an event (a torn last line) are dropped.
        let events: Vec<Event> = text
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<Event>(line).ok())
            .collect();
        match &mut self.db {
            Db::Sqlite(db) => {
                let db_path = self.dir.join(DB_FILE);
                let tx = db.transaction().map_err(AuditError::db(&db_path))?;
                for e in &events {
                    insert(&tx, e).map_err(AuditError::db(&db_path))?;
                }
                tx.commit().map_err(AuditError::db(&db_path))?;
            }
            Db::Postgres(pg) => pg.insert(&events, None)?,
        }
        // Not synced: a truncation lost to a power cut brings back lines the database
        // already holds, which the next open inserts again as no-ops (`OR IGNORE` by
        // id). One fsync fewer per append.
        spool.file.set_len(0).map_err(io("truncate"))?;
        Ok(())
    }

    fn lock_spool(&self) -> Result<Spool, AuditError> {
        let path = self.dir.join(SPOOL_FILE);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| AuditError::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
        loop {
            // SAFETY: the descriptor is open for the lifetime of `file`.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Spool { file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(AuditError::Io {
                    op: "lock",
                    path,
                    source: e,
                });
            }
        }
    }

    /// The events `filter` selects, oldest first.
    pub fn query(&self, filter: &Filter) -> Result<Vec<Event>, AuditError> {
        let db = match &self.db {
            Db::Sqlite(db) => db,
            Db::Postgres(pg) => return pg.query(filter),
        };
        let db_path = self.dir.join(DB_FILE);
        let mut sql = String::from(
            "SELECT id, version, at_ms, tenant, sandbox, actor, detail FROM events WHERE 1 = 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut narrow = |col: &str, v: rusqlite::types::Value| {
            sql.push_str(&format!(" AND {col} ?{}", args.len() + 1));
            args.push(v);
        };
        if let Some(t) = &filter.tenant {
            narrow("tenant =", t.clone().into());
        }
        if let Some(s) = &filter.sandbox {
            narrow("sandbox =", s.clone().into());
        }
        if let Some(k) = &filter.kind {
            narrow("kind =", k.clone().into());
        }
        if let Some(since) = filter.since_ms {
            narrow("at_ms >=", (since.min(i64::MAX as u64) as i64).into());
        }
        sql.push_str(" ORDER BY at_ms DESC, rowid DESC");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
        }
        let mut stmt = db.prepare(&sql).map_err(AuditError::db(&db_path))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })
            .map_err(AuditError::db(&db_path))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, version, at_ms, tenant, sandbox, actor, detail) =
                row.map_err(AuditError::db(&db_path))?;
            if version != i64::from(EVENT_VERSION) {
                return Err(AuditError::Version {
                    id,
                    found: version,
                    expected: EVENT_VERSION,
                });
            }
            let detail: Detail =
                serde_json::from_str(&detail).map_err(|e| AuditError::Damaged {
                    id: id.clone(),
                    reason: e.to_string(),
                })?;
            out.push(Event {
                version: EVENT_VERSION,
                id,
                at_ms: at_ms.max(0) as u64,
                tenant,
                sandbox,
                actor,
                detail,
            });
        }
        out.reverse();
        Ok(out)
    }

    /// Where the import of `file` stopped: `(inode, offset)`.
    pub(crate) fn cursor(&self, file: &str) -> Result<Option<(u64, u64)>, AuditError> {
        let db = match &self.db {
            Db::Sqlite(db) => db,
            Db::Postgres(pg) => return pg.cursor(file),
        };
        let db_path = self.dir.join(DB_FILE);
        db.query_row(
            "SELECT inode, offset FROM imports WHERE file = ?1",
            params![file],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .optional()
        .map_err(AuditError::db(&db_path))
    }

    /// Appends imported events and moves the file's cursor, both in one transaction
    /// (imports are their own spool: the source file is re-read from the cursor).
    pub(crate) fn import(
        &mut self,
        file: &str,
        cursor: (u64, u64),
        events: &[Event],
    ) -> Result<(), AuditError> {
        let db = match &mut self.db {
            Db::Sqlite(db) => db,
            Db::Postgres(pg) => return pg.insert(events, Some((file, cursor))),
        };
        let db_path = self.dir.join(DB_FILE);
        let tx = db.transaction().map_err(AuditError::db(&db_path))?;
        for e in events {
            insert(&tx, e).map_err(AuditError::db(&db_path))?;
        }
        tx.execute(
            "INSERT INTO imports (file, inode, offset) VALUES (?1, ?2, ?3)
             ON CONFLICT (file) DO UPDATE SET inode = excluded.inode, offset = excluded.offset",
            params![file, cursor.0 as i64, cursor.1 as i64],
        )
        .map_err(AuditError::db(&db_path))?;
        tx.commit().map_err(AuditError::db(&db_path))
    }
}

fn audit_dir(state_dir: &Path) -> Result<PathBuf, AuditError> {
    let dir = state_dir.join("audit");
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { op, path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io("create", &dir))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("set the mode of", &dir))?;
    Ok(dir)
}

fn open_sqlite(dir: &Path) -> Result<Connection, AuditError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Io { op, path, source }
    };
    let db_path = dir.join(DB_FILE);
    // Made root's only before SQLite opens it; SQLite gives its WAL and shared
    // memory files the database's mode.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&db_path)
        .map_err(io("create", &db_path))?;
    let db = Connection::open(&db_path).map_err(AuditError::db(&db_path))?;
    db.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(AuditError::db(&db_path))?;
    db.pragma_update(None, "journal_mode", "WAL")
        .map_err(AuditError::db(&db_path))?;
    // With WAL, NORMAL syncs at checkpoints only; the spool is what makes an event
    // durable, so a power loss can cost the database its last commits but never an
    // event (the spool is truncated only after a commit, and recovered on open).
    db.pragma_update(None, "synchronous", "FULL")
        .map_err(AuditError::db(&db_path))?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS events (
                 id TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 at_ms INTEGER NOT NULL,
                 tenant TEXT,
                 sandbox TEXT,
                 actor TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 detail TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
             CREATE INDEX IF NOT EXISTS events_tenant_at ON events (tenant, at_ms);
             CREATE TABLE IF NOT EXISTS imports (
                 file TEXT PRIMARY KEY,
                 inode INTEGER NOT NULL,
                 offset INTEGER NOT NULL
             );
             INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', 1);",
    )
    .map_err(AuditError::db(&db_path))?;
    let schema: i64 = db
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .map_err(AuditError::db(&db_path))?;
    if schema != SCHEMA {
        return Err(AuditError::Schema {
            path: db_path,
            found: schema,
            expected: SCHEMA,
        });
    }
    Ok(db)
}

fn insert(tx: &rusqlite::Transaction<'_>, e: &Event) -> rusqlite::Result<usize> {
    let detail = serde_json::to_string(&e.detail).unwrap_or_default();
    // Prepared once per connection, not once per event.
    tx.prepare_cached(
        "INSERT OR IGNORE INTO events (id, version, at_ms, tenant, sandbox, actor, kind, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        e.id,
        e.version,
        e.at_ms.min(i64::MAX as u64) as i64,
        e.tenant,
        e.sandbox,
        e.actor,
        e.detail.kind(),
        detail
    ])
}

/// The spool, `flock`ed until dropped (the lock goes with the descriptor).
struct Spool {
    file: File,
}
