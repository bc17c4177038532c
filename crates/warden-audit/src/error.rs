use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot {op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit database `{path}`: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL store (`target` is the URL without its password).
    #[error("audit database `{target}`: cannot {op} it: {}", pg_message(source))]
    Pg {
        target: String,
        op: &'static str,
        #[source]
        source: postgres::Error,
    },
    #[error("audit database `{path}` has schema {found}, this warden reads {expected}")]
    Schema {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error("audit event `{id}` has version {found}, this warden reads {expected}")]
    Version {
        id: String,
        found: i64,
        expected: u32,
    },
    #[error("audit event `{id}` is damaged: {reason}")]
    Damaged { id: String, reason: String },
    #[error("cannot encode an audit event: {0}")]
    Encode(String),
}

impl AuditError {
    pub(crate) fn db(path: &Path) -> impl FnOnce(rusqlite::Error) -> AuditError + use<> {
        let path = path.to_path_buf();
        move |source| AuditError::Db { path, source }
    }
}

/// The server's own words when it gave some (`postgres::Error` shows only "db error").
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut msg = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            msg
        }
    }
}
