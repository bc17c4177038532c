//! `warden plan`, `warden apply`, `warden destroy`: converge the machine to the file.

use crate::Exit;
use crate::deploy::control::{self, Request, Response};
use crate::deploy::journal::{self, Journal};
use crate::deploy::paths::{self, Paths};
use crate::deploy::plan::{self, Desired, Kind, Plan, Want};
use crate::deploy::procs;
use crate::deploy::state::{self, ApplyLock, Entry, Proc, State};
use crate::deploy::supervisor::{self, Launch, Policies};
use crate::project;
use crate::ui::Out;
use serde_json::json;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a supervisor may take to report that its sandbox started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping supervisor may take (its sandbox's grace period included) before
/// it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

fn fail(msg: impl std::fmt::Display) -> Exit {
    eprintln!("error: {msg}");
    Exit::Internal
}

/// Load, compile and build the file: every sandbox as it should run.
fn desired(out: &Out, path: &Path) -> Result<Vec<Desired>, Exit> {
    let p = project::load(out, path)?;
    let compiled = project::compile(&p)?;
    let images = crate::commands::build::build_images(&p, &compiled).map_err(|e| {
        eprintln!("error: {e}");
        Exit::User
    })?;
    let mut out = Vec::new();
    for s in compiled.sandboxes {
        let Some(img) = images.iter().find(|i| i.name == s.plan.image) else {
            return Err(fail(format!("image `{}` was not built", s.plan.image)));
        };
        let bundle =
            crate::commands::run::bundle_for(&s, &img.layout_dir, &img.tag, &img.manifest_digest)
                .map_err(|(exit, e)| {
                eprintln!("error: {e}");
                exit
            })?;
        let parts = plan::parts(&s, &img.manifest_digest);
        out.push(Desired {
            want: Want::new(&s.name, parts),
            image: s.plan.image.clone(),
            image_digest: img.manifest_digest.clone(),
            tenant: s.plan.tenant.clone(),
            restart: s.plan.restart,
            bundle,
            policies: Policies {
                egress: s.plan.egress.clone(),
                inference: s.plan.inference.clone(),
                orders: s.plan.orders.clone(),
            },
            compiled: s,
        });
    }
    Ok(out)
}

fn alive(e: &Entry) -> bool {
    e.supervisor.is_some_and(|p| p.alive())
}

fn make_plan(file_key: &str, desired: &[Desired], st: &State) -> Result<Plan, String> {
    let wants: Vec<&Want> = desired.iter().map(|d| &d.want).collect();
    plan::diff(file_key, &wants, st, &alive)
}

pub fn plan_cmd(out: &Out, path: &Path, save: Option<&Path>) -> anyhow::Result<Exit> {
    let paths = Paths::from_env();
    let desired = match desired(out, path) {
        Ok(d) => d,
        Err(e) => return Ok(e),
    };
    let st = match State::load(&paths) {
        Ok(s) => s,
        Err(e) => return Ok(fail(e)),
    };
    let plan = match make_plan(&state::file_key(path), &desired, &st) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    if let Some(save) = save {
        let bytes = serde_json::to_vec_pretty(&plan)?;
        if let Err(e) = paths::write_durable(save, &bytes) {
            return Ok(fail(format!("cannot write `{}`: {e}", save.display())));
        }
    }
    if out.json {
        out.json(&plan);
    } else {
        print!("{}", plan.render());
        if let Some(save) = save {
            println!(
                "Saved the plan to `{}`; `warden apply {}` applies exactly it.",
                save.display(),
                save.display()
            );
        }
    }
    Ok(Exit::Ok)
}

/// A saved plan, if `arg` is one (JSON with `"kind": "warden-plan"`).
fn read_saved_plan(arg: &Path) -> Result<Option<Plan>, String> {
    // Read as a warden file is: a larger one is refused when it is loaded as one.
    let Ok(bytes) = project::read_limited(arg) else {
        return Ok(None);
    };
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(None);
    }
    let v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    if v.get("kind").and_then(|k| k.as_str()) != Some(plan::PLAN_KIND) {
        return Ok(None);
    }
    let p: Plan = serde_json::from_value(v)
        .map_err(|e| format!("`{}` is not a valid plan: {e}", arg.display()))?;
    if p.version != plan::PLAN_VERSION {
        return Err(format!(
            "`{}` is a plan of version {}, this warden applies version {}",
            arg.display(),
            p.version,
            plan::PLAN_VERSION
        ));
    }
    Ok(Some(p))
}

fn confirm(question: &str, yes: bool) -> Result<bool, String> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            "refusing to change the machine without confirmation: stdin is not a terminal; \
             pass --yes"
                .into(),
        );
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn take_lock(paths: &Paths) -> Result<ApplyLock, String> {
    ApplyLock::acquire(paths, true, &|holder| match holder {
        Some(pid) => eprintln!("warden: waiting for another apply (pid {pid}) to finish..."),
        None => eprintln!("warden: waiting for another apply to finish..."),
    })
}

/// Under the lock, before planning: finish what an interrupted apply left. Supervisors
/// the state does not record are stopped, containers whose owner is gone removed,
/// supervisor directories of sandboxes not running removed.
fn sweep(paths: &Paths, st: &State) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(records) = journal::interrupted(&paths.journal()) {
        let last = records
            .last()
            .map(|r| match &r.sandbox {
                Some(s) => format!("`{}` of `{s}`", r.step),
                None => format!("`{}`", r.step),
            })
            .unwrap_or_else(|| "its start".into());
        let pid = records.first().map(|r| r.pid).unwrap_or(0);
        notes.push(format!(
            "the previous apply (pid {pid}) was interrupted after {last}; completing it"
        ));
        let _ = std::fs::remove_file(paths.journal());
    }
    for (pid, name) in procs::supervisors_under(&paths.supervisors()) {
        let known = st
            .sandboxes
            .get(&name)
            .and_then(|e| e.supervisor)
            .is_some_and(|p| p.pid == pid && p.alive());
        if known {
            continue;
        }
        if let Some(p) = Proc::of(pid) {
            stop_process(paths, &name, p);
            notes.push(format!(
                "stopped the supervisor of `{name}` (pid {pid}) that no apply recorded"
            ));
        }
    }
    match warden_runtime::remove_stale(&paths.run_dir) {
        Ok(removed) => {
            for id in removed {
                notes.push(format!("removed the leftover container `{id}`"));
            }
        }
        Err(e) => notes.push(format!("could not remove every leftover container: {e}")),
    }
    if let Ok(dirs) = std::fs::read_dir(paths.supervisors()) {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().to_string();
            if !st.sandboxes.get(&name).is_some_and(alive) {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
    notes
}

/// Ask a supervisor to stop, wait for it, kill it if it does not go; then remove what
/// its sandbox left.
fn stop_process(paths: &Paths, name: &str, p: Proc) {
    if p.alive() {
        let asked =
            control::call(&paths.socket(name), &Request::Stop, Duration::from_secs(2)).is_ok();
        if !asked {
            procs::kill(p.pid, libc::SIGTERM);
        }
        if !procs::wait_gone(p, STOP_PATIENCE) {
            procs::kill(p.pid, libc::SIGKILL);
            procs::wait_gone(p, Duration::from_secs(5));
        }
    }
    let _ = warden_runtime::remove_stale(&paths.run_dir);
}

struct Engine<'a> {
    paths: &'a Paths,
    state: State,
    journal: Journal,
    file_key: String,
}

impl Engine<'_> {
    fn stop(&mut self, name: &str) -> Result<(), String> {
        if let Some(p) = self.state.sandboxes.get(name).and_then(|e| e.supervisor) {
            stop_process(self.paths, name, p);
            self.journal.record("stopped", Some(name), None)?;
        }
        self.state.sandboxes.remove(name);
        self.state.save(self.paths)?;
        let _ = std::fs::remove_dir_all(self.paths.supervisor_dir(name));
        Ok(())
    }

    fn launch_of(&self, d: &Desired) -> Launch {
        Launch {
            version: supervisor::LAUNCH_VERSION,
            name: d.want.name.clone(),
            file: self.file_key.clone(),
            bundle: d.bundle.clone(),
            run_dir: self.paths.run_dir.clone(),
            sandbox_state: self.paths.sandbox_dir(&d.want.name),
            logs_dir: self.paths.logs_dir(&d.want.name),
            log_max_bytes: std::env::var("WARDEN_LOG_MAX_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(crate::deploy::logs::DEFAULT_MAX_BYTES),
            restart: d.restart,
            image_digest: d.image_digest.clone(),
            policies: d.policies.clone(),
            tenant: d.tenant.clone(),
            secret_env: d.compiled.plan.secret_env.clone(),
            state_dir: self.paths.state_dir.clone(),
            orders_endpoint: d.compiled.plan.orders_endpoint,
        }
    }

    fn write_launch(&self, launch: &Launch) -> Result<PathBuf, String> {
        let dir = self.paths.supervisor_dir(&launch.name);
        paths::private_dir(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        let path = self.paths.launch(&launch.name);
        let bytes = serde_json::to_vec_pretty(launch).map_err(|e| e.to_string())?;
        paths::write_durable(&path, &bytes)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
        Ok(path)
    }

    fn start(&mut self, d: &Desired) -> Result<(), String> {
        let name = d.want.name.as_str();
        crate::commands::run::make_host_dirs(&d.compiled)?;
        let launch_path = self.write_launch(&self.launch_of(d))?;
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the warden binary: {e}"))?;
        let log_path = self.paths.supervisor_dir(name).join("supervisor.log");
        use std::os::unix::fs::OpenOptionsExt;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| format!("cannot open `{}`: {e}", log_path.display()))?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg(supervisor::SUBCOMMAND)
            .arg(&launch_path)
            .env_remove("WARDEN_APPLY_CRASH_AFTER")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe; the supervisor leaves our session so a
            // Ctrl-C at the terminal that ran apply does not reach it.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the supervisor of `{name}`: {e}"))?;
        let pid = child.id() as i32;
        self.journal
            .record("spawned", Some(name), Some(json!({ "pid": pid })))?;
        let proc = Proc::of(pid);
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(s) = stdout {
                let _ = BufReader::new(s).read_line(&mut line);
            }
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        let line = line.trim();
        if !line.starts_with("ready ") {
            if let Some(p) = proc {
                stop_process(self.paths, name, p);
            }
            let _ = child.wait();
            let why = match line.strip_prefix("error: ") {
                Some(e) => e.to_string(),
                None if line.is_empty() => format!(
                    "the supervisor exited or did not answer in {} s (see `{}`)",
                    READY_TIMEOUT.as_secs(),
                    log_path.display()
                ),
                None => format!("unexpected answer from the supervisor: {line}"),
            };
            let _ = std::fs::remove_dir_all(self.paths.supervisor_dir(name));
            return Err(format!("sandbox `{name}` did not start: {why}"));
        }
        self.state.sandboxes.insert(
            name.to_string(),
            Entry {
                file: self.file_key.clone(),
                digest: d.want.digest.clone(),
                parts: d.want.parts.clone(),
                image: d.image.clone(),
                image_digest: d.image_digest.clone(),
                tenant: d.tenant.clone(),
                restart: d.restart,
                supervisor: proc,
                created_at: state::now(),
            },
        );
        self.state.save(self.paths)
    }

    fn reload(&mut self, d: &Desired) -> Result<(), String> {
        let name = d.want.name.as_str();
        let req = Request::Reload {
            policies: Box::new(d.policies.clone()),
        };
        match control::call(&self.paths.socket(name), &req, Duration::from_secs(5))? {
            Response::Ok => {}
            Response::Error { message } => {
                return Err(format!("sandbox `{name}` refused the reload: {message}"));
            }
            Response::Status(_) => return Err("unexpected answer from the supervisor".into()),
        }
        // The next start of the container (restart policy) keeps the new policies.
        self.write_launch(&self.launch_of(d))?;
        if let Some(e) = self.state.sandboxes.get_mut(name) {
            e.digest = d.want.digest.clone();
            e.parts = d.want.parts.clone();
        }
        self.state.save(self.paths)
    }

    fn execute(&mut self, plan: &Plan, desired: &[Desired]) -> Result<(), String> {
        self.journal.record(
            "begin",
            None,
            Some(json!({ "file": plan.file, "actions": plan.actions })),
        )?;
        for a in &plan.actions {
            let name = a.sandbox.as_str();
            let d = desired.iter().find(|d| d.want.name == name);
            match (a.action, d) {
                (Kind::Destroy, _) => {
                    self.journal.record("destroy", Some(name), None)?;
                    self.stop(name)?;
                    self.journal.record("destroyed", Some(name), None)?;
                    eprintln!("warden: destroyed `{name}`");
                }
                (Kind::Replace, Some(d)) => {
                    self.journal.record("replace", Some(name), None)?;
                    self.stop(name)?;
                    self.start(d)?;
                    self.journal.record("replaced", Some(name), None)?;
                    eprintln!("warden: replaced `{name}`");
                }
                (Kind::Create, Some(d)) => {
                    self.journal.record("create", Some(name), None)?;
                    // A recorded sandbox whose supervisor is gone: clear it first.
                    if self.state.sandboxes.contains_key(name) {
                        self.stop(name)?;
                    }
                    self.start(d)?;
                    self.journal.record("created", Some(name), None)?;
                    eprintln!("warden: created `{name}`");
                }
                (Kind::Reload, Some(d)) => {
                    self.journal.record("reload", Some(name), None)?;
                    self.reload(d)?;
                    self.journal.record("reloaded", Some(name), None)?;
                    eprintln!("warden: reloaded `{name}` ({})", a.reasons.join(", "));
                }
                (_, None) => {
                    return Err(format!("the plan names `{name}`, which the file lacks"));
                }
            }
        }
        self.journal.record("end", None, None)
    }
}

/// Either a file (`warden apply [FILE]`) or a saved plan (`warden apply PLAN`).
pub fn apply_cmd(out: &Out, arg: &Path, yes: bool) -> anyhow::Result<Exit> {
    let saved = match read_saved_plan(arg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    let file = saved
        .as_ref()
        .map_or_else(|| arg.to_path_buf(), |p| PathBuf::from(&p.file));
    converge(
        out,
        &file,
        &Converge {
            saved,
            yes,
            ..Converge::default()
        },
    )
}

pub fn destroy_cmd(out: &Out, path: &Path, yes: bool) -> anyhow::Result<Exit> {
    converge(
        out,
        path,
        &Converge {
            yes,
            destroy: true,
            ..Converge::default()
        },
    )
}

/// After `warden approve` added a rule to the file: if the sandbox was applied from this
/// file and runs, reload its policies now (only a reload: anything else the file changed
/// waits for `warden apply`). `Ok(true)` when it was reloaded.
pub fn reload_applied(path: &Path, sandbox: &str) -> Result<bool, String> {
    let paths = Paths::from_env();
    let st = State::load(&paths)?;
    let applied = st
        .sandboxes
        .get(sandbox)
        .is_some_and(|e| e.file == state::file_key(path) && alive(e));
    if !applied {
        return Ok(false);
    }
    let quiet = Out {
        json: false,
        diagnostics_as_json: false,
    };
    let opts = Converge {
        yes: true,
        only_reload: Some(sandbox.to_string()),
        quiet: true,
        ..Converge::default()
    };
    let before = State::load(&paths)?.generation;
    match converge(&quiet, path, &opts).map_err(|e| e.to_string())? {
        Exit::Ok => Ok(State::load(&paths)?.generation != before),
        _ => Err("the reload failed".into()),
    }
}

#[derive(Default)]
struct Converge {
    saved: Option<Plan>,
    yes: bool,
    destroy: bool,
    /// Only this sandbox's reload, if the plan has one.
    only_reload: Option<String>,
    /// Nothing on stdout.
    quiet: bool,
}

fn converge(out: &Out, path: &Path, opts: &Converge) -> anyhow::Result<Exit> {
    let Converge {
        saved,
        yes,
        destroy,
        only_reload,
        quiet,
    } = opts;
    let (yes, destroy, quiet) = (*yes, *destroy, *quiet);
    let paths = Paths::from_env();
    let file_key = state::file_key(path);
    // Building can take long: done before the lock, so a waiting apply is not held up.
    let desired = if destroy {
        // Destroy only needs the file to know which sandboxes are its own; the state
        // records that, so a file that no longer parses can still be torn down.
        Vec::new()
    } else {
        match desired(out, path) {
            Ok(d) => d,
            Err(e) => return Ok(e),
        }
    };
    let lock = match take_lock(&paths) {
        Ok(l) => l,
        Err(e) => return Ok(fail(e)),
    };
    if let Err(e) = paths.claim_run_dir() {
        eprintln!("error: {e}");
        return Ok(Exit::User);
    }
    let st = match State::load(&paths) {
        Ok(s) => s,
        Err(e) => return Ok(fail(e)),
    };
    for note in sweep(&paths, &st) {
        eprintln!("warden: {note}");
    }
    let mut plan = match make_plan(&file_key, &desired, &st) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    if let Some(name) = only_reload {
        plan.actions
            .retain(|a| &a.sandbox == name && a.action == Kind::Reload);
    }
    if let Some(saved) = saved
        && (saved.generation != plan.generation || saved.actions != plan.actions)
    {
        eprintln!(
            "error: the machine or the file changed since the plan was made; \
             run `warden plan` again"
        );
        if !out.json {
            eprint!("now:\n{}", plan.render());
        }
        return Ok(Exit::User);
    }
    // A sandbox whose router would miss a key fails now, naming the provider and the
    // variable, not in its supervisor (which inherits this environment) or at a call.
    for a in &plan.actions {
        let d = desired.iter().find(|d| d.want.name == a.sandbox);
        if let (Kind::Create | Kind::Replace, Some(d)) = (a.action, d)
            && let Some(policy) = &d.policies.inference
            && let Err(e) = crate::services::router(
                policy.clone(),
                &a.sandbox,
                crate::services::KeyStore {
                    tenant: d.tenant.clone(),
                    state_dir: paths.state_dir.clone(),
                },
                warden_router::NoAudit,
            )
        {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    }
    if plan.actions.is_empty() {
        if quiet {
        } else if out.json {
            out.json(&json!({ "plan": plan, "applied": true }));
        } else {
            print!("{}", plan.render());
        }
        drop(lock);
        return Ok(Exit::Ok);
    }
    if !out.json && !quiet {
        print!("{}", plan.render());
        let _ = std::io::stdout().flush();
    }
    let question = if destroy {
        "Destroy these sandboxes?"
    } else {
        "Apply these changes?"
    };
    // A saved plan was reviewed when it was made.
    match confirm(question, yes || saved.is_some()) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("warden: nothing changed");
            return Ok(Exit::User);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    }
    let journal = match Journal::begin(&paths.journal()) {
        Ok(j) => j,
        Err(e) => return Ok(fail(e)),
    };
    let mut engine = Engine {
        paths: &paths,
        state: st,
        journal,
        file_key,
    };
    let result = engine.execute(&plan, &desired);
    let Engine { journal, .. } = engine;
    if let Err(e) = &result {
        let _ = journal_failure(&paths, e);
    }
    let _ = journal.finish(&paths.last_journal());
    drop(lock);
    match result {
        Ok(()) => {
            if quiet {
            } else if out.json {
                out.json(&json!({ "plan": plan, "applied": true }));
            } else {
                println!(
                    "{} complete: {} created, {} replaced, {} reloaded, {} destroyed.",
                    if destroy { "Destroy" } else { "Apply" },
                    plan.count(Kind::Create),
                    plan.count(Kind::Replace),
                    plan.count(Kind::Reload),
                    plan.count(Kind::Destroy)
                );
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("warden: the state records what was done; run `warden plan` to see the rest");
            Ok(Exit::Internal)
        }
    }
}

fn journal_failure(paths: &Paths, e: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(paths.journal())?;
    let line =
        json!({ "step": "failed", "detail": e, "pid": std::process::id(), "at": state::now() });
    writeln!(f, "{line}")
}
