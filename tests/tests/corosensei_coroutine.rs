//! The `corosensei` feature: `co_local::corosensei::Coroutine`, a
//! corosensei coroutine with a block of its own and co_runtime's API shape.

#![cfg(feature = "corosensei")]

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

use co_local::corosensei::Coroutine;
use co_local::{co_local, Locals};
use corosensei::{CoroutineResult, Yielder};

co_local! {
    static ID: Cell<u32> = const { Cell::new(0) };
    #[inherit]
    static REQUEST: Cell<u32> = const { Cell::new(0) };
}

std::thread_local! {
    static SEEN: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Records `ID` when dropped.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        SEEN.with_borrow_mut(|s| s.push(ID.get()));
    }
}

#[test]
fn each_coroutine_has_its_own_values_and_the_caller_keeps_its_own() {
    ID.set(1);
    let mut a = Coroutine::new(|y: &Yielder<u32, u32>, first| {
        ID.set(first);
        let next = y.suspend(ID.get());
        ID.get() + next
    });
    let mut b = Coroutine::new(|y: &Yielder<u32, u32>, first| {
        ID.set(first);
        y.suspend(ID.get());
        ID.get()
    });
    assert!(!a.started());
    assert_eq!(a.resume(10), CoroutineResult::Yield(10));
    assert_eq!(b.resume(20), CoroutineResult::Yield(20));
    assert!(a.started() && !a.done());
    assert_eq!(ID.get(), 1);
    assert_eq!(a.with_locals(|| ID.get()), Some(10));
    assert_eq!(a.resume(1), CoroutineResult::Return(11));
    assert!(a.done());
    assert_eq!(a.with_locals(|| ID.get()), None, "its values are gone");
    assert_eq!(b.resume(0), CoroutineResult::Return(20));
    assert_eq!(ID.get(), 1);
}

#[test]
fn inherited_values_are_copied_when_it_is_made() {
    REQUEST.set(5);
    let mut co = Coroutine::new(|_: &Yielder<(), ()>, ()| REQUEST.get());
    REQUEST.set(6);
    assert_eq!(co.resume(()), CoroutineResult::Return(5));
}

#[test]
fn a_panic_comes_out_with_the_callers_block_current() {
    ID.set(1);
    let mut co = Coroutine::new(|_: &Yielder<(), ()>, ()| {
        ID.set(9);
        panic!("inside");
    });
    let mut caller = Locals::new();
    caller.enter(|| ID.set(2));
    let outcome = caller.enter(|| {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| co.resume(())));
        (outcome.is_err(), ID.get())
    });
    assert_eq!(outcome, (true, 2));
    assert!(co.done());
    assert_eq!(ID.get(), 1);
}

#[test]
fn dropped_while_suspended_it_unwinds_with_its_own_block() {
    SEEN.with_borrow_mut(Vec::clear);
    ID.set(1);
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        ID.set(5);
        let _guard = Guard;
        y.suspend(());
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    drop(co);
    assert_eq!(SEEN.take(), [5]);
    assert_eq!(ID.get(), 1);
}

#[test]
fn dropped_while_suspended_inside_an_enter_it_unwinds_with_that_block() {
    SEEN.with_borrow_mut(Vec::clear);
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        ID.set(5);
        let _outer_guard = Guard;
        let mut inner = Locals::new();
        inner.enter(|| {
            ID.set(6);
            let _inner_guard = Guard;
            y.suspend(());
        });
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    drop(co);
    // The inner guard dies in the entered block, the outer one in the
    // coroutine's own, once the `enter` has ended.
    assert_eq!(SEEN.take(), [6, 5]);
}

#[test]
#[should_panic(expected = "finished")]
fn resuming_a_finished_coroutine_panics() {
    let mut co = Coroutine::new(|_: &Yielder<(), ()>, ()| {});
    assert_eq!(co.resume(()), CoroutineResult::Return(()));
    co.resume(());
}
