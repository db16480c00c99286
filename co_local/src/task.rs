//! The async task wrappers: [`WithLocals`] (a task that may move between
//! threads) and [`LocalWithLocals`] (a task that stays on its thread), each
//! a future with a block of coroutine-local values of its own. Their blocks
//! and the `unsafe` half of their `Future` impls (pinning the inner future,
//! dropping it in place) are in `storage/task.rs`.

use core::fmt;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;

use crate::storage::TaskBlock;

/// A future with a block of coroutine-local values of its own: an async
/// task's values, for executors that may move tasks between threads.
///
/// `WithLocals::new(fut)` gives `fut` a block, as a coroutine has one. Each
/// [`poll`](core::future::Future::poll) runs with that block current, so every
/// [`co_local!`](crate::co_local) static that `fut` reaches, at any depth and
/// across every `.await`, is the task's own copy. The inner future is dropped
/// with its block current too (when it completes, or with the wrapper), and
/// then the block's values are destroyed, with the block current, by the
/// rules of every block (see [`LocalKey`](crate::LocalKey)): when the task completes, is
/// aborted, or loses a `select!`.
///
/// `WithLocals<F>` is `Send` when `F` is, so `tokio::spawn` takes it on the
/// multi-thread runtime, and the task may go on on another worker after any
/// `.await`. For that, its block reaches only declarations whose type is
/// `Send` ([`Declaration::is_send`](crate::Declaration::is_send)): an access
/// to any other one, in the task, fails as
/// [`try_with`](crate::LocalKey::try_with) does, with [`AccessError`](crate::AccessError), and the
/// methods that cannot fail panic naming the static. Accesses to declarations
/// of `Send` types cost what they cost elsewhere. On a single-threaded
/// executor, [`LocalWithLocals`] reaches every declaration.
///
/// Code outside every wrapper, on a worker thread, reaches that thread's own
/// values, as with `std::thread_local!`.
///
/// Each poll costs a few pointer swaps, whatever the number of declarations:
/// no value is moved in or out.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use co_local::{co_local, WithLocals};
///
/// co_local! {
///     /// The request the current task serves.
///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
///     /// Lines logged by the current task, made on first use.
///     static LOG: std::cell::RefCell<Vec<String>> = std::cell::RefCell::new(Vec::new());
/// }
///
/// fn log(line: &str) {
///     LOG.with_borrow_mut(|log| log.push(format!("[{}] {line}", REQUEST_ID.get())));
/// }
///
/// async fn handle() -> Vec<String> {
///     log("start");
///     tokio::task::yield_now().await; // may go on on another worker
///     log("done");
///     LOG.take()
/// }
///
/// #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// async fn main() {
///     let mut tasks = Vec::new();
///     for id in 1..=3 {
///         let mut task = WithLocals::new(handle());
///         task.with_locals(|| REQUEST_ID.set(id)); // seeded before spawning
///         tasks.push(tokio::spawn(task));
///     }
///     for (id, task) in (1..=3).zip(tasks) {
///         assert_eq!(task.await.unwrap(), [format!("[{id}] start"), format!("[{id}] done")]);
///     }
///     assert_eq!(REQUEST_ID.get(), 0); // this thread's own copy
/// }
/// ```
pub struct WithLocals<F> {
    /// Dropped in place, with the block current, by `TaskBlock::end`.
    pub(crate) future: ManuallyDrop<F>,
    pub(crate) block: TaskBlock<true>,
}

/// A future with a block of coroutine-local values of its own, for
/// executors that keep a task on one thread (tokio's `LocalSet`,
/// `futures::executor::LocalPool`, a current-thread runtime's `spawn_local`).
///
/// Like [`WithLocals`], but it reaches every declaration, whatever its type,
/// and is not `Send`.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use co_local::{co_local, LocalWithLocals};
///
/// co_local! {
///     static SHARED: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
/// }
///
/// let mut task = LocalWithLocals::new(async {
///     SHARED.with_borrow(|s| s.as_deref().map(str::len))
/// });
/// task.with_locals(|| SHARED.set(Some(Rc::from("hello"))));
/// assert_eq!(futures::executor::block_on(task), Some(5));
/// ```
pub struct LocalWithLocals<F> {
    /// Dropped in place, with the block current, by `TaskBlock::end`.
    pub(crate) future: ManuallyDrop<F>,
    pub(crate) block: TaskBlock<false>,
    /// Not `Send`: the block may hold values of any type.
    _thread_bound: PhantomData<*const ()>,
}

impl<F> WithLocals<F> {
    /// Wraps `future` with a new block: every constant in place, every lazy
    /// value not made yet, except the `#[inherit]` values of `Send` types
    /// alive in the current block, which the task starts with a copy of (see
    /// [`Locals::inherit`](crate::Locals::inherit)).
    pub fn new(future: F) -> WithLocals<F> {
        WithLocals {
            future: ManuallyDrop::new(future),
            block: TaskBlock::new(),
        }
    }

    /// Runs `f` with the task's block current, to seed values before the
    /// task is spawned (`task.with_locals(|| REQUEST_ID.set(id))`) or read
    /// them; `None` once the task has completed.
    ///
    /// Inside `f`, as in the task, only declarations whose type is `Send`
    /// are reachable.
    pub fn with_locals<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        self.block.with_locals(f)
    }
}

impl<F> LocalWithLocals<F> {
    /// Wraps `future` with a new block: every constant in place, every lazy
    /// value not made yet, except the `#[inherit]` values alive in the
    /// current block, which the task starts with a copy of (see
    /// [`Locals::inherit`](crate::Locals::inherit)).
    pub fn new(future: F) -> LocalWithLocals<F> {
        LocalWithLocals {
            future: ManuallyDrop::new(future),
            block: TaskBlock::new(),
            _thread_bound: PhantomData,
        }
    }

    /// Runs `f` with the task's block current, to seed values before the
    /// task is spawned or read them; `None` once the task has completed.
    pub fn with_locals<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        self.block.with_locals(f)
    }
}

impl<F> Drop for WithLocals<F> {
    fn drop(&mut self) {
        self.block.end(&mut self.future);
    }
}

impl<F> Drop for LocalWithLocals<F> {
    fn drop(&mut self) {
        self.block.end(&mut self.future);
    }
}

impl<F> fmt::Debug for WithLocals<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithLocals")
            .field("done", &self.block.is_done())
            .finish_non_exhaustive()
    }
}

impl<F> fmt::Debug for LocalWithLocals<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalWithLocals")
            .field("done", &self.block.is_done())
            .finish_non_exhaustive()
    }
}
