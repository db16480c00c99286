//! The `tokio` feature: `co_local::tokio::{spawn, spawn_local,
//! spawn_blocking}` give each task or blocking job a block of its own that
//! starts with the `#[inherit]` values alive where it is spawned (`Send`
//! ones for `spawn` and `spawn_blocking`, every one for `spawn_local`), on
//! the multi-thread runtime, a `LocalSet`, and next to workers that deny
//! their own values.

#![cfg(feature = "tokio")]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use co_local::{co_local, deny_thread_values, AccessErrorKind};

co_local! {
    #[inherit]
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    #[inherit]
    static LOCAL_ONLY: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
    static RETRIES: Cell<u32> = const { Cell::new(0) };
}

fn multi_thread(deny: bool) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    if deny {
        builder.on_thread_start(deny_thread_values);
    }
    builder.build().unwrap()
}

#[test]
fn spawned_tasks_and_jobs_inherit_the_send_values_of_their_spawner() {
    let runtime = multi_thread(true);
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
fn tasks_spawned_with_tokio_directly_panic_on_denying_workers() {
    let runtime = multi_thread(true);
    runtime.block_on(async {
        let bare = tokio::spawn(async { REQUEST_ID.get() });
        assert!(bare.await.unwrap_err().is_panic());
        let wrapped = co_local::tokio::spawn(async { REQUEST_ID.get() });
        assert_eq!(wrapped.await.unwrap(), 0);
    });
}
