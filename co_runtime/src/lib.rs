//! A minimal stackful coroutine runtime on [`context`] (Boost.Context's
//! switch), with [`co_local`] values per coroutine.
//!
//! The API is corosensei's: a [`Coroutine`] runs a closure on its own stack;
//! the closure suspends itself with its [`Yielder`], handing a value out of
//! [`Coroutine::resume`] and getting the next input back.
//!
//! ```
//! use co_runtime::{Coroutine, CoroutineResult, Yielder};
//!
//! let mut co: Coroutine<u32, u32, String> = Coroutine::new(|y: &Yielder<u32, u32>, first: u32| {
//!     let second = y.suspend(first * 2); // hands 2*first out of resume, gets the next input
//!     format!("{first} {second}")
//! });
//! assert!(matches!(co.resume(1), CoroutineResult::Yield(2)));
//! assert!(matches!(co.resume(5), CoroutineResult::Return(ref s) if s == "1 5"));
//! ```
//!
//! # Coroutine-local values
//!
//! Every coroutine owns a [`co_local::Locals`] block, made when the coroutine
//! is made: while it runs, each [`co_local!`](co_local::co_local) static
//! reaches the coroutine's own copy; outside every coroutine, the thread's
//! own copy.
//!
//! ```
//! use std::cell::Cell;
//! use co_runtime::{Coroutine, Yielder};
//!
//! co_local::co_local! {
//!     /// The monitor executing the current command, if any.
//!     static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
//! }
//!
//! let command = |y: &Yielder<(), ()>, ()| {
//!     let mine = CUR_MON.get();
//!     y.suspend(()); // other commands run meanwhile
//!     assert_eq!(CUR_MON.get(), mine);
//! };
//! let mut a = Coroutine::new(command);
//! let mut b = Coroutine::new(command);
//! a.with_locals(|| CUR_MON.set(Some(1)));
//! b.with_locals(|| CUR_MON.set(Some(2)));
//! a.resume(());
//! b.resume(());
//! a.resume(());
//! b.resume(());
//! assert!(a.done() && b.done());
//! assert_eq!(CUR_MON.get(), None);
//! ```
//!
//! Switching costs the context switch plus one pointer swapped each way
//! ([`co_local::swap_current`]): no allocation, no lock, no hash lookup, no
//! work per variable.
//!
//! # Stacks
//!
//! Each coroutine runs on a stack with a guard page
//! ([`ProtectedFixedSizeStack`] from `context`) of [`DEFAULT_STACK_SIZE`]
//! bytes, or as set with [`Coroutine::with_stack_size`]. A stack overflow hits
//! the guard page, and co_runtime prints "coroutine stack overflow" with the
//! fault address and the stack's bounds and size before aborting, as std does
//! for a thread's overflow.
//! Finished coroutines give their stacks to a bounded per-thread pool
//! ([`STACK_POOL_CAPACITY`] stacks, [`STACK_POOL_MAX_BYTES`] bytes), where new
//! coroutines of the same size take them: in steady state, making a coroutine
//! maps and unmaps nothing. [`stack_stats`] shows the pool at work.
//!
//! **Signal handlers.** To recognise the overflow, the first
//! [`Coroutine::new`] installs a process-wide `SIGSEGV` and `SIGBUS` handler
//! (with `SA_ONSTACK`, on the alternate signal stack std gives its threads).
//! It handles only faults in the guard page of the running coroutine's stack
//! and passes every other fault to the handler that was installed before it
//! (std's, which reports thread overflows), or to the default action. A
//! program that installs its own handlers for these signals (a JVM, a wasm
//! runtime, a sanitizer) should install them after its first coroutine, and
//! chain to the previous one likewise.
//!
//! **Its own coroutine-local value.** co_runtime finds the running
//! coroutine's stack bounds in a `co_local!` static of its own, set once per
//! coroutine, so a switch does nothing for it: every block (also plain
//! [`co_local::Locals`]) is 24 bytes larger in a program that links
//! co_runtime, and [`co_local::declarations`] lists it (`STACK_BOUNDS`).
//!
//! # Panics
//!
//! A panic in a coroutine is caught on its stack and comes out of
//! [`Coroutine::resume`] with its original payload; the coroutine is then
//! done. Dropping a suspended coroutine unwinds its stack (see [`Coroutine`]).
//!
//! # Threads
//!
//! [`Coroutine`] and [`Yielder`] are neither `Send` nor `Sync`: a coroutine
//! runs on the thread that made it.
//!
//! [`context`]: https://docs.rs/context/3.0.0/context/
//! [`ProtectedFixedSizeStack`]: https://docs.rs/context/3.0.0/context/stack/struct.ProtectedFixedSizeStack.html

#![deny(missing_docs)]

mod coroutine;
mod raw;
mod stack;

pub use crate::coroutine::{Coroutine, CoroutineResult, Yielder};
pub use crate::stack::{
    stack_stats, StackStats, DEFAULT_STACK_SIZE, STACK_POOL_CAPACITY, STACK_POOL_MAX_BYTES,
};
