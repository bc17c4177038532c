//! The allocator, chosen once per process before the first allocation.
//!
//! Short-lived commands (`check`, `build`, `plan`, ...) allocate hundreds of thousands of
//! small objects and are measurably faster with mimalloc. Long-lived processes (the
//! per-sandbox `supervise`, the foreground `run`, `exec`, and the image's init, which is
//! this same binary) keep glibc's allocator: it keeps an idle supervisor's private memory
//! at a fraction of what mimalloc's per-thread segments commit.
//!
//! The choice is made in an `.init_array` constructor, which glibc calls with `argc`,
//! `argv` and `envp` before Rust's runtime starts and so before anything is allocated
//! through [`GlobalAlloc`]. It never changes afterwards, so every block is freed by the
//! allocator that made it. Other C libraries (musl) pass no arguments to constructors;
//! there every process keeps the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

static FAST: AtomicBool = AtomicBool::new(false);

/// Commands that stay resident (or are the sandbox's PID 1) and so keep glibc's allocator.
const RESIDENT: &[&[u8]] = &[b"supervise", b"run", b"exec", b"logs"];

/// Whether a process started with this `argv` should use mimalloc.
#[cfg_attr(not(target_env = "gnu"), allow(dead_code))]
fn wants_fast(argv0: &[u8], argv1: Option<&[u8]>) -> bool {
    let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0);
    if name == b"init" {
        return false;
    }
    match argv1 {
        Some(cmd) => !RESIDENT.contains(&cmd),
        None => true,
    }
}

#[cfg(target_env = "gnu")]
mod constructor {
    use super::{FAST, wants_fast};
    use std::ffi::{CStr, c_char, c_int};
    use std::sync::atomic::Ordering;

    extern "C" fn choose(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
        if argc < 1 || argv.is_null() {
            return;
        }
        // SAFETY: glibc passes the process's argv (argc valid, NUL-terminated pointers) to
        // `.init_array` functions; it outlives the process.
        let arg = |i: usize| unsafe {
            let p = *argv.add(i);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_bytes())
        };
        let Some(argv0) = arg(0) else { return };
        let argv1 = if argc >= 2 { arg(1) } else { None };
        FAST.store(wants_fast(argv0, argv1), Ordering::Relaxed);
    }

    #[used]
    #[unsafe(link_section = ".init_array")]
    static CHOOSE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = choose;
}

pub struct Allocator;

// SAFETY: both allocators uphold the GlobalAlloc contract, and `FAST` is fixed before the
// first allocation, so every pointer is freed or grown by the allocator that returned it.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if FAST.load(Ordering::Relaxed) {
            // SAFETY: forwarded contract.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if FAST.load(Ordering::Relaxed) {
            // SAFETY: forwarded contract.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        } else {
            // SAFETY: forwarded contract.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if FAST.load(Ordering::Relaxed) {
            // SAFETY: `ptr` came from mimalloc (see the impl's comment).
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        } else {
            // SAFETY: `ptr` came from System.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if FAST.load(Ordering::Relaxed) {
            // SAFETY: `ptr` came from mimalloc.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        } else {
            // SAFETY: `ptr` came from System.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wants_fast;

    #[test]
    fn resident_processes_keep_the_system_allocator() {
        assert!(!wants_fast(b"/usr/bin/warden", Some(b"supervise")));
        assert!(!wants_fast(b"warden", Some(b"run")));
        assert!(!wants_fast(b"warden", Some(b"exec")));
        assert!(!wants_fast(b"/.warden/init", Some(b"/bin/sh")));
        assert!(!wants_fast(b"init", None));
        assert!(wants_fast(b"/usr/bin/warden", Some(b"check")));
        assert!(wants_fast(b"warden", Some(b"build")));
        assert!(wants_fast(b"warden", None));
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn this_process_chose() {
        // The constructor ran before main and chose from this process's own arguments.
        let args: Vec<Vec<u8>> = std::env::args_os()
            .map(|a| a.into_encoded_bytes())
            .collect();
        assert_eq!(
            super::FAST.load(std::sync::atomic::Ordering::Relaxed),
            wants_fast(&args[0], args.get(1).map(Vec::as_slice))
        );
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
