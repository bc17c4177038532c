//! warden-runtime: runs a compiled OCI bundle in the foreground through youki's
//! `libcontainer`, and owns everything else that touches the kernel's container machinery
//! (network namespace setup, cgroup clean-up, signal forwarding).
//!
//! One run, start to end ([`run_foreground`]):
//!
//! 0. [`prime_attach`] (unless the caller did moments ago): a short-lived thread makes the
//!    kernel's first cgroup move of the run, which waits for an RCU grace period on most
//!    hosts, happen now rather than in libcontainer's create;
//! 1. read `<bundle>/config.json`, apply the run's changes (command override, a cgroup
//!    path unique to the run, absolute root and bind sources, supplementary groups set
//!    explicitly so the host's do not leak in) and write the result to
//!    `<state_root>/bundles/<id>/config.json` (the compiled bundle is never modified);
//! 2. install handlers for the forwarded signals (so Ctrl-C cannot kill warden before it
//!    cleans up), create the container (`<state_root>/containers/<id>`);
//! 3. bring `lo` up inside the container's network namespace (from the calling thread,
//!    which returns to its own), run the caller's `before_start` hook (the egress proxy
//!    binds its port in that namespace there), start. When there is nothing to do here
//!    (the namespaces were prepared with [`UnmappedNamespaces`] / [`PreparedNamespaces`],
//!    no hook), the init does not wait for a start message and runs the command as soon
//!    as it is set up;
//! 4. wait for the container's init (a direct child) while forwarding signals, then run
//!    the caller's `after_exit` hook;
//! 5. always: kill and reap the init if it still runs, remove every cgroup directory of
//!    the run in every hierarchy (leaf first, killing stragglers), the state directory and
//!    the bundle copy, in sequence on the calling thread. libcontainer's `delete` is not
//!    used: it rebuilds its cgroup manager from `/proc/self/mountinfo` once per controller
//!    (milliseconds on a v1 host) and only adds poststop hooks, which warden bundles do
//!    not have (refused).
//!
//! The container's init is a child of the thread that calls [`run_foreground`] (libcontainer
//! creates it from that thread, and clones it with `CLONE_PARENT` from an intermediate
//! process). warden-init, as the container's PID 1, asks for `SIGKILL` when that thread
//! ends, so a warden process that is killed takes its sandboxes down with it;
//! [`remove_stale`] then removes what is left (cgroups, state, bundle copy).
//!
//! One more command in a running container ([`exec_in`]), from any process: joins the
//! container's cgroups and namespaces (its user namespace too, which libcontainer's tenant
//! builder does not do by itself), takes the user, groups, capabilities, rlimits, cwd and
//! environment of the container's `process`, and runs under warden-init when the
//! container does, so Landlock and seccomp apply as well; with a terminal of its own when
//! asked (a new pseudo-terminal relayed to the caller's, see `tty.rs`).
//!
//! Requirements on the bundle (what the compiler emits): an absolute `cgroupsPath` (its
//! parent is kept, the last component becomes the container id), no OCI `hooks`, a root
//! and bundle directory the mapped container root can traverse (mode `0755`), and no
//! `/sys/fs/cgroup` mount (libcontainer mounts it writable on cgroup v1).
//!
//! Invariants: the library never prints; every error names the container or path involved.

mod cgroup;
mod error;
mod exec;
mod helper;
mod mounts;
mod netns;
mod run;
mod signals;
mod spec;
mod stale;
mod tty;

pub use cgroup::{leftover_cgroups, prime_attach};
pub use error::RuntimeError;
pub use exec::{ExecOptions, exec_in};
pub use helper::spawn_elsewhere;
pub use netns::{PreparedNamespaces, UnmappedNamespaces, bind_in_netns, loopback_up_in_netns};
pub use run::{
    AfterExit, AfterStart, BeforeStart, NetworkSetup, RunOptions, StartContext, Stdio,
    new_container_id, run_foreground,
};
pub use signals::{FORWARDED_SIGNALS, exit_code_for_signal, terminating_signals_caught};
pub use stale::{OWNER_ANNOTATION, remove_stale};
