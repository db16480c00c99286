//! [`Locals`]: one block of every declared coroutine-local value; and
//! [`SendLocals`], one that may move between threads.

use core::fmt;

use crate::raw::RawBlock;
use crate::storage::{self, Block, TaskBlock};

/// One block of coroutine-local storage: a copy of every value declared with
/// [`co_local!`](crate::co_local) in the binary.
///
/// A coroutine runtime gives each coroutine one `Locals` (`co_runtime` does),
/// and makes it current while the coroutine runs. Any other runtime can do
/// the same: hold one `Locals` per task, and
///
/// - for a stackful coroutine of another library (corosensei, generator, a
///   fiber), wrap each switch into it in [`resume`](Locals::resume):
///   `locals.resume(|| co.resume(input))`. The coroutine may suspend in the
///   middle of an `enter` of its own, or inside a `with`; `resume` remembers
///   what it left current and gives it back on the next switch;
/// - for code that runs to completion without switching stacks (a callback,
///   a poll of a future that does not hold references across `.await`),
///   [`enter`](Locals::enter) is enough.
///
/// Making a block costs one allocation and a copy of the template (constants
/// in place, lazy values marked not made); see
/// [`block_size`](crate::block_size). Dropping it destroys the values that
/// were made, with the block current, as described on [`LocalKey`](crate::LocalKey).
///
/// `Locals` is neither `Send` nor `Sync`: its values belong to the thread that
/// made it.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use co_local::{co_local, Locals};
///
/// co_local! {
///     static LOG: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
/// }
///
/// let mut a = Locals::new();
/// let mut b = Locals::new();
/// a.enter(|| LOG.with_borrow_mut(|log| log.push("a")));
/// b.enter(|| {
///     LOG.with_borrow_mut(|log| log.push("b"));
///     // Blocks nest: entering `a` inside `b` reaches `a`'s values.
///     a.enter(|| LOG.with_borrow(|log| assert_eq!(*log, ["a"])));
///     LOG.with_borrow(|log| assert_eq!(*log, ["b"]));
/// });
/// ```
pub struct Locals {
    block: Block,
}

impl Locals {
    /// Makes a block: every constant in place, every lazy value not made yet.
    pub fn new() -> Locals {
        Locals {
            block: Block::new(),
        }
    }

    /// Makes a block that starts with a copy of each `#[inherit]` value
    /// alive in the block current now (the running coroutine's, or the
    /// thread's own outside every coroutine); every other value starts as in
    /// [`Locals::new`]. A lazy value never made in the current block stays
    /// unmade in the new one.
    ///
    /// The copies (`Clone`, or the declaration's `with` function) run now,
    /// with the current block current; if one panics, the new block is
    /// destroyed and the panic goes on. A binary without `#[inherit]`
    /// declarations pays nothing for this over [`Locals::new`].
    ///
    /// `co_runtime`'s `Coroutine::new` makes its coroutine's block this way.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     /// Follows the work into every block made from here.
    ///     #[inherit]
    ///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    ///     /// Starts fresh in every block.
    ///     static RETRIES: Cell<u32> = const { Cell::new(0) };
    /// }
    ///
    /// REQUEST_ID.set(42);
    /// RETRIES.set(3);
    /// let mut sub_task = Locals::inherit();
    /// assert_eq!(sub_task.enter(|| REQUEST_ID.get()), 42);
    /// assert_eq!(sub_task.enter(|| RETRIES.get()), 0);
    /// ```
    pub fn inherit() -> Locals {
        Locals {
            block: Block::inherit(),
        }
    }

    /// Makes this block as [`Locals::new`] made it, without allocating: the
    /// values made in it are destroyed (with it current, by the usual
    /// rules), the constants are put back, and nothing is remembered by
    /// [`resume`](Locals::resume). For runtimes that pool their coroutines.
    ///
    /// If something other than this `Locals` can still reach the old values
    /// (a reference held by a suspended coroutine of another library), the
    /// old block is handled as a dropped one (kept until that reference ends)
    /// and a new block takes its place.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static LOG: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
    /// }
    ///
    /// let mut pooled = Locals::new();
    /// pooled.enter(|| LOG.with_borrow_mut(|log| log.push("first job")));
    /// pooled.reset();
    /// assert!(pooled.enter(|| LOG.with_borrow(|log| log.is_empty())));
    /// ```
    pub fn reset(&mut self) {
        self.block.reset();
    }

    /// Runs `f` with this block current on this thread, and makes the
    /// previous block current again afterwards, also if `f` panics.
    #[inline]
    pub fn enter<R>(&mut self, f: impl FnOnce() -> R) -> R {
        storage::enter(self.block.as_ptr(), f)
    }

    /// Runs `f`, which switches into a stackful coroutine of another library,
    /// with the block that coroutine had current when it last suspended (at
    /// first, this block), and makes the caller's block current again
    /// afterwards, also if `f` panics.
    ///
    /// Around each switch into the coroutine: `locals.resume(|| co.resume(x))`.
    /// When `f` returns, whatever is current is remembered for the next
    /// `resume`: the coroutine may have suspended inside an
    /// [`enter`](Locals::enter) of its own, or inside a poll of a
    /// [`WithLocals`](crate::WithLocals), whose block must be current again
    /// when it goes on. If that block is dropped or made anew meanwhile (the
    /// coroutine was unwound outside `resume`), or the task's call ends, this
    /// block is used instead.
    ///
    /// Dropping the coroutine unwinds its stack in most libraries: do it
    /// inside `resume` too (`locals.resume(|| drop(co))`) so that destructors
    /// on its stack see its values. Dropping it outside, or dropping this
    /// `Locals` first, is sound as well: a value still referenced from the
    /// suspended stack is kept until the reference ends.
    ///
    /// The cost is that of a pointer swap plus one comparison when `f`
    /// returns, whatever the number of declared values (co_runtime switches
    /// through it).
    ///
    /// # Examples
    ///
    /// A corosensei coroutine, wrapped so that it has values of its own:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, Locals};
    /// use corosensei::{Coroutine, CoroutineResult, Yielder};
    ///
    /// co_local! {
    ///     static REQUEST: Cell<u32> = const { Cell::new(0) };
    /// }
    ///
    /// let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| {
    ///     REQUEST.set(7);
    ///     y.suspend(REQUEST.get());
    ///     REQUEST.get() + 1
    /// });
    /// let mut locals = Locals::new();
    ///
    /// assert_eq!(locals.resume(|| co.resume(())), CoroutineResult::Yield(7));
    /// assert_eq!(REQUEST.get(), 0); // the thread's own value
    /// assert_eq!(locals.resume(|| co.resume(())), CoroutineResult::Return(8));
    /// ```
    #[inline(always)]
    pub fn resume<R>(&mut self, f: impl FnOnce() -> R) -> R {
        storage::resume(&self.block, f)
    }

    /// A raw handle on this block, for [`swap_current`](crate::swap_current).
    pub fn as_raw(&self) -> RawBlock {
        RawBlock::from_block(&self.block)
    }
}

impl Default for Locals {
    fn default() -> Locals {
        Locals::new()
    }
}

impl fmt::Debug for Locals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locals")
            .field("block", &self.as_raw())
            .finish()
    }
}

/// A block of coroutine-local values that may move between threads: the
/// values of a piece of work handed to another thread (a blocking job, a
/// thread of its own, a pool's job), as a [`WithLocals`](crate::WithLocals)
/// task's block moves with its task.
///
/// [`SendLocals::inherit`] makes it where the work is made, with a copy of
/// each `#[inherit]` value of a `Send` type alive there;
/// [`enter`](SendLocals::enter) runs the work with it current, on whichever
/// thread the `SendLocals` was moved to. Because it moves, it reaches only
/// declarations whose type is `Send`
/// ([`Declaration::is_send`](crate::Declaration::is_send)): there
/// [`try_with`](crate::LocalKey::try_with) returns an
/// [`AccessError`](crate::AccessError) of kind
/// [`NotSend`](crate::AccessErrorKind::NotSend), and the accessors that
/// cannot fail panic naming the static. Its values are destroyed when it is
/// dropped, with it current, by the rules of every block.
///
/// `SendLocals` is `Send` but not `Sync`: one thread at a time enters it.
///
/// # Examples
///
/// A request id that follows a job to another thread:
///
/// ```
/// use std::cell::Cell;
/// use co_local::{co_local, SendLocals};
///
/// co_local! {
///     #[inherit]
///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
/// }
///
/// REQUEST_ID.set(7);
/// let mut locals = SendLocals::inherit(); // copied here...
/// let seen = std::thread::spawn(move || locals.enter(|| REQUEST_ID.get())) // ...read there
///     .join()
///     .unwrap();
/// assert_eq!(seen, 7);
/// ```
///
/// The same with tokio's `spawn_blocking` (the `tokio` feature's
/// `co_local::tokio::spawn_blocking` does this), and for the jobs of a pool
/// of threads, each job with its own block:
///
/// ```
/// use std::cell::Cell;
/// use std::sync::mpsc;
/// use co_local::{co_local, SendLocals};
///
/// co_local! {
///     #[inherit]
///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// REQUEST_ID.set(8);
/// let mut locals = SendLocals::inherit();
/// let seen = tokio::task::spawn_blocking(move || locals.enter(|| REQUEST_ID.get()))
///     .await
///     .unwrap();
/// assert_eq!(seen, 8);
///
/// // A pool: each job carries the block made where it was queued.
/// let (jobs, queue) = mpsc::channel::<(SendLocals, u64)>();
/// let (done, results) = mpsc::channel();
/// let worker = std::thread::spawn(move || {
///     for (mut locals, n) in queue {
///         done.send(locals.enter(|| REQUEST_ID.get() * n)).unwrap();
///     }
/// });
/// for id in 1..=3 {
///     REQUEST_ID.set(id);
///     jobs.send((SendLocals::inherit(), 10)).unwrap();
/// }
/// drop(jobs);
/// worker.join().unwrap();
/// assert_eq!(results.iter().collect::<Vec<_>>(), [10, 20, 30]);
/// # }
/// ```
pub struct SendLocals {
    block: TaskBlock<true>,
}

impl SendLocals {
    /// Makes a block that may move between threads: every constant in
    /// place, every lazy value not made yet.
    pub fn new() -> SendLocals {
        SendLocals {
            block: TaskBlock::empty(),
        }
    }

    /// Makes a block that may move between threads and starts with a copy
    /// of each `#[inherit]` value alive in the block current now whose type
    /// is `Send` (see [`Locals::inherit`]); every other value starts as in
    /// [`SendLocals::new`].
    pub fn inherit() -> SendLocals {
        SendLocals {
            block: TaskBlock::new(),
        }
    }

    /// Runs `f` with this block current on this thread, and makes the
    /// previous block current again afterwards, also if `f` panics. Only
    /// declarations whose type is `Send` are reachable inside.
    pub fn enter<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.block.enter(f)
    }
}

impl Default for SendLocals {
    fn default() -> SendLocals {
        SendLocals::new()
    }
}

impl fmt::Debug for SendLocals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendLocals").finish_non_exhaustive()
    }
}
