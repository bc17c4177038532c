//! warden-probe: runs INSIDE a sandbox and tries to get out. Test-only (the runtime's
//! integration tests put it into their rootfs).
//!
//! Every attempt prints one JSON line:
//! `{"name":"mount_tmpfs","result":"blocked","errno":"EPERM"}` or
//! `{"name":"...","result":"ALLOWED","detail":"..."}`; observations print
//! `{"name":"...","result":"info","detail":"..."}`.
//!
//! Sub-commands:
//! - `escape HOST_FILE LANDLOCK_DENIED_DIR SETUID_BINARY`: the escape suite;
//! - `whoami`: prints the effective uid (run setuid by the suite);
//! - `fork-bomb`: forks until the pids limit stops it;
//! - `memory-bomb MIB`: a child allocates and touches MIB MiB;
//! - `orphans N`: leaves N orphans that exit, then counts zombies in the sandbox;
//! - `net`: the network interfaces and whether loopback works.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("escape") if args.len() == 4 => {
            escape(&args[1], &args[2], &args[3]);
            0
        }
        Some("whoami") => {
            // SAFETY: plain getters.
            let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
            println!("uid={uid} euid={euid}");
            0
        }
        Some("fork-bomb") => {
            fork_bomb();
            0
        }
        Some("memory-bomb") => match args.get(1).and_then(|a| a.parse().ok()) {
            Some(mib) => {
                memory_bomb(mib);
                0
            }
            None => usage(),
        },
        Some("orphans") => match args.get(1).and_then(|a| a.parse().ok()) {
            Some(n) => {
                orphans(n);
                0
            }
            None => usage(),
        },
        Some("net") => {
            net();
            0
        }
        _ => usage(),
    };
    let _ = io::stdout().flush();
    std::process::exit(code);
}

fn usage() -> i32 {
    eprintln!(
        "usage: warden-probe escape HOST_FILE LANDLOCK_DENIED_DIR SETUID_BINARY | whoami | \
         fork-bomb | memory-bomb MIB | orphans N | net"
    );
    2
}

// ---------------------------------------------------------------------------- output

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn line(name: &str, fields: &[(&str, String)]) {
    let mut s = format!("{{\"name\":{}", json_str(name));
    for (k, v) in fields {
        s.push_str(&format!(",{}:{}", json_str(k), json_str(v)));
    }
    s.push('}');
    println!("{s}");
}

fn blocked_errno(name: &str, errno: i32) {
    line(
        name,
        &[("result", "blocked".into()), ("errno", errno_name(errno))],
    );
}

fn allowed(name: &str, detail: &str) {
    line(
        name,
        &[("result", "ALLOWED".into()), ("detail", detail.into())],
    );
}

fn info(name: &str, detail: &str) {
    line(
        name,
        &[("result", "info".into()), ("detail", detail.into())],
    );
}

/// Reports an attempt whose success is an escape.
fn attempt(name: &str, r: io::Result<String>) {
    match r {
        Ok(detail) => allowed(name, &detail),
        Err(e) => blocked_errno(name, e.raw_os_error().unwrap_or(0)),
    }
}

/// A raw syscall result as io::Result.
fn sys(r: libc::c_long) -> io::Result<String> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(format!("returned {r}"))
    }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ETIMEDOUT => "ETIMEDOUT",
        0 => "none",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

fn signal_name(s: i32) -> String {
    match s {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGSYS => "SIGSYS".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGABRT => "SIGABRT".into(),
        _ => format!("signal {s}"),
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

// ---------------------------------------------------------------------------- escape suite

fn create(path: &str) -> io::Result<String> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map(|_| format!("created {path}"))
}

fn write_existing(path: &str) -> io::Result<String> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(b"1\n").map(|_| format!("wrote {path}"))
}

fn escape(host_file: &str, landlock_denied: &str, setuid_binary: &str) {
    // Filesystem: the root is read-only, the host is not visible, Landlock limits writes.
    attempt("write_usr", create("/usr/warden-probe-escape"));
    attempt("write_etc_new", create("/etc/warden-probe-escape"));
    attempt("write_etc_passwd", write_existing("/etc/passwd"));
    attempt("write_root", create("/warden-probe-escape"));
    attempt("write_warden_init", write_existing("/.warden/init"));
    attempt(
        "read_host_file",
        fs::read(host_file).map(|b| format!("read {} bytes", b.len())),
    );
    attempt(
        "write_landlock_denied",
        create(&format!("{landlock_denied}/warden-probe-escape")),
    );
    attempt(
        "write_proc_sys_hostname",
        write_existing("/proc/sys/kernel/hostname"),
    );
    attempt("write_sysrq_trigger", write_existing("/proc/sysrq-trigger"));
    attempt(
        "write_proc_drop_caches",
        write_existing("/proc/sys/vm/drop_caches"),
    );
    attempt(
        "write_sys_kernel",
        write_existing("/sys/kernel/rcu_expedited"),
    );
    attempt(
        "read_cgroup_pids_max",
        fs::read_to_string("/sys/fs/cgroup/pids/pids.max").map(|s| s.trim().to_string()),
    );
    attempt("mknod_block_device", {
        let p = cstr("/tmp/warden-probe-sda");
        // SAFETY: mknod with a valid C string.
        sys(unsafe { libc::mknod(p.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(8, 0)) }.into())
    });

    // Mounts and namespaces.
    attempt("mount_tmpfs", {
        let (src, dst, ty) = (cstr("tmpfs"), cstr("/tmp"), cstr("tmpfs"));
        // SAFETY: mount with valid C strings and no data.
        sys(
            unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) }
                .into(),
        )
    });
    attempt("chroot", {
        let p = cstr("/tmp");
        // SAFETY: chroot with a valid C string.
        sys(unsafe { libc::chroot(p.as_ptr()) }.into())
    });
    // SAFETY: unshare takes flags only.
    attempt(
        "unshare_user",
        sys(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into()),
    );
    // SAFETY: as above.
    attempt(
        "unshare_mount",
        sys(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into()),
    );
    attempt("clone_newuser", clone_raw(libc::CLONE_NEWUSER as u64));
    attempt("clone3_newuser", clone3_newuser());
    attempt("setns_host_net", {
        match fs::File::open("/proc/1/ns/net") {
            // SAFETY: setns on an fd we own.
            Ok(f) => sys(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), 0) }.into()),
            Err(e) => Err(e),
        }
    });

    // Privileges.
    // SAFETY: setuid/setgid take ids only.
    attempt("setuid_0", sys(unsafe { libc::setuid(0) }.into()));
    // SAFETY: as above.
    attempt("setgid_0", sys(unsafe { libc::setgid(0) }.into()));
    attempt("capset_sys_admin", capset_sys_admin());
    setuid_exec(setuid_binary);
    attempt("ptrace_traceme", {
        // SAFETY: PTRACE_TRACEME ignores the other arguments.
        sys(unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) })
    });
    attempt("ptrace_attach_init", {
        // SAFETY: PTRACE_ATTACH to pid 1; detached again if it ever succeeded.
        let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, 1, 0, 0) };
        sys(r)
    });

    // Kernel interfaces.
    attempt("init_module", {
        let params = cstr("");
        // SAFETY: an empty module image; the kernel validates it.
        sys(unsafe {
            libc::syscall(
                libc::SYS_init_module,
                std::ptr::null::<u8>(),
                0usize,
                params.as_ptr(),
            )
        })
    });
    attempt("finit_module", {
        let params = cstr("");
        // SAFETY: an invalid fd; the kernel validates it.
        sys(unsafe { libc::syscall(libc::SYS_finit_module, -1, params.as_ptr(), 0) })
    });
    attempt("bpf_prog_load", bpf_prog_load());
    attempt("perf_event_open", perf_event_open());
    attempt("keyctl", {
        // KEYCTL_GET_KEYRING_ID(KEY_SPEC_SESSION_KEYRING, create=1)
        // SAFETY: integer arguments only.
        sys(unsafe { libc::syscall(libc::SYS_keyctl, 0, -3i32, 1) })
    });
    attempt("io_uring_setup", {
        let mut params = [0u8; 120];
        // SAFETY: a zeroed io_uring_params of the kernel's size.
        let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
        sys(r)
    });
    attempt("userfaultfd", {
        // SAFETY: flags only.
        sys(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) })
    });
    attempt("open_by_handle_at", {
        let mut handle = [0u8; 16];
        // SAFETY: a small zeroed file_handle; the kernel validates it.
        sys(unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                libc::AT_FDCWD,
                handle.as_mut_ptr(),
                0,
            )
        })
    });
    attempt("reboot", {
        // SAFETY: LINUX_REBOOT_CMD_CAD_OFF: harmless even if it were allowed.
        sys(unsafe { libc::reboot(libc::RB_DISABLE_CAD) }.into())
    });
    // Typing into the terminal on fd 0 (the user's, when a run shares it), also with the
    // high bits of the request set: the kernel reads 32 bits.
    for (name, request) in [
        ("ioctl_tiocsti", libc::TIOCSTI),
        ("ioctl_tiocsti_high_bits", (1u64 << 32) | libc::TIOCSTI),
    ] {
        let byte = b'x';
        // SAFETY: a raw ioctl with a pointer to a live byte.
        let r = unsafe { libc::syscall(libc::SYS_ioctl, 0, request, &byte as *const u8) };
        attempt(name, sys(r));
    }
    attempt("raw_socket", {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        sys(fd.into())
    });

    // Network: only lo exists.
    attempt(
        "tcp_connect_1.1.1.1:443",
        TcpStream::connect_timeout(
            &SocketAddr::from(([1, 1, 1, 1], 443)),
            Duration::from_secs(2),
        )
        .map(|_| "connected".into()),
    );
    attempt(
        "udp_sendto_8.8.8.8:53",
        UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.send_to(b"\0", "8.8.8.8:53"))
            .map(|n| format!("sent {n} bytes")),
    );

    // Visibility: only the sandbox's own processes.
    info(
        "visible_pids",
        &visible_pids()
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    // Control: Landlock allows writes in /tmp; proves the suite sees successes too.
    attempt("write_tmp_allowed", create("/tmp/warden-probe-ok"));
}

fn clone_raw(flags: u64) -> io::Result<String> {
    // SAFETY: fork-like clone without a new stack; the child exits at once.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as u64,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r == 0 {
        // SAFETY: child: leave without running destructors or atexit handlers.
        unsafe { libc::_exit(0) };
    }
    if r > 0 {
        // SAFETY: reap the child we just made.
        unsafe { libc::waitpid(r as i32, std::ptr::null_mut(), 0) };
    }
    sys(r)
}

fn clone3_newuser() -> io::Result<String> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
    }
    let mut args = CloneArgs {
        flags: libc::CLONE_NEWUSER as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with a valid args struct; the child exits at once.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: child: leave at once.
        unsafe { libc::_exit(0) };
    }
    if r > 0 {
        // SAFETY: reap our child.
        unsafe { libc::waitpid(r as i32, std::ptr::null_mut(), 0) };
    }
    sys(r)
}

fn capset_sys_admin() -> io::Result<String> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_SYS_ADMIN: u32 = 21;
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let bit = 1u32 << CAP_SYS_ADMIN;
    let data = [
        Data {
            effective: bit,
            permitted: bit,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data structs.
    sys(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) })
}

/// Runs `binary whoami` (a setuid copy of this probe owned by the sandbox's root): an
/// effective uid other than ours is an escape.
fn setuid_exec(binary: &str) {
    let name = "setuid_binary";
    match std::process::Command::new(binary).arg("whoami").output() {
        Err(e) => blocked_errno(name, e.raw_os_error().unwrap_or(0)),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // SAFETY: plain getter.
            let me = unsafe { libc::getuid() };
            let result = if text == format!("uid={me} euid={me}") {
                "blocked"
            } else {
                "ALLOWED"
            };
            line(name, &[("result", result.into()), ("detail", text)]);
        }
    }
}

fn bpf_prog_load() -> io::Result<String> {
    // A socket filter returning 0: `mov r0, 0; exit`.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = cstr("GPL");
    let mut attr = [0u8; 128];
    let put32 =
        |a: &mut [u8], off: usize, v: u32| a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |a: &mut [u8], off: usize, v: u64| a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, 1); // BPF_PROG_TYPE_SOCKET_FILTER
    put32(&mut attr, 4, 2); // insn_cnt
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    // SAFETY: BPF_PROG_LOAD (5) with a filled-in attr of 128 bytes.
    sys(unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len()) })
}

fn perf_event_open() -> io::Result<String> {
    let mut attr = [0u8; 128];
    // type PERF_TYPE_SOFTWARE (1), size, config PERF_COUNT_SW_CPU_CLOCK (0)
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    // SAFETY: perf_event_open on this process, any cpu, no group.
    sys(unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0) })
}

fn visible_pids() -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

fn tasks() -> usize {
    visible_pids()
        .iter()
        .map(|p| {
            fs::read_dir(format!("/proc/{p}/task"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

// ---------------------------------------------------------------------------- limits

fn fork_bomb() {
    let before = tasks();
    let mut children = Vec::new();
    let errno = loop {
        // SAFETY: the child only waits to be killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: pause until the parent kills us.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            break io::Error::last_os_error().raw_os_error().unwrap_or(0);
        }
        children.push(pid);
        if children.len() > 100_000 {
            break 0;
        }
    };
    for &pid in &children {
        // SAFETY: kill and reap our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    let result = if errno == 0 { "ALLOWED" } else { "blocked" };
    line(
        "fork_bomb",
        &[
            ("result", result.into()),
            ("errno", errno_name(errno)),
            ("forked", children.len().to_string()),
            ("tasks_before", before.to_string()),
        ],
    );
}

fn memory_bomb(mib: usize) {
    // SAFETY: the child allocates and touches memory, then exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        for _ in 0..mib {
            let mut chunk = vec![0u8; 1 << 20];
            for i in (0..chunk.len()).step_by(4096) {
                chunk[i] = 1;
            }
            chunks.push(chunk);
        }
        std::hint::black_box(&chunks);
        // SAFETY: leave the child without unwinding.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        blocked_errno(
            "memory_bomb_fork",
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        );
        return;
    }
    let mut status = 0;
    // SAFETY: reap our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFSIGNALED(status) {
        line(
            "memory_bomb",
            &[
                ("result", "blocked".into()),
                ("signal", signal_name(libc::WTERMSIG(status))),
            ],
        );
    } else {
        allowed(
            "memory_bomb",
            &format!("child exited with {}", libc::WEXITSTATUS(status)),
        );
    }
}

fn orphans(n: usize) {
    // A child forks n grandchildren and exits at once: they become orphans, adopted by the
    // sandbox's PID 1, which must reap them when they exit.
    // SAFETY: the child forks and exits; the grandchildren sleep briefly and exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        for _ in 0..n {
            // SAFETY: see above.
            if unsafe { libc::fork() } == 0 {
                std::thread::sleep(Duration::from_millis(200));
                // SAFETY: leave the grandchild.
                unsafe { libc::_exit(0) };
            }
        }
        // SAFETY: leave the child.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reap our child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    let me = std::process::id() as i32;
    // Wait for every orphan to exit (and be reaped, or linger as a zombie).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let (living, _) = others(me);
        if living == 0 || Instant::now() > deadline {
            break;
        }
    }
    // One more moment for PID 1 to reap the last ones.
    std::thread::sleep(Duration::from_millis(200));
    let (living, zombies) = others(me);
    line(
        "orphans",
        &[
            ("spawned", n.to_string()),
            ("living", living.to_string()),
            ("zombies", zombies.to_string()),
        ],
    );
}

/// (living, zombie) processes other than PID 1 and `me`.
fn others(me: i32) -> (usize, usize) {
    let (mut living, mut zombies) = (0, 0);
    for p in visible_pids() {
        if p == 1 || p == me {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim().chars().next());
        if state == Some('Z') {
            zombies += 1;
        } else {
            living += 1;
        }
    }
    (living, zombies)
}

// ---------------------------------------------------------------------------- network

fn net() {
    let dev = fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let mut names: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
        .collect();
    names.sort();
    for name in &names {
        info(
            &format!("interface_{name}"),
            if if_up(name) { "up" } else { "down" },
        );
    }
    info("interfaces", &names.join(","));
    let lo = TcpListener::bind("127.0.0.1:0").and_then(|l| {
        let addr = l.local_addr()?;
        let _c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        let (_s, _) = l.accept()?;
        Ok(format!("connected to {addr}"))
    });
    match lo {
        Ok(d) => info("loopback_connect", &d),
        Err(e) => info(
            "loopback_connect",
            &errno_name(e.raw_os_error().unwrap_or(0)),
        ),
    }
}

fn if_up(name: &str) -> bool {
    // SAFETY: a UDP socket for the ioctl; ifreq zeroed and the name copied with its NUL.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0
            && req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0;
        libc::close(fd);
        ok
    }
}
