//! Declare and apply: the state recorded at the last apply, the plan that takes the
//! machine from what runs to what the file declares, the journal that makes an apply
//! crash-safe, and the supervisor that owns one running sandbox.
//!
//! Where things live:
//!
//! - `<state>/apply/state.json`: what the last apply left running (atomically replaced);
//! - `<state>/apply/journal.jsonl`: the steps of the apply in progress (renamed to
//!   `last-apply.jsonl` when it ends; present at start means an apply was interrupted);
//! - `<state>/apply/lock`: `flock`ed by the apply or destroy in progress;
//! - `<state>/sandboxes/<name>/logs/`: the sandbox's `stdout.log` and `stderr.log`;
//! - `<run>/supervisors/<name>/`: the supervisor's `launch.json`, `control.sock` and its
//!   own `supervisor.log`.

pub mod control;
pub mod journal;
pub mod logs;
pub mod paths;
pub mod plan;
pub mod procs;
pub mod state;
pub mod supervisor;
pub mod trim;
