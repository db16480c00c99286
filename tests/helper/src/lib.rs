//! A second crate of the workspace that declares coroutine-local values, so
//! the tests can check that declarations from every crate share one block.

use std::cell::{Cell, RefCell};

co_local::co_local! {
    /// A constant counter declared in another crate.
    pub static HELPER_COUNTER: Cell<u64> = const { Cell::new(100) };
    /// A lazy log declared in another crate.
    pub static HELPER_LOG: RefCell<Vec<String>> = RefCell::new(vec![String::from("helper")]);
}

/// Bumps the counter of the current block and returns the new value.
pub fn bump() -> u64 {
    HELPER_COUNTER.set(HELPER_COUNTER.get() + 1);
    HELPER_COUNTER.get()
}
