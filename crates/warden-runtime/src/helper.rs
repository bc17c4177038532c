//! Helper threads that start now, not when the spawning thread next blocks.
//!
//! The scheduler puts a new thread on the CPU of the thread that spawned it. On the
//! virtual machines warden is measured on, an idle second CPU does not take it over until
//! a balancing tick milliseconds later, so a helper spawned to overlap with the caller's
//! work starts only when the caller blocks: measured here, 2.1 ms median before a new
//! thread ran while its spawner computed for 2 ms, 0.18 ms when the thread was moved to
//! the idle CPU right after the spawn. [`spawn_elsewhere`] does that move: it limits the
//! new thread to the CPUs the process may use other than the caller's current one, and
//! the thread restores the process's full set first thing, so it is free again from then
//! on. With a single usable CPU it is a plain spawn.

use std::io;
use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;

/// Spawns `f` on a thread named `name` that starts on another CPU when there is one.
pub fn spawn_elsewhere<T, F>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let allowed = affinity();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Some(set) = allowed {
                set_affinity(&set);
            }
            f()
        })?;
    if let Some(set) = allowed {
        // SAFETY: sched_getcpu has no preconditions.
        let here = unsafe { libc::sched_getcpu() };
        let mut others = set;
        if let Ok(here) = usize::try_from(here) {
            // SAFETY: CPU_CLR and CPU_COUNT read and write the set we own; `here` is
            // checked against the set's size by the macro.
            unsafe { libc::CPU_CLR(here, &mut others) };
        }
        // SAFETY: as above, CPU_COUNT only reads the set.
        if unsafe { libc::CPU_COUNT(&others) } > 0 {
            // SAFETY: a live thread we just spawned (not yet joined), and a valid set. A
            // failure leaves the thread where the scheduler put it.
            unsafe {
                libc::pthread_setaffinity_np(
                    handle.as_pthread_t(),
                    std::mem::size_of::<libc::cpu_set_t>(),
                    &others,
                );
            }
        }
    }
    Ok(handle)
}

/// The CPUs this thread may run on, `None` when they cannot be read.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is valid; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: the calling thread, a valid set; failure keeps the narrower set, which is
    // still a subset of what the process may use.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_runs_and_ends_with_the_process_cpus() {
        let before = affinity().expect("affinity");
        let after = spawn_elsewhere("warden-test", affinity)
            .expect("spawn")
            .join()
            .expect("join")
            .expect("affinity in the helper");
        // SAFETY: CPU_EQUAL only reads both sets.
        assert!(unsafe { libc::CPU_EQUAL(&before, &after) });
    }
}
