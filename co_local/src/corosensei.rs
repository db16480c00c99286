//! A corosensei coroutine with coroutine-local values of its own (Cargo
//! feature `corosensei`).
//!
//! [`Coroutine`] has co_runtime's API shape over a
//! [`corosensei`] coroutine: every switch into it goes
//! through [`Locals::resume`], so it gets its own block, keeps a block it
//! entered and suspended inside, and its caller finds its own block again,
//! also when it panics; dropped while suspended, it unwinds with the block
//! it last left current.

use core::fmt;
use std::panic::{self, AssertUnwindSafe};

use ::corosensei::{CoroutineResult, Yielder};

use crate::Locals;

/// A [`corosensei::Coroutine`] with a block of
/// coroutine-local values of its own.
///
/// Made with a copy of each `#[inherit]` value alive where it is made
/// ([`Locals::inherit`]). Every [`resume`](Coroutine::resume) makes current
/// the block it last left current (at first, its own), as
/// [`Locals::resume`] does, and the caller's block again afterwards, also
/// if the coroutine panics. Its values are destroyed, with its block
/// current, when it finishes (returns or panics) or is dropped; dropped
/// while suspended, it first unwinds its stack with the block it last left
/// current, so that destructors on that stack see their values.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use co_local::co_local;
/// use co_local::corosensei::Coroutine;
/// use corosensei::{CoroutineResult, Yielder};
///
/// co_local! {
///     static REQUEST: Cell<u32> = const { Cell::new(0) };
/// }
///
/// let mut co = Coroutine::new(|y: &Yielder<u32, u32>, first: u32| {
///     REQUEST.set(first);
///     let next = y.suspend(REQUEST.get() * 2);
///     REQUEST.get() + next
/// });
/// assert_eq!(co.resume(5), CoroutineResult::Yield(10));
/// assert_eq!(REQUEST.get(), 0); // the caller's own value
/// assert_eq!(co.with_locals(|| REQUEST.get()), Some(5));
/// assert_eq!(co.resume(1), CoroutineResult::Return(6));
/// assert!(co.done());
/// assert_eq!(co.with_locals(|| REQUEST.get()), None);
/// ```
pub struct Coroutine<Input, Yield, Return> {
    /// `None` once the coroutine has finished and its values are gone.
    inner: Option<Inner<Input, Yield, Return>>,
}

struct Inner<Input, Yield, Return> {
    /// Taken by `Drop`, which drops it inside `locals.resume`.
    co: Option<::corosensei::Coroutine<Input, Yield, Return>>,
    locals: Locals,
}

impl<Input, Yield, Return> Drop for Inner<Input, Yield, Return> {
    fn drop(&mut self) {
        if let Some(co) = self.co.take() {
            // A suspended coroutine unwinds its stack here: with the block
            // it last left current.
            self.locals.resume(|| drop(co));
        }
    }
}

impl<Input, Yield, Return> Coroutine<Input, Yield, Return>
where
    Input: 'static,
    Yield: 'static,
    Return: 'static,
{
    /// Makes a coroutine that runs `f` on a stack of its own (corosensei's
    /// default stack), with a block that starts with a copy of each
    /// `#[inherit]` value alive in the block current now.
    pub fn new<F>(f: F) -> Coroutine<Input, Yield, Return>
    where
        F: FnOnce(&Yielder<Input, Yield>, Input) -> Return + 'static,
    {
        Coroutine {
            inner: Some(Inner {
                co: Some(::corosensei::Coroutine::new(f)),
                locals: Locals::inherit(),
            }),
        }
    }

    /// Resumes the coroutine with `input` until it suspends or returns,
    /// with the block it last left current (at first, its own); the caller's
    /// block is current again when this returns.
    ///
    /// # Panics
    ///
    /// A panic inside the coroutine comes out of this call, with the
    /// caller's block current; the coroutine has then finished, and its
    /// values are destroyed. Resuming a finished coroutine panics.
    #[track_caller]
    pub fn resume(&mut self, input: Input) -> CoroutineResult<Yield, Return> {
        let Some(Inner {
            co: Some(co),
            locals,
        }) = self.inner.as_mut()
        else {
            panic!("co_local: resumed a corosensei coroutine that has finished")
        };
        let switched = panic::catch_unwind(AssertUnwindSafe(|| locals.resume(|| co.resume(input))));
        match switched {
            Ok(CoroutineResult::Yield(y)) => CoroutineResult::Yield(y),
            Ok(CoroutineResult::Return(r)) => {
                // Finished: its values die now, with its block current.
                self.inner = None;
                CoroutineResult::Return(r)
            }
            Err(payload) => {
                self.inner = None;
                panic::resume_unwind(payload)
            }
        }
    }

    /// Runs `f` with this coroutine's own block current (to seed values
    /// before the first resume, or read a suspended coroutine's), and the
    /// caller's block again afterwards; `None` once the coroutine has
    /// finished and its values are gone.
    pub fn with_locals<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        self.inner.as_mut().map(|inner| inner.locals.enter(f))
    }

    /// Whether the coroutine has been resumed yet.
    pub fn started(&self) -> bool {
        self.inner
            .as_ref()
            .and_then(|inner| inner.co.as_ref())
            .is_none_or(::corosensei::Coroutine::started)
    }

    /// Whether the coroutine has finished (returned or panicked); its values
    /// are then gone.
    pub fn done(&self) -> bool {
        self.inner.is_none()
    }
}

impl<Input: 'static, Yield: 'static, Return: 'static> fmt::Debug
    for Coroutine<Input, Yield, Return>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coroutine")
            .field("started", &self.started())
            .field("done", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}
