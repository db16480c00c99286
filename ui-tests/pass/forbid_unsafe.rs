//! A crate that forbids `unsafe` code declares and uses coroutine-local
//! values: the expansion's own `unsafe` (pairing each key with its
//! registered declaration) is co_local's, not the user's.

#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};

co_local::co_local! {
    static COUNT: Cell<u32> = const { Cell::new(0) };
    static NAMES: RefCell<Vec<String>> = RefCell::new(Vec::new());
    static SHARED: RefCell<Option<std::rc::Rc<str>>> = const { RefCell::new(None) };
}

fn main() {
    COUNT.set(COUNT.get() + 1);
    NAMES.with_borrow_mut(|names| names.push(String::from("one")));
    let mut block = co_local::Locals::new();
    block.enter(|| assert_eq!(COUNT.get(), 0));
    assert_eq!(COUNT.get(), 1);
    assert_eq!(NAMES.with_borrow(|names| names.len()), 1);
    assert!(COUNT.declaration().is_send());
    assert!(!SHARED.declaration().is_send());
    let mut task = co_local::WithLocals::new(std::future::ready(()));
    task.with_locals(|| assert!(SHARED.try_with(|_| ()).is_err()));
}
