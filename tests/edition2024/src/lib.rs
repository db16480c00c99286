//! `co_local!` in an edition 2024 crate (where `#[link_section]` must be
//! written `#[unsafe(link_section)]`, and `unsafe_code` lints are stricter).
#![forbid(unsafe_code)]
#![deny(warnings)]

use std::cell::Cell;

co_local::co_local! {
    /// A counter declared in edition 2024.
    pub static COUNT_2024: Cell<u32> = const { Cell::new(2024) };
    /// A lazy value declared in edition 2024.
    pub static NAME_2024: String = String::from("twenty-twenty-four");
}

/// Bumps the current block's counter.
pub fn bump() -> u32 {
    COUNT_2024.set(COUNT_2024.get() + 1);
    COUNT_2024.get()
}
