//! warden-audit: one store for what people and proxies decided.
//!
//! Events are typed ([`Detail`]) and versioned ([`EVENT_VERSION`]), and carry the
//! tenant, the sandbox and the actor. They live in `<state>/audit/audit.db`, an
//! embedded SQLite database in WAL mode, and reach it through a spool
//! (`<state>/audit/spool.jsonl`, appended and fsynced first), so an event a writer has
//! acknowledged survives the writer being killed at any instant ([`Store::append`]).
//! The egress proxies' per-sandbox `audit.jsonl` files are imported from where the last
//! import stopped ([`import_egress`]).

mod error;
mod event;
mod import;
mod pg;
mod store;

pub use error::AuditError;
pub use event::{Detail, EVENT_VERSION, Event};
pub use import::import_egress;
pub use store::{CRASH_ENV, DB_FILE, Filter, SPOOL_FILE, Store};
