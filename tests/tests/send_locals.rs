//! `SendLocals`: a block that may move between threads, for work handed to
//! another thread: it carries the `#[inherit]` values of `Send` types alive
//! where it is made, reaches only `Send` declarations wherever it is
//! entered, and dies where it is dropped.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use co_local::{co_local, AccessErrorKind, Locals, SendLocals};

co_local! {
    #[inherit]
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    /// Not `Send`: out of reach of a block that moves.
    #[inherit]
    static LOCAL_ONLY: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
    static SCRATCH: Cell<u64> = const { Cell::new(0) };
    static DROPS: RefCell<Option<Notes>> = const { RefCell::new(None) };
}

/// Writes the request id it sees into the shared list when dropped.
struct Notes(Arc<Mutex<Vec<(u64, String)>>>);

impl Drop for Notes {
    fn drop(&mut self) {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.0.lock().unwrap().push((REQUEST_ID.get(), name));
    }
}

#[test]
fn a_send_locals_carries_inherited_send_values_to_another_thread() {
    REQUEST_ID.set(7);
    SCRATCH.set(3);
    LOCAL_ONLY.set(Some(Rc::from("here")));
    let mut locals = SendLocals::inherit();
    let (id, scratch, refused) = std::thread::spawn(move || {
        locals.enter(|| {
            (
                REQUEST_ID.get(),
                SCRATCH.get(),
                LOCAL_ONLY.try_with(|_| ()).unwrap_err().kind(),
            )
        })
    })
    .join()
    .unwrap();
    assert_eq!((id, scratch), (7, 0), "inherited, and fresh");
    assert_eq!(refused, AccessErrorKind::NotSend);
    // The thread's own values are untouched.
    assert_eq!((REQUEST_ID.get(), SCRATCH.get()), (7, 3));
}

#[test]
fn a_new_send_locals_inherits_nothing() {
    REQUEST_ID.set(9);
    let mut locals = SendLocals::new();
    assert_eq!(locals.enter(|| REQUEST_ID.get()), 0);
}

#[test]
fn values_made_in_a_send_locals_die_where_it_is_dropped() {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let mut locals = SendLocals::new();
    locals.enter(|| {
        REQUEST_ID.set(11);
        DROPS.set(Some(Notes(notes.clone())));
    });
    // Entered on one thread, dropped on another: its block current there.
    std::thread::Builder::new()
        .name(String::from("dropper"))
        .spawn(move || {
            locals.enter(|| assert_eq!(REQUEST_ID.get(), 11));
            drop(locals);
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(*notes.lock().unwrap(), [(11, String::from("dropper"))]);
}

#[test]
fn a_pool_of_threads_runs_each_job_with_the_block_made_where_it_was_queued() {
    let (jobs, queue) = mpsc::channel::<(SendLocals, u64)>();
    let queue = Arc::new(Mutex::new(queue));
    let (done, results) = mpsc::channel();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let queue = queue.clone();
            let done = done.clone();
            std::thread::spawn(move || loop {
                let job = queue.lock().unwrap().recv();
                let Ok((mut locals, n)) = job else { break };
                done.send((n, locals.enter(|| REQUEST_ID.get()))).unwrap();
            })
        })
        .collect();
    for n in 0..40 {
        let mut block = Locals::new();
        let locals = block.enter(|| {
            REQUEST_ID.set(500 + n);
            SendLocals::inherit()
        });
        jobs.send((locals, n)).unwrap();
    }
    drop(jobs);
    for worker in workers {
        worker.join().unwrap();
    }
    drop(done);
    let mut seen: Vec<_> = results.iter().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..40).map(|n| (n, 500 + n)).collect::<Vec<_>>());
}

#[test]
fn a_send_locals_is_send_not_sync_and_debug() {
    fn is_send<T: Send>() {}
    is_send::<SendLocals>();
    // Not `Sync`: ui-tests' `send_locals_shared_between_threads` shows a
    // `&SendLocals` refused by `std::thread::spawn`.
    assert_eq!(format!("{:?}", SendLocals::new()), "SendLocals { .. }");
}
