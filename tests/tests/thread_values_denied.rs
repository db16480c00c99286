//! `deny_thread_values`: on a thread that denies its own values, code
//! outside every coroutine, `Locals`, `SendLocals` and task reaches none,
//! with an error that says so (a panic naming the static from `with`),
//! also where a scope begun before would put the thread's block back; blocks
//! made there inherit nothing; `allow_thread_values` undoes it. And the
//! executor case: a runtime whose workers deny their values.

use std::cell::{Cell, RefCell};
use std::task::Poll;

use co_local::{
    allow_thread_values, co_local, deny_thread_values, AccessErrorKind, Locals, SendLocals,
    WithLocals,
};
use co_local_tests::{catch, message, poll_once};
use co_runtime::{Coroutine, CoroutineResult, Yielder};
use corosensei::Yielder as CoroYielder;

co_local! {
    #[inherit]
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    static LOG: RefCell<Vec<u64>> = RefCell::new(Vec::new());
}

/// Runs `f` on a thread of its own (the denial is per thread).
fn on_a_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().unwrap()
}

#[test]
fn outside_every_block_the_thread_values_are_refused() {
    on_a_thread(|| {
        REQUEST_ID.set(3);
        deny_thread_values();
        let err = REQUEST_ID.try_with(Cell::get).unwrap_err();
        assert_eq!(err.kind(), AccessErrorKind::ThreadValuesDenied);
        let payload = catch(|| LOG.with_borrow_mut(|l| l.push(1))).unwrap_err();
        let msg = message(&*payload);
        assert!(
            msg.contains("`thread_values_denied::LOG`") && msg.contains("WithLocals"),
            "{msg}"
        );
        allow_thread_values();
        assert_eq!(REQUEST_ID.get(), 3, "the thread's value, kept");
    });
}

#[test]
fn inside_blocks_values_are_reached() {
    on_a_thread(|| {
        deny_thread_values();
        let mut locals = Locals::new();
        assert_eq!(locals.enter(|| REQUEST_ID.replace(4)), 0);
        let mut send = SendLocals::new();
        assert_eq!(send.enter(|| REQUEST_ID.replace(5)), 0);
        let mut task = WithLocals::new(async { REQUEST_ID.get() });
        task.with_locals(|| REQUEST_ID.set(6));
        assert_eq!(poll_once(&mut Box::pin(task)), Poll::Ready(6));
        let mut co = Coroutine::new(|y: &Yielder<(), u64>, ()| {
            REQUEST_ID.set(7);
            y.suspend(REQUEST_ID.get());
            REQUEST_ID.get()
        });
        assert_eq!(co.resume(()), CoroutineResult::Yield(7));
        assert!(REQUEST_ID.try_with(|_| ()).is_err(), "back outside");
        assert_eq!(co.resume(()), CoroutineResult::Return(7));
    });
}

#[test]
fn a_scope_begun_before_the_denial_does_not_bring_the_thread_values_back() {
    on_a_thread(|| {
        REQUEST_ID.set(1); // the thread's own block is current
        let mut locals = Locals::new();
        locals.enter(deny_thread_values);
        assert_eq!(
            REQUEST_ID.try_with(|_| ()).unwrap_err().kind(),
            AccessErrorKind::ThreadValuesDenied
        );
        // The same across another library's coroutine: a `resume` begun
        // with the thread's block current, denied inside.
        allow_thread_values();
        REQUEST_ID.set(2);
        let mut co = corosensei::Coroutine::new(|y: &CoroYielder<(), ()>, ()| {
            deny_thread_values();
            y.suspend(());
        });
        let mut co_locals = Locals::new();
        co_locals.resume(|| co.resume(()));
        assert!(REQUEST_ID.try_with(|_| ()).is_err());
        allow_thread_values();
        assert_eq!(REQUEST_ID.get(), 2);
        co_locals.resume(|| drop(co));
    });
}

#[test]
fn a_locals_that_remembered_the_thread_block_forgets_it() {
    on_a_thread(|| {
        // The thread's own block is current; `opener` leaves a scope open
        // that recorded it...
        REQUEST_ID.set(8);
        let mut opener = corosensei::Coroutine::new(|y: &CoroYielder<(), ()>, ()| {
            let mut scratch = Locals::new();
            scratch.enter(|| y.suspend(()));
            y.suspend(());
        });
        opener.resume(());
        // ...and ends it inside `co`, which then suspends with the thread's
        // block current: `co`'s `Locals` remembers that block.
        let opener = std::cell::RefCell::new(opener);
        let mut co = corosensei::Coroutine::new(move |y: &CoroYielder<(), ()>, ()| {
            opener.borrow_mut().resume(());
            y.suspend(());
            drop(opener);
        });
        let mut locals = Locals::new();
        locals.enter(|| REQUEST_ID.set(9));
        locals.resume(|| co.resume(()));
        deny_thread_values();
        // Resumed again: the coroutine's own block, not the thread's.
        let seen = locals.resume(|| REQUEST_ID.try_with(Cell::get));
        assert_eq!(seen, Ok(9));
        allow_thread_values();
        locals.resume(|| drop(co));
    });
}

#[test]
fn blocks_made_outside_every_block_on_a_denying_thread_inherit_nothing() {
    on_a_thread(|| {
        REQUEST_ID.set(5);
        deny_thread_values();
        let mut locals = Locals::inherit();
        assert_eq!(locals.enter(|| REQUEST_ID.get()), 0);
        let mut send = SendLocals::inherit();
        assert_eq!(send.enter(|| REQUEST_ID.get()), 0);
        let mut task = WithLocals::new(async {});
        assert_eq!(task.with_locals(|| REQUEST_ID.get()), Some(0));
    });
}

#[test]
fn workers_that_deny_their_values_turn_an_unwrapped_task_into_a_panic() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(deny_thread_values)
        .build()
        .unwrap();
    runtime.block_on(async {
        let unwrapped = tokio::spawn(async { REQUEST_ID.set(42) });
        let err = unwrapped.await.unwrap_err();
        assert!(err.is_panic());
        let msg = message(&*err.into_panic());
        assert!(
            msg.contains("`thread_values_denied::REQUEST_ID`") && msg.contains("wrap"),
            "{msg}"
        );
        let wrapped = tokio::spawn(WithLocals::new(async {
            REQUEST_ID.set(42);
            tokio::task::yield_now().await;
            REQUEST_ID.get()
        }));
        assert_eq!(wrapped.await.unwrap(), 42);
    });
}
