//! co_runtime with co_local, as a user sees them: values in and out of a
//! coroutine, and every coroutine with its own co_local values, however
//! coroutines are nested, interleaved or moved around.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use co_local::{co_local, Locals};
use co_local_test_helper::{bump, HELPER_COUNTER};
use co_runtime::{Coroutine, CoroutineResult, Yielder};

co_local! {
    /// Which coroutine this is (0: the thread's own block).
    static ID: Cell<u32> = const { Cell::new(0) };
    /// A lazy value, made on first access in each block.
    static LOG: RefCell<Vec<u32>> = RefCell::new(vec![ID.get()]);
}

#[test]
fn the_spec_example() {
    let mut co: Coroutine<u32, u32, String> =
        Coroutine::new(|y: &Yielder<u32, u32>, first: u32| {
            let second = y.suspend(first * 2);
            format!("{first} {second}")
        });
    assert!(matches!(co.resume(1), CoroutineResult::Yield(2)));
    assert!(matches!(co.resume(5), CoroutineResult::Return(ref s) if s == "1 5"));
}

#[test]
fn values_in_and_out() {
    let mut co = Coroutine::new(|y: &Yielder<String, usize>, first: String| {
        let mut seen = vec![first];
        loop {
            let next = y.suspend(seen.iter().map(String::len).sum());
            if next.is_empty() {
                return seen;
            }
            seen.push(next);
        }
    });
    assert!(!co.started() && !co.done());
    assert_eq!(co.resume("ab".into()), CoroutineResult::Yield(2));
    assert!(co.started() && !co.done());
    assert_eq!(co.resume("cde".into()), CoroutineResult::Yield(5));
    assert_eq!(co.resume("f".into()), CoroutineResult::Yield(6));
    assert_eq!(
        co.resume(String::new()),
        CoroutineResult::Return(vec!["ab".into(), "cde".into(), "f".into()])
    );
    assert!(co.started() && co.done());
}

#[test]
fn large_values_cross_the_switch() {
    let mut co = Coroutine::new(|y: &Yielder<[u64; 512], [u64; 512]>, input: [u64; 512]| {
        let mut input = input;
        for _ in 0..3 {
            input.iter_mut().for_each(|v| *v += 1);
            input = y.suspend(input);
        }
        Box::new(input)
    });
    let mut value = [7; 512];
    for _ in 0..3 {
        value = co.resume(value).as_yield().unwrap();
        assert!(value.iter().all(|&v| v == 8));
        value = [7; 512];
    }
    assert_eq!(*co.resume([1; 512]).as_return().unwrap(), [1; 512]);
}

#[test]
fn suspend_at_any_depth() {
    fn walk(y: &Yielder<(), u32>, depth: u32) {
        if depth > 0 {
            walk(y, depth - 1);
            y.suspend(depth);
        }
    }
    let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| walk(y, 5));
    let yielded: Vec<u32> = std::iter::from_fn(|| co.resume(()).as_yield()).collect();
    assert_eq!(yielded, [1, 2, 3, 4, 5]);
    assert!(co.done());
}

/// A coroutine that takes `id` as its `ID`, suspends `rounds` times and
/// checks after each resume that its values are still its own.
fn checker(id: u32, rounds: u32) -> Coroutine<(), u32, u32> {
    Coroutine::new(move |y: &Yielder<(), u32>, ()| {
        assert_eq!(ID.get(), 0, "a new coroutine starts with the constant");
        LOG.with_borrow(|log| assert_eq!(*log, [0], "made lazily in this block"));
        ID.set(id);
        for round in 0..rounds {
            LOG.with_borrow_mut(|log| log.push(round));
            y.suspend(ID.get());
            assert_eq!(ID.get(), id);
            LOG.with_borrow(|log| {
                assert_eq!(log.len() as u32, round + 2);
                assert_eq!(log.last(), Some(&round));
            });
        }
        ID.get()
    })
}

#[test]
fn each_coroutine_sees_its_own_values() {
    ID.set(1000);
    let mut a = checker(1, 2);
    let mut b = checker(2, 2);
    assert_eq!(a.resume(()), CoroutineResult::Yield(1));
    assert_eq!(ID.get(), 1000, "the thread's value is untouched");
    assert_eq!(b.resume(()), CoroutineResult::Yield(2));
    assert_eq!(a.resume(()), CoroutineResult::Yield(1));
    assert_eq!(b.resume(()), CoroutineResult::Yield(2));
    assert_eq!(b.resume(()), CoroutineResult::Return(2));
    assert_eq!(a.resume(()), CoroutineResult::Return(1));
    assert_eq!(ID.get(), 1000);
    LOG.with_borrow(|log| assert_eq!(*log, [1000]));
}

#[test]
fn hundreds_of_interleaved_coroutines() {
    const N: u32 = 500;
    const ROUNDS: u32 = 4;
    let mut all: Vec<_> = (1..=N).map(|id| checker(id, ROUNDS)).collect();
    for _ in 0..ROUNDS {
        for (id, co) in (1..=N).zip(&mut all) {
            assert_eq!(co.resume(()), CoroutineResult::Yield(id));
        }
        // In reverse order too: no coroutine depends on who ran before it.
        for (id, co) in (1..N + 1).zip(&mut all).rev() {
            assert_eq!(co.with_locals(|| ID.get()), Some(id));
        }
    }
    for (id, co) in (1..=N).zip(&mut all) {
        assert_eq!(co.resume(()), CoroutineResult::Return(id));
    }
    assert_eq!(ID.get(), 0);
}

#[test]
fn nested_coroutines_each_see_their_own_values() {
    let mut outer = Coroutine::new(|y: &Yielder<(), (u32, u32)>, ()| {
        ID.set(1);
        let mut middle = Coroutine::new(|y: &Yielder<(), u32>, ()| {
            ID.set(2);
            let mut inner = checker(3, 2);
            for _ in 0..2 {
                assert_eq!(inner.resume(()), CoroutineResult::Yield(3));
                assert_eq!(ID.get(), 2);
                y.suspend(ID.get());
                assert_eq!(ID.get(), 2);
            }
            assert_eq!(inner.resume(()), CoroutineResult::Return(3));
            ID.get()
        });
        while let CoroutineResult::Yield(middle_id) = middle.resume(()) {
            assert_eq!(ID.get(), 1);
            y.suspend((ID.get(), middle_id));
            assert_eq!(ID.get(), 1);
        }
        assert!(middle.done());
    });
    assert_eq!(outer.resume(()), CoroutineResult::Yield((1, 2)));
    assert_eq!(ID.get(), 0);
    assert_eq!(outer.resume(()), CoroutineResult::Yield((1, 2)));
    assert_eq!(outer.resume(()), CoroutineResult::Return(()));
    assert_eq!(ID.get(), 0);
}

#[test]
fn a_coroutine_made_in_another_runs_anywhere() {
    // The inner coroutine is made and started in `maker`, then handed out and
    // resumed from the thread's own stack: it has its own block wherever it
    // runs, and comes back to whoever resumed it.
    let mut maker = Coroutine::new(|y: &Yielder<(), Coroutine<(), u32, u32>>, ()| {
        ID.set(10);
        let mut inner = checker(11, 3);
        assert_eq!(inner.resume(()), CoroutineResult::Yield(11));
        assert_eq!(ID.get(), 10);
        y.suspend(inner);
        ID.get()
    });
    let mut inner = maker.resume(()).as_yield().unwrap();
    assert_eq!(inner.resume(()), CoroutineResult::Yield(11));
    assert_eq!(ID.get(), 0);
    assert_eq!(maker.resume(()).as_return(), Some(10));
    assert_eq!(inner.resume(()), CoroutineResult::Yield(11));
    assert_eq!(inner.resume(()), CoroutineResult::Return(11));
}

#[test]
fn references_from_with_stay_valid_while_suspended() {
    let make = |id: u32| {
        Coroutine::new(move |y: &Yielder<(), ()>, ()| {
            ID.set(id);
            LOG.with_borrow_mut(|log| log.push(id));
            LOG.with_borrow(|log| {
                let data = log.as_ptr();
                for _ in 0..3 {
                    y.suspend(());
                    // Same allocation, same contents, while the others pushed
                    // to their own logs.
                    assert_eq!(log.as_ptr(), data);
                    assert_eq!(*log, [id, id]);
                }
            });
            ID.with(|cell| {
                y.suspend(());
                assert_eq!(cell.get(), id);
                cell.set(id * 2);
            });
            assert_eq!(ID.get(), id * 2);
            // Now the log can grow again.
            LOG.with_borrow_mut(|log| log.push(id));
        })
    };
    let mut all: Vec<_> = (1..=20).map(make).collect();
    let others = Coroutine::new(|y: &Yielder<(), ()>, ()| loop {
        LOG.with_borrow_mut(|log| log.extend(0..100));
        y.suspend(());
    });
    let mut others = Some(others);
    while all.iter().any(|co| !co.done()) {
        for co in all.iter_mut().filter(|co| !co.done()) {
            co.resume(());
            others.as_mut().unwrap().resume(());
            LOG.with_borrow_mut(|log| log.push(999));
        }
    }
    assert!(all.iter_mut().all(|co| co.with_locals(|| ()).is_none()));
    drop(others.take());
    LOG.with_borrow(|log| assert!(log.iter().all(|&v| v == 0 || v == 999)));
}

#[test]
fn a_nested_locals_is_current_again_on_resume() {
    let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| {
        ID.set(1);
        let mut other = Locals::new();
        other.enter(|| {
            ID.set(2);
            y.suspend(ID.get());
            assert_eq!(ID.get(), 2, "the entered block is current again");
            y.suspend(ID.get());
            assert_eq!(ID.get(), 2);
        });
        assert_eq!(ID.get(), 1, "and leaving it gives the coroutine's own");
        y.suspend(ID.get());
        other.enter(|| ID.get())
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(2));
    assert_eq!(ID.get(), 0);
    // `with_locals` reaches the coroutine's own block, not the entered one.
    assert_eq!(co.with_locals(|| ID.get()), Some(1));
    assert_eq!(co.resume(()), CoroutineResult::Yield(2));
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert_eq!(co.resume(()), CoroutineResult::Return(2));
    assert_eq!(ID.get(), 0);
}

#[test]
fn the_resumers_block_is_current_again_after_each_switch() {
    let mut co = checker(5, 3);
    let mut mine = Locals::new();
    mine.enter(|| {
        ID.set(50);
        assert_eq!(co.resume(()), CoroutineResult::Yield(5));
        assert_eq!(ID.get(), 50);
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(5));
    assert_eq!(ID.get(), 0);
    mine.enter(|| {
        assert_eq!(co.resume(()), CoroutineResult::Yield(5));
        assert_eq!(ID.get(), 50);
        assert_eq!(co.resume(()), CoroutineResult::Return(5));
        assert_eq!(ID.get(), 50);
    });
}

#[test]
fn with_locals_seeds_reads_and_ends() {
    let started = Rc::new(Cell::new(false));
    let flag = started.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        flag.set(true);
        assert_eq!(ID.get(), 42, "seeded before the first resume");
        LOG.with_borrow(|log| assert_eq!(*log, [7], "made by with_locals"));
        ID.set(43);
        y.suspend(());
        assert_eq!(ID.get(), 44, "changed while suspended");
    });
    assert_eq!(co.with_locals(|| ID.set(42)), Some(()));
    // A lazy value made from `with_locals` is made in the coroutine's block.
    co.with_locals(|| LOG.with_borrow_mut(|log| *log = vec![7]));
    assert!(!started.get(), "with_locals does not start the coroutine");
    assert!(!co.started());
    assert_eq!(ID.get(), 0);
    LOG.with_borrow(|log| assert_eq!(*log, [0]));

    co.resume(());
    assert_eq!(co.with_locals(|| ID.replace(44)), Some(43));
    assert_eq!(co.resume(()), CoroutineResult::Return(()));
    assert_eq!(co.with_locals(|| ID.get()), None);
    assert_eq!(ID.get(), 0);
}

#[test]
fn with_locals_restores_the_block_when_it_panics() {
    let mut co = checker(9, 1);
    co.with_locals(|| ID.set(9));
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        co.with_locals(|| {
            assert_eq!(ID.get(), 9);
            panic::resume_unwind(Box::new("in with_locals"));
        })
    }));
    assert!(result.is_err());
    assert_eq!(ID.get(), 0, "the thread's block is current again");
    // The coroutine's block kept its value; `checker` wants to start at 0.
    assert_eq!(co.with_locals(|| ID.replace(0)), Some(9));
    assert_eq!(co.resume(()), CoroutineResult::Yield(9));
}

#[test]
fn declarations_of_another_crate_are_per_coroutine_too() {
    let make = || {
        Coroutine::new(|y: &Yielder<(), u64>, ()| {
            assert_eq!(HELPER_COUNTER.get(), 100);
            y.suspend(bump());
            bump()
        })
    };
    let mut a = make();
    let mut b = make();
    assert_eq!(a.resume(()), CoroutineResult::Yield(101));
    assert_eq!(b.resume(()), CoroutineResult::Yield(101));
    assert_eq!(HELPER_COUNTER.get(), 100);
    assert_eq!(a.resume(()), CoroutineResult::Return(102));
    assert_eq!(b.resume(()), CoroutineResult::Return(102));
}

#[test]
fn debug_output_shows_the_state() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| y.suspend(()));
    let text = format!("{co:?}");
    assert!(
        text.contains("started: false") && text.contains("done: false"),
        "{text}"
    );
    co.resume(());
    co.resume(());
    let text = format!("{co:?}");
    assert!(
        text.contains("started: true") && text.contains("done: true"),
        "{text}"
    );
}

#[test]
fn values_crossing_a_switch_are_dropped_exactly_once() {
    /// Counts live values of itself.
    struct Counted(Rc<Cell<i32>>);
    impl Counted {
        fn new(live: &Rc<Cell<i32>>) -> Counted {
            live.set(live.get() + 1);
            Counted(live.clone())
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    type Co = Coroutine<Counted, Counted, Counted>;
    let live = Rc::new(Cell::new(0));
    let make = |live: &Rc<Cell<i32>>| -> Co {
        let live = live.clone();
        Coroutine::new(move |y: &Yielder<Counted, Counted>, first: Counted| {
            drop(first);
            let second = y.suspend(Counted::new(&live));
            let _third = y.suspend(second);
            Counted::new(&live)
        })
    };
    // Runs to the end; results are dropped by the caller.
    let mut co = make(&live);
    for _ in 0..3 {
        let result = co.resume(Counted::new(&live));
        assert!(live.get() >= 1);
        drop(result);
    }
    assert_eq!(live.get(), 0);
    // Dropped suspended while holding an input, and before it starts.
    let mut co = make(&live);
    drop(co.resume(Counted::new(&live)));
    drop(co.resume(Counted::new(&live)));
    drop(co);
    drop(make(&live));
    assert_eq!(live.get(), 0);
}
