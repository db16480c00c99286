//! A crate that passes its own `$crate` to the macro behind `co_local!` and
//! re-exports co_local's helper beside a registry of its own still gets a
//! sound static: the helper names co_local's registry through its own
//! `$crate`, so the declaration lands there and is laid out.

#![forbid(unsafe_code)]

use std::cell::Cell;

mod __private {
    pub use co_local::__private::{declare, not_inherited};
    pub use OWN_REGISTRY as DECLARATIONS;

    #[co_local::__private::linkme::distributed_slice]
    #[linkme(crate = co_local::__private::linkme)]
    pub static OWN_REGISTRY: [co_local::Declaration];
}

macro_rules! local_co_local {
    ($($tokens:tt)*) => {
        co_local::__private::co_local_impl! { $crate $($tokens)* }
    };
}

local_co_local! {
    static X: Cell<u64> = const { Cell::new(5) };
}

fn main() {
    X.set(X.get() + 1);
    assert_eq!(X.get(), 6);
    let mut block = co_local::Locals::new();
    assert_eq!(block.enter(|| X.get()), 5);
    assert!(co_local::declarations().iter().any(|d| std::ptr::eq(d, X.declaration())));
    assert!(__private::DECLARATIONS.is_empty());
}
