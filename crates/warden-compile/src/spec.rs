//! One sandbox to one OCI runtime spec. The spec is written as JSON and read back into
//! `oci_spec::runtime::Spec`, so every field is checked against the OCI types while the
//! construction stays readable as data.

use crate::{CompileError, CompileOptions};
use serde_json::{Value, json};
use warden_lang::Model;
use warden_lang::model::Sandbox;
use warden_wire::init::{INIT_CONFIG_ENV, INIT_PATH, InitConfig, Landlock, LandlockMode};
use warden_wire::sandbox::PROXY_ADDR;
use warden_wire::seccomp::{DEFAULT_DENY, SeccompRule};
use warden_wire::{WIRE_VERSION, egress};

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

pub(crate) fn init_config(model: &Model, s: &Sandbox, _opts: &CompileOptions) -> InitConfig {
    let _ = model;
    let fs = &s.filesystem;
    let mut read_write: Vec<String> = fs.read_write.clone();
    read_write.extend(fs.binds.iter().filter(|b| b.writable).map(|b| b.at.clone()));
    read_write.extend(
        fs.volumes
            .iter()
            .filter(|v| v.writable)
            .map(|v| v.at.clone()),
    );
    // Device nodes such as /dev/null and /dev/pts are written by nearly every program;
    // /dev itself is a root-owned tmpfs the sandbox user cannot add files to.
    read_write.push("/dev".to_string());
    read_write.sort();
    read_write.dedup();
    InitConfig {
        version: WIRE_VERSION,
        landlock: Landlock {
            mode: fs.landlock.unwrap_or(LandlockMode::Required),
            read_exec: vec!["/".to_string()],
            read_write,
        },
        seccomp: seccomp_rules(s),
        grace_period_ms: s.grace_ms,
    }
}

fn seccomp_rules(s: &Sandbox) -> Vec<SeccompRule> {
    DEFAULT_DENY
        .iter()
        .filter(|d| !s.allow_syscalls.iter().any(|a| a == d.syscall))
        .map(|d| SeccompRule {
            syscall: d.syscall.to_string(),
            errno: d.errno,
            arg: d.arg,
        })
        .collect()
}

fn seccomp_json(rules: &[SeccompRule]) -> Value {
    let mut syscalls: Vec<Value> = Vec::new();
    // Plain denials grouped by errno, in table order.
    let mut errnos: Vec<u32> = rules
        .iter()
        .filter(|r| r.arg.is_none())
        .map(|r| r.errno)
        .collect();
    errnos.dedup();
    errnos.sort_unstable();
    errnos.dedup();
    for errno in errnos {
        let names: Vec<&str> = rules
            .iter()
            .filter(|r| r.arg.is_none() && r.errno == errno)
            .map(|r| r.syscall.as_str())
            .collect();
        syscalls.push(json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}));
    }
    for r in rules.iter().filter(|r| r.arg.is_some()) {
        if let Some(a) = r.arg {
            syscalls.push(json!({
                "names": [r.syscall],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": r.errno,
                "args": [{"index": a.index, "value": a.value, "valueTwo": a.mask, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls,
    })
}

fn env(model: &Model, s: &Sandbox, init: &InitConfig) -> Result<Vec<String>, CompileError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(x, _)| x != k);
        env.push((k.to_string(), v.to_string()));
    };
    set("PATH", "/usr/local/bin:/usr/bin:/bin");
    if let Some(img) = model.image(&s.image) {
        for (k, v) in &img.env {
            set(k, v);
        }
    }
    for (k, v) in &s.env {
        set(k, v);
    }
    if s.egress.is_some() {
        let proxy = format!("http://{PROXY_ADDR}");
        // Upper- and lower-case: curl and busybox wget read only the lower-case forms.
        for k in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            set(k, &proxy);
        }
        set("NO_PROXY", "localhost,127.0.0.1,::1");
        set("no_proxy", "localhost,127.0.0.1,::1");
    }
    let init_json = serde_json::to_string(init).map_err(|e| CompileError::Spec(e.to_string()))?;
    set(INIT_CONFIG_ENV, &init_json);
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

pub(crate) fn spec(
    model: &Model,
    s: &Sandbox,
    init: &InitConfig,
    opts: &CompileOptions,
) -> Result<oci_spec::runtime::Spec, CompileError> {
    let (uid_start, uid_count) = model.user_range(s);
    let fs = &s.filesystem;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        // Read-only sysfs; no /sys/fs/cgroup mount at all (libcontainer would mount it
        // writable on cgroup v1, letting root in the sandbox raise its own limits).
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    let size = format!("size={}", fs.tmpfs_size);
    for p in &fs.read_write {
        mounts.push(json!({"destination": p, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", size]}));
    }
    let mut binds: Vec<(String, String, bool)> = fs
        .binds
        .iter()
        .map(|b| {
            (
                b.at.clone(),
                host_path(opts, &b.base, &b.source),
                b.writable,
            )
        })
        .collect();
    if let Some(t) = s.tenant.as_deref() {
        binds.extend(
            fs.volumes
                .iter()
                .map(|v| (v.at.clone(), volume_path(opts, t, &v.volume), v.writable)),
        );
    }
    // Parents before children, whatever the file's order.
    binds.sort_by(|a, b| a.0.cmp(&b.0));
    for (at, source, writable) in binds {
        let rw = if writable { "rw" } else { "ro" };
        mounts.push(json!({"destination": at, "type": "bind", "source": source, "options": ["rbind", rw, "nosuid", "nodev"]}));
    }
    let caps = &s.capabilities;
    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"limit": s.limits.memory, "swap": s.limits.memory},
        "pids": {"limit": s.limits.pids},
        "cpu": {"quota": s.limits.cpu_millis as i64 * 100, "period": 100_000},
    });
    if s.limits.cpu_millis == 0 {
        resources.as_object_mut().map(|r| r.remove("cpu"));
    }
    let mut args = vec![INIT_PATH.to_string(), "--".to_string()];
    args.extend(s.command.iter().cloned());
    let mut annotations = serde_json::Map::new();
    annotations.insert("dev.warden.sandbox".into(), json!(s.name));
    annotations.insert("dev.warden.image".into(), json!(s.image));
    if let Some(t) = &s.tenant {
        annotations.insert("dev.warden.tenant".into(), json!(t));
    }
    let network = if s.egress.is_some() {
        egress_note(s)
    } else {
        "none".to_string()
    };
    annotations.insert("dev.warden.network".into(), json!(network));
    let v = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "hostname": s.hostname,
        "annotations": annotations,
        "process": {
            "terminal": false,
            "user": {"uid": s.user, "gid": s.group},
            "args": args,
            "env": env(model, s, init)?,
            "cwd": s.workdir,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "inheritable": caps, "ambient": caps,
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": s.limits.open_files, "soft": s.limits.open_files},
                // No core dumps: they would write process memory where the agent can read it.
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
            ],
            "noNewPrivileges": true,
        },
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}, {"type": "user"}, {"type": "cgroup"},
            ],
            "uidMappings": [{"containerID": 0, "hostID": uid_start, "size": uid_count}],
            "gidMappings": [{"containerID": 0, "hostID": uid_start, "size": uid_count}],
            "resources": resources,
            "cgroupsPath": format!("/warden/{}", s.name),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp_json(&init.seccomp),
        },
    });
    serde_json::from_value(v).map_err(|e| CompileError::Spec(e.to_string()))
}

fn egress_note(s: &Sandbox) -> String {
    let n = s.egress.as_ref().map(|e| e.rules.len()).unwrap_or(0);
    let _ = egress::Action::Allow;
    format!("proxy {PROXY_ADDR} ({n} rules)")
}
