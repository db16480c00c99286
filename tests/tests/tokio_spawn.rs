//! The `tokio` feature: `co_local::tokio::{spawn, spawn_local,
//! spawn_blocking}` give each task or blocking job a block of its own that
//! starts with the `#[inherit]` values alive where it is spawned (`Send`
//! ones for `spawn` and `spawn_blocking`, every one for `spawn_local`), on
//! the multi-thread runtime, a `LocalSet`, and next to workers that deny
//! their own values.

#![cfg(feature = "tokio")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use co_local::{co_local, deny_thread_values, AccessErrorKind};
use co_local_tests::message;

co_local! {
    #[inherit]
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    #[inherit]
    static LOCAL_ONLY: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
    static RETRIES: Cell<u32> = const { Cell::new(0) };
}

/// A multi-thread runtime whose workers and blocking threads deny their own
/// values, with one blocking thread, which every blocking job then shares.
fn denying_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .on_thread_start(deny_thread_values)
        .build()
        .unwrap()
}

#[test]
fn spawned_tasks_and_jobs_inherit_the_send_values_of_their_spawner() {
    let runtime = denying_runtime();
    let seen = runtime.block_on(async {
        co_local::tokio::spawn(async {
            REQUEST_ID.set(21);
            RETRIES.set(4);
            let child = co_local::tokio::spawn(async {
                tokio::task::yield_now().await; // may go on on another worker
                (REQUEST_ID.get(), RETRIES.get())
            });
            let blocking = co_local::tokio::spawn_blocking(|| {
                let refused = LOCAL_ONLY.try_with(|_| ()).unwrap_err().kind();
                (REQUEST_ID.get(), RETRIES.get(), refused)
            });
            (
                child.await.unwrap(),
                blocking.await.unwrap(),
                REQUEST_ID.get(),
            )
        })
        .await
    });
    assert_eq!(
        seen.unwrap(),
        ((21, 0), (21, 0, AccessErrorKind::NotSend), 21)
    );
}

#[test]
fn local_tasks_inherit_every_value_of_their_spawner() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let seen = local.block_on(&runtime, async {
        REQUEST_ID.set(31);
        LOCAL_ONLY.set(Some(Rc::from("shared here")));
        let child = co_local::tokio::spawn_local(async {
            let value = LOCAL_ONLY.with_borrow(|v| v.as_deref().map(str::to_owned));
            REQUEST_ID.set(32); // the child's own copy
            (REQUEST_ID.get(), value)
        });
        (child.await.unwrap(), REQUEST_ID.get())
    });
    assert_eq!(seen, ((32, Some(String::from("shared here"))), 31));
}

#[test]
fn work_spawned_with_tokio_directly_panics_where_the_spawn_functions_work() {
    let runtime = denying_runtime();
    runtime.block_on(async {
        let bare = tokio::spawn(async { REQUEST_ID.get() });
        let bare_job = tokio::task::spawn_blocking(|| REQUEST_ID.get());
        for err in [bare.await.unwrap_err(), bare_job.await.unwrap_err()] {
            let msg = message(&*err.into_panic());
            assert!(msg.contains("denies its own values"), "{msg}");
        }
        let wrapped = co_local::tokio::spawn(async { REQUEST_ID.get() });
        let wrapped_job = co_local::tokio::spawn_blocking(|| REQUEST_ID.get());
        assert_eq!((wrapped.await.unwrap(), wrapped_job.await.unwrap()), (0, 0));
    });
}

#[test]
fn each_blocking_job_has_its_own_values_on_a_reused_thread_and_they_die_with_it() {
    /// Counts its drops.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    co_local! {
        static HELD: RefCell<Option<Counted>> = const { RefCell::new(None) };
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let runtime = denying_runtime();
    runtime.block_on(async {
        // One blocking thread: the jobs run on it one after the other.
        for job in 0..3u32 {
            let counted = Counted(drops.clone());
            let seen = co_local::tokio::spawn_blocking(move || {
                let before = (RETRIES.get(), HELD.with_borrow(Option::is_some));
                RETRIES.set(job + 1);
                HELD.set(Some(counted));
                (std::thread::current().id(), before)
            });
            let (thread, before) = seen.await.unwrap();
            assert_eq!(before, (0, false), "job {job} on {thread:?}");
            assert_eq!(drops.load(Ordering::SeqCst), job as usize + 1);
        }
        // A job that panics destroys its values all the same.
        let counted = Counted(drops.clone());
        let panicked = co_local::tokio::spawn_blocking(move || {
            HELD.set(Some(counted));
            panic!("the job fails");
        });
        assert!(panicked.await.unwrap_err().is_panic());
        assert_eq!(drops.load(Ordering::SeqCst), 4);
    });
}
