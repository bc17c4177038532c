//! Runs from a process whose other threads keep starting and ending while the container
//! is created, as `warden run`'s do (the egress proxy's runtime and setup, helpers).
//! libcontainer clones the calling thread into the container's processes; whatever lock
//! another thread held at that moment stays held in the copy.

use super::*;
use std::sync::mpsc;

/// Enough runs for the unpatched libcontainer to hang in almost every test run (checked:
/// every run of this test hung within its first 10 runs with `std::process::exit`).
const RUNS: usize = 60;

#[test]
fn runs_complete_while_other_threads_start_and_end() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::spawn(|| ()).join().expect("join");
                }
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..RUNS {
            let o = run(&b, None, |_| {});
            if tx.send(o.code).is_err() {
                return;
            }
        }
    });
    let codes: Vec<_> = (0..RUNS)
        .map_while(|_| rx.recv_timeout(Duration::from_secs(20)).ok())
        .collect();
    stop.store(true, Ordering::Relaxed);
    for t in churn {
        t.join().expect("churn thread");
    }
    if codes.len() < RUNS {
        kill_children();
    }
    assert_eq!(
        codes,
        vec![0; RUNS],
        "a run did not finish within 20 s: a process libcontainer cloned hung"
    );
}

/// SIGKILL to every child of this process: the hung copies libcontainer made (the
/// container's init is a child too, cloned with `CLONE_PARENT`), which would otherwise
/// outlive the test.
fn kill_children() {
    for pid in children(std::process::id() as i32) {
        // SAFETY: kill(2) on a child of this process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A caller with threads of its own holds them still through `hold_for_clone`: taken once,
/// just before libcontainer clones, and let go as soon as the container exists (before
/// the `before_start` hook sees it), so the hold never spans the sandbox's run.
#[test]
fn the_hold_for_clone_spans_the_creation_only() {
    let _g = serial();
    let b = sandbox(&["/bin/true"], DEFAULT_LIMITS);
    let events = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    struct Held(Arc<std::sync::Mutex<Vec<String>>>);
    impl Drop for Held {
        fn drop(&mut self) {
            self.0.lock().unwrap().push("released".into());
        }
    }
    let o = run(&b, None, |opts| {
        let e = events.clone();
        opts.hold_for_clone = Some(Box::new(move || {
            e.lock().unwrap().push("held".into());
            Box::new(Held(e.clone()))
        }));
        let e = events.clone();
        opts.before_start = Some(Box::new(move |cx| {
            e.lock()
                .unwrap()
                .push(format!("created, init alive: {}", cx.init_pid > 0));
            Ok(())
        }));
    });
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        *events.lock().unwrap(),
        ["held", "released", "created, init alive: true"]
    );
}
