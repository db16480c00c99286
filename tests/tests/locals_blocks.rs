//! Blocks as a user of any runtime sees them: isolation, nesting, restore on
//! panic, lazy and constant initialisation, and declarations from two crates.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

use co_local::{co_local, Locals};
use co_local_test_helper::{HELPER_COUNTER, HELPER_LOG};

co_local! {
    static CONST_COUNTER: Cell<u64> = const { Cell::new(7) };
    static LAZY_COUNTER: Cell<u64> = Cell::new(lazy_init());
    static NAMES: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
}

std::thread_local! {
    static INIT_RUNS: Cell<u32> = const { Cell::new(0) };
}

fn lazy_init() -> u64 {
    INIT_RUNS.set(INIT_RUNS.get() + 1);
    1000
}

#[test]
fn blocks_are_isolated() {
    let mut a = Locals::new();
    let mut b = Locals::new();
    a.enter(|| CONST_COUNTER.set(1));
    b.enter(|| CONST_COUNTER.set(2));
    CONST_COUNTER.set(3);
    assert_eq!(a.enter(|| CONST_COUNTER.get()), 1);
    assert_eq!(b.enter(|| CONST_COUNTER.get()), 2);
    assert_eq!(CONST_COUNTER.get(), 3);
    a.enter(|| NAMES.with_borrow_mut(|n| n.push("a")));
    assert_eq!(b.enter(|| NAMES.with_borrow(Vec::len)), 0);
    assert_eq!(a.enter(|| NAMES.take()), ["a"]);
}

#[test]
fn enter_nests_and_restores() {
    let mut outer = Locals::new();
    let mut inner = Locals::new();
    CONST_COUNTER.set(10);
    outer.enter(|| {
        CONST_COUNTER.set(20);
        inner.enter(|| {
            assert_eq!(CONST_COUNTER.get(), 7, "a fresh block has the constant");
            CONST_COUNTER.set(30);
        });
        assert_eq!(CONST_COUNTER.get(), 20);
    });
    assert_eq!(CONST_COUNTER.get(), 10);
    assert_eq!(inner.enter(|| CONST_COUNTER.get()), 30);
}

#[test]
fn enter_restores_the_previous_block_on_panic() {
    let mut block = Locals::new();
    CONST_COUNTER.set(1);
    let result = catch_unwind(AssertUnwindSafe(|| {
        block.enter(|| {
            CONST_COUNTER.set(2);
            panic!("boom");
        })
    }));
    assert!(result.is_err());
    assert_eq!(
        CONST_COUNTER.get(),
        1,
        "the thread's block is current again"
    );
    assert_eq!(block.enter(|| CONST_COUNTER.get()), 2);
}

#[test]
fn lazy_initialiser_runs_once_per_block_on_first_access() {
    let before = INIT_RUNS.get();
    let mut blocks: Vec<Locals> = (0..5).map(|_| Locals::new()).collect();
    assert_eq!(INIT_RUNS.get(), before, "making blocks runs no initialiser");
    for (i, block) in blocks.iter_mut().enumerate() {
        block.enter(|| {
            assert_eq!(LAZY_COUNTER.get(), 1000);
            LAZY_COUNTER.set(i as u64);
            assert_eq!(LAZY_COUNTER.get(), i as u64);
        });
    }
    assert_eq!(INIT_RUNS.get(), before + 5);
    for (i, block) in blocks.iter_mut().enumerate() {
        assert_eq!(block.enter(|| LAZY_COUNTER.get()), i as u64);
    }
    assert_eq!(INIT_RUNS.get(), before + 5, "no second initialisation");
}

#[test]
fn set_on_a_lazy_cell_skips_the_initialiser() {
    let before = INIT_RUNS.get();
    let mut block = Locals::new();
    block.enter(|| {
        LAZY_COUNTER.set(5);
        assert_eq!(LAZY_COUNTER.get(), 5);
    });
    assert_eq!(INIT_RUNS.get(), before);
}

#[test]
fn declarations_from_another_crate_share_the_blocks() {
    let mut a = Locals::new();
    let mut b = Locals::new();
    assert_eq!(a.enter(co_local_test_helper::bump), 101);
    assert_eq!(a.enter(co_local_test_helper::bump), 102);
    assert_eq!(b.enter(co_local_test_helper::bump), 101);
    a.enter(|| HELPER_LOG.with_borrow_mut(|log| log.push("a".into())));
    assert_eq!(b.enter(|| HELPER_LOG.with_borrow(Vec::len)), 1);
    assert_eq!(a.enter(|| HELPER_LOG.with_borrow(Vec::len)), 2);
    assert_eq!(a.enter(|| HELPER_COUNTER.get()), 102);
    let names: Vec<_> = co_local::declarations().iter().map(|d| d.name()).collect();
    for name in [
        "HELPER_COUNTER",
        "HELPER_LOG",
        "CONST_COUNTER",
        "LAZY_COUNTER",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

#[test]
fn rust_accessors_match_std() {
    let mut block = Locals::new();
    block.enter(|| {
        assert_eq!(CONST_COUNTER.replace(9), 7);
        assert_eq!(CONST_COUNTER.take(), 9);
        assert_eq!(CONST_COUNTER.get(), 0);
        NAMES.set(vec!["x"]);
        assert_eq!(NAMES.replace(vec!["y"]), ["x"]);
        NAMES.with_borrow_mut(|n| n.push("z"));
        assert_eq!(NAMES.with_borrow(Clone::clone), ["y", "z"]);
        assert_eq!(NAMES.try_with(|n| n.borrow().len()), Ok(2));
    });
}

#[test]
fn a_recycled_block_is_as_good_as_new() {
    let before = INIT_RUNS.get();
    for round in 0..200u64 {
        let mut block = Locals::new();
        block.enter(|| {
            assert_eq!(CONST_COUNTER.get(), 7, "round {round}: constant reset");
            assert!(
                NAMES.with_borrow(Vec::is_empty),
                "round {round}: lazy remade"
            );
            assert_eq!(LAZY_COUNTER.get(), 1000, "round {round}: initialiser ran");
            CONST_COUNTER.set(round);
            LAZY_COUNTER.set(round);
            NAMES.with_borrow_mut(|n| n.push("used"));
        });
    }
    assert_eq!(
        INIT_RUNS.get(),
        before + 200,
        "one initialisation per block"
    );
}

#[test]
fn keys_are_unwind_safe_like_std() {
    // As with std's `LocalKey`, a reference to a key may cross `catch_unwind`.
    let key = &CONST_COUNTER;
    let got = std::panic::catch_unwind(|| key.get());
    assert_eq!(got.ok(), Some(CONST_COUNTER.get()));
    fn assert_unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>(_: &T) {}
    assert_unwind_safe(&NAMES);
}
