//! The two values the soundness tests next to foreign coroutines look at,
//! declared once for each test binary that includes this module.

use std::cell::{Cell, RefCell};

use co_local::{co_local, Locals};

co_local! {
    pub static ID: Cell<u32> = const { Cell::new(0) };
    pub static NAME: RefCell<String> = RefCell::new(String::from("fresh"));
}

/// `co_local_tests::churn` writing both values into each of its blocks.
pub fn churn() -> Vec<Locals> {
    co_local_tests::churn(|i| {
        ID.set(900 + i);
        NAME.set(format!("churn {i:>4}"));
    })
}
