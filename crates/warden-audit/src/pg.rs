//! The store's PostgreSQL side (`audit "postgres://..."` in the file): the same events,
//! columns and query semantics as SQLite, in the schema `warden_audit` of the database
//! the URL names. The spool in front of it is the same file (see `store.rs`).
//!
//! PostgreSQL refuses NUL in `text`, which SQLite stores: each row also holds the whole
//! event as JSON (`body`, where a NUL is escaped), and that is what a query reads back,
//! so both stores return the same events byte for byte. The columns the filters use
//! hold NUL as U+FFFD (names the file declares cannot hold either).

use crate::error::AuditError;
use crate::event::{EVENT_VERSION, Event};
use crate::store::Filter;
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

/// The schema this crate writes; a database of another is refused.
const SCHEMA: i64 = 1;
/// Taken while the tables are made, so two processes opening a new database at once do
/// not race on `CREATE TABLE IF NOT EXISTS` (which PostgreSQL does not serialize).
const SETUP_LOCK: i64 = 0x7761_7264_656e_0a01;
/// Rows per `INSERT` (each column is one array parameter).
const CHUNK: usize = 5000;

const SETUP: &str = "
    CREATE SCHEMA IF NOT EXISTS warden_audit;
    CREATE TABLE IF NOT EXISTS warden_audit.meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    CREATE TABLE IF NOT EXISTS warden_audit.events (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        version INTEGER NOT NULL,
        at_ms BIGINT NOT NULL,
        tenant TEXT,
        sandbox TEXT,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_at ON warden_audit.events (at_ms);
    CREATE INDEX IF NOT EXISTS events_tenant_at ON warden_audit.events (tenant, at_ms);
    CREATE TABLE IF NOT EXISTS warden_audit.imports (
        file TEXT PRIMARY KEY,
        inode BIGINT NOT NULL,
        \"offset\" BIGINT NOT NULL
    );
    INSERT INTO warden_audit.meta (key, value) VALUES ('schema', 1) ON CONFLICT DO NOTHING;
";

/// `seq` keeps the order of arrival, as SQLite's `rowid` does.
const INSERT: &str = "
    INSERT INTO warden_audit.events (id, version, at_ms, tenant, sandbox, actor, kind, body)
    SELECT id, v, at, t, s, a, k, b
    FROM UNNEST($1::text[], $2::int4[], $3::int8[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[])
         WITH ORDINALITY AS u(id, v, at, t, s, a, k, b, n)
    ORDER BY n
    ON CONFLICT (id) DO NOTHING";

pub(crate) struct Pg {
    client: RefCell<Client>,
    /// The URL without its password, for messages.
    target: String,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("target", &self.target).finish()
    }
}

impl Pg {
    pub(crate) fn connect(url: &str) -> Result<Pg, AuditError> {
        let target = redact(url);
        let fail = |op| {
            let target = target.clone();
            move |source| AuditError::Pg { target, op, source }
        };
        let mut config: postgres::Config = url.parse().map_err(fail("read the URL of"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("warden");
        let mut client = config.connect(NoTls).map_err(fail("connect to"))?;
        let mut tx = client.transaction().map_err(fail("set up"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
            .map_err(fail("set up"))?;
        tx.batch_execute(SETUP).map_err(fail("set up"))?;
        let schema: i64 = tx
            .query_one(
                "SELECT value FROM warden_audit.meta WHERE key = 'schema'",
                &[],
            )
            .map_err(fail("read the schema of"))?
            .get(0);
        tx.commit().map_err(fail("set up"))?;
        if schema != SCHEMA {
            return Err(AuditError::Schema {
                path: PathBuf::from(target),
                found: schema,
                expected: SCHEMA,
            });
        }
        Ok(Pg {
            client: RefCell::new(client),
            target,
        })
    }

    fn fail(&self, op: &'static str) -> impl FnOnce(postgres::Error) -> AuditError + use<> {
        let target = self.target.clone();
        move |source| AuditError::Pg { target, op, source }
    }

    /// Inserts `events` (ignoring ids already there) and, when given, moves an import's
    /// cursor, in one transaction.
    pub(crate) fn insert(
        &self,
        events: &[Event],
        cursor: Option<(&str, (u64, u64))>,
    ) -> Result<(), AuditError> {
        let mut client = self.client.borrow_mut();
        let mut tx = client
            .transaction()
            .map_err(self.fail("begin a write to"))?;
        for chunk in events.chunks(CHUNK) {
            let mut ids = Vec::with_capacity(chunk.len());
            let mut versions = Vec::with_capacity(chunk.len());
            let mut ats = Vec::with_capacity(chunk.len());
            let mut tenants = Vec::with_capacity(chunk.len());
            let mut sandboxes = Vec::with_capacity(chunk.len());
            let mut actors = Vec::with_capacity(chunk.len());
            let mut kinds = Vec::with_capacity(chunk.len());
            let mut bodies = Vec::with_capacity(chunk.len());
            for e in chunk {
                ids.push(clean(&e.id));
                versions.push(i32::try_from(e.version).unwrap_or(i32::MAX));
                ats.push(e.at_ms.min(i64::MAX as u64) as i64);
                tenants.push(e.tenant.as_deref().map(clean));
                sandboxes.push(e.sandbox.as_deref().map(clean));
                actors.push(clean(&e.actor));
                kinds.push(e.detail.kind());
                bodies
                    .push(serde_json::to_string(e).map_err(|e| AuditError::Encode(e.to_string()))?);
            }
            tx.execute(
                INSERT,
                &[
                    &ids, &versions, &ats, &tenants, &sandboxes, &actors, &kinds, &bodies,
                ],
            )
            .map_err(self.fail("insert into"))?;
        }
        if let Some((file, (inode, offset))) = cursor {
            tx.execute(
                "INSERT INTO warden_audit.imports (file, inode, \"offset\") VALUES ($1, $2, $3)
                 ON CONFLICT (file) DO UPDATE SET inode = excluded.inode, \"offset\" = excluded.\"offset\"",
                &[&clean(file), &(inode as i64), &(offset as i64)],
            )
            .map_err(self.fail("record an import in"))?;
        }
        tx.commit().map_err(self.fail("commit to"))
    }

    /// The events `filter` selects, oldest first: the same semantics as SQLite's.
    pub(crate) fn query(&self, filter: &Filter) -> Result<Vec<Event>, AuditError> {
        let mut sql = String::from("SELECT id, version, body FROM warden_audit.events WHERE TRUE");
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let mut narrow = |col: &str, v: Box<dyn ToSql + Sync>| {
            args.push(v);
            sql.push_str(&format!(" AND {col} ${}", args.len()));
        };
        if let Some(t) = &filter.tenant {
            narrow("tenant =", Box::new(clean(t)));
        }
        if let Some(s) = &filter.sandbox {
            narrow("sandbox =", Box::new(clean(s)));
        }
        if let Some(k) = &filter.kind {
            narrow("kind =", Box::new(clean(k)));
        }
        if let Some(since) = filter.since_ms {
            narrow("at_ms >=", Box::new(since.min(i64::MAX as u64) as i64));
        }
        sql.push_str(" ORDER BY at_ms DESC, seq DESC");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
        }
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        let rows = self
            .client
            .borrow_mut()
            .query(&sql, &params)
            .map_err(self.fail("query"))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get(0);
            let version: i32 = row.get(1);
            if i64::from(version) != i64::from(EVENT_VERSION) {
                return Err(AuditError::Version {
                    id,
                    found: i64::from(version),
                    expected: EVENT_VERSION,
                });
            }
            let body: String = row.get(2);
            let e: Event = serde_json::from_str(&body).map_err(|e| AuditError::Damaged {
                id: id.clone(),
                reason: e.to_string(),
            })?;
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }

    /// Where the import of `file` stopped: `(inode, offset)`.
    pub(crate) fn cursor(&self, file: &str) -> Result<Option<(u64, u64)>, AuditError> {
        let row = self
            .client
            .borrow_mut()
            .query_opt(
                "SELECT inode, \"offset\" FROM warden_audit.imports WHERE file = $1",
                &[&clean(file)],
            )
            .map_err(self.fail("read an import cursor from"))?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)))
    }
}

/// PostgreSQL `text` holds no NUL.
fn clean(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// The URL with its password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://warden:s3cr@t@db:5432/audit"),
            "postgres://warden:***@db:5432/audit"
        );
        assert_eq!(
            redact("postgres://warden@db/audit"),
            "postgres://warden@db/audit"
        );
        assert_eq!(
            redact("postgresql://db/audit?user=a"),
            "postgresql://db/audit?user=a"
        );
        assert_eq!(redact("nonsense"), "nonsense");
    }
}
