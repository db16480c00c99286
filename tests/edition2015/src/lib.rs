//! `co_local!` in an edition 2015 crate: the expansion must not rely on 2018
//! paths (`::core`, the extern prelude).
#![deny(warnings)]

#[macro_use]
extern crate co_local;

use std::cell::Cell;

co_local! {
    /// A counter declared in edition 2015.
    pub static COUNT_2015: Cell<u32> = const { Cell::new(2015) };
}

pub mod nested {
    //! A declaration below the crate root, through the macro's path.
    co_local::co_local! {
        /// A lazy value declared in a 2015 submodule.
        pub static NAME_2015: String = String::from("twenty-fifteen");
    }
}

/// Bumps the current block's counter.
pub fn bump() -> u32 {
    COUNT_2015.set(COUNT_2015.get() + 1);
    COUNT_2015.get()
}
