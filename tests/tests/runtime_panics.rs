//! Panics in coroutines, and coroutines dropped before they finish: payloads
//! come out of `resume` intact, stacks are unwound, every destructor runs
//! exactly once, and the resumer's co_local block is current again.

use std::cell::{Cell, RefCell};
use std::panic;
use std::rc::Rc;
use std::sync::Once;

use co_local::{co_local, Locals};
use co_local_tests::{catch, message};
use co_runtime::{Coroutine, CoroutineResult, Yielder};

co_local! {
    static ID: Cell<u32> = const { Cell::new(0) };
}

std::thread_local! {
    /// Panics the hook saw on this thread (tests run in parallel threads).
    static HOOK_CALLS: Cell<u32> = const { Cell::new(0) };
}

/// Installs (once) a panic hook that counts panics per thread, then reports
/// them as usual.
fn count_hook_calls() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            HOOK_CALLS.with(|calls| calls.set(calls.get() + 1));
            default(info);
        }));
    });
}

/// Counts its drops, and records the co_local `ID` current at each.
#[derive(Clone)]
struct Guard {
    drops: Rc<RefCell<Vec<u32>>>,
}

impl Guard {
    fn new() -> Guard {
        Guard {
            drops: Rc::default(),
        }
    }

    fn drops(&self) -> Vec<u32> {
        self.drops.borrow().clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Only the clones held in the coroutines report; the test keeps one.
        if Rc::strong_count(&self.drops) > 1 {
            self.drops.borrow_mut().push(ID.get());
        }
    }
}

#[derive(Debug, PartialEq)]
struct Payload(u32);

#[test]
fn a_panic_comes_out_of_resume_with_its_payload() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        y.suspend(());
        panic::panic_any(Payload(7));
    });
    co.resume(());
    let payload = catch(|| co.resume(())).unwrap_err();
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(7)));
    assert!(co.started() && co.done());
    assert_eq!(co.with_locals(|| ()), None);
}

#[test]
fn a_panic_message_comes_out_as_is() {
    let mut co = Coroutine::<(), (), ()>::new(|_, ()| panic!("boom {}", 42));
    let payload = catch(|| co.resume(())).unwrap_err();
    assert_eq!(message(&*payload), "boom 42");
}

#[test]
fn resuming_a_finished_coroutine_panics() {
    let mut returned = Coroutine::<(), (), u8>::new(|_, ()| 1);
    assert_eq!(returned.resume(()), CoroutineResult::Return(1));
    let payload = catch(|| returned.resume(())).unwrap_err();
    assert_eq!(
        message(&*payload),
        "cannot resume a coroutine that has finished"
    );

    let mut panicked = Coroutine::<(), (), ()>::new(|_, ()| panic::resume_unwind(Box::new(1)));
    assert!(catch(|| panicked.resume(())).is_err());
    let payload = catch(|| panicked.resume(())).unwrap_err();
    assert_eq!(
        message(&*payload),
        "cannot resume a coroutine that has finished"
    );
}

#[test]
fn a_panic_makes_the_resumers_block_current_again() {
    let mut co = Coroutine::<(), (), ()>::new(|_, ()| {
        ID.set(1);
        panic::resume_unwind(Box::new(Payload(1)));
    });
    let mut mine = Locals::new();
    mine.enter(|| {
        ID.set(2);
        assert!(catch(|| co.resume(())).is_err());
        assert_eq!(ID.get(), 2);
    });
    assert_eq!(ID.get(), 0);
}

#[test]
fn a_panic_crosses_nested_coroutines() {
    let mut outer = Coroutine::<(), (), ()>::new(|_, ()| {
        ID.set(1);
        let mut inner = Coroutine::<(), (), ()>::new(|_, ()| {
            ID.set(2);
            panic::panic_any(Payload(2));
        });
        inner.resume(());
        unreachable!("the inner panic goes on unwinding the outer coroutine");
    });
    let payload = catch(|| outer.resume(())).unwrap_err();
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(2)));
    assert!(outer.done());
    assert_eq!(ID.get(), 0);
}

#[test]
fn a_caught_panic_leaves_the_coroutine_running() {
    let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| {
        let caught = catch(|| panic::resume_unwind(Box::new(Payload(3))));
        y.suspend(caught.unwrap_err().downcast::<Payload>().unwrap().0);
        4
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(3));
    assert_eq!(co.resume(()), CoroutineResult::Return(4));
}

#[test]
fn dropping_a_suspended_coroutine_unwinds_its_stack() {
    count_hook_calls();
    let guard = Guard::new();
    let on_stack = guard.clone();
    let reached = Rc::new(Cell::new(false));
    let after = reached.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        ID.set(5);
        let _guard = on_stack;
        y.suspend(());
        after.set(true);
    });
    co.resume(());
    assert!(guard.drops().is_empty());
    let hook_calls = HOOK_CALLS.with(Cell::get);
    drop(co);
    assert_eq!(
        guard.drops(),
        [5],
        "dropped once, with the coroutine's block"
    );
    assert!(!reached.get(), "suspend does not return");
    assert_eq!(
        HOOK_CALLS.with(Cell::get),
        hook_calls,
        "the hook saw nothing"
    );
    assert_eq!(ID.get(), 0);
}

#[test]
fn unwinding_drops_every_frame_innermost_first() {
    fn nest(y: &Yielder<(), ()>, order: Rc<RefCell<Vec<u32>>>, depth: u32) {
        struct Frame(Rc<RefCell<Vec<u32>>>, u32);
        impl Drop for Frame {
            fn drop(&mut self) {
                self.0.borrow_mut().push(self.1);
            }
        }
        let _frame = Frame(order.clone(), depth);
        if depth == 0 {
            y.suspend(());
        } else {
            nest(y, order, depth - 1);
        }
    }
    let order = Rc::new(RefCell::new(Vec::new()));
    let in_co = order.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| nest(y, in_co, 4));
    co.resume(());
    drop(co);
    assert_eq!(*order.borrow(), [0, 1, 2, 3, 4]);
}

#[test]
fn unwinding_leaves_nested_locals_and_coroutines() {
    let guard = Guard::new();
    let in_co = guard.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        ID.set(1);
        let mut inner = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
            ID.set(2);
            let _guard = in_co;
            y.suspend(());
        });
        inner.resume(());
        let mut other = Locals::new();
        other.enter(|| {
            ID.set(3);
            y.suspend(());
        });
    });
    co.resume(());
    drop(co);
    // The inner coroutine, dropped while its parent unwound, unwound too.
    assert_eq!(guard.drops(), [2]);
    assert_eq!(ID.get(), 0);
}

#[test]
fn a_coroutine_dropped_before_it_starts_runs_nothing() {
    let guard = Guard::new();
    let captured = guard.clone();
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    let co = Coroutine::new(move |_: &Yielder<(), ()>, ()| {
        flag.set(true);
        drop(captured);
    });
    drop(co);
    assert!(!ran.get());
    assert_eq!(guard.drops(), [0], "the closure is dropped, once");

    let guard = Guard::new();
    let captured = guard.clone();
    let mut seeded = Coroutine::new(move |_: &Yielder<(), ()>, ()| drop(captured));
    seeded.with_locals(|| ID.set(8));
    drop(seeded);
    assert_eq!(guard.drops(), [8], "with the coroutine's block current");
}

#[test]
fn dropping_while_the_thread_panics_still_unwinds() {
    let guard = Guard::new();
    let on_stack = guard.clone();
    let result = catch(move || {
        let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
            ID.set(6);
            let _guard = on_stack;
            y.suspend(());
        });
        co.resume(());
        panic::resume_unwind(Box::new(Payload(6)));
    });
    assert_eq!(
        result.unwrap_err().downcast_ref::<Payload>(),
        Some(&Payload(6))
    );
    assert_eq!(guard.drops(), [6]);
}

#[test]
fn a_caught_forced_unwind_may_return() {
    let guard = Guard::new();
    let returned = guard.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        ID.set(7);
        let result = catch(|| y.suspend(()));
        assert!(
            result.is_err(),
            "suspend unwinds when the coroutine is dropped"
        );
        returned
    });
    co.resume(());
    drop(co);
    // The returned value is dropped (with the dropper's block current).
    assert_eq!(guard.drops(), [0]);
}

#[test]
fn suspending_again_while_dropped_panics() {
    let guard = Guard::new();
    let on_stack = guard.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        let _guard = on_stack;
        ID.set(9);
        let _ = catch(|| y.suspend(()));
        y.suspend(());
        unreachable!("suspend cannot suspend a coroutine being dropped");
    });
    co.resume(());
    let payload = catch(move || drop(co)).unwrap_err();
    assert!(
        message(&*payload).contains("being dropped cannot suspend"),
        "{}",
        message(&*payload)
    );
    assert_eq!(guard.drops(), [9], "the stack was unwound anyway");
}

#[test]
fn a_panicking_closure_drop_comes_out_of_the_coroutine_drop() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic::resume_unwind(Box::new(Payload(10)));
        }
    }
    let bomb = Bomb;
    let co = Coroutine::new(move |_: &Yielder<(), ()>, ()| drop(bomb));
    let payload = catch(move || drop(co)).unwrap_err();
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(10)));
}
