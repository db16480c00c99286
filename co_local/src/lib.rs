//! Coroutine-local variables: [`co_local!`] is to stackful coroutines what
//! [`std::thread_local!`] is to threads.
//!
//! Declare statics anywhere in the program; every coroutine sees its own copy
//! of each, and code outside every coroutine sees its thread's own copy.
//!
//! ```
//! use std::cell::Cell;
//! use co_local::{co_local, Locals};
//!
//! co_local! {
//!     /// The monitor executing the current command, if any.
//!     pub static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
//! }
//!
//! // Outside every coroutine: the thread's own copy.
//! assert_eq!(CUR_MON.get(), None);
//!
//! // A block is what each coroutine gets; `co_runtime` makes one per
//! // coroutine and makes it current while the coroutine runs.
//! let mut command = Locals::new();
//! command.enter(|| CUR_MON.set(Some(1)));
//!
//! assert_eq!(CUR_MON.get(), None);
//! assert_eq!(command.enter(|| CUR_MON.get()), Some(1));
//! ```
//!
//! # How it works
//!
//! 1. **Registry.** Each declaration registers a [`Declaration`] in a
//!    [`linkme`] distributed slice, so declarations from every crate of the
//!    binary are collected at link time: no registration call, no key limit.
//! 2. **Layout.** On first use, the registry is laid out once, like
//!    `.tdata`/`.tbss` for `__thread`: an offset per value, a template image
//!    holding the constants, one state byte per lazy value (right after it).
//! 3. **Blocks.** Each coroutine gets a block at creation: a copy of the
//!    template ([`Locals`]). Lazy values are made on first access.
//! 4. **One pointer.** A thread-local pointer names the current block; a
//!    runtime swaps that pointer on each switch ([`swap_current`]) and
//!    nothing else, whatever the number of variables.
//!
//! An access reads the pointer, adds the variable's offset and, for a lazy
//! value, checks its state byte: no hash, no lock, no atomic
//! read-modify-write.
//!
//! # For runtime authors
//!
//! Give each task a [`Locals`]. A runtime that runs tasks to completion, or
//! polls them, can simply [`Locals::enter`] the task's block around each run.
//! A stackful runtime switches stacks in the middle of a call, so it uses the
//! low-level primitive [`swap_current`] around each context switch, and saves
//! what the coroutine had current when it suspended (see its docs).
//!
//! # Introspection
//!
//! [`declarations()`] lists every declaration linked into the binary and
//! [`block_size()`] says what each coroutine's block costs.

#![deny(missing_docs)]

mod key;
mod locals;
mod registry;
mod storage;

#[doc(hidden)]
pub mod __private;

pub use crate::key::{AccessError, LocalKey};
pub use crate::locals::Locals;
pub use crate::registry::Declaration;
pub use crate::storage::{swap_current, RawBlock};

/// Declares coroutine-local statics: one value per coroutine, and one per
/// thread for code outside every coroutine.
///
/// The grammar is that of [`std::thread_local!`]: any number of
/// `#[attrs] vis static NAME: TYPE = INIT;`, the last `;` optional. `INIT` is
/// either an expression, run lazily on the first access in each coroutine, or
/// `const { EXPR }`, a constant already in place in every block (no
/// initialisation check on access). Doc comments, `#[cfg]`, `#[allow]` and visibility carry
/// over. Each declaration becomes `vis static NAME: co_local::LocalKey<TYPE>`.
///
/// `TYPE` must be `'static`, nothing else: not `Send`, not `Sync`.
///
/// # Examples
///
/// ```
/// use std::cell::{Cell, RefCell};
/// use co_local::co_local;
///
/// co_local! {
///     /// The monitor executing the current command, if any.
///     pub static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
///     static LOG: RefCell<Vec<String>> = RefCell::new(Vec::new());
/// }
///
/// CUR_MON.set(Some(3));
/// LOG.with_borrow_mut(|log| log.push(format!("monitor {:?}", CUR_MON.get())));
/// assert_eq!(LOG.with_borrow(|log| log.len()), 1);
/// ```
///
/// Mistakes are compile errors that point at the offending token; the
/// `ui-tests/` folder of the repository holds one case per error.
#[macro_export]
macro_rules! co_local {
    ($($tokens:tt)*) => {
        $crate::__private::co_local_impl! { $crate $($tokens)* }
    };
}

/// Every `co_local!` declaration linked into this binary, from any crate.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
///
/// co_local::co_local! {
///     static HITS: Cell<u32> = const { Cell::new(0) };
/// }
///
/// let decl = co_local::declarations()
///     .iter()
///     .find(|d| d.name() == "HITS")
///     .unwrap();
/// assert_eq!(decl.type_name(), "core::cell::Cell<u32>");
/// # let _ = &HITS;
/// ```
pub fn declarations() -> &'static [Declaration] {
    storage::registry()
}

/// The bytes one block takes: the header, every value with its alignment
/// padding, and one state byte per lazy value. Each coroutine costs one
/// block, allocated once at creation (and recycled per thread).
pub fn block_size() -> usize {
    storage::layout().size()
}
