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

/// Version of what [`bundle_for`] puts into a bundle besides the image's layers.
const BUNDLE_FORMAT: &str = concat!(env!("CARGO_PKG_VERSION"), "/3");

/// A bundle for this sandbox and image, unpacked once and reused while neither changes.
pub(crate) fn bundle_for(
    s: &CompiledSandbox,
    layout: &Path,
    tag: &str,
    digest: &str,
) -> Result<PathBuf, (Exit, String)> {
    use std::hash::{Hash, Hasher};
    let config = s.config_json();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // What the unpacking adds to a bundle (mount points, the working directory) changes
    // with warden: a bundle made by another version is made again.
    (BUNDLE_FORMAT, digest, &config).hash(&mut h);
    let dir = crate::commands::build::cache_dir()
        .join("bundles")
        .join(format!("{}-{:016x}", s.name, h.finish()));
    if !dir.join("config.json").exists() {
        warden_image::unpack_bundle(layout, tag, &config, &dir).map_err(|e| {
            let exit = if e.is_user_error() {
                Exit::User
            } else {
                Exit::Internal
            };
            (exit, format!("sandbox `{}`: {e}", s.name))
        })?;
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
        if let (Some(image), Some(size)) = (d.image(), d.size) {
            make_volume_image(Path::new(&image), size, d.uid, d.gid)?;
        }
    }
    Ok(())
}

/// A tenant volume's ext4 image (`0600`, sparse), made once: the runtime mounts it at the
/// volume's directory, so writing past `size` fails with `ENOSPC` in the sandbox.
fn make_volume_image(image: &Path, size: u64, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if let Ok(md) = std::fs::metadata(image) {
        if md.size() != size {
            return Err(format!(
                "the volume image `{}` holds {} bytes but the file now says {size}; resizing a volume is planned, not built: remove the image (its data goes with it) or keep the old size",
                image.display(),
                md.size()
            ));
        }
        return Ok(());
    }
    let tmp = image.with_extension("img.new");
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot create `{}`: {}", tmp.display(), project::io_msg(&e)))?;
    file.set_len(size)
        .map_err(|e| format!("cannot size `{}`: {}", tmp.display(), project::io_msg(&e)))?;
    drop(file);
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-E"])
        .arg(format!("root_owner={uid}:{gid}"))
        .arg(&tmp)
        .stdin(std::process::Stdio::null())
        .output();
    let failed = match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Some(format!(
            "cannot run `mkfs.ext4` (Debian package `e2fsprogs`): {e}"
        )),
    };
    if let Some(why) = failed {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "cannot make the volume image `{}`: {why}",
            image.display()
        ));
    }
    std::fs::rename(&tmp, image).map_err(|e| {
        format!(
            "cannot rename to `{}`: {}",
            image.display(),
            project::io_msg(&e)
        )
    })
}

pub fn run(
    out: &Out,
    path: &Path,
    sandbox: Option<&str>,
    command: Vec<String>,
    early: Option<Early>,
) -> anyhow::Result<Exit> {
    let early = early.unwrap_or_else(Early::start);
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
    // Secrets are read before anything is built: a missing one fails the run now.
    let secret_env = match crate::commands::secret::resolve_env(
        Path::new(&p.options.state_dir),
        &s.name,
        s.plan.tenant.as_deref(),
        &s.plan.secret_env,
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::User);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let job = Prepare {
        spec: Box::new(s.spec.clone()),
        egress: s.plan.egress.clone().map(|policy| EgressSetup {
            policy,
            sandbox: s.name.clone(),
            state_dir: sandbox_state_dir(&p, &s.name),
            path: path.to_path_buf(),
            stamp: file_stamp,
            stop: stop.clone(),
        }),
    };
    // Without a helper, the work is done here.
    let (helper, local) = match early.helper {
        Ok(h) => match early.jobs.send(job) {
            Ok(()) => (Some(h), None),
            Err(std::sync::mpsc::SendError(job)) => (None, Some(job)),
        },
        Err(_) => (None, Some(job)),
    };
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
    let bundle =
        match bundle_for(s, &img.layout_dir, &img.tag, &img.manifest_digest).and_then(|b| {
            make_host_dirs(s)
                .map(|()| b)
                .map_err(|e| (Exit::Internal, e))
        }) {
            Ok(b) => b,
            Err((exit, e)) => {
                eprintln!("error: {e}");
                return Ok(exit);
            }
        };
    let mut opts =
        warden_runtime::RunOptions::new(warden_runtime::new_container_id(&s.name), run_dir());
    if !command.is_empty() {
        opts.args_override = Some(command);
    }
    // From a terminal, the sandbox gets one of its own, relayed to the caller's.
    // SAFETY: isatty only inspects the descriptors.
    opts.tty =
        unsafe { libc::isatty(libc::STDIN_FILENO) == 1 && libc::isatty(libc::STDOUT_FILENO) == 1 };
    // What `bundle_for` wrote to the bundle's config.json.
    opts.spec = Some(s.spec.clone());
    opts.secret_env = secret_env;
    // Joined before the container is created: libcontainer clones this thread into the
    // container's processes, and a helper at work in that instant could leave a lock of
    // this process held in the copies (see ARCHITECTURE.md).
    let prepared = match (helper, local) {
        (_, Some(job)) => Some(job.run(None)),
        (Some(h), None) => h.join().ok().flatten(),
        (None, None) => None,
    };
    let Some(prepared) = prepared else {
        eprintln!("error: sandbox `{}`: preparing the run failed", s.name);
        return Ok(Exit::Internal);
    };
    // Not fatal when they could not be made: the container then makes its own, and the
    // proxy's listener is bound once it exists.
    opts.namespaces = prepared.namespaces;
    let egress = match prepared.egress.transpose() {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("error: {msg}");
            return Ok(Exit::Internal);
        }
    };
    if let Some(egress) = &egress {
        let serve = |listener: std::net::TcpListener,
                     rt: &tokio::runtime::Handle,
                     state: &Arc<ProxyState>|
         -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            listener.set_nonblocking(true)?;
            let _guard = rt.enter();
            // The handle is dropped on purpose: the proxy serves until the process ends.
            let _ = warden_egress::spawn(listener, state.clone())?;
            Ok(())
        };
        let (rt, state) = (egress.rt.handle().clone(), egress.state.clone());
        match prepared.listener {
            // Bound in the prepared namespace: served from now on, before the sandbox
            // exists, so the run has nothing to do between create and start.
            Some(listener) => {
                if let Err(e) = serve(listener, &rt, &state) {
                    eprintln!("error: cannot serve the egress proxy of `{}`: {e}", s.name);
                    return Ok(Exit::Internal);
                }
            }
            // Bound once the container's network namespace exists.
            None => {
                opts.before_start = Some(Box::new(move |cx| {
                    let listener = warden_runtime::bind_in_netns(cx.init_pid, PROXY_ADDR.parse()?)?;
                    serve(listener, &rt, &state)
                }));
            }
        }
    }
    // Once the sandbox is gone, its proxy is shut down (connections end, the audit log
    // reaches the disk) on a thread of its own while the runtime removes the container.
    let egress = Arc::new(Mutex::new(egress));
    let shutting_down = Arc::new(Mutex::new(None));
    opts.after_exit = Some(Box::new({
        let (egress, shutting_down, stop) = (egress.clone(), shutting_down.clone(), stop.clone());
        move || {
            stop.store(true, Ordering::Relaxed);
            let taken = egress.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(e) = taken {
                // Unspawned, the closure (and so the proxy) is dropped here, which shuts
                // it down as well, waiting for its threads.
                let down = warden_runtime::spawn_elsewhere("warden-egress-down", || e.shut_down());
                *shutting_down.lock().unwrap_or_else(|e| e.into_inner()) = down.ok();
            }
        }
    }));
    let result = warden_runtime::run_foreground(&bundle, &opts);
    stop.store(true, Ordering::Relaxed);
    // Still here when the run failed before the sandbox exited.
    let left = egress.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(e) = left {
        e.shut_down();
    }
    let down = shutting_down
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(down) = down {
        let _ = down.join();
    }
    match result {
        Ok(code) => Ok(Exit::Code(code)),
        Err(e) => {
            eprintln!("error: sandbox `{}`: {}", s.name, e.chain());
            Ok(if e.is_user_error() {
                Exit::User
            } else {
                Exit::Internal
            })
        }
    }
}

/// The part of a run that needs no file, started before the command line is parsed.
pub struct Early {
    helper: std::io::Result<std::thread::JoinHandle<Option<Prepared>>>,
    jobs: std::sync::mpsc::Sender<Prepare>,
}

impl Early {
    /// Starts the kernel's waits of a run right away: the cgroup move's grace period
    /// ([`warden_runtime::prime_attach`]) and, on a helper thread, the sandbox's user and
    /// network namespaces (see [`warden_runtime::UnmappedNamespaces`]). Once the file is
    /// compiled, the helper finishes them with the spec's mappings and, with egress,
    /// binds the proxy's listener there and makes the proxy's runtime, state and file
    /// watcher, while the calling thread checks the image and writes the bundle. Dropped
    /// unused (a bad command line, a broken file), the helper ends and its namespaces are
    /// gone.
    pub fn start() -> Early {
        warden_runtime::prime_attach();
        let (jobs, job_rx) = std::sync::mpsc::channel::<Prepare>();
        let helper = warden_runtime::spawn_elsewhere("warden-prepare", move || {
            let ns = warden_runtime::UnmappedNamespaces::new().ok();
            job_rx.recv().ok().map(|job| job.run(ns))
        });
        Early { helper, jobs }
    }
}

/// What the helper thread of a run finishes once the file is compiled.
struct Prepare {
    spec: Box<warden_compile::Spec>,
    egress: Option<EgressSetup>,
}

/// What a run gets from [`Prepare::run`].
struct Prepared {
    namespaces: Option<warden_runtime::PreparedNamespaces>,
    /// The proxy's listener, bound in `namespaces`.
    listener: Option<std::net::TcpListener>,
    egress: Option<Result<Egress, String>>,
}

impl Prepare {
    /// `ns`: the namespaces made before the file was read, if they could be.
    fn run(self, ns: Option<warden_runtime::UnmappedNamespaces>) -> Prepared {
        let listener = ns
            .as_ref()
            .filter(|_| self.egress.is_some())
            .and_then(|ns| ns.bind(PROXY_ADDR.parse().ok()?).ok());
        let namespaces = ns.and_then(|ns| ns.finish(&self.spec).ok().flatten());
        Prepared {
            // A listener in namespaces the container does not join would be unreachable.
            listener: listener.filter(|_| namespaces.is_some()),
            namespaces,
            egress: self.egress.map(EgressSetup::start),
        }
    }
}

/// The egress proxy of a run.
struct Egress {
    rt: tokio::runtime::Runtime,
    state: Arc<ProxyState>,
    watcher: std::thread::JoinHandle<()>,
}

impl Egress {
    /// Stops the policy watcher (its stop flag must be set), writes what the audit log
    /// and the approvals still hold, and stops the runtime.
    fn shut_down(self) {
        self.watcher.thread().unpark();
        let _ = self.watcher.join();
        self.state.flush();
        self.rt.shutdown_timeout(Duration::from_millis(200));
    }
}

struct EgressSetup {
    policy: warden_wire::egress::EgressPolicy,
    sandbox: String,
    state_dir: PathBuf,
    /// The file, watched for edits.
    path: PathBuf,
    stamp: Option<SystemTime>,
    stop: Arc<AtomicBool>,
}

impl EgressSetup {
    /// The proxy's runtime and state, and the watcher that reloads its policy.
    fn start(self) -> Result<Egress, String> {
        let EgressSetup {
            policy,
            sandbox,
            state_dir,
            path,
            stamp,
            stop,
        } = self;
        let fail = |e: &dyn std::fmt::Display| {
            format!("cannot start the egress proxy of `{sandbox}`: {e}")
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| fail(&e))?;
        let state = ProxyState::new(policy, ProxyConfig::new(state_dir)).map_err(|e| fail(&e))?;
        let watcher = spawn_watcher(path, sandbox, state.clone(), stamp, stop);
        Ok(Egress { rt, state, watcher })
    }
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
