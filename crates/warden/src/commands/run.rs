//! `warden run`: build what is missing, run one sandbox in the foreground, exit with its
//! code. With egress or inference, the sandbox's proxy and router are served from this
//! process ([`services`]) and follow the file: an edit (or `warden approve`) reloads
//! their policies within a second.

use crate::Exit;
use crate::project::{self, Project};
use crate::services;
use crate::ui::Out;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use warden_compile::CompiledSandbox;

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
    (BUNDLE_FORMAT, digest, &config, &s.plan.files).hash(&mut h);
    let dir = crate::commands::build::cache_dir()
        .join("bundles")
        .join(format!("{}-{:016x}", s.name, h.finish()));
    if !dir.join("config.json").exists() {
        warden_image::unpack_bundle(layout, tag, &config, &s.plan.files, &dir).map_err(|e| {
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
    // Taken before reading: an edit from here on reloads the policies of the run.
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
    let job = Prepare {
        spec: Box::new(s.spec.clone()),
        services: services::Setup {
            sandbox: s.name.clone(),
            egress: s.plan.egress.clone(),
            inference: s.plan.inference.clone(),
            orders: s.plan.orders_endpoint.then(|| s.plan.orders.clone()),
            state_dir: sandbox_state_dir(&p, &s.name),
            workers: 2,
            keys: services::KeyStore {
                tenant: s.plan.tenant.clone(),
                state_dir: PathBuf::from(&p.options.state_dir),
            },
        },
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
    // listeners are bound once it exists.
    opts.namespaces = prepared.namespaces;
    let services = match prepared.services {
        Ok(x) => x.map(Arc::new),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(if e.is_user_error() {
                Exit::User
            } else {
                Exit::Internal
            });
        }
    };
    if let Some(svc) = &services {
        svc.render_orders(&bundle);
        match prepared.listeners {
            // Bound in the prepared namespace: served from now on, before the sandbox
            // exists, so the run has nothing to do between create and start.
            Some(listeners) => {
                if let Err(e) = svc.serve(listeners) {
                    eprintln!("error: {e}");
                    return Ok(Exit::Internal);
                }
            }
            // Bound once the container's network namespace exists.
            None => {
                let svc = svc.clone();
                opts.before_start = Some(Box::new(move |cx| {
                    let listeners = services::Listeners::bind(svc.needs(), |addr| {
                        warden_runtime::bind_in_netns(cx.init_pid, addr)
                    })?;
                    // Served until the services shut down with the run.
                    svc.serve(listeners)?;
                    Ok(())
                }));
            }
        }
        // The runtime's workers are parked while libcontainer clones this thread.
        let svc = svc.clone();
        opts.hold_for_clone = Some(Box::new(move || Box::new(services::hold(Some(&svc)))));
    }
    // The file watcher starts once the container exists (a thread starting during the
    // clone is what the hold keeps out) and reloads the policies on an edit.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::new(Mutex::new(None));
    if let Some(svc) = &services {
        let (svc, watcher, stop) = (svc.clone(), watcher.clone(), stop.clone());
        let (path, name) = (path.to_path_buf(), s.name.clone());
        opts.after_start = Some(Box::new(move |_| {
            let w = spawn_watcher(
                path.clone(),
                name.clone(),
                svc.clone(),
                file_stamp,
                stop.clone(),
            );
            *watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
        }));
    }
    // Once the sandbox is gone, its services are shut down (connections end, the audit
    // logs reach the disk) on a thread of their own while the runtime removes the
    // container.
    let down = {
        let (services, watcher, stop) = (services.clone(), watcher.clone(), stop.clone());
        move || {
            stop.store(true, Ordering::Relaxed);
            let w = watcher.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(w) = w {
                w.thread().unpark();
                let _ = w.join();
            }
            if let Some(svc) = &services {
                svc.shut_down();
            }
        }
    };
    let shutting_down = Arc::new(Mutex::new(None));
    let down = Arc::new(down);
    opts.after_exit = Some(Box::new({
        let (down, shutting_down) = (down.clone(), shutting_down.clone());
        move || {
            let d = down.clone();
            let t = warden_runtime::spawn_elsewhere("warden-services-down", move || (*d)());
            *shutting_down.lock().unwrap_or_else(|e| e.into_inner()) = t.ok();
        }
    }));
    let result = warden_runtime::run_foreground(&bundle, &opts);
    let t = shutting_down
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match t {
        Some(t) => {
            let _ = t.join();
        }
        // The run failed before the sandbox exited (or the thread could not start).
        None => (*down)(),
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
    /// compiled, the helper finishes them with the spec's mappings and binds the egress
    /// proxy's and the inference router's listeners there and makes their runtime and
    /// state ([`services::Services`]), while the calling thread checks the image and
    /// writes the bundle. Dropped unused (a bad command line, a broken file), the helper
    /// ends and its namespaces are gone.
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
    services: services::Setup,
}

/// What a run gets from [`Prepare::run`].
struct Prepared {
    namespaces: Option<warden_runtime::PreparedNamespaces>,
    /// The services' listeners, bound in `namespaces`.
    listeners: Option<services::Listeners>,
    services: Result<Option<services::Services>, services::Error>,
}

impl Prepare {
    /// `ns`: the namespaces made before the file was read, if they could be.
    fn run(self, ns: Option<warden_runtime::UnmappedNamespaces>) -> Prepared {
        let needs = self.services.needs();
        let listeners = ns
            .as_ref()
            .filter(|_| needs.any())
            .and_then(|ns| services::Listeners::bind(needs, |addr| ns.bind(addr)).ok());
        let namespaces = ns.and_then(|ns| ns.finish(&self.spec).ok().flatten());
        Prepared {
            // Listeners in namespaces the container does not join would be unreachable.
            listeners: listeners.filter(|_| namespaces.is_some()),
            namespaces,
            services: services::Services::start(self.services),
        }
    }
}

fn stamp(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reload the egress and inference policies when the file changes (hand edits, `warden
/// approve`).
fn spawn_watcher(
    path: PathBuf,
    sandbox: String,
    services: Arc<services::Services>,
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
            let _busy = services::busy();
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
                    "warden: `{}` changed but is invalid; keeping the current policies",
                    path.display()
                );
                continue;
            };
            let Ok(c) = project::compile(&p) else {
                continue;
            };
            let Some(plan) = c
                .sandboxes
                .iter()
                .find(|x| x.name == sandbox)
                .map(|x| &x.plan)
            else {
                continue;
            };
            match services.reload(
                plan.egress.clone(),
                plan.inference.clone(),
                Some(plan.orders.clone()),
            ) {
                Ok(done) => {
                    for what in done {
                        eprintln!(
                            "warden: {what} policy of `{sandbox}` reloaded from `{}`",
                            path.display()
                        );
                    }
                }
                Err(e) => eprintln!("warden: {e}"),
            }
        }
    })
}
