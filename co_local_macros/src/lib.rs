//! The procedural macro behind `co_local::co_local!`. Use that one: this
//! crate is an implementation detail, and its macro takes `co_local`'s
//! `$crate` as its first token (and refuses any other path).
//!
//! The macro parses (`parse.rs`), validates while parsing so that each error
//! points at the offending token, and emits (`expand.rs`) one call per
//! declaration of `co_local`'s `macro_rules!` helper `__private::declare!`,
//! which writes the `co_local::LocalKey` static and its entry in `co_local`'s
//! `linkme` distributed slice. The expansion of this macro has no `unsafe`:
//! the helper holds it, with paths of its own `$crate`.
//!
//! ```
//! use std::cell::Cell;
//!
//! co_local::co_local! {
//!     static DEPTH: Cell<u32> = const { Cell::new(0) };
//! }
//!
//! DEPTH.set(DEPTH.get() + 1);
//! assert_eq!(DEPTH.get(), 1);
//! ```

#![forbid(unsafe_code)]

mod expand;
mod parse;

use proc_macro::TokenStream;

/// Not public API: invoked by `co_local::co_local!` with its `$crate` first.
#[doc(hidden)]
#[proc_macro]
pub fn co_local(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as parse::Input);
    expand::expand(input).into()
}
