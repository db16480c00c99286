//! [`LocalKey`], the handle behind every `co_local!` static.

use core::cell::{Cell, RefCell};
use core::fmt;
use core::future::Future;
use core::panic::{RefUnwindSafe, UnwindSafe};

use crate::error::AccessError;
use crate::registry::Declaration;
use crate::scoped::{self, Scoped};
use crate::storage;

/// The handle of one [`co_local!`](crate::co_local) static: it finds that
/// static's value in the block that is current on this thread.
///
/// Every static that `co_local!` declares has this type. The key itself holds
/// no value. Values live in *blocks*: each coroutine has one, each
/// [`Locals`](crate::Locals) is one, and each thread has one more for code
/// that runs outside every coroutine. An access reaches the copy in the block
/// that is current at that moment: the running coroutine's (a coroutine of
/// `co_runtime`, or a task of any runtime that enters a [`Locals`] around
/// it), else the thread's own. So two coroutines that run the same code see
/// two values, and a program that never starts a coroutine sees one value per
/// thread, exactly as with `std::thread_local!`.
///
/// The methods are those of [`std::thread::LocalKey`], with the same
/// signatures, and they panic in the corresponding situations; what they
/// reach is the current block's copy instead of the thread's.
/// [`with`](LocalKey::with) lends the value to a closure; the reference
/// cannot leave the closure, and it stays valid for the whole call, even if
/// the coroutine suspends inside it and other coroutines run (with their own
/// values) before it is resumed.
///
/// # Constants and lazy values
///
/// A value declared as `const { EXPR }` whose type has no destructor is
/// computed once for the whole program, into a template; every new block
/// starts as a copy of that template, so the value is in place from the
/// block's creation and an access makes no check at all.
///
/// Any other value carries one state byte (not made / alive / destroyed),
/// which each access tests: a lazy value is made by its initialiser on the
/// first access in each block; a `const {}` value whose type has a
/// destructor (a `RefCell<Vec<T>>`, say) is put in place on the first
/// access, so that, as with std's thread-locals, only blocks that reached it
/// run its destructor.
///
/// If an initialiser panics, the value stays not made and the next access in
/// that block runs it again. An initialiser may reach its own key, or
/// suspend its coroutine while someone else (such as `co_runtime`'s
/// `Coroutine::with_locals`) makes the value: neither is undefined
/// behaviour. The value made first is kept, because references to it may
/// be alive, and the value the late initialiser returns is dropped (std
/// keeps the outer one instead). [`set`](LocalKey::set) gives a block its
/// value without running the initialiser at all.
///
/// # Destruction
///
/// A block dies with its owner: when its coroutine finishes or is dropped,
/// when its [`Locals`] is dropped or reset, when its task completes or is
/// dropped, or, for the thread's own block, at thread exit. Its values are
/// dropped with that block current, each value that was made (or, for a
/// constant with a destructor, reached) exactly once, **in reverse order of
/// their making**: the value made last dies first, as std destroys a
/// thread's thread-locals. The cost is that of the values the block made,
/// whatever the number of declarations.
///
/// **A destructor reaches every value of its block not destroyed yet, and
/// makes one not made yet, which then dies next** (as std runs a destructor
/// registered during thread exit). So a connection guard's destructor can
/// log its last line into a lazy log the coroutine never used. A value whose
/// destructor is running or has run is never made again in that block:
/// there [`try_with`](LocalKey::try_with) returns an [`AccessError`] of kind
/// [`Destroyed`](crate::AccessErrorKind::Destroyed), and every method that
/// cannot fail panics with a message naming the static (so a destructor
/// that reaches its own key gets the error). Destruction always ends: each
/// value is made at most once in a block's life.
///
/// Outside every coroutine, once the thread's own block has been destroyed at
/// thread exit, accesses fail the same way.
///
/// # Next to other coroutine libraries
///
/// Another library's coroutine (corosensei, generator, a fiber) may suspend
/// inside a [`with`](LocalKey::with) closure, and the block's owner may be
/// dropped before it is resumed. The block then stays, with its values,
/// until the closure returns: `with` keeps its block alive while its closure
/// runs (the `Cell` and `RefCell` shortcuts run no code of yours under the
/// reference, so they need not). See [`Locals::resume`](crate::Locals::resume)
/// for giving such coroutines values of their own.
///
/// # No `Send` or `Sync` bound
///
/// A block never leaves the thread that made it (coroutines and [`Locals`]
/// are not `Send`), so the value's type needs neither bound. Several
/// references to one value can be alive at once (nested calls, or a
/// coroutine suspended inside [`with`](LocalKey::with)), so only `&T` is
/// handed out: change a value through a [`Cell`] or a [`RefCell`], for which
/// `LocalKey` has shortcuts (`get`, `set`, `with_borrow_mut`, …).
///
/// # Examples
///
/// Each block has its own copy; [`Locals::enter`](crate::Locals::enter)
/// stands in here for a coroutine's block, as `co_runtime` makes it current
/// on each resume:
///
/// ```
/// use std::cell::Cell;
/// use co_local::{co_local, Locals};
///
/// co_local! {
///     /// The monitor whose command is running, if any.
///     static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
/// }
///
/// let mut command_a = Locals::new();
/// let mut command_b = Locals::new();
/// command_a.enter(|| CUR_MON.set(Some(1)));
/// command_b.enter(|| CUR_MON.set(Some(2)));
///
/// // Code outside every coroutine has not been touched...
/// assert_eq!(CUR_MON.get(), None);
/// // ...and each command finds its own monitor when it runs again.
/// assert_eq!(command_a.enter(|| CUR_MON.get()), Some(1));
/// assert_eq!(command_b.enter(|| CUR_MON.get()), Some(2));
/// ```
///
/// # Platforms
///
/// `co_local!` collects its declarations with the `linkme` crate at link
/// time, so it works on the targets `linkme` supports (Linux, macOS, iOS,
/// Windows, FreeBSD, illumos, bare-metal ELF, …). The current-block pointer
/// and the thread's own block are `std::thread_local!` statics, so whatever
/// the platform does with thread-local destructors applies to the thread's
/// own block; for example, whether it is destroyed when the main thread
/// exits.
///
/// [`Locals`]: crate::Locals
pub struct LocalKey<T: 'static> {
    pub(crate) decl: &'static Declaration,
    pub(crate) init: fn() -> T,
    pub(crate) lazy: bool,
    /// Makes a new block's copy of an `#[inherit]` value.
    pub(crate) inherit: fn(&T) -> T,
    /// `T` is `Send`: a block that may move between threads reaches it.
    pub(crate) send: bool,
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey")
            .field("name", &self.decl.name())
            .finish_non_exhaustive()
    }
}

// Like std's `LocalKey`: a key is only a handle (the registry entry and the
// initialiser); it holds no value, so observing it after a panic is fine.
impl<T: 'static> UnwindSafe for LocalKey<T> {}
impl<T: 'static> RefUnwindSafe for LocalKey<T> {}

impl<T: 'static> LocalKey<T> {
    /// Calls `f` with the current block's value and returns what `f` returns.
    ///
    /// A lazy value that the current block has not made yet is made first, by
    /// running its initialiser.
    ///
    /// # Panics
    ///
    /// Panics, naming the static and the reason, where
    /// [`try_with`](LocalKey::try_with) returns [`AccessError`]: for a value
    /// being or already destroyed (a destructor reaching a value its block
    /// destroyed; outside coroutines, after the thread's own block is gone),
    /// from a block that may move between threads for a value whose type is
    /// not `Send`, and outside every block on a thread that denies its own
    /// values. A panic of the initialiser also comes out of this call.
    ///
    /// # Examples
    ///
    /// A lazy value is made once in each block that reaches it:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, Locals};
    ///
    /// thread_local! {
    ///     static TABLES_MADE: Cell<u32> = const { Cell::new(0) };
    /// }
    ///
    /// co_local! {
    ///     static SQUARES: Vec<u64> = {
    ///         TABLES_MADE.set(TABLES_MADE.get() + 1);
    ///         (0..16).map(|i| i * i).collect()
    ///     };
    /// }
    ///
    /// let mut a = Locals::new();
    /// let mut b = Locals::new();
    /// assert_eq!(a.enter(|| SQUARES.with(|t| t[3])), 9);
    /// assert_eq!(a.enter(|| SQUARES.with(|t| t.len())), 16); // made already
    /// assert_eq!(b.enter(|| SQUARES.with(|t| t[5])), 25);
    /// assert_eq!(TABLES_MADE.get(), 2); // one table per block that asked
    /// ```
    #[track_caller]
    #[inline]
    pub fn with<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        storage::with(self, f)
    }

    /// Calls `f` with the current block's value, or returns [`AccessError`]
    /// if the value cannot be reached.
    ///
    /// The error's [`kind`](AccessError::kind) says why:
    /// [`Destroyed`](crate::AccessErrorKind::Destroyed) for a value being or
    /// already destroyed (while its block dies, or, outside coroutines, once
    /// the thread's own block is gone at thread exit),
    /// [`NotSend`](crate::AccessErrorKind::NotSend) for a value whose type is
    /// not `Send` in a block that may move between threads, and
    /// [`ThreadValuesDenied`](crate::AccessErrorKind::ThreadValuesDenied)
    /// outside every block on a thread that denies its own values. In every
    /// other case this makes the value if needed (also while its block dies:
    /// it is then destroyed after the destructor that made it) and calls `f`,
    /// like [`with`](LocalKey::with). This is the method for code that may run
    /// in a destructor.
    ///
    /// # Panics
    ///
    /// A panic of the initialiser comes out of this call.
    ///
    /// # Examples
    ///
    /// What a destructor sees while its block dies:
    ///
    /// ```
    /// use std::cell::{Cell, RefCell};
    /// use co_local::{co_local, AccessErrorKind, Locals};
    ///
    /// thread_local! {
    ///     static FLUSHED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// }
    ///
    /// struct Session;
    ///
    /// impl Drop for Session {
    ///     fn drop(&mut self) {
    ///         // Its own value is going away.
    ///         let err = SESSION.try_with(|_| ()).unwrap_err();
    ///         assert_eq!(err.kind(), AccessErrorKind::Destroyed);
    ///         // A constant with nothing to drop stays readable.
    ///         assert_eq!(REQUESTS.try_with(Cell::get), Ok(2));
    ///         // A lazy value this block never made is made now, and dies
    ///         // after this destructor.
    ///         let _ = LOG.try_with(|log| log.borrow_mut().push(String::from("bye")));
    ///     }
    /// }
    ///
    /// struct Log(RefCell<Vec<String>>);
    ///
    /// impl core::ops::Deref for Log {
    ///     type Target = RefCell<Vec<String>>;
    ///     fn deref(&self) -> &Self::Target {
    ///         &self.0
    ///     }
    /// }
    ///
    /// impl Drop for Log {
    ///     fn drop(&mut self) {
    ///         FLUSHED.with_borrow_mut(|f| f.append(self.0.get_mut()));
    ///     }
    /// }
    ///
    /// co_local! {
    ///     static SESSION: Session = Session;
    ///     static REQUESTS: Cell<u32> = const { Cell::new(0) };
    ///     static LOG: Log = Log(RefCell::new(Vec::new()));
    /// }
    ///
    /// let mut task = Locals::new();
    /// task.enter(|| {
    ///     SESSION.with(|_| ()); // makes it
    ///     REQUESTS.set(2);
    /// });
    /// drop(task); // destroys the task's values, its block current
    /// assert_eq!(FLUSHED.take(), ["bye"]);
    /// ```
    #[inline]
    pub fn try_with<F, R>(&'static self, f: F) -> Result<R, AccessError>
    where
        F: FnOnce(&T) -> R,
    {
        storage::try_with(self, f)
    }

    /// The registry entry of this key: name, module, type, size, alignment.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    ///
    /// co_local::co_local! {
    ///     static TRACE: RefCell<Vec<u32>> = RefCell::new(Vec::new());
    /// }
    ///
    /// let decl = TRACE.declaration();
    /// assert_eq!(decl.name(), "TRACE");
    /// assert!(!decl.is_const()); // lazy: one state byte in each block
    /// ```
    pub fn declaration(&'static self) -> &'static Declaration {
        self.decl
    }

    /// Calls `f` with the current block's value, making a lazy value not
    /// made yet from `init` rather than from its initialiser. `f` receives
    /// `Some(init)` if `init` was not needed (the value existed), `None` if it
    /// became the value.
    #[track_caller]
    fn initialize_with<F, R>(&'static self, init: T, f: F) -> R
    where
        F: FnOnce(Option<T>, &T) -> R,
    {
        storage::initialize_with(self, init, f)
    }
}

/// The panic of a `RefCell` helper that finds the value borrowed. `value`
/// is dropped first, outside the access.
#[cold]
#[track_caller]
pub(crate) fn already_borrowed<T>(name: &str, value: T) -> ! {
    drop(value);
    panic!("the coroutine-local `RefCell` `{name}` is already borrowed")
}

impl<T: 'static> LocalKey<Cell<T>> {
    /// Stores `value` in the current block's cell.
    ///
    /// If the cell is lazy and this block has not made it yet, `value`
    /// becomes its content and the initialiser never runs in this block. So
    /// a runtime, or a dispatcher, can give each coroutine its own value
    /// before it starts, even where the declared initialiser is only a
    /// fallback or has none that makes sense.
    ///
    /// # Panics
    ///
    /// Panics, naming the static, if the value cannot be reached (see
    /// [`try_with`](LocalKey::try_with)): while its block is being
    /// destroyed, `set` does not bring a dropped or never-made value back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     // Every task must be given a deadline: reading it first is a bug.
    ///     static DEADLINE_MS: Cell<u64> = panic!("no deadline set for this task");
    /// }
    ///
    /// let mut task = Locals::new();
    /// task.enter(|| DEADLINE_MS.set(250)); // made from 250, no initialiser
    /// assert_eq!(task.enter(|| DEADLINE_MS.get()), 250);
    /// task.enter(|| DEADLINE_MS.set(500)); // exists now: overwritten
    /// assert_eq!(task.enter(|| DEADLINE_MS.get()), 500);
    /// ```
    #[track_caller]
    pub fn set(&'static self, value: T) {
        // `unused` comes back when the block already held a cell: its
        // content is swapped for the new one. The old content is dropped
        // after the access: its destructor is user code, which must not run
        // while the reference into the block lives.
        let old = self.initialize_with(Cell::new(value), |unused, cell| {
            unused.map(|value| cell.replace(value.into_inner()))
        });
        drop(old);
    }

    /// A copy of the content of the current block's cell.
    ///
    /// A lazy cell is made on this block's first access, this one included.
    ///
    /// # Panics
    ///
    /// Panics where [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static RETRIES_LEFT: Cell<u32> = const { Cell::new(3) };
    /// }
    ///
    /// let mut task = Locals::new();
    /// task.enter(|| RETRIES_LEFT.set(RETRIES_LEFT.get() - 1));
    /// assert_eq!(task.enter(|| RETRIES_LEFT.get()), 2);
    /// assert_eq!(RETRIES_LEFT.get(), 3); // the thread's copy: still the constant
    /// ```
    #[track_caller]
    pub fn get(&'static self) -> T
    where
        T: Copy,
    {
        storage::with_brief(self, Cell::get)
    }

    /// Moves the content out of the current block's cell and leaves
    /// `T::default()` there.
    ///
    /// A lazy cell is made first if this block has not made it yet.
    ///
    /// # Panics
    ///
    /// Panics where [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
    /// }
    ///
    /// let mut command = Locals::new();
    /// command.enter(|| CUR_MON.set(Some(4)));
    /// // Handing the monitor back clears the command's copy.
    /// assert_eq!(command.enter(|| CUR_MON.take()), Some(4));
    /// assert_eq!(command.enter(|| CUR_MON.get()), None);
    /// ```
    #[track_caller]
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        // `default()` is user code: run it before the access.
        let value = T::default();
        storage::with_brief(self, |cell| cell.replace(value))
    }

    /// Puts `value` in the current block's cell and returns what was there.
    ///
    /// A lazy cell is made first if this block has not made it yet, so the
    /// first `replace` returns the initialiser's value.
    ///
    /// # Panics
    ///
    /// Panics where [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// Saving and restoring around a nested call, per coroutine:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// }
    ///
    /// fn nested<R>(f: impl FnOnce() -> R) -> R {
    ///     let outer = DEPTH.replace(DEPTH.get() + 1);
    ///     let result = f();
    ///     DEPTH.set(outer);
    ///     result
    /// }
    ///
    /// let mut task = Locals::new();
    /// assert_eq!(task.enter(|| nested(|| nested(|| DEPTH.get()))), 2);
    /// assert_eq!(task.enter(|| DEPTH.get()), 0);
    /// ```
    #[track_caller]
    pub fn replace(&'static self, value: T) -> T {
        storage::with_brief(self, |cell| cell.replace(value))
    }

    /// Runs `f` with `value` as the content of the current block's cell, and
    /// puts the previous content back afterwards, also if `f` panics or the
    /// coroutine is dropped while suspended inside `f`.
    ///
    /// The override belongs to the block current when `scope` is called,
    /// the running coroutine's: if `f` suspends the coroutine, others see
    /// their own values meanwhile, and this one still sees `value` when it
    /// goes on. The previous content goes back into that same block. Like
    /// [`replace`](LocalKey::replace), a lazy value is made first.
    ///
    /// A future returned from `f` does not stay in scope: the override ends
    /// when `f` returns, before anyone polls the future. To override a value
    /// while a future runs, use [`scope_future`](LocalKey::scope_future).
    ///
    /// # Panics
    ///
    /// Panics, naming the static, where [`with`](LocalKey::with) does: for a
    /// value being or already destroyed.
    ///
    /// # Examples
    ///
    /// A command that runs with the current monitor swapped for a temporary
    /// one, as QEMU's `human-monitor-command` does:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::co_local;
    ///
    /// co_local! {
    ///     static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
    /// }
    ///
    /// CUR_MON.set(Some(1));
    /// let seen = CUR_MON.scope(Some(99), || CUR_MON.get());
    /// assert_eq!(seen, Some(99));
    /// assert_eq!(CUR_MON.get(), Some(1));
    /// ```
    #[track_caller]
    pub fn scope<R>(&'static self, value: T, f: impl FnOnce() -> R) -> R {
        // The scoped value, handed back, is dropped after the override.
        scoped::with_value_in_place(self, value, &mut None, f)
    }

    /// Wraps `future` so that each of its polls runs with `value` as the
    /// content of the current block's cell, and the previous content is put
    /// back after each poll: the async counterpart of
    /// [`scope`](LocalKey::scope), as tokio's `LocalKey::scope` is for its
    /// task-locals.
    ///
    /// The override is in place only while `future` is polled (and while it
    /// is dropped): between two polls the rest of the task sees its own
    /// value (another branch of a `join!`, or code after the `.await` of a
    /// sibling), and the overriding value waits in the wrapper, with what
    /// `future` made of it. Each poll puts it in the block current at that
    /// poll (the task's, wherever the task runs then). Like
    /// [`scope`](LocalKey::scope), a lazy value is made first.
    ///
    /// The wrapper is `Send` when `T` and `F` are.
    ///
    /// # Panics
    ///
    /// Polling panics, naming the static, where [`with`](LocalKey::with)
    /// does.
    ///
    /// # Examples
    ///
    /// Two branches of one task, each with its own request id:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_local::{co_local, WithLocals};
    ///
    /// co_local! {
    ///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    /// }
    ///
    /// async fn handle() -> u64 {
    ///     tokio::task::yield_now().await;
    ///     REQUEST_ID.get()
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let task = WithLocals::new(async {
    ///     REQUEST_ID.set(1);
    ///     let (a, b) = tokio::join!(
    ///         REQUEST_ID.scope_future(5, handle()),
    ///         REQUEST_ID.scope_future(6, handle()),
    ///     );
    ///     (a, b, REQUEST_ID.get())
    /// });
    /// assert_eq!(tokio::spawn(task).await.unwrap(), (5, 6, 1));
    /// # }
    /// ```
    pub fn scope_future<F: Future>(&'static self, value: T, future: F) -> Scoped<Cell<T>, F> {
        Scoped::new(self, value, future)
    }
}

impl<T: 'static> LocalKey<RefCell<T>> {
    /// Calls `f` with a shared borrow of the current block's `RefCell`
    /// content.
    ///
    /// A lazy value is made first if this block has not made it yet.
    ///
    /// # Panics
    ///
    /// Panics if the content is mutably borrowed at the time, for example by
    /// an enclosing [`with_borrow_mut`](LocalKey::with_borrow_mut) on the
    /// same key in the same block; and where [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static PATH: RefCell<Vec<&'static str>> = RefCell::new(vec!["/"]);
    /// }
    ///
    /// let mut task = Locals::new();
    /// task.enter(|| PATH.with_borrow_mut(|p| p.push("etc")));
    /// assert_eq!(task.enter(|| PATH.with_borrow(|p| p.join(""))), "/etc");
    /// assert_eq!(PATH.with_borrow(|p| p.len()), 1); // the thread's own, made now
    /// ```
    #[track_caller]
    pub fn with_borrow<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        self.with(|cell| f(&cell.borrow()))
    }

    /// Calls `f` with a mutable borrow of the current block's `RefCell`
    /// content.
    ///
    /// A lazy value is made first if this block has not made it yet.
    ///
    /// # Panics
    ///
    /// Panics if the content is borrowed at the time, mutably or not (as
    /// inside another `with_borrow` or `with_borrow_mut` on the same key in
    /// the same block); and where [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use std::collections::HashSet;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static SEEN: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
    /// }
    ///
    /// fn first_time(id: u32) -> bool {
    ///     SEEN.with_borrow_mut(|seen| seen.insert(id))
    /// }
    ///
    /// let mut a = Locals::new();
    /// let mut b = Locals::new();
    /// assert!(a.enter(|| first_time(7)));
    /// assert!(!a.enter(|| first_time(7)));
    /// assert!(b.enter(|| first_time(7))); // `b` keeps its own set
    /// ```
    #[track_caller]
    pub fn with_borrow_mut<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&mut T) -> R,
    {
        self.with(|cell| f(&mut cell.borrow_mut()))
    }

    /// Stores `value` in the current block's `RefCell`, dropping the old
    /// content if there was one.
    ///
    /// If the value is lazy and this block has not made it yet, `value`
    /// becomes its content and the initialiser never runs in this block:
    /// the way to give a coroutine its own value before it starts.
    ///
    /// # Panics
    ///
    /// Panics if the content is borrowed at the time; and, naming the static,
    /// if the value cannot be reached (see [`try_with`](LocalKey::try_with)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     // By default, the process's arguments; a task can be given others.
    ///     static ARGS: RefCell<Vec<String>> = RefCell::new(std::env::args().collect());
    /// }
    ///
    /// let mut task = Locals::new();
    /// task.enter(|| ARGS.set(vec![String::from("--quiet")])); // no initialiser run
    /// assert_eq!(task.enter(|| ARGS.with_borrow(|a| a.join(" "))), "--quiet");
    /// ```
    #[track_caller]
    pub fn set(&'static self, value: T) {
        // The old value is dropped after the access (see `Cell`'s `set`).
        let swapped = self.initialize_with(RefCell::new(value), |unused, cell| {
            unused.map(|value| match cell.try_borrow_mut() {
                Ok(mut borrowed) => Ok(core::mem::replace(&mut *borrowed, value.into_inner())),
                Err(_) => Err(value.into_inner()),
            })
        });
        match swapped {
            None => {}
            Some(Ok(old)) => drop(old),
            Some(Err(value)) => already_borrowed(self.decl.name(), value),
        }
    }

    /// Moves the content out of the current block's `RefCell` and leaves
    /// `T::default()` there.
    ///
    /// A lazy value is made first if this block has not made it yet.
    ///
    /// # Panics
    ///
    /// Panics if the content is borrowed at the time; and where
    /// [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// Collecting what a task logged, when it is over:
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static LOG: RefCell<Vec<String>> = RefCell::new(Vec::new());
    /// }
    ///
    /// fn log(line: &str) {
    ///     LOG.with_borrow_mut(|l| l.push(line.to_owned()));
    /// }
    ///
    /// let mut task = Locals::new();
    /// task.enter(|| {
    ///     log("connect");
    ///     log("send");
    /// });
    /// assert_eq!(task.enter(|| LOG.take()), ["connect", "send"]);
    /// assert!(task.enter(|| LOG.with_borrow(Vec::is_empty)));
    /// ```
    #[track_caller]
    pub fn take(&'static self) -> T
    where
        T: Default,
    {
        // `default()` is user code: run it before the access.
        self.replace(T::default())
    }

    /// Puts `value` in the current block's `RefCell` and returns what was
    /// there.
    ///
    /// A lazy value is made first if this block has not made it yet, so the
    /// first `replace` returns the initialiser's value.
    ///
    /// # Panics
    ///
    /// Panics if the content is borrowed at the time; and where
    /// [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use co_local::{co_local, Locals};
    ///
    /// co_local! {
    ///     static OUTPUT: RefCell<String> = RefCell::new(String::from("(empty)"));
    /// }
    ///
    /// let mut task = Locals::new();
    /// let first = task.enter(|| OUTPUT.replace(String::from("partial")));
    /// assert_eq!(first, "(empty)"); // the initialiser's value
    /// let second = task.enter(|| OUTPUT.replace(String::new()));
    /// assert_eq!(second, "partial");
    /// ```
    #[track_caller]
    pub fn replace(&'static self, value: T) -> T {
        let swapped = storage::with_brief(self, |cell| match cell.try_borrow_mut() {
            Ok(mut borrowed) => Ok(core::mem::replace(&mut *borrowed, value)),
            Err(_) => Err(value),
        });
        swapped.unwrap_or_else(|value| already_borrowed(self.decl.name(), value))
    }

    /// Runs `f` with `value` as the content of the current block's
    /// `RefCell`, and puts the previous content back afterwards, also if `f`
    /// panics or the coroutine is dropped while suspended inside `f`.
    ///
    /// As for the `Cell` version, the override belongs to the block current
    /// when `scope` is called, across suspensions inside `f`, and the
    /// previous content goes back into that block; and, as there, a future
    /// returned from `f` does not stay in scope: use
    /// [`scope_future`](LocalKey::scope_future).
    ///
    /// # Panics
    ///
    /// Panics if the `RefCell` is borrowed when the value is swapped in or
    /// back (as [`replace`](LocalKey::replace) would; while already
    /// unwinding, the previous content is dropped instead of put back), and,
    /// naming the static, where [`with`](LocalKey::with) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use co_local::co_local;
    ///
    /// co_local! {
    ///     static OUTPUT: RefCell<Vec<String>> = RefCell::new(Vec::new());
    /// }
    ///
    /// OUTPUT.with_borrow_mut(|o| o.push(String::from("to the monitor")));
    /// // Capture what a nested command writes, then restore the real output.
    /// let captured = OUTPUT.scope(Vec::new(), || {
    ///     OUTPUT.with_borrow_mut(|o| o.push(String::from("captured")));
    ///     OUTPUT.take()
    /// });
    /// assert_eq!(captured, ["captured"]);
    /// OUTPUT.with_borrow(|o| assert_eq!(*o, ["to the monitor"]));
    /// ```
    #[track_caller]
    pub fn scope<R>(&'static self, value: T, f: impl FnOnce() -> R) -> R {
        // The scoped value, handed back, is dropped after the override.
        scoped::with_value_in_place(self, value, &mut None, f)
    }

    /// Wraps `future` so that each of its polls runs with `value` as the
    /// content of the current block's `RefCell`, and the previous content is
    /// put back after each poll: the async counterpart of
    /// [`scope`](LocalKey::scope) (see the `Cell` version for the details).
    ///
    /// # Panics
    ///
    /// Polling panics if the `RefCell` is borrowed when the value is swapped
    /// in or back (as [`replace`](LocalKey::replace) would), and, naming the
    /// static, where [`with`](LocalKey::with) does. Dropping the wrapper
    /// never panics for its value: where it cannot be put in place, the
    /// inner future is dropped as it is.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use co_local::{co_local, LocalWithLocals};
    ///
    /// co_local! {
    ///     static TRACE: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
    /// }
    ///
    /// let task = LocalWithLocals::new(async {
    ///     TRACE.with_borrow_mut(|t| t.push("outer"));
    ///     // The inner future writes into a trace of its own...
    ///     let inner = TRACE
    ///         .scope_future(Vec::new(), async {
    ///             TRACE.with_borrow_mut(|t| t.push("inner"));
    ///             TRACE.take()
    ///         })
    ///         .await;
    ///     // ...and the task's is as it left it.
    ///     (inner, TRACE.take())
    /// });
    /// assert_eq!(futures::executor::block_on(task), (vec!["inner"], vec!["outer"]));
    /// ```
    pub fn scope_future<F: Future>(&'static self, value: T, future: F) -> Scoped<RefCell<T>, F> {
        Scoped::new(self, value, future)
    }
}
