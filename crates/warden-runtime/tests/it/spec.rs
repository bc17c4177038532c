#![allow(dead_code)] // shared with the `warden-run` example, which uses a part of it
//! The OCI spec the compiler emits for a strict sandbox, built by hand until the compiler
//! lands. Shared by the integration tests and the `warden-run` example (used by
//! `cargo xtask bench run`), hence a file of its own with no test-only dependencies.

use std::path::Path;

use libcontainer::oci_spec::runtime::{
    Arch, Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder,
    LinuxSyscallBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_maskedpaths,
    get_default_readonly_paths,
};

/// Host uid/gid that container root maps to; 65536 ids from there.
pub const HOST_ID_BASE: u32 = 100_000;
pub const SANDBOX_UID: u32 = 1000;

pub struct SandboxSpec<'a> {
    pub rootfs: &'a Path,
    /// Full `process.args` (e.g. `/.warden/init -- CMD...`).
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub memory_bytes: i64,
    pub pids: i64,
    /// Extra mounts after the standard ones (tmpfs for writable paths, binds).
    pub extra_mounts: Vec<Mount>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn mount(dst: &str, typ: &str, src: &str, opts: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dst)
        .typ(typ)
        .source(src)
        .options(s(opts))
        .build()
        .expect("mount")
}

/// The standard mounts of a strict sandbox. What works under a user namespace on a
/// cgroup v1 host (see the crate report): no `/sys/fs/cgroup`, devpts with `gid=5`
/// (mapped), sysfs read-only.
pub fn standard_mounts() -> Vec<Mount> {
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", "size=65536k"],
        ),
    ]
}

/// The seccomp section the compiler keeps in config.json for crun/runc. libcontainer
/// built without `libseccomp` ignores it (warden-init installs the same list); it must
/// still be accepted.
fn seccomp() -> LinuxSeccomp {
    let rules = warden_wire::seccomp::default_rules();
    let syscalls = rules
        .iter()
        .filter(|r| r.arg.is_none())
        .map(|r| {
            LinuxSyscallBuilder::default()
                .names(vec![r.syscall.clone()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(r.errno)
                .build()
                .expect("syscall rule")
        })
        .collect::<Vec<_>>();
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(syscalls)
        .build()
        .expect("seccomp")
}

pub fn sandbox_spec(cfg: SandboxSpec<'_>) -> Spec {
    let ns = |t| LinuxNamespaceBuilder::default().typ(t).build().expect("ns");
    let map = || {
        vec![
            LinuxIdMappingBuilder::default()
                .container_id(0u32)
                .host_id(HOST_ID_BASE)
                .size(65_536u32)
                .build()
                .expect("idmap"),
        ]
    };
    let none = Capabilities::new;
    let caps = LinuxCapabilitiesBuilder::default()
        .bounding(none())
        .effective(none())
        .inheritable(none())
        .permitted(none())
        .ambient(none())
        .build()
        .expect("caps");
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(SANDBOX_UID)
                .gid(SANDBOX_UID)
                .build()
                .expect("user"),
        )
        .args(cfg.args)
        .env(cfg.env)
        .cwd("/")
        .capabilities(caps)
        .no_new_privileges(true)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(1024u64)
                .soft(1024u64)
                .build()
                .expect("rlimit"),
        ])
        .build()
        .expect("process");
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(cfg.memory_bytes)
                .swap(cfg.memory_bytes)
                .build()
                .expect("memory"),
        )
        .pids(
            LinuxPidsBuilder::default()
                .limit(cfg.pids)
                .build()
                .expect("pids"),
        )
        .cpu(
            LinuxCpuBuilder::default()
                .quota(100_000i64)
                .period(100_000u64)
                .build()
                .expect("cpu"),
        )
        .build()
        .expect("resources");
    let linux = LinuxBuilder::default()
        .namespaces(vec![
            ns(LinuxNamespaceType::User),
            ns(LinuxNamespaceType::Pid),
            ns(LinuxNamespaceType::Mount),
            ns(LinuxNamespaceType::Ipc),
            ns(LinuxNamespaceType::Uts),
            ns(LinuxNamespaceType::Network),
            ns(LinuxNamespaceType::Cgroup),
        ])
        .uid_mappings(map())
        .gid_mappings(map())
        .resources(resources)
        .cgroups_path("/warden/test")
        .seccomp(seccomp())
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()
        .expect("linux");
    let mut mounts = standard_mounts();
    mounts.extend(cfg.extra_mounts);
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(cfg.rootfs)
                .readonly(true)
                .build()
                .expect("root"),
        )
        .hostname("warden")
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .expect("spec")
}
