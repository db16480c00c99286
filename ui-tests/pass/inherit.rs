//! `#[inherit]` with `Clone` and with a `with` function, among other
//! attributes; a new block starts with the copies.

#![deny(warnings)]

use std::cell::{Cell, RefCell};

/// A span id: the child gets the next one.
fn child_span(parent: &Cell<u64>) -> Cell<u64> {
    Cell::new(parent.get() + 1)
}

co_local::co_local! {
    /// The request being served.
    #[inherit]
    pub static REQUEST: RefCell<String> = RefCell::new(String::new());
    #[allow(dead_code)]
    #[inherit(with = child_span)]
    static SPAN: Cell<u64> = const { Cell::new(1) };
    #[inherit(with = crate::child_span)]
    static OTHER_SPAN: Cell<u64> = const { Cell::new(10) };
    static FRESH: Cell<u32> = const { Cell::new(0) };
}

fn main() {
    REQUEST.set(String::from("GET /"));
    FRESH.set(5);
    let mut child = co_local::Locals::inherit();
    child.enter(|| {
        assert_eq!(REQUEST.with_borrow(Clone::clone), "GET /");
        assert_eq!(SPAN.get(), 2);
        assert_eq!(OTHER_SPAN.get(), 11);
        assert_eq!(FRESH.get(), 0);
    });
    assert!(REQUEST.declaration().inherits());
    assert!(!FRESH.declaration().inherits());
}
