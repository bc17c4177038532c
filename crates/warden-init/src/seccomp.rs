//! The seccomp deny list, compiled to BPF in pure Rust with `seccompiler` (no libseccomp).
//!
//! Semantics of the wire rules:
//! - everything not listed is allowed; a listed call returns `-1` with the rule's errno;
//! - a rule with `arg` denies only when `(arg[index] & mask) == value` (64-bit compare);
//!   an unconditional rule for the same call and errno makes conditional ones moot;
//! - a syscall name that exists on another supported architecture but not on this one
//!   (`iopl` on aarch64) is skipped: there is nothing to deny. A name that exists nowhere
//!   is an error, because a typo must not silently leave a call allowed;
//! - seccompiler takes one action per filter, so there is one filter per distinct errno
//!   (two for the default list). If rules with different errnos match the same call, the
//!   errno that appears first in the list wins (its filter is installed last, and the kernel
//!   returns the first of equally ranked actions it evaluates, starting from the newest).
//!
//! Two more walls come with every filter, whatever the list says:
//! - seccompiler's filters kill the process on a foreign architecture (`int 0x80` i386
//!   calls on x86_64 carry `AUDIT_ARCH_I386`), so the 32-bit syscall table, where every
//!   number means something else, cannot be used to step around the list;
//! - on x86_64 a small hand-written filter denies the x32 ABI (numbers with bit 30 set),
//!   which shares `AUDIT_ARCH_X86_64` and so would otherwise dodge the number checks.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule as BpfRule, TargetArch, sock_filter,
};
use warden_wire::seccomp::SeccompRule;

use crate::Error;
use crate::syscalls::{self, Arch};

/// `__X32_SYSCALL_BIT`: x32 ABI syscall numbers have it set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

// Classic BPF opcodes (linux/filter.h) for the x32 filter: class | size/op | mode/source.
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20)
const BPF_JMP_JEQ_K: u16 = 0x15; // BPF_JMP (0x05) | BPF_JEQ (0x10) | BPF_K (0x00)
const BPF_JMP_JGE_K: u16 = 0x35; // BPF_JMP (0x05) | BPF_JGE (0x30) | BPF_K (0x00)
const BPF_RET_K: u16 = 0x06; // BPF_RET (0x06) | BPF_K (0x00)
// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// Syscall number → conditions of one errno's rules (`None`: deny unconditionally).
type Group = BTreeMap<i64, Option<Vec<BpfRule>>>;

/// Compiles the deny list for `arch` into the filters to install, in installation order.
/// An empty list still yields the architecture (and, on x86_64, x32) walls.
pub fn compile(rules: &[SeccompRule], arch: Arch) -> Result<Vec<BpfProgram>, Error> {
    // One group per errno, in order of first appearance.
    let mut groups: Vec<(u32, Group)> = Vec::new();
    for rule in rules {
        let Some(nr) = syscalls::lookup(arch, &rule.syscall) else {
            if syscalls::exists_anywhere(&rule.syscall) {
                continue;
            }
            return Err(Error::Seccomp(format!(
                "seccomp rule names `{}`, which is not a syscall on x86_64 or aarch64",
                rule.syscall
            )));
        };
        let group = match groups.iter().position(|(errno, _)| *errno == rule.errno) {
            Some(i) => &mut groups[i].1,
            None => {
                groups.push((rule.errno, BTreeMap::new()));
                let last = groups.len() - 1;
                &mut groups[last].1
            }
        };
        let entry = group
            .entry(i64::from(nr))
            .or_insert_with(|| Some(Vec::new()));
        match (rule.arg, entry) {
            (None, entry) => *entry = None,
            (Some(_), None) => {}
            (Some(arg), Some(conditions)) => {
                let condition = SeccompCondition::new(
                    arg.index,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(arg.mask),
                    arg.value,
                )
                .and_then(|c| BpfRule::new(vec![c]))
                .map_err(|e| invalid(rule, e))?;
                if !conditions.contains(&condition) {
                    conditions.push(condition);
                }
            }
        }
    }

    let target = match arch {
        Arch::X86_64 => TargetArch::x86_64,
        Arch::Aarch64 => TargetArch::aarch64,
    };
    let mut filters = Vec::with_capacity(groups.len() + 2);
    if groups.is_empty() {
        // Nothing to deny, but keep the architecture check.
        filters.push(build(
            BTreeMap::new(),
            SeccompAction::Errno(libc::EPERM as u32),
            target,
        )?);
    }
    // Installed last = evaluated first = wins ties: the errno that appears first in the list.
    for (errno, group) in groups.into_iter().rev() {
        let rules = group
            .into_iter()
            .map(|(nr, c)| (nr, c.unwrap_or_default()))
            .collect();
        filters.push(build(rules, SeccompAction::Errno(errno), target)?);
    }
    if arch == Arch::X86_64 {
        filters.push(deny_x32());
    }
    Ok(filters)
}

fn build(
    rules: BTreeMap<i64, Vec<BpfRule>>,
    on_match: SeccompAction,
    target: TargetArch,
) -> Result<BpfProgram, Error> {
    SeccompFilter::new(rules, SeccompAction::Allow, on_match, target)
        .and_then(BpfProgram::try_from)
        .map_err(|e| Error::Seccomp(format!("cannot compile the seccomp filter: {e}")))
}

fn invalid(rule: &SeccompRule, e: seccompiler::BackendError) -> Error {
    Error::Seccomp(format!("invalid seccomp rule for `{}`: {e}", rule.syscall))
}

/// x86_64 only: `EPERM` for x32-ABI calls; everything else passes to the other filters
/// (including foreign architectures, which seccompiler's filters kill).
fn deny_x32() -> BpfProgram {
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code, k, jt, jf| sock_filter { code, jt, jf, k };
    vec![
        /* 0 */ stmt(BPF_LD_W_ABS, DATA_ARCH),
        /* 1 */ jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 0, 3), // not x86_64: allow (5)
        /* 2 */ stmt(BPF_LD_W_ABS, DATA_NR),
        /* 3 */
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1), // below the x32 bit: allow (5)
        /* 4 */ stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        /* 5 */ stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
    ]
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`: exec can never gain privileges (setuid bits, file
/// capabilities) again, for us or any descendant. Required to install seccomp unprivileged.
pub fn set_no_new_privs() -> Result<(), Error> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::sys("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    Ok(())
}

/// Installs the filters on the calling thread (warden-init is single-threaded), in order.
pub fn install(filters: &[BpfProgram]) -> Result<(), Error> {
    for filter in filters {
        seccompiler::apply_filter(filter)
            .map_err(|e| Error::Seccomp(format!("cannot install the seccomp filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_wire::seccomp::{ArgMask, CLONE_NEWUSER, default_rules};

    fn rule(syscall: &str, errno: u32, arg: Option<ArgMask>) -> SeccompRule {
        SeccompRule {
            syscall: syscall.into(),
            errno,
            arg,
        }
    }

    /// Runs a classic-BPF seccomp program the way the kernel does, for the instructions
    /// seccompiler and `deny_x32` emit. Returns the filter's verdict.
    fn eval(prog: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                8 | 12 => 0, // instruction pointer
                o if (16..64).contains(&o) => {
                    let arg = args[((o - 16) / 8) as usize];
                    if (o - 16) % 8 == 0 {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                o => panic!("load from offset {o}"),
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &prog[pc];
            pc += 1;
            match ins.code {
                0x20 => acc = word(ins.k),
                0x54 => acc &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 | 0x25 | 0x35 => {
                    let taken = match ins.code {
                        0x15 => acc == ins.k,
                        0x25 => acc > ins.k,
                        _ => acc >= ins.k,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                0x06 => return ins.k,
                code => panic!("opcode {code:#x} not modelled"),
            }
        }
    }

    /// The verdict of all filters together, as the kernel combines them: the most
    /// restrictive action wins; among equal actions, the newest filter's.
    fn verdict(filters: &[BpfProgram], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let rank = |v: u32| (v & 0xffff_0000) as i32;
        filters.iter().rev().map(|f| eval(f, arch, nr, args)).fold(
            libc::SECCOMP_RET_ALLOW,
            |best, v| {
                if rank(v) < rank(best) { v } else { best }
            },
        )
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const fn errno(e: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | e as u32
    }
    const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
    const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;

    fn x86(filters: &[BpfProgram], name: &str, args: [u64; 6]) -> u32 {
        let nr = syscalls::lookup(Arch::X86_64, name).unwrap();
        verdict(filters, AUDIT_ARCH_X86_64, nr, args)
    }

    #[test]
    fn default_list_on_x86_64() {
        let filters = compile(&default_rules(), Arch::X86_64).unwrap();
        // EPERM group, ENOSYS group (clone3), x32 wall.
        assert_eq!(filters.len(), 3);
        assert_eq!(x86(&filters, "ptrace", [0; 6]), errno(libc::EPERM));
        assert_eq!(x86(&filters, "unshare", [0; 6]), errno(libc::EPERM));
        assert_eq!(x86(&filters, "iopl", [0; 6]), errno(libc::EPERM));
        assert_eq!(x86(&filters, "clone3", [0; 6]), errno(libc::ENOSYS));
        for allowed in [
            "read",
            "write",
            "execve",
            "wait4",
            "kill",
            "landlock_restrict_self",
            "prctl",
        ] {
            assert_eq!(x86(&filters, allowed, [0; 6]), ALLOW, "{allowed}");
        }
    }

    #[test]
    fn masked_arg_rule_denies_only_matching_calls() {
        let filters = compile(&default_rules(), Arch::X86_64).unwrap();
        let sigchld = libc::SIGCHLD as u64;
        let newuser = CLONE_NEWUSER | sigchld;
        assert_eq!(x86(&filters, "clone", [sigchld, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            x86(&filters, "clone", [newuser, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        // Other bits around CLONE_NEWUSER do not matter; the flag in another argument does not count.
        assert_eq!(
            x86(&filters, "clone", [u64::MAX, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            x86(&filters, "clone", [!CLONE_NEWUSER, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            x86(&filters, "clone", [sigchld, CLONE_NEWUSER, 0, 0, 0, 0]),
            ALLOW
        );
    }

    #[test]
    fn high_argument_bits_are_compared() {
        let r = rule(
            "mmap",
            libc::EACCES as u32,
            Some(ArgMask {
                index: 3,
                mask: 1 << 40,
                value: 1 << 40,
            }),
        );
        let filters = compile(&[r], Arch::X86_64).unwrap();
        assert_eq!(
            x86(&filters, "mmap", [0, 0, 0, 1 << 40, 0, 0]),
            errno(libc::EACCES)
        );
        assert_eq!(x86(&filters, "mmap", [0, 0, 0, 1 << 8, 0, 0]), ALLOW);
    }

    #[test]
    fn unconditional_rule_wins_over_conditional_one() {
        let rules = [
            rule(
                "clone",
                1,
                Some(ArgMask {
                    index: 0,
                    mask: CLONE_NEWUSER,
                    value: CLONE_NEWUSER,
                }),
            ),
            rule("clone", 1, None),
            rule(
                "clone",
                1,
                Some(ArgMask {
                    index: 0,
                    mask: 1,
                    value: 1,
                }),
            ),
        ];
        let filters = compile(&rules, Arch::X86_64).unwrap();
        assert_eq!(x86(&filters, "clone", [0; 6]), errno(libc::EPERM));
    }

    #[test]
    fn first_errno_in_the_list_wins() {
        let rules = [
            rule("ptrace", libc::EACCES as u32, None),
            rule("ptrace", libc::EPERM as u32, None),
        ];
        let filters = compile(&rules, Arch::X86_64).unwrap();
        assert_eq!(x86(&filters, "ptrace", [0; 6]), errno(libc::EACCES));
    }

    #[test]
    fn foreign_architectures_are_killed() {
        let filters = compile(&default_rules(), Arch::X86_64).unwrap();
        // i386 `getpid` (20) via int 0x80.
        assert_eq!(
            verdict(&filters, AUDIT_ARCH_I386, 20, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        // Even with nothing to deny.
        let filters = compile(&[], Arch::X86_64).unwrap();
        assert_eq!(
            verdict(&filters, AUDIT_ARCH_I386, 20, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
        assert_eq!(x86(&filters, "ptrace", [0; 6]), ALLOW);
    }

    #[test]
    fn x32_calls_are_denied_on_x86_64() {
        let filters = compile(&default_rules(), Arch::X86_64).unwrap();
        let x32_getpid = X32_SYSCALL_BIT | 39;
        assert_eq!(
            verdict(&filters, AUDIT_ARCH_X86_64, x32_getpid, [0; 6]),
            errno(libc::EPERM)
        );
        assert_eq!(verdict(&filters, AUDIT_ARCH_X86_64, 39, [0; 6]), ALLOW);
    }

    #[test]
    fn aarch64_skips_x86_only_names() {
        let filters = compile(&default_rules(), Arch::Aarch64).unwrap();
        // No x32 filter on aarch64.
        assert_eq!(filters.len(), 2);
        let nr = |n| syscalls::lookup(Arch::Aarch64, n).unwrap();
        assert_eq!(
            verdict(&filters, AUDIT_ARCH_AARCH64, nr("ptrace"), [0; 6]),
            errno(libc::EPERM)
        );
        assert_eq!(
            verdict(&filters, AUDIT_ARCH_AARCH64, nr("clone3"), [0; 6]),
            errno(libc::ENOSYS)
        );
        assert_eq!(
            verdict(&filters, AUDIT_ARCH_AARCH64, nr("openat"), [0; 6]),
            ALLOW
        );
        // An aarch64 filter kills x86_64 calls.
        assert_eq!(
            verdict(&filters, AUDIT_ARCH_X86_64, 39, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn unknown_syscall_is_an_error() {
        let err = compile(&[rule("ptrac", 1, None)], Arch::X86_64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seccomp rule names `ptrac`, which is not a syscall on x86_64 or aarch64"
        );
        assert_eq!(err.exit_code(), 125);
    }

    #[test]
    fn oversized_list_is_an_error_not_a_panic() {
        let rules: Vec<_> = (0..2000u64)
            .map(|i| {
                rule(
                    "ioctl",
                    1,
                    Some(ArgMask {
                        index: 1,
                        mask: u64::MAX,
                        value: i,
                    }),
                )
            })
            .collect();
        let err = compile(&rules, Arch::X86_64).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot compile the seccomp filter: The seccomp filter contains too many BPF instructions"),
            "{err}"
        );
    }
}
