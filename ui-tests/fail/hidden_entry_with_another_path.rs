// The macro behind `co_local!` is not public API. Given another path than
// co_local's own `$crate`, here a module with a registry of its own, it
// refuses to expand: a key paired with a declaration outside co_local's
// registry would read outside its block.

#![allow(unused_imports)]

use std::cell::Cell;

mod spoof {
    pub use co_local::LocalKey;

    pub mod __private {
        pub use co_local::__private::*;

        #[co_local::__private::linkme::distributed_slice]
        #[linkme(crate = co_local::__private::linkme)]
        pub static DECLARATIONS: [co_local::Declaration];
    }
}

co_local::__private::co_local_impl! {
    spoof
    static X: Cell<u64> = const { Cell::new(0) };
}

fn main() {}
