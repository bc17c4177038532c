//! The seccomp deny list every sandbox gets, as data. Each entry says why it is there.
//! Everything not listed is allowed (a deny list keeps agents' toolchains working);
//! namespaces, dropped capabilities, no_new_privs and Landlock are the other walls.

use serde::{Deserialize, Serialize};

pub const EPERM: u32 = 1;
pub const ENOSYS: u32 = 38;

/// `CLONE_NEWUSER`: a new user namespace would hand the agent a fresh set of capabilities
/// over new namespaces, the start of most container escapes.
pub const CLONE_NEWUSER: u64 = 0x1000_0000;

/// `ioctl` requests (the same numbers on x86_64 and aarch64). The kernel reads the request
/// as 32 bits, so rules compare the low 32 bits only: setting high bits does not slip by.
pub const TIOCSTI: u64 = 0x5412;
pub const TIOCLINUX: u64 = 0x541C;
const IOCTL_REQUEST: u64 = 0xffff_ffff;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompRule {
    pub syscall: String,
    pub errno: u32,
    /// Deny only when `(arg[index] & mask) == value`.
    pub arg: Option<ArgMask>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgMask {
    pub index: u8,
    pub mask: u64,
    pub value: u64,
}

/// One entry of the default deny list.
#[derive(Debug, Clone, Copy)]
pub struct Denied {
    pub syscall: &'static str,
    pub errno: u32,
    pub arg: Option<ArgMask>,
    pub why: &'static str,
}

const fn deny(syscall: &'static str, why: &'static str) -> Denied {
    Denied {
        syscall,
        errno: EPERM,
        arg: None,
        why,
    }
}

const fn deny_ioctl(request: u64, why: &'static str) -> Denied {
    Denied {
        syscall: "ioctl",
        errno: EPERM,
        arg: Some(ArgMask {
            index: 1,
            mask: IOCTL_REQUEST,
            value: request,
        }),
        why,
    }
}

pub const DEFAULT_DENY: &[Denied] = &[
    deny(
        "ptrace",
        "inspect or control other processes; classic sandbox escape",
    ),
    deny("process_vm_readv", "read another process's memory"),
    deny("process_vm_writev", "write another process's memory"),
    deny("bpf", "load BPF programs into the kernel"),
    deny(
        "perf_event_open",
        "kernel profiling interface, a long history of exploits",
    ),
    deny("userfaultfd", "used to win kernel race conditions"),
    deny(
        "io_uring_setup",
        "io_uring bypasses seccomp filtering of the operations it runs",
    ),
    deny(
        "io_uring_enter",
        "io_uring bypasses seccomp filtering of the operations it runs",
    ),
    deny(
        "io_uring_register",
        "io_uring bypasses seccomp filtering of the operations it runs",
    ),
    deny("mount", "change the filesystem view"),
    deny("umount2", "remove mounts that hide host paths"),
    deny("pivot_root", "change the root filesystem"),
    deny("chroot", "change the root directory"),
    deny("move_mount", "new mount API"),
    deny("open_tree", "new mount API: clone mount trees"),
    deny("fsopen", "new mount API"),
    deny("fsconfig", "new mount API"),
    deny("fsmount", "new mount API"),
    deny("fspick", "new mount API"),
    deny(
        "mount_setattr",
        "new mount API: change mount flags such as read-only",
    ),
    deny("unshare", "new namespaces, including user namespaces"),
    deny("setns", "join other namespaces"),
    Denied {
        syscall: "clone",
        errno: EPERM,
        arg: Some(ArgMask {
            index: 0,
            mask: CLONE_NEWUSER,
            value: CLONE_NEWUSER,
        }),
        why: "clone into a new user namespace",
    },
    Denied {
        syscall: "clone3",
        errno: ENOSYS,
        arg: None,
        why: "its flags sit behind a pointer seccomp cannot read; ENOSYS makes libc fall back to clone",
    },
    deny("keyctl", "kernel keyring is not namespaced"),
    deny("add_key", "kernel keyring is not namespaced"),
    deny("request_key", "kernel keyring is not namespaced"),
    deny("kexec_load", "replace the running kernel"),
    deny("kexec_file_load", "replace the running kernel"),
    deny("init_module", "load kernel modules"),
    deny("finit_module", "load kernel modules"),
    deny("delete_module", "unload kernel modules"),
    deny("reboot", "reboot the host"),
    deny("swapon", "host swap configuration"),
    deny("swapoff", "host swap configuration"),
    deny("acct", "host process accounting"),
    deny("settimeofday", "host clock"),
    deny("clock_settime", "host clock"),
    deny("clock_adjtime", "host clock"),
    deny("adjtimex", "host clock"),
    deny("syslog", "read kernel log, leaks addresses"),
    deny("quotactl", "host filesystem quotas"),
    deny(
        "open_by_handle_at",
        "open files by handle, bypassing the mount view (shocker)",
    ),
    deny("name_to_handle_at", "pairs with open_by_handle_at"),
    deny("lookup_dcookie", "kernel profiling"),
    deny("vhangup", "hang up the host terminal"),
    deny("iopl", "raw I/O port access"),
    deny("ioperm", "raw I/O port access"),
    deny("uselib", "obsolete, historically exploitable"),
    deny("personality", "can disable ASLR"),
    deny("fanotify_init", "watch the whole filesystem"),
    deny("nfsservctl", "kernel NFS server"),
    deny("pidfd_getfd", "steal file descriptors from other processes"),
    deny_ioctl(
        TIOCSTI,
        "TIOCSTI types into a terminal: a terminal shared with the host would run keystrokes in the user's shell after the sandbox ends",
    ),
    deny_ioctl(
        TIOCLINUX,
        "TIOCLINUX controls a virtual console and can paste into its input",
    ),
];

/// The default list as wire rules.
pub fn default_rules() -> Vec<SeccompRule> {
    DEFAULT_DENY
        .iter()
        .map(|d| SeccompRule {
            syscall: d.syscall.to_string(),
            errno: d.errno,
            arg: d.arg,
        })
        .collect()
}

/// Why a syscall is on the list, for `warden explain` and diagnostics.
pub fn why(syscall: &str) -> Option<&'static str> {
    DEFAULT_DENY
        .iter()
        .find(|d| d.syscall == syscall)
        .map(|d| d.why)
}
