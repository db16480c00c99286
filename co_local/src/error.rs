//! [`AccessError`] and [`AccessErrorKind`]: why a coroutine-local value
//! cannot be reached, and the panics of the accessors that cannot fail.

use core::fmt;

use crate::registry::Declaration;

/// The error [`LocalKey::try_with`](crate::LocalKey::try_with) returns when
/// the current block's value of a key cannot be reached;
/// [`kind`](AccessError::kind) says why. The accessors that cannot fail
/// ([`with`](crate::LocalKey::with), `get`, `set`, `with_borrow`, …) panic in
/// the same cases, with a message that names the static and the reason.
///
/// It has no public constructor.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use co_local::{co_local, AccessErrorKind, WithLocals};
///
/// co_local! {
///     // An `Rc` stays on its thread; a task that may move cannot reach it.
///     static SHARED: Cell<Option<std::rc::Rc<u8>>> = const { Cell::new(None) };
/// }
///
/// let mut task = WithLocals::new(std::future::ready(()));
/// let err = task.with_locals(|| SHARED.try_with(|_| ())).unwrap().unwrap_err();
/// assert_eq!(err.kind(), AccessErrorKind::NotSend);
/// assert!(err.to_string().contains("`Send`"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AccessError {
    kind: AccessErrorKind,
}

/// Why a coroutine-local value cannot be reached: the kind of an
/// [`AccessError`].
///
/// More kinds may be added: match with a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AccessErrorKind {
    /// The value is being destroyed (its destructor is running) or has
    /// been destroyed: a destructor reaching its own key, or a value whose
    /// destructor ran earlier in the destruction of its block, or any value
    /// of a thread's own block once that block is gone at thread exit. A
    /// value is never made again in a block that destroyed it.
    Destroyed,
    /// The current block is one that may move between threads (a
    /// [`WithLocals`](crate::WithLocals) task's, or a `SendLocals`), and
    /// the value's type is not `Send`.
    NotSend,
    /// The access was made outside every coroutine, `Locals` and task on a
    /// thread that denies its own values to such code (an executor's worker
    /// thread): the task that made it runs without a block of its own.
    ThreadValuesDenied,
}

impl AccessError {
    pub(crate) const fn new(kind: AccessErrorKind) -> AccessError {
        AccessError { kind }
    }

    /// Why the value cannot be reached.
    pub fn kind(&self) -> AccessErrorKind {
        self.kind
    }
}

impl fmt::Debug for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessError")
            .field("kind", &self.kind)
            .finish()
    }
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            AccessErrorKind::Destroyed => {
                "the coroutine-local value is being or has been destroyed"
            }
            AccessErrorKind::NotSend => {
                "a block that may move between threads cannot reach a coroutine-local value \
                 whose type is not `Send`"
            }
            AccessErrorKind::ThreadValuesDenied => {
                "this thread denies its own coroutine-local values to code outside every \
                 coroutine, `Locals` and task"
            }
        })
    }
}

impl std::error::Error for AccessError {}

/// The panic of an accessor that cannot fail: names the static (with its
/// module) and says why, and what to do where there is something to do.
#[cold]
#[track_caller]
pub(crate) fn panic_access_error(decl: &Declaration, err: AccessError) -> ! {
    let name = format_args!("{}::{}", decl.module_path(), decl.name());
    match err.kind {
        AccessErrorKind::Destroyed => panic!(
            "cannot access the coroutine-local `{name}`: it is being or has been destroyed \
             (a destructor reaching a value its block destroyed, or a thread's own value after \
             thread exit); use `try_with` where that can happen"
        ),
        AccessErrorKind::NotSend => panic!(
            "cannot access the coroutine-local `{name}` from a block that may move between \
             threads (a `WithLocals` task or a `SendLocals`): its type is not `Send`; make it \
             `Send`, or keep the work on one thread (`LocalWithLocals`, `Locals`)"
        ),
        AccessErrorKind::ThreadValuesDenied => panic!(
            "cannot access the coroutine-local `{name}` outside every coroutine and task: this \
             thread denies its own values (`co_local::deny_thread_values`); wrap the work in a \
             block of its own (`co_local::WithLocals` or `co_local::tokio::spawn` for a task, \
             `co_local::SendLocals` or `co_local::tokio::spawn_blocking` for a blocking job)"
        ),
    }
}
