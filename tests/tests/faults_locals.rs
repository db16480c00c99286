//! Faults in user code that runs inside co_local: panicking initialisers and
//! destructors. Each has a documented outcome; none is UB or a leak.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use co_local::{co_local, Locals};

std::thread_local! {
    static FAIL_INIT: Cell<bool> = const { Cell::new(true) };
    static INIT_CALLS: Cell<u32> = const { Cell::new(0) };
}

co_local! {
    static FLAKY: Cell<u32> = {
        INIT_CALLS.set(INIT_CALLS.get() + 1);
        if FAIL_INIT.get() {
            panic!("initialiser failed");
        }
        Cell::new(42)
    };
}

#[test]
fn a_panicking_initialiser_leaves_the_value_unmade_and_the_next_access_retries() {
    let mut block = Locals::new();
    FAIL_INIT.set(true);
    INIT_CALLS.set(0);
    let err = catch_unwind(AssertUnwindSafe(|| block.enter(|| FLAKY.get()))).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"initialiser failed"));
    // `try_with` does not turn the initialiser's panic into an error either.
    assert!(catch_unwind(AssertUnwindSafe(|| block.enter(|| FLAKY.try_with(|_| ())))).is_err());
    assert_eq!(INIT_CALLS.get(), 2);
    FAIL_INIT.set(false);
    assert_eq!(
        block.enter(|| FLAKY.get()),
        42,
        "the next access tries again"
    );
    assert_eq!(block.enter(|| FLAKY.get()), 42);
    assert_eq!(INIT_CALLS.get(), 3, "and the value is made once");
}

struct Bomb {
    explode: bool,
    drops: Rc<Cell<u32>>,
}
impl Drop for Bomb {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
        if self.explode {
            panic!("destructor failed");
        }
    }
}

co_local! {
    static BOMB_A: RefCell<Option<Bomb>> = RefCell::new(None);
    static BOMB_B: RefCell<Option<Bomb>> = RefCell::new(None);
    static BOMB_C: RefCell<Option<Bomb>> = const { RefCell::new(None) };
}

#[test]
fn a_panicking_destructor_does_not_stop_the_others_and_its_panic_comes_out_of_drop() {
    let drops = Rc::new(Cell::new(0));
    let mut block = Locals::new();
    block.enter(|| {
        BOMB_A.set(Some(Bomb {
            explode: true,
            drops: drops.clone(),
        }));
        BOMB_B.set(Some(Bomb {
            explode: false,
            drops: drops.clone(),
        }));
        BOMB_C.set(Some(Bomb {
            explode: true,
            drops: drops.clone(),
        }));
    });
    let err = catch_unwind(AssertUnwindSafe(|| drop(block))).unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"destructor failed"));
    assert_eq!(drops.get(), 3, "every value was dropped, once");

    // The block's memory went back to the pool in a clean state: a new block
    // starts fresh.
    let mut block = Locals::new();
    assert!(block.enter(|| BOMB_A.with_borrow(Option::is_none)));
    assert!(block.enter(|| BOMB_C.with_borrow(Option::is_none)));
}

#[test]
fn a_panicking_destructor_while_already_unwinding_does_not_abort() {
    let drops = Rc::new(Cell::new(0));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut block = Locals::new();
        block.enter(|| {
            BOMB_A.set(Some(Bomb {
                explode: true,
                drops: drops.clone(),
            }))
        });
        panic!("first panic");
    }));
    // The block was dropped during unwinding; its destructor's panic was
    // reported by the panic hook and not resumed (that would abort).
    assert_eq!(
        result.unwrap_err().downcast_ref::<&str>(),
        Some(&"first panic")
    );
    assert_eq!(drops.get(), 1);
}
