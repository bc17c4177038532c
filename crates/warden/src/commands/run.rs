//! `warden run`: build what is missing, run one sandbox in the foreground, exit with its
//! code. With egress, the sandbox's proxy is served from this process and follows the
//! file: an edit (or `warden approve`) reloads the policy within a second.

use crate::Exit;
use crate::project::{self, Project};
use crate::ui::Out;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use warden_compile::CompiledSandbox;
use warden_egress::{ProxyConfig, ProxyState};
use warden_wire::sandbox::PROXY_ADDR;

/// Where warden keeps runtime state: `WARDEN_RUN_DIR`, else `/run/warden`.
fn run_dir() -> PathBuf {
    std::env::var("WARDEN_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/run/warden"))
}

/// Per-sandbox persistent state (approvals, audit log).
pub fn sandbox_state_dir(p: &Project, sandbox: &str) -> PathBuf {
    PathBuf::from(&p.options.state_dir)
        .join("sandboxes")
        .join(sandbox)
}

fn pick<'a>(
    compiled: &'a [CompiledSandbox],
    name: Option<&str>,
) -> Result<&'a CompiledSandbox, String> {
    match name {
        Some(n) => compiled.iter().find(|s| s.name == n).ok_or_else(|| {
            let names: Vec<&str> = compiled.iter().map(|s| s.name.as_str()).collect();
            format!(
                "no sandbox named `{n}`; the file declares: {}",
                names.join(", ")
            )
        }),
        None if compiled.len() == 1 => Ok(&compiled[0]),
        None if compiled.is_empty() => Err("the file declares no sandbox".into()),
        None => {
            let names: Vec<&str> = compiled.iter().map(|s| s.name.as_str()).collect();
            Err(format!(
                "the file declares several sandboxes; pick one with `--sandbox` ({})",
                names.join(", ")
            ))
        }
    }
}

/// A bundle for this sandbox and image, unpacked once and reused while neither changes.
pub(crate) fn bundle_for(
    s: &CompiledSandbox,
    layout: &Path,
    tag: &str,
    digest: &str,
) -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    let config = s.config_json();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (digest, &config).hash(&mut h);
    let dir = crate::commands::build::cache_dir()
        .join("bundles")
        .join(format!("{}-{:016x}", s.name, h.finish()));
    if !dir.join("config.json").exists() {
        warden_image::unpack_bundle(layout, tag, &config, &dir)
            .map_err(|e| format!("cannot unpack the bundle of `{}`: {e}", s.name))?;
    }
    Ok(dir)
}

pub(crate) fn make_host_dirs(s: &CompiledSandbox) -> Result<(), String> {
    for d in &s.plan.host_dirs {
        let path = Path::new(&d.path);
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create `{}`: {}", d.path, project::io_msg(&e)))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            format!(
                "cannot set the mode of `{}`: {}",
                d.path,
                project::io_msg(&e)
            )
        })?;
        std::os::unix::fs::chown(path, Some(d.uid), Some(d.gid))
            .map_err(|e| format!("cannot chown `{}`: {}", d.path, project::io_msg(&e)))?;
    }
    Ok(())
}

pub fn run(
    out: &Out,
    path: &Path,
    sandbox: Option<&str>,
    command: Vec<String>,
) -> anyhow::Result<Exit> {
    // The container's cgroup setup waits for the kernel; start that wait now.
    warden_runtime::prime_attach();
    // Taken before reading: an edit from here on reloads the egress policy of the run.
    let file_stamp = stamp(path);
    let p = match project::load(out, path) {
        Ok(p) => p,
        Err(e) => return Ok(e),
    };
    let compiled = match project::compile(&p) {
        Ok(c) => c,
        Err(e) => return Ok(e),
    };
    let s = match pick(&compiled.sandboxes, sandbox) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    // The sandbox's user and network namespaces are made on a thread of their own while
    // this one checks the image and writes the bundle (see `PreparedNamespaces`).
    // With egress, the proxy's listener is bound there too.
    let spec = s.spec.clone();
    let proxy_addr = s.plan.egress.is_some().then_some(PROXY_ADDR);
    let namespaces = std::thread::spawn(move || {
        let ns = warden_runtime::PreparedNamespaces::for_spec(&spec)
            .ok()
            .flatten()?;
        let listener = proxy_addr.and_then(|a| {
            let addr = a.parse().ok()?;
            ns.bind(addr).ok()
        });
        Some((ns, listener))
    });
    let images = match crate::commands::build::build_images(&p, &compiled) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    let Some(img) = images.iter().find(|i| i.name == s.plan.image) else {
        eprintln!("error: image `{}` was not built", s.plan.image);
        return Ok(Exit::Internal);
    };
    let bundle = match bundle_for(s, &img.layout_dir, &img.tag, &img.manifest_digest)
        .and_then(|b| make_host_dirs(s).map(|()| b))
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Internal);
        }
    };
    let mut opts =
        warden_runtime::RunOptions::new(warden_runtime::new_container_id(&s.name), run_dir());
    if !command.is_empty() {
        opts.args_override = Some(command);
    }
    // Not fatal when they could not be made: the container then makes its own, and the
    // proxy's listener is bound once it exists.
    let (namespaces, prebound) = namespaces.join().ok().flatten().unzip();
    opts.namespaces = namespaces;
    let prebound = Mutex::new(prebound.flatten());
    // Egress: a proxy served from here, bound inside the sandbox's network namespace. Its
    // runtime, state and file watcher are made on a thread of their own while the
    // container is being created (milliseconds this thread spends waiting for the
    // kernel); the `before_start` hook, which needs them, takes them over.
    let stop = Arc::new(AtomicBool::new(false));
    let egress = s.plan.egress.clone().map(|policy| {
        let sandbox = s.name.clone();
        let state_dir = sandbox_state_dir(&p, &s.name);
        let (path, stop) = (path.to_path_buf(), stop.clone());
        let setup = std::thread::spawn(move || {
            start_egress(policy, sandbox, state_dir, path, file_stamp, stop)
        });
        Arc::new(Mutex::new(EgressSlot::Pending(setup)))
    });
    if let Some(slot) = &egress {
        let slot = slot.clone();
        opts.before_start = Some(Box::new(move |cx: &warden_runtime::StartContext<'_>| {
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            let egress = slot.ready()?;
            let listener = match prebound.lock().unwrap_or_else(|e| e.into_inner()).take() {
                Some(l) => l,
                None => warden_runtime::bind_in_netns(cx.init_pid, PROXY_ADDR.parse()?)?,
            };
            listener.set_nonblocking(true)?;
            let _guard = egress.rt.enter();
            // The handle is dropped on purpose: the proxy serves until the process ends.
            let _ = warden_egress::spawn(listener, egress.state.clone())?;
            Ok(())
        }));
    }
    let result = warden_runtime::run_foreground(&bundle, &opts);
    stop.store(true, Ordering::Relaxed);
    if let Some(slot) = egress {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        // Still pending when the run failed before its hook.
        let ready = slot.ready().map(|_| ());
        match (ready, std::mem::replace(&mut *slot, EgressSlot::Taken)) {
            (Ok(()), EgressSlot::Ready(e)) => {
                e.watcher.thread().unpark();
                let _ = e.watcher.join();
                e.state.flush();
                e.rt.shutdown_timeout(Duration::from_millis(200));
            }
            (Err(msg), _) => {
                eprintln!("error: {msg}");
                return Ok(Exit::Internal);
            }
            (Ok(()), _) => {}
        }
    }
    match result {
        Ok(code) => Ok(Exit::Code(code)),
        Err(e) => {
            eprintln!("error: sandbox `{}`: {e}", s.name);
            Ok(Exit::Internal)
        }
    }
}

/// The egress proxy of a run, made while its container is created.
struct Egress {
    rt: tokio::runtime::Runtime,
    state: Arc<ProxyState>,
    watcher: std::thread::JoinHandle<()>,
}

enum EgressSlot {
    /// Being made on a thread of its own.
    Pending(std::thread::JoinHandle<Result<Egress, String>>),
    Ready(Egress),
    /// Could not be made; the message says why.
    Failed(String),
    /// Shut down after the run.
    Taken,
}

impl EgressSlot {
    /// The proxy, waiting for it to be made if needed.
    fn ready(&mut self) -> Result<&Egress, String> {
        if let EgressSlot::Pending(_) = self {
            let EgressSlot::Pending(setup) = std::mem::replace(self, EgressSlot::Taken) else {
                unreachable!("matched above");
            };
            *self = match setup.join() {
                Ok(Ok(e)) => EgressSlot::Ready(e),
                Ok(Err(msg)) => EgressSlot::Failed(msg),
                Err(_) => EgressSlot::Failed("the egress proxy setup panicked".into()),
            };
        }
        match self {
            EgressSlot::Ready(e) => Ok(e),
            EgressSlot::Failed(msg) => Err(msg.clone()),
            EgressSlot::Pending(_) | EgressSlot::Taken => {
                Err("the egress proxy is no longer available".into())
            }
        }
    }
}

/// The proxy's runtime and state, and the watcher that reloads its policy.
fn start_egress(
    policy: warden_wire::egress::EgressPolicy,
    sandbox: String,
    state_dir: PathBuf,
    path: PathBuf,
    stamp: Option<SystemTime>,
    stop: Arc<AtomicBool>,
) -> Result<Egress, String> {
    let fail =
        |e: &dyn std::fmt::Display| format!("cannot start the egress proxy of `{sandbox}`: {e}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(&e))?;
    let state = ProxyState::new(policy, ProxyConfig::new(state_dir)).map_err(|e| fail(&e))?;
    let watcher = spawn_watcher(path, sandbox, state.clone(), stamp, stop);
    Ok(Egress { rt, state, watcher })
}

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload the egress policy when the file changes (hand edits, `warden approve`).
fn spawn_watcher(
    path: PathBuf,
    sandbox: String,
    state: Arc<ProxyState>,
    mut last: Option<SystemTime>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            // Woken early by `unpark` when the run ends.
            std::thread::park_timeout(Duration::from_millis(250));
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            let quiet = Out {
                json: false,
                diagnostics_as_json: false,
            };
            let Ok(p) = project::load(&quiet, &path) else {
                eprintln!(
                    "warden: `{}` changed but is invalid; keeping the current egress policy",
                    path.display()
                );
                continue;
            };
            let Ok(c) = project::compile(&p) else {
                continue;
            };
            if let Some(policy) = c
                .sandboxes
                .iter()
                .find(|x| x.name == sandbox)
                .and_then(|x| x.plan.egress.clone())
            {
                match state.reload(policy) {
                    Ok(()) => eprintln!(
                        "warden: egress policy of `{sandbox}` reloaded from `{}`",
                        path.display()
                    ),
                    Err(e) => eprintln!("warden: cannot reload the egress policy: {e}"),
                }
            }
        }
    })
}
