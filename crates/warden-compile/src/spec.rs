//! One sandbox to one OCI runtime spec. What every sandbox shares (the fixed mounts,
//! namespaces, masked paths, the default seccomp list) is written as JSON and read into
//! the `oci_spec` types once per compile, so it is checked against the OCI types while it
//! stays readable as data; each sandbox then fills in its own fields with typed setters.

use crate::{CompileError, CompileOptions};
use oci_spec::runtime::{
    Arch, Capabilities, Capability, Linux, LinuxCapabilities, LinuxCpu, LinuxDeviceCgroup,
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemory, LinuxPids, LinuxResources, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall, Mount,
    PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process, Spec, User,
};
use serde::de::{DeserializeOwned, IntoDeserializer, value::StrDeserializer};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use warden_lang::Model;
use warden_lang::model::Sandbox;
use warden_wire::WIRE_VERSION;
use warden_wire::init::{INIT_CONFIG_ENV, INIT_PATH, InitConfig, Landlock, LandlockMode};
use warden_wire::sandbox::{PROXY_ADDR, VOLUME_ANNOTATION};
use warden_wire::seccomp::{DEFAULT_DENY, Denied, SeccompRule};

/// Paths under /proc and /sys the sandbox cannot read (bind-mounted over with nothing).
/// They leak host details or kernel addresses.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Kernel knobs the sandbox may read but never write.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Seccomp filters are installed for every architecture the kernel may run the sandbox in.
const ARCHITECTURES: &[Arch] = &[
    Arch::ScmpArchX86_64,
    Arch::ScmpArchX86,
    Arch::ScmpArchX32,
    Arch::ScmpArchAarch64,
    Arch::ScmpArchArm,
];

/// The parts of a spec that are the same for every sandbox, built once per compile.
pub(crate) struct Shared {
    /// `ociVersion` and a read-only `root`.
    spec: Spec,
    /// No terminal, no new privileges.
    process: Process,
    /// Namespaces, masked and read-only paths.
    linux: Linux,
    /// No capabilities in any set until the sandbox's own are filled in.
    capabilities: LinuxCapabilities,
    /// The kernel filesystems every sandbox mounts, in order.
    mounts: Vec<Mount>,
    /// No device may be opened.
    devices: Vec<LinuxDeviceCgroup>,
    /// The whole default deny list, and its OCI form, for sandboxes that relax none of it.
    deny: Vec<SeccompRule>,
    deny_json: Box<RawValue>,
    seccomp: LinuxSeccomp,
}

impl Shared {
    pub(crate) fn new() -> Result<Self, CompileError> {
        let deny: Vec<SeccompRule> = DEFAULT_DENY.iter().map(rule).collect();
        Ok(Shared {
            spec: from_json(json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs", "readonly": true},
            }))?,
            process: from_json(json!({
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "cwd": "/",
                "noNewPrivileges": true,
            }))?,
            linux: from_json(json!({
                "namespaces": [
                    {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                    {"type": "mount"}, {"type": "user"}, {"type": "cgroup"},
                ],
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
            }))?,
            capabilities: from_json(json!({}))?,
            mounts: from_json(json!([
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                // No /dev/shm unless the file asks (`shm`), no /dev/mqueue: nothing writable
                // that the file does not name.
                // Read-only sysfs; no /sys/fs/cgroup mount at all (libcontainer would mount it
                // writable on cgroup v1, letting root in the sandbox raise its own limits).
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            ]))?,
            devices: from_json(json!([{"allow": false, "access": "rwm"}]))?,
            seccomp: seccomp(&deny)?,
            deny_json: serde_json::value::to_raw_value(&deny).map_err(spec_error)?,
            deny,
        })
    }
}

fn from_json<T: DeserializeOwned>(v: Value) -> Result<T, CompileError> {
    serde_json::from_value(v).map_err(spec_error)
}

fn spec_error(e: impl std::fmt::Display) -> CompileError {
    CompileError::Spec(e.to_string())
}

pub(crate) fn volume_path(opts: &CompileOptions, tenant: &str, volume: &str) -> String {
    format!(
        "{}/tenants/{tenant}/volumes/{volume}",
        opts.state_dir.trim_end_matches('/')
    )
}

fn host_path(opts: &CompileOptions, base: &str, p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    let joined = warden_lang::join(base, p);
    let mut parts: Vec<&str> = opts.base_dir.split('/').filter(|c| !c.is_empty()).collect();
    for comp in joined.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Device nodes every sandbox may open for writing (Landlock); nothing else in `/dev` is.
pub const WRITABLE_DEVICES: &[&str] = &[
    "/dev/full",
    "/dev/null",
    "/dev/ptmx",
    "/dev/pts",
    "/dev/random",
    "/dev/tty",
    "/dev/urandom",
    "/dev/zero",
];

pub(crate) fn init_config(model: &Model, s: &Sandbox, shared: &Shared) -> InitConfig {
    let fs = &s.filesystem;
    let mut read_write: Vec<String> =
        Vec::with_capacity(fs.read_write.len() + fs.binds.len() + fs.volumes.len() + 1);
    read_write.extend(fs.read_write.iter().cloned());
    read_write.extend(fs.binds.iter().filter(|b| b.writable).map(|b| b.at.clone()));
    read_write.extend(
        fs.volumes
            .iter()
            .filter(|v| v.writable)
            .map(|v| v.at.clone()),
    );
    // The device nodes programs write (and terminals: `/dev/tty`, new ones through
    // `/dev/ptmx` in `/dev/pts`); the rest of `/dev` stays read-only.
    read_write.extend(WRITABLE_DEVICES.iter().map(|d| d.to_string()));
    if fs.shm.is_some() {
        read_write.push("/dev/shm".to_string());
    }
    read_write.sort();
    read_write.dedup();
    InitConfig {
        version: WIRE_VERSION,
        landlock: Landlock {
            mode: fs.landlock.unwrap_or(LandlockMode::Required),
            read_exec: vec!["/".to_string()],
            read_write,
        },
        seccomp: if relaxes_seccomp(s) {
            DEFAULT_DENY
                .iter()
                .filter(|d| !s.allow_syscalls.iter().any(|a| a == d.syscall))
                .map(rule)
                .collect()
        } else {
            shared.deny.clone()
        },
        grace_period_ms: s.grace_ms,
        files: crate::agents::seed_files(s, crate::agents::home(model, s)),
    }
}

/// Whether the sandbox removes anything from the default deny list.
fn relaxes_seccomp(s: &Sandbox) -> bool {
    s.allow_syscalls
        .iter()
        .any(|a| DEFAULT_DENY.iter().any(|d| d.syscall == a))
}

fn rule(d: &Denied) -> SeccompRule {
    SeccompRule {
        syscall: d.syscall.to_string(),
        errno: d.errno,
        arg: d.arg,
    }
}

fn seccomp(rules: &[SeccompRule]) -> Result<LinuxSeccomp, CompileError> {
    let deny = |names: Vec<String>, errno: u32| {
        let mut sc = LinuxSyscall::default();
        sc.set_names(names)
            .set_action(LinuxSeccompAction::ScmpActErrno)
            .set_errno_ret(Some(errno));
        sc
    };
    // Plain denials grouped by errno.
    let mut errnos: Vec<u32> = rules
        .iter()
        .filter(|r| r.arg.is_none())
        .map(|r| r.errno)
        .collect();
    errnos.sort_unstable();
    errnos.dedup();
    let mut syscalls: Vec<LinuxSyscall> = errnos
        .into_iter()
        .map(|errno| {
            let names = rules
                .iter()
                .filter(|r| r.arg.is_none() && r.errno == errno)
                .map(|r| r.syscall.clone())
                .collect();
            deny(names, errno)
        })
        .collect();
    for r in rules {
        if let Some(a) = r.arg {
            // Runtimes read SCMP_CMP_MASKED_EQ's operands differently (runc and crun take
            // `value` as the mask, libcontainer `valueTwo`), so only forms they all read
            // alike are written: a mask equal to its value (those bits all set), or a
            // 32-bit request compared whole. warden-init's own filter, which runs under
            // every runtime, compares exactly `(arg & mask) == value`, so an ioctl request
            // with high bits set (which the kernel ignores) is refused there.
            let (op, value, value_two) = if a.mask == a.value {
                (LinuxSeccompOperator::ScmpCmpMaskedEq, a.value, a.mask)
            } else if a.mask == u64::from(u32::MAX) {
                (LinuxSeccompOperator::ScmpCmpEq, a.value, 0)
            } else {
                continue;
            };
            let arg = LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(value)
                .value_two(value_two)
                .op(op)
                .build()
                .map_err(spec_error)?;
            let mut sc = deny(vec![r.syscall.clone()], r.errno);
            sc.set_args(Some(vec![arg]));
            syscalls.push(sc);
        }
    }
    let mut seccomp = LinuxSeccomp::default();
    seccomp
        .set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures(Some(ARCHITECTURES.to_vec()))
        .set_syscalls(Some(syscalls));
    Ok(seccomp)
}

/// `InitConfig` as JSON, with its seccomp list (most of the bytes) already serialized.
struct InitJson<'a> {
    init: &'a InitConfig,
    seccomp: &'a RawValue,
}

impl Serialize for InitJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let InitConfig {
            version,
            landlock,
            seccomp: _,
            grace_period_ms,
            files,
        } = self.init;
        let mut s = serializer.serialize_struct("InitConfig", 5)?;
        s.serialize_field("version", version)?;
        s.serialize_field("landlock", landlock)?;
        s.serialize_field("seccomp", self.seccomp)?;
        s.serialize_field("grace_period_ms", grace_period_ms)?;
        if !files.is_empty() {
            s.serialize_field("files", files)?;
        }
        s.end()
    }
}

/// The `WARDEN_INIT_CONFIG=...` environment entry.
fn init_env(s: &Sandbox, init: &InitConfig, shared: &Shared) -> Result<String, CompileError> {
    let relaxed;
    let seccomp = if relaxes_seccomp(s) {
        relaxed = serde_json::value::to_raw_value(&init.seccomp).map_err(spec_error)?;
        &relaxed
    } else {
        &shared.deny_json
    };
    let mut out = Vec::with_capacity(INIT_CONFIG_ENV.len() + seccomp.get().len() + 256);
    out.extend_from_slice(INIT_CONFIG_ENV.as_bytes());
    out.push(b'=');
    serde_json::to_writer(&mut out, &InitJson { init, seccomp }).map_err(spec_error)?;
    String::from_utf8(out).map_err(spec_error)
}

fn env(
    model: &Model,
    s: &Sandbox,
    init: &InitConfig,
    shared: &Shared,
) -> Result<Vec<String>, CompileError> {
    fn set<'a>(env: &mut Vec<(&'a str, &'a str)>, k: &'a str, v: &'a str) {
        env.retain(|(x, _)| *x != k);
        env.push((k, v));
    }
    let proxy = format!("http://{PROXY_ADDR}");
    let home = crate::agents::home(model, s);
    let (defaults, inference, agent) = (
        crate::agents::agent_defaults(s, home),
        crate::agents::inference_env(s),
        crate::agents::agent_env(s, home),
    );
    let mut env: Vec<(&str, &str)> = Vec::with_capacity(16);
    set(&mut env, "PATH", "/usr/local/bin:/usr/bin:/bin");
    if let Some(img) = model.image(&s.image) {
        for (k, v) in &img.env {
            set(&mut env, k, v);
        }
    }
    for (k, v) in &defaults {
        set(&mut env, k, v);
    }
    for (k, v) in &s.env {
        set(&mut env, k, v);
    }
    if s.egress.is_some() {
        // Upper- and lower-case: curl and busybox wget read only the lower-case forms.
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            set(&mut env, k, &proxy);
        }
        set(&mut env, "NO_PROXY", "localhost,127.0.0.1,::1");
        set(&mut env, "no_proxy", "localhost,127.0.0.1,::1");
    }
    for (k, v) in inference.iter().chain(&agent) {
        set(&mut env, k, v);
    }
    env.retain(|(k, _)| *k != INIT_CONFIG_ENV);
    let mut out = Vec::with_capacity(env.len() + 1);
    out.extend(env.into_iter().map(|(k, v)| [k, "=", v].concat()));
    out.push(init_env(s, init, shared)?);
    Ok(out)
}

fn mount(destination: String, typ: &str, source: String, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.into())
        .set_typ(Some(typ.to_string()))
        .set_source(Some(source.into()))
        .set_options(Some(options));
    m
}

fn rlimit(typ: PosixRlimitType, limit: u64) -> Result<PosixRlimit, CompileError> {
    PosixRlimitBuilder::default()
        .typ(typ)
        .hard(limit)
        .soft(limit)
        .build()
        .map_err(spec_error)
}

fn id_mapping(host_id: u32, size: u32) -> Result<LinuxIdMapping, CompileError> {
    LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(host_id)
        .size(size)
        .build()
        .map_err(spec_error)
}

/// The values of a sandbox that may not fit the OCI types, converted.
pub(crate) struct Checked {
    memory: i64,
    capabilities: Capabilities,
}

/// Everything that can make building the sandbox's spec fail, found without building it:
/// the rest is fixed data, builders given every field, and serialization to memory.
pub(crate) fn check(s: &Sandbox) -> Result<Checked, CompileError> {
    let memory = i64::try_from(s.limits.memory).map_err(|_| {
        CompileError::Spec(format!(
            "memory limit of {} bytes is more than the OCI spec can hold",
            s.limits.memory
        ))
    })?;
    let capabilities = s
        .capabilities
        .iter()
        .map(|c| {
            let de: StrDeserializer<'_, serde::de::value::Error> = c.as_str().into_deserializer();
            Capability::deserialize(de).map_err(spec_error)
        })
        .collect::<Result<Capabilities, _>>()?;
    Ok(Checked {
        memory,
        capabilities,
    })
}

fn capabilities(set: Capabilities, shared: &Shared) -> LinuxCapabilities {
    let mut caps = shared.capabilities.clone();
    caps.set_bounding(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_permitted(Some(set.clone()))
        .set_inheritable(Some(set.clone()))
        .set_ambient(Some(set));
    caps
}

fn mounts(model: &Model, s: &Sandbox, opts: &CompileOptions, shared: &Shared) -> Vec<Mount> {
    let fs = &s.filesystem;
    let volumes = if s.tenant.is_some() {
        fs.volumes.len()
    } else {
        0
    };
    let mut mounts =
        Vec::with_capacity(shared.mounts.len() + fs.read_write.len() + fs.binds.len() + volumes);
    mounts.extend_from_slice(&shared.mounts);
    if let Some(shm) = fs.shm {
        let options = [
            "nosuid",
            "nodev",
            "noexec",
            "mode=1777",
            &format!("size={shm}"),
        ]
        .map(String::from);
        mounts.push(mount(
            "/dev/shm".into(),
            "tmpfs",
            "shm".into(),
            options.into(),
        ));
    }
    let size = format!("size={}", fs.tmpfs_size);
    for p in &fs.read_write {
        let options = ["nosuid", "nodev", "mode=1777", &size].map(String::from);
        mounts.push(mount(p.clone(), "tmpfs", "tmpfs".into(), options.into()));
    }
    let mut binds: Vec<(&str, String, bool)> = fs
        .binds
        .iter()
        .map(|b| {
            (
                b.at.as_str(),
                host_path(opts, &b.base, &b.source),
                b.writable,
            )
        })
        .collect();
    if let Some(t) = s.tenant.as_deref() {
        binds.extend(
            fs.volumes
                .iter()
                .map(|v| (v.at.as_str(), volume_path(opts, t, &v.volume), v.writable)),
        );
    }
    // The agents' rendered configuration: files of the bundle (a source relative to
    // the bundle, as OCI allows), bound read-only.
    let agent_binds = crate::agents::binds(model, s, crate::agents::home(model, s));
    binds.extend(
        agent_binds
            .iter()
            .map(|(at, source)| (at.as_str(), source.clone(), false)),
    );
    // Parents before children, whatever the file's order.
    binds.sort_by(|a, b| a.0.cmp(b.0));
    for (at, source, writable) in binds {
        let rw = if writable { "rw" } else { "ro" };
        let options = ["rbind", rw, "nosuid", "nodev"].map(String::from);
        mounts.push(mount(at.to_string(), "bind", source, options.into()));
    }
    mounts
}

fn resources(s: &Sandbox, memory: i64, shared: &Shared) -> LinuxResources {
    let limits = &s.limits;
    let mut mem = LinuxMemory::default();
    mem.set_limit(Some(memory)).set_swap(Some(memory));
    let mut pids = LinuxPids::default();
    pids.set_limit(limits.pids.into());
    let mut r = LinuxResources::default();
    r.set_devices(Some(shared.devices.clone()))
        .set_memory(Some(mem))
        .set_pids(Some(pids));
    if limits.cpu_millis != 0 {
        let mut cpu = LinuxCpu::default();
        cpu.set_quota(Some(i64::from(limits.cpu_millis) * 100))
            .set_period(Some(100_000));
        r.set_cpu(Some(cpu));
    }
    r
}

pub(crate) fn spec(
    model: &Model,
    s: &Sandbox,
    init: &InitConfig,
    opts: &CompileOptions,
    shared: &Shared,
) -> Result<Spec, CompileError> {
    let checked = check(s)?;
    let (uid_start, uid_count) = model.user_range(s);

    let mut user = User::default();
    user.set_uid(s.user).set_gid(s.group);
    let mut args = Vec::with_capacity(s.command.len() + 2);
    args.extend([INIT_PATH.to_string(), "--".to_string()]);
    args.extend(s.command.iter().cloned());
    let mut process = shared.process.clone();
    process
        .set_user(user)
        .set_args(Some(args))
        .set_env(Some(env(model, s, init, shared)?))
        .set_cwd(PathBuf::from(&s.workdir))
        .set_capabilities(Some(capabilities(checked.capabilities, shared)))
        .set_rlimits(Some(vec![
            rlimit(PosixRlimitType::RlimitNofile, s.limits.open_files.into())?,
            // No core dumps: they would write process memory where the agent can read it.
            rlimit(PosixRlimitType::RlimitCore, 0)?,
        ]));

    let seccomp = if relaxes_seccomp(s) {
        seccomp(&init.seccomp)?
    } else {
        shared.seccomp.clone()
    };
    let mut linux = shared.linux.clone();
    linux
        .set_uid_mappings(Some(vec![id_mapping(uid_start, uid_count)?]))
        .set_gid_mappings(Some(vec![id_mapping(uid_start, uid_count)?]))
        .set_resources(Some(resources(s, checked.memory, shared)))
        .set_cgroups_path(Some(format!("/warden/{}", s.name).into()))
        .set_seccomp(Some(seccomp));

    let mut annotations = HashMap::with_capacity(4);
    annotations.insert("dev.warden.sandbox".to_string(), s.name.clone());
    annotations.insert("dev.warden.image".to_string(), s.image.clone());
    if let Some(t) = &s.tenant {
        annotations.insert("dev.warden.tenant".to_string(), t.clone());
    }
    let network = match &s.egress {
        Some(e) => format!("proxy {PROXY_ADDR} ({} rules)", e.rules.len()),
        None => "none".to_string(),
    };
    annotations.insert("dev.warden.network".to_string(), network);
    if let Some(t) = s.tenant.as_deref().and_then(|t| model.tenant(t)) {
        for v in &s.filesystem.volumes {
            let sized = t
                .volumes
                .iter()
                .any(|tv| tv.name == v.volume && tv.size.is_some());
            let dir = volume_path(opts, &t.name, &v.volume);
            let image = if sized {
                format!("{dir}.img")
            } else {
                String::new()
            };
            annotations.insert(format!("{VOLUME_ANNOTATION}{dir}"), image);
        }
    }

    let mut spec = shared.spec.clone();
    spec.set_hostname(Some(s.hostname.clone()))
        .set_annotations(Some(annotations))
        .set_process(Some(process))
        .set_mounts(Some(mounts(model, s, opts, shared)))
        .set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use crate::{CompileOptions, check, compile};
    use warden_lang::{Model, NoFiles, SourceFile, load};

    /// Relaxations, binds, tenant volumes and egress: every part a spec is built from.
    const FILE: &str = r#"
image "base" {
    from-host "/bin/sh"
}

sandbox "relaxed" {
    image "base"
    command "/bin/sh" "-c" "exit 0"
    env "LANG" "C.UTF-8"
    capabilities "CAP_NET_BIND_SERVICE" "CAP_SETUID"
    seccomp {
        allow "clone" "ptrace" reason="a debugger"
    }
    filesystem {
        read-write "/tmp"
        bind "./work" at="/sandbox/work" writable=#true
        bind "/etc/ssl/certs" at="/etc/ssl/certs"
        volume "data" at="/sandbox/data" writable=#true
    }
    egress {
        allow "api.example.com" reason="its api"
    }
}

sandbox "strict" {
    image "base"
    command "/bin/sh"
}

tenant "t" {
    sandboxes "relaxed"
    users uid=200000 count=65536
    volume "data" size="1GiB"
}
"#;

    fn model(text: &str) -> Model {
        let loaded = load(&SourceFile::new("t.kdl", text), &NoFiles);
        loaded
            .model
            .unwrap_or_else(|| panic!("{}", warden_lang::render(&loaded.diagnostics)))
    }

    fn options() -> CompileOptions {
        CompileOptions {
            base_dir: "/project".into(),
            state_dir: "/var/lib/warden".into(),
        }
    }

    #[test]
    fn init_config_env_is_its_json() {
        let c = compile(&model(FILE), &options()).unwrap();
        for s in &c.sandboxes {
            let env = s.spec.process().as_ref().unwrap().env().as_ref().unwrap();
            let expected = format!(
                "{}={}",
                warden_wire::init::INIT_CONFIG_ENV,
                serde_json::to_string(&s.init).unwrap()
            );
            assert_eq!(env.last(), Some(&expected), "{}", s.name);
        }
        assert!(c.sandboxes[0].init.seccomp.len() < c.sandboxes[1].init.seccomp.len());
    }

    #[test]
    fn specs_read_back_the_same() {
        let c = compile(&model(FILE), &options()).unwrap();
        for s in &c.sandboxes {
            let json = serde_json::to_value(&s.spec).unwrap();
            let back: oci_spec::runtime::Spec = serde_json::from_value(json).unwrap();
            assert_eq!(back, s.spec, "{}", s.name);
        }
    }

    #[test]
    fn check_finds_what_compile_finds() {
        let ok = model(FILE);
        assert!(check(&ok).is_ok() && compile(&ok, &options()).is_ok());
        // The language refuses such a limit; a model built by hand can still hold one.
        let mut huge = model(FILE);
        huge.sandboxes[1].limits.memory = u64::MAX;
        let from_check = check(&huge).unwrap_err().to_string();
        let from_compile = compile(&huge, &options()).unwrap_err().to_string();
        assert_eq!(from_check, from_compile);
        assert!(from_check.contains("memory limit"), "{from_check}");
    }
}
