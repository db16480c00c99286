//! co_local next to stackful coroutine libraries it does not own: corosensei
//! and generator. Safe code that switches stacks behind co_local's back must
//! never make it read freed memory (SPEC.md, "Soundness"). Each of the first
//! tests is a hole that was found and fixed; `.ci/run` runs them under
//! valgrind's memcheck too.

use std::cell::{Cell, RefCell};

use co_local::{co_local, Locals, RawBlock};
use co_local_tests::{catch, message};
use corosensei::{Coroutine, CoroutineResult, Yielder};

mod common;

use common::{churn, ID, NAME};

/// Hole 1: a foreign coroutine suspends inside an `enter` of its own; the
/// resumer's `enter` then returns, its block is dropped, and the coroutine
/// is dropped: its `enter` restores a block that no longer exists.
#[test]
fn an_enter_that_stops_nesting_never_restores_a_dropped_block() {
    ID.set(1);
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        let mut inner = Locals::new();
        inner.enter(|| {
            ID.set(3);
            y.suspend(());
            ID.get()
        })
    });
    let mut outer = Locals::new();
    outer.enter(|| {
        ID.set(2);
        assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
    });
    drop(outer);
    let others = churn();
    // corosensei unwinds the coroutine's stack: the inner `enter` puts back
    // what was current when it began, `outer`'s block, which is gone.
    drop(co);
    assert_eq!(ID.get(), 1, "the thread's own block is current again");
    assert_eq!(RawBlock::current(), ID.with(|_| RawBlock::current()));
    drop(others);
    assert_eq!(ID.get(), 1);
}

/// Hole 2: a reference from `with` is held across a foreign suspend while
/// the block it points into is dropped by its owner.
#[test]
fn a_with_reference_held_across_a_foreign_suspend_keeps_its_value() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        NAME.with_borrow(|name| {
            y.suspend(());
            name.clone()
        })
    });
    let mut task = Locals::new();
    task.enter(|| {
        NAME.set(String::from("the task's name"));
        assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
    });
    drop(task);
    let others = churn();
    match co.resume(()) {
        CoroutineResult::Return(name) => assert_eq!(name, "the task's name"),
        CoroutineResult::Yield(()) => panic!("the coroutine should have returned"),
    }
    drop(others);
}

/// The same with the block's values destroyed only once nothing refers to
/// them: the destructor runs when the last reference is gone.
#[test]
fn a_dropped_block_still_referenced_is_destroyed_when_the_reference_ends() {
    struct Noisy(&'static std::thread::LocalKey<Cell<u32>>);
    impl Drop for Noisy {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    std::thread_local! {
        static DROPPED: Cell<u32> = const { Cell::new(0) };
    }
    co_local! {
        static HELD: RefCell<Option<Noisy>> = const { RefCell::new(None) };
    }
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        HELD.with_borrow(|held| {
            y.suspend(());
            held.is_some()
        })
    });
    let mut task = Locals::new();
    task.enter(|| {
        HELD.set(Some(Noisy(&DROPPED)));
        co.resume(());
    });
    drop(task);
    assert_eq!(DROPPED.get(), 0, "a reference into the value is alive");
    assert!(matches!(co.resume(()), CoroutineResult::Return(true)));
    assert_eq!(DROPPED.get(), 1, "destroyed once the reference ended");
}

scoped_tls::scoped_thread_local!(static YIELDER: Yielder<(), ()>);

thread_local! {
    /// Whether `LATE`'s initialiser should suspend the coroutine in `YIELDER`.
    static SUSPEND_IN_INIT: Cell<bool> = const { Cell::new(false) };
    /// Values `LATE`'s initialiser has made.
    static MADE: Cell<u32> = const { Cell::new(0) };
}

co_local! {
    static LATE: RefCell<String> = {
        if SUSPEND_IN_INIT.replace(false) {
            YIELDER.with(|y| y.suspend(()));
        }
        MADE.set(MADE.get() + 1);
        RefCell::new(format!("made {}", MADE.get()))
    };
}

/// Hole 3: a lazy initialiser suspended half-way; meanwhile the value is
/// made and a reference to it is held; the initialiser then returns. (The
/// same with generator is in `soundness_generator.rs`.)
#[test]
fn a_lazy_initialiser_that_returns_late_never_replaces_a_referenced_value() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        YIELDER.set(y, || {
            SUSPEND_IN_INIT.set(true);
            LATE.with_borrow(|s| s.clone())
        })
    });
    // The coroutine runs on the thread's own block (nothing wraps it) and
    // suspends inside the initialiser of `LATE`.
    assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
    let (seen, from_co) = LATE.with_borrow(|s| {
        assert_eq!(s, "made 1");
        // The initialiser returns now (making "made 2") and finds the value
        // made.
        let from_co = co.resume(());
        // Memory freed by a replacement would be reused by these.
        let filler: Vec<String> = (0..64).map(|i| format!("filler {i:>14}")).collect();
        drop(filler);
        (s.clone(), from_co)
    });
    assert_eq!(seen, "made 1", "the value under the reference was replaced");
    // The borrow of `with_borrow` ended cleanly: the cell is not left
    // borrowed by a replacement that reset its flag.
    LATE.with_borrow_mut(|s| s.push('!'));
    assert_eq!(LATE.with_borrow(Clone::clone), "made 1!");
    match from_co {
        CoroutineResult::Return(s) => assert_eq!(s, "made 1"),
        CoroutineResult::Yield(()) => panic!("the coroutine should have returned"),
    }
}

// ---------------------------------------------------------------------------
// `Locals::resume`: the safe way to give a foreign coroutine its own block.
// ---------------------------------------------------------------------------

/// A corosensei coroutine with a co_local block of its own.
struct Task<Y, R> {
    co: Coroutine<(), Y, R>,
    locals: Locals,
}

impl<Y: 'static, R: 'static> Task<Y, R> {
    fn new(f: impl FnOnce(&Yielder<(), Y>, ()) -> R + 'static) -> Self {
        Task {
            co: Coroutine::new(f),
            locals: Locals::new(),
        }
    }

    fn resume(&mut self) -> CoroutineResult<Y, R> {
        let co = &mut self.co;
        self.locals.resume(|| co.resume(()))
    }
}

#[test]
fn many_foreign_coroutines_each_keep_their_own_values() {
    ID.set(7);
    let mut tasks: Vec<Task<u32, String>> = (0..64)
        .map(|i| {
            Task::new(move |y: &Yielder<(), u32>, ()| {
                ID.set(i);
                NAME.set(format!("task {i}"));
                for _ in 0..3 {
                    y.suspend(ID.get());
                    ID.set(ID.get() + 100);
                }
                NAME.take()
            })
        })
        .collect();
    for round in 0..3 {
        for (i, task) in tasks.iter_mut().enumerate() {
            match task.resume() {
                CoroutineResult::Yield(id) => assert_eq!(id, i as u32 + 100 * round),
                CoroutineResult::Return(_) => panic!("returned early"),
            }
            assert_eq!(ID.get(), 7, "the thread's value between resumes");
        }
    }
    for (i, task) in tasks.iter_mut().enumerate() {
        match task.resume() {
            CoroutineResult::Return(name) => assert_eq!(name, format!("task {i}")),
            CoroutineResult::Yield(_) => panic!("should have returned"),
        }
        // Seeding and reading from outside, like `with_locals`.
        assert_eq!(task.locals.enter(|| ID.get()), i as u32 + 300);
    }
    assert_eq!(ID.get(), 7);
}

#[test]
fn a_nested_enter_suspended_inside_is_current_again_on_the_next_resume() {
    let mut task = Task::new(|y: &Yielder<(), u32>, ()| {
        ID.set(1);
        let mut nested = Locals::new();
        nested.enter(|| {
            ID.set(2);
            y.suspend(ID.get());
            // Found again: the nested block, not the task's.
            let again = ID.get();
            ID.set(3);
            y.suspend(again);
        });
        ID.get()
    });
    ID.set(50);
    assert!(matches!(task.resume(), CoroutineResult::Yield(2)));
    assert_eq!(ID.get(), 50);
    // What the task left current is the nested block: `enter` on the task's
    // own block still reaches its own value.
    assert_eq!(task.locals.enter(|| ID.get()), 1);
    assert!(matches!(task.resume(), CoroutineResult::Yield(2)));
    assert_eq!(ID.get(), 50);
    assert!(matches!(task.resume(), CoroutineResult::Return(1)));
    assert_eq!(ID.get(), 50);
}

#[test]
fn a_panic_out_of_a_foreign_coroutine_restores_the_callers_block() {
    let mut task = Task::new(|_: &Yielder<(), ()>, ()| -> () {
        ID.set(11);
        let mut nested = Locals::new();
        nested.enter(|| panic!("task failed"));
    });
    ID.set(5);
    let err = catch(|| task.resume()).unwrap_err();
    assert_eq!(message(&*err), "task failed");
    assert_eq!(ID.get(), 5);
    assert_eq!(task.locals.enter(|| ID.get()), 11);
}

#[test]
fn dropping_the_coroutine_before_its_locals_and_after_are_both_sound() {
    // Coroutine first: corosensei unwinds it with the thread's block
    // current (nobody swapped the task's in), then the block goes.
    let mut first = Task::new(|y: &Yielder<(), ()>, ()| {
        NAME.with_borrow(|n| {
            y.suspend(());
            n.len()
        })
    });
    first.locals.enter(|| NAME.set(String::from("first")));
    first.resume();
    let Task { co, locals } = first;
    drop(co);
    drop(locals);

    // Locals first: the suspended coroutine still refers into the block,
    // which is kept until the coroutine lets go of it.
    let mut second = Task::new(|y: &Yielder<(), ()>, ()| {
        NAME.with_borrow(|n| {
            y.suspend(());
            n.len()
        })
    });
    second.locals.enter(|| NAME.set(String::from("second")));
    second.resume();
    let Task { mut co, locals } = second;
    drop(locals);
    let others = churn();
    assert!(matches!(co.resume(()), CoroutineResult::Return(6)));
    drop(co);
    drop(others);
}

#[test]
fn a_forced_unwind_inside_resume_sees_the_coroutines_own_values() {
    std::thread_local! {
        static SEEN: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }
    struct Report;
    impl Drop for Report {
        fn drop(&mut self) {
            SEEN.with_borrow_mut(|s| s.push(ID.get()));
        }
    }
    let mut task = Task::new(|y: &Yielder<(), ()>, ()| {
        ID.set(42);
        let _report = Report;
        y.suspend(());
    });
    ID.set(1);
    task.resume();
    let Task { co, mut locals } = task;
    // The unwinding runs inside `resume`, so the task's block is current.
    locals.resume(|| drop(co));
    assert_eq!(SEEN.with_borrow(Clone::clone), [42]);
    assert_eq!(ID.get(), 1);
}

#[test]
fn resume_forgets_a_remembered_block_that_was_dropped() {
    // The coroutine suspends inside `nested.enter`; `resume` remembers the
    // nested block. The coroutine is then unwound outside `resume`, which
    // drops the nested block; the next `resume` uses the task's own block.
    let mut task = Task::new(|y: &Yielder<(), ()>, ()| {
        let mut nested = Locals::new();
        nested.enter(|| {
            ID.set(9);
            y.suspend(());
        });
    });
    task.locals.enter(|| ID.set(4));
    task.resume();
    let Task { co, mut locals } = task;
    drop(co);
    let others = churn();
    assert_eq!(locals.resume(|| ID.get()), 4);
    drop(others);
}

/// A destructor that lets a foreign coroutine suspend inside a `with` on
/// another value of the dying block: the block stops destroying there and
/// keeps the rest until the reference ends.
#[test]
fn a_destructor_that_leaves_a_reference_behind_stops_the_destruction_there() {
    type Slot = RefCell<Option<Parks>>;
    std::thread_local! {
        static PARKED: RefCell<Option<Coroutine<(), (), bool>>> = const { RefCell::new(None) };
        static DESTROYED: Cell<u32> = const { Cell::new(0) };
    }
    struct Parks(&'static co_local::LocalKey<Slot>);
    impl Drop for Parks {
        fn drop(&mut self) {
            DESTROYED.set(DESTROYED.get() + 1);
            let other = self.0;
            // Whichever of the two goes first finds the other alive.
            if other.try_with(|_| ()).is_ok() {
                let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                    other.with_borrow(|o| {
                        y.suspend(());
                        o.is_some()
                    })
                });
                assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
                PARKED.set(Some(co));
            }
        }
    }
    co_local! {
        static FIRST: Slot = const { RefCell::new(None) };
        static SECOND: Slot = const { RefCell::new(None) };
    }
    let mut block = Locals::new();
    block.enter(|| {
        FIRST.set(Some(Parks(&SECOND)));
        SECOND.set(Some(Parks(&FIRST)));
    });
    drop(block);
    assert_eq!(
        DESTROYED.get(),
        1,
        "the destruction stopped at the reference"
    );
    let others = churn();
    let mut co = PARKED.take().expect("a destructor parked a coroutine");
    assert!(matches!(co.resume(()), CoroutineResult::Return(true)));
    assert_eq!(DESTROYED.get(), 2, "and went on when it ended");
    drop(co);
    drop(others);
}

/// A foreign coroutine suspends inside a `scope` whose block's owner then
/// drops the block: the override's pin keeps the block, the previous value
/// goes back into it when the scope ends, and nothing else sees either.
#[test]
fn a_scope_suspended_by_a_foreign_coroutine_outlives_its_dropped_block() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        NAME.scope(String::from("scoped"), || {
            y.suspend(());
            NAME.with_borrow(Clone::clone)
        })
    });
    let mut task = Locals::new();
    task.enter(|| {
        NAME.set(String::from("the task's name"));
        assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
        assert_eq!(NAME.with_borrow(Clone::clone), "scoped");
    });
    drop(task); // orphaned: the scope still pins it
    let others = churn();
    // Resumed in the thread's own block: that is what it reads now; the
    // scope's end puts the task's name back into the orphan, which dies.
    match co.resume(()) {
        CoroutineResult::Return(name) => assert_eq!(name, "fresh"),
        CoroutineResult::Yield(()) => panic!("the coroutine should have returned"),
    }
    assert_eq!(NAME.with_borrow(Clone::clone), "fresh");
    for (i, mut block) in others.into_iter().enumerate() {
        assert_eq!(block.enter(|| ID.get()), 900 + i as u32);
    }
}

/// The same with `scope_future`: the coroutine suspends in the middle of a
/// poll of the scoped future.
#[test]
fn a_scoped_poll_suspended_by_a_foreign_coroutine_outlives_its_dropped_block() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        let polled = std::future::poll_fn(|_| {
            let before = NAME.with_borrow(Clone::clone);
            y.suspend(());
            std::task::Poll::Ready((before, NAME.with_borrow(Clone::clone)))
        });
        let mut scoped = std::pin::pin!(NAME.scope_future(String::from("scoped"), polled));
        co_local_tests::poll_once(&mut scoped)
    });
    let mut task = Locals::new();
    task.enter(|| {
        NAME.set(String::from("the task's name"));
        assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
        assert_eq!(NAME.with_borrow(Clone::clone), "scoped");
    });
    drop(task);
    let others = churn();
    match co.resume(()) {
        CoroutineResult::Return(polled) => assert_eq!(
            polled,
            std::task::Poll::Ready((String::from("scoped"), String::from("fresh")))
        ),
        CoroutineResult::Yield(()) => panic!("the coroutine should have returned"),
    }
    assert_eq!(NAME.with_borrow(Clone::clone), "fresh");
    for (i, mut block) in others.into_iter().enumerate() {
        assert_eq!(block.enter(|| ID.get()), 900 + i as u32);
    }
}
