//! The public types: [`Coroutine`], [`Yielder`] and [`CoroutineResult`].

use core::fmt;

use crate::raw::{RawCoroutine, Suspender};
use crate::stack::DEFAULT_STACK_SIZE;

/// What [`Coroutine::resume`] comes back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoroutineResult<Y, R> {
    /// The coroutine suspended itself with [`Yielder::suspend`], handing out
    /// this value. It can be resumed again.
    Yield(Y),
    /// The coroutine's closure returned this value. The coroutine is done.
    Return(R),
}

impl<Y, R> CoroutineResult<Y, R> {
    /// The yielded value, if the coroutine suspended.
    ///
    /// # Examples
    ///
    /// ```
    /// use co_runtime::CoroutineResult;
    ///
    /// assert_eq!(CoroutineResult::<u8, ()>::Yield(1).as_yield(), Some(1));
    /// assert_eq!(CoroutineResult::<u8, ()>::Return(()).as_yield(), None);
    /// ```
    pub fn as_yield(self) -> Option<Y> {
        match self {
            CoroutineResult::Yield(value) => Some(value),
            CoroutineResult::Return(_) => None,
        }
    }

    /// The returned value, if the coroutine finished.
    ///
    /// # Examples
    ///
    /// ```
    /// use co_runtime::CoroutineResult;
    ///
    /// assert_eq!(CoroutineResult::<(), u8>::Return(2).as_return(), Some(2));
    /// assert_eq!(CoroutineResult::<(), u8>::Yield(()).as_return(), None);
    /// ```
    pub fn as_return(self) -> Option<R> {
        match self {
            CoroutineResult::Yield(_) => None,
            CoroutineResult::Return(value) => Some(value),
        }
    }
}

/// A stackful coroutine: a closure that runs on its own stack and can suspend
/// itself in the middle of any call, with its own copy of every
/// [`co_local!`](co_local::co_local) value.
///
/// A coroutine takes inputs of type `I`, yields values of type `Y` and
/// returns a value of type `R`. Its closure gets a [`Yielder`] and the input
/// of the first [`resume`](Coroutine::resume); each
/// [`suspend`](Yielder::suspend) hands a value out of `resume` and returns the
/// input of the next one; the closure's return value comes out of the last.
///
/// # Coroutine-local values
///
/// Each coroutine has one co_local block ([`co_local::Locals`]), made when the
/// coroutine is made. While the coroutine runs, every co_local access reaches
/// that block; its resumer finds its own block again as soon as the coroutine
/// suspends or finishes. [`with_locals`](Coroutine::with_locals) reaches the
/// block from outside, before the first resume or while the coroutine is
/// suspended. The block is destroyed when the coroutine finishes or is
/// dropped, each value that was made exactly once, with the block current.
///
/// A switch costs the context switch plus swapping one pointer each way: no
/// allocation, no lock, no work per co_local variable.
///
/// # Stacks
///
/// The stack has [`DEFAULT_STACK_SIZE`](crate::DEFAULT_STACK_SIZE) bytes, or
/// as many as given to [`with_stack_size`](Coroutine::with_stack_size), with a
/// guard page below it: a stack overflow faults on the guard page instead of
/// overwriting memory, and co_runtime reports "coroutine stack overflow" with
/// the stack's bounds and size on stderr before aborting the process (as std
/// does for a thread's overflow). Stacks are reused through a
/// bounded per-thread pool, so making a coroutine in steady state maps no
/// memory; see [`stack_stats`](crate::stack_stats).
///
/// # Panics and dropping
///
/// A panic in the closure is caught on the coroutine's stack and resumed out
/// of [`resume`](Coroutine::resume) with its original payload; the coroutine
/// is then done.
///
/// Dropping a suspended coroutine unwinds its stack, so the destructors of
/// the values on it run, and then destroys its co_local values. The unwinding
/// is a panic with a private payload, started by
/// [`suspend`](Yielder::suspend) with [`std::panic::resume_unwind`] (the
/// panic hook does not report it) and caught where the closure was called.
/// Code that catches it should let it go on; if the closure instead returns,
/// its value is dropped, and if it calls `suspend` again, that call panics
/// (the panic comes out of the drop, unless the thread is already
/// panicking). A coroutine dropped before its first resume runs nothing: its
/// closure is dropped.
///
/// Outcomes of panics that meet each other:
///
/// - A destructor of a co_local value that panics while the block is
///   destroyed does not stop the other destructors. If the coroutine returned
///   or was dropped, that panic comes out of `resume` or of the drop. If the
///   closure itself panicked, the closure's payload comes out of `resume`,
///   and the destructor's panic, already reported by the panic hook, is
///   dropped. Which of two panicking destructors comes out is unspecified.
/// - A destructor on the coroutine's stack that panics *during the forced
///   unwind* of a drop, or that calls `suspend` then, aborts the process:
///   Rust aborts on a panic raised while a frame is being unwound.
/// - A coroutine that suspends from a destructor while its stack unwinds from
///   a panic of its own leaves [`std::thread::panicking`] true in its resumer
///   until it is resumed and finishes unwinding (std counts panics per
///   thread); code of the resumer that checks `panicking()` (co_local's block
///   destruction does, to not resume a second panic) behaves as if unwinding.
///
/// # Threads
///
/// A coroutine is neither [`Send`] nor [`Sync`]: it runs on the thread that
/// made it, so its co_local values need no `Send` bound.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use co_runtime::{Coroutine, CoroutineResult, Yielder};
///
/// co_local::co_local! {
///     static DEPTH: Cell<u32> = const { Cell::new(0) };
/// }
///
/// let mut counter = Coroutine::new(|y: &Yielder<u32, u32>, mut step: u32| {
///     for _ in 0..3 {
///         DEPTH.set(DEPTH.get() + step);
///         step = y.suspend(DEPTH.get());
///     }
///     "done"
/// });
///
/// assert_eq!(counter.resume(1), CoroutineResult::Yield(1));
/// assert_eq!(counter.resume(10), CoroutineResult::Yield(11));
/// // The coroutine's `DEPTH` is its own.
/// assert_eq!(DEPTH.get(), 0);
/// assert_eq!(counter.with_locals(|| DEPTH.get()), Some(11));
/// assert_eq!(counter.resume(100), CoroutineResult::Yield(111));
/// assert_eq!(counter.resume(0), CoroutineResult::Return("done"));
/// assert!(counter.done());
/// ```
pub struct Coroutine<I, Y, R> {
    raw: RawCoroutine<I, Y, R>,
}

impl<I, Y, R> Coroutine<I, Y, R> {
    /// Makes a coroutine that will run `f` on a stack of
    /// [`DEFAULT_STACK_SIZE`](crate::DEFAULT_STACK_SIZE) bytes.
    ///
    /// Nothing runs until the first [`resume`](Coroutine::resume), whose
    /// input is `f`'s second argument. The coroutine's co_local block is made
    /// now, so [`with_locals`](Coroutine::with_locals) can seed values before
    /// it starts.
    ///
    /// # Panics
    ///
    /// Panics if a stack cannot be mapped (out of address space).
    ///
    /// # Examples
    ///
    /// ```
    /// use co_runtime::{Coroutine, CoroutineResult, Yielder};
    ///
    /// let mut co: Coroutine<u32, u32, String> = Coroutine::new(|y: &Yielder<u32, u32>, first: u32| {
    ///     let second = y.suspend(first * 2);
    ///     format!("{first} {second}")
    /// });
    /// assert!(matches!(co.resume(1), CoroutineResult::Yield(2)));
    /// assert!(matches!(co.resume(5), CoroutineResult::Return(ref s) if s == "1 5"));
    /// ```
    #[track_caller]
    pub fn new<F>(f: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        Coroutine::with_stack_size(DEFAULT_STACK_SIZE, f)
    }

    /// Makes a coroutine that will run `f` on a stack of at least `bytes`
    /// bytes (rounded up to whole pages), plus a guard page.
    ///
    /// Only the pages the coroutine touches take memory, so a generous size
    /// costs address space, not RAM. Stacks of the same size are reused
    /// through the thread's pool.
    ///
    /// # Panics
    ///
    /// Panics if the stack cannot be mapped: `bytes` exceeds the system's
    /// stack size limit (`RLIMIT_STACK`'s hard limit on Unix), or the address
    /// space is exhausted.
    ///
    /// # Examples
    ///
    /// ```
    /// use co_runtime::{Coroutine, CoroutineResult};
    ///
    /// fn depth(n: u64) -> u64 {
    ///     if n == 0 { 0 } else { 1 + depth(std::hint::black_box(n - 1)) }
    /// }
    ///
    /// let mut deep = Coroutine::with_stack_size(16 << 20, |_: &_, n: u64| depth(n));
    /// assert_eq!(deep.resume(100_000), CoroutineResult::<(), u64>::Return(100_000));
    /// ```
    #[track_caller]
    pub fn with_stack_size<F>(bytes: usize, f: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        Coroutine {
            raw: RawCoroutine::new(bytes, f),
        }
    }

    /// Runs the coroutine, with `input`, until it suspends or returns.
    ///
    /// The first call starts the closure with `input` as its second
    /// argument; the next ones make the pending [`Yielder::suspend`] return
    /// `input`. While the coroutine runs, its co_local block is current (or the
    /// block of a [`Locals`](co_local::Locals) it entered and suspended in);
    /// when `resume` returns, the caller's block is current again.
    ///
    /// A `suspend(value)` in the coroutine brings `value` back here as
    /// [`CoroutineResult::Yield`]; the closure's return value comes back as
    /// [`CoroutineResult::Return`], once the coroutine is done and its
    /// co_local values have been destroyed.
    ///
    /// # Panics
    ///
    /// Panics if the coroutine has finished (returned or panicked), with the
    /// message "cannot resume a coroutine that has finished".
    ///
    /// If the closure panics, the panic is resumed here with its original
    /// payload (see [`std::panic::resume_unwind`]), after the caller's block
    /// has been made current again and the coroutine's co_local values have
    /// been destroyed; the coroutine is then done. If the closure returns but
    /// a destructor of its co_local values panics, that panic comes out here
    /// (the coroutine is done).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::panic::{self, AssertUnwindSafe};
    /// use co_runtime::Coroutine;
    ///
    /// let mut co = Coroutine::<(), (), ()>::new(|_, ()| panic::panic_any(7_u32));
    /// let payload = panic::catch_unwind(AssertUnwindSafe(|| co.resume(()))).unwrap_err();
    /// assert_eq!(payload.downcast_ref::<u32>(), Some(&7));
    /// assert!(co.done());
    /// ```
    #[inline]
    #[track_caller]
    pub fn resume(&mut self, input: I) -> CoroutineResult<Y, R> {
        self.raw.resume(input)
    }

    /// Whether `resume` has been called on this coroutine yet: `false`
    /// until its closure starts.
    #[must_use]
    pub fn started(&self) -> bool {
        self.raw.started()
    }

    /// Whether the coroutine has finished: its closure returned or panicked.
    /// A finished coroutine cannot be resumed, and its co_local values have
    /// been destroyed.
    #[must_use]
    pub fn done(&self) -> bool {
        self.raw.done()
    }

    /// Runs `f` with this coroutine's co_local block current, if the coroutine
    /// has not finished; `None` once it is done.
    ///
    /// Before the first resume, this seeds values the coroutine will find (a
    /// dispatcher setting the monitor of the command it is about to run);
    /// while it is suspended, this reads or changes its values. Lazy values
    /// that `f` reaches are made in the coroutine's block. The caller's block
    /// is current again when `with_locals` returns, also if `f` panics.
    ///
    /// `f` sees the coroutine's own block even if the coroutine suspended
    /// while inside another [`Locals`](co_local::Locals) it had entered.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::Cell;
    /// use co_runtime::{Coroutine, Yielder};
    ///
    /// co_local::co_local! {
    ///     static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
    /// }
    ///
    /// let mut command = Coroutine::new(|y: &Yielder<(), ()>, ()| {
    ///     let mon = CUR_MON.get();
    ///     y.suspend(());
    ///     mon
    /// });
    /// assert_eq!(command.with_locals(|| CUR_MON.set(Some(3))), Some(()));
    /// command.resume(());
    /// assert_eq!(command.with_locals(|| CUR_MON.get()), Some(Some(3)));
    /// assert_eq!(CUR_MON.get(), None);
    /// assert_eq!(command.resume(()).as_return(), Some(Some(3)));
    /// assert_eq!(command.with_locals(|| CUR_MON.get()), None);
    /// ```
    pub fn with_locals<T>(&mut self, f: impl FnOnce() -> T) -> Option<T> {
        self.raw.with_locals(f)
    }
}

impl<I, Y, R> fmt::Debug for Coroutine<I, Y, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coroutine")
            .field("started", &self.started())
            .field("done", &self.done())
            .field("stack_size", &self.raw.stack_size())
            .finish_non_exhaustive()
    }
}

/// The handle a coroutine's closure gets to suspend the coroutine.
///
/// The closure receives a `&Yielder<I, Y>`; the reference cannot leave the
/// closure, so `suspend` is only ever called by the coroutine itself, at any
/// depth of calls. A `Yielder` is neither [`Send`] nor [`Sync`].
pub struct Yielder<I, Y> {
    raw: Suspender<I, Y>,
}

impl<I, Y> Yielder<I, Y> {
    pub(crate) fn from_raw(raw: Suspender<I, Y>) -> Self {
        Yielder { raw }
    }

    pub(crate) fn raw(&self) -> &Suspender<I, Y> {
        &self.raw
    }

    /// Suspends the coroutine: `value` comes out of the pending
    /// [`Coroutine::resume`], and `suspend` returns the input of the next
    /// one.
    ///
    /// The coroutine's co_local values stay where they are: references handed
    /// out by `with` stay valid across the suspension, while other coroutines
    /// run with their own values.
    ///
    /// If the coroutine is dropped instead of resumed, `suspend` does not
    /// return: it unwinds the coroutine's stack with a private panic payload
    /// (via [`std::panic::resume_unwind`], so the panic hook is not called);
    /// see [`Coroutine`] about dropping.
    ///
    /// # Panics
    ///
    /// Panics if the coroutine is being dropped, that is, if a previous
    /// `suspend` started the unwinding and the closure caught it.
    ///
    /// # Examples
    ///
    /// ```
    /// use co_runtime::{Coroutine, CoroutineResult, Yielder};
    ///
    /// fn countdown(y: &Yielder<(), u32>, from: u32) {
    ///     for i in (1..=from).rev() {
    ///         y.suspend(i);
    ///     }
    /// }
    ///
    /// let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| countdown(y, 2));
    /// assert_eq!(co.resume(()), CoroutineResult::Yield(2));
    /// assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    /// assert_eq!(co.resume(()), CoroutineResult::Return(()));
    /// ```
    #[inline]
    pub fn suspend(&self, value: Y) -> I {
        self.raw.suspend(value)
    }
}

impl<I, Y> fmt::Debug for Yielder<I, Y> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Yielder").finish_non_exhaustive()
    }
}
