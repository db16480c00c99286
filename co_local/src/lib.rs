#![doc = include_str!("../../README.md")]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// `unsafe` lives in the `storage` folder alone.
#![deny(unsafe_code)]

mod error;
mod key;
mod locals;
mod raw;
mod registry;
mod scoped;
#[allow(unsafe_code)]
mod storage;
mod task;

#[cfg(feature = "corosensei")]
#[cfg_attr(docsrs, doc(cfg(feature = "corosensei")))]
pub mod corosensei;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;

#[doc(hidden)]
pub mod __private;

pub use crate::error::{AccessError, AccessErrorKind};
pub use crate::key::LocalKey;
pub use crate::locals::{Locals, SendLocals};
pub use crate::raw::RawBlock;
pub use crate::registry::Declaration;
pub use crate::scoped::{ScopeCell, Scoped};
pub use crate::storage::swap_current;
pub use crate::task::{LocalWithLocals, WithLocals};

/// Declares coroutine-local statics: one value per coroutine, and one per
/// thread for code outside every coroutine.
///
/// The grammar is that of [`std::thread_local!`]: any number of
/// `#[attrs] vis static NAME: TYPE = INIT;`, the last `;` optional. `INIT` is
/// either an expression, run lazily on the first access in each coroutine, or
/// `const { EXPR }`, a constant already in place in every block (no
/// initialisation check on access). Doc comments, `#[cfg]`, `#[allow]` and
/// visibility carry over. Each declaration becomes
/// `vis static NAME: co_local::LocalKey<TYPE>`.
///
/// `TYPE` must be `'static`, nothing else: not `Send`, not `Sync`.
///
/// One attribute is the macro's own:
///
/// - `#[inherit]`: every new coroutine, task and block made with
///   `inherit` ([`Locals::inherit`], [`SendLocals::inherit`],
///   [`WithLocals::new`], co_runtime's `Coroutine::new`) starts with a
///   `Clone` of this value as it is in the block current where it is made
///   (if it is alive there; a lazy value never made there stays unmade).
///   The type must be `Clone`.
/// - `#[inherit(with = path::to::function)]`: the same, but the new copy is
///   made by a `fn(&TYPE) -> TYPE` (a child span, a counter that starts
///   over), named by its path.
///
/// Values without it start fresh in every new block. A block that may move
/// between threads copies only values whose type is `Send`.
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
/// Values that follow the work into the blocks made from here:
///
/// ```
/// use std::cell::Cell;
/// use co_local::{co_local, Locals};
///
/// fn next_depth(parent: &Cell<u32>) -> Cell<u32> {
///     Cell::new(parent.get() + 1)
/// }
///
/// co_local! {
///     /// Copied as it is.
///     #[inherit]
///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
///     /// Copied one deeper.
///     #[inherit(with = next_depth)]
///     static DEPTH: Cell<u32> = const { Cell::new(0) };
///     /// Fresh in every block.
///     static RETRIES: Cell<u32> = const { Cell::new(0) };
/// }
///
/// REQUEST_ID.set(9);
/// RETRIES.set(2);
/// let mut child = Locals::inherit();
/// assert_eq!(child.enter(|| (REQUEST_ID.get(), DEPTH.get(), RETRIES.get())), (9, 1, 0));
/// let mut grandchild = child.enter(Locals::inherit);
/// assert_eq!(grandchild.enter(|| DEPTH.get()), 2);
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

/// From now on, code on the calling thread that runs outside every
/// coroutine, [`Locals`], [`SendLocals`] and task reaches no coroutine-local
/// value: [`try_with`](LocalKey::try_with) returns an [`AccessError`] of
/// kind [`ThreadValuesDenied`](AccessErrorKind::ThreadValuesDenied), and
/// the accessors that cannot fail panic, naming the static and saying to
/// give the task a block of its own.
///
/// For the worker threads of an executor: a task spawned without a block of
/// its own ([`WithLocals`], or the `tokio` feature's `co_local::tokio::spawn`)
/// would otherwise read and write the worker's own values, which every
/// other such task on that worker shares, and which a task made there would
/// inherit. With the workers denying their values, that mistake is a panic
/// in the task that made it. Tasks, coroutines and blocks made on such a
/// thread outside every block inherit nothing.
///
/// It holds from the call on, also where a scope entered before it would
/// put the thread's own block back, and costs nothing on the access path.
/// [`allow_thread_values`] undoes it.
///
/// With tokio, `on_thread_start` runs on the runtime's blocking threads too:
/// there, give each job a block of its own with the `tokio` feature's
/// `co_local::tokio::spawn_blocking` (or a [`SendLocals`]). A current-thread
/// runtime has no worker threads: its tasks run on the thread that calls
/// `block_on`, which would have to deny its values itself.
///
/// # Examples
///
/// A runtime whose workers refuse their own values to unwrapped tasks:
///
/// ```
/// use std::cell::Cell;
/// use co_local::{co_local, WithLocals};
///
/// co_local! {
///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
/// }
///
/// let runtime = tokio::runtime::Builder::new_multi_thread()
///     .worker_threads(2)
///     .on_thread_start(co_local::deny_thread_values)
///     .build()
///     .unwrap();
/// runtime.block_on(async {
///     // A task with a block of its own works...
///     let wrapped = tokio::spawn(WithLocals::new(async {
///         REQUEST_ID.set(42);
///         REQUEST_ID.get()
///     }));
///     assert_eq!(wrapped.await.unwrap(), 42);
///     // ...one without panics, instead of writing the worker's value.
///     let unwrapped = tokio::spawn(async { REQUEST_ID.set(42) });
///     assert!(unwrapped.await.unwrap_err().is_panic());
/// });
/// ```
pub fn deny_thread_values() {
    storage::deny_thread_values();
}

/// Undoes [`deny_thread_values`] on the calling thread: code outside every
/// block reaches the thread's own values again.
pub fn allow_thread_values() {
    storage::allow_thread_values();
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

/// The bytes one block takes: the header (40 bytes), every value with its
/// alignment padding, and, for each value that has a state byte (lazy
/// values, and `const {}` values whose type has a destructor), that byte and
/// a 4-byte link that keeps the order in which the block made its values
/// (they are destroyed in reverse). Each coroutine costs one block, allocated
/// once at creation (and recycled per thread).
pub fn block_size() -> usize {
    storage::layout().size()
}
