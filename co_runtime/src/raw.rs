//! The one module of `co_runtime` with `unsafe` code: a coroutine's context
//! on its stack, the switches into and out of it, the values passed across
//! them, and the swap of the current co_local block around each switch.
//!
//! # What `context` 3.0.0 requires
//!
//! `context` is a thin wrapper over Boost.Context's `make_fcontext` and
//! `jump_fcontext` (its `src/context.rs` and `src/stack.rs`). It checks
//! nothing; these are the rules its callers keep:
//!
//! 1. `Context::new(stack, f)` prepares a context at the top of `stack` that
//!    runs `f` when it is first resumed. It only reads the stack's bounds, so
//!    the stack must stay mapped as long as that context, or any context later
//!    saved on that stack, may be resumed.
//! 2. `f: extern "C" fn(Transfer) -> !` must never return: below its frame
//!    there is only Boost's trampoline, which exits the process. It must not
//!    unwind either: it is called from assembly, and unwinding out of an
//!    `extern "C"` function aborts.
//! 3. `Context::resume(self, data)` saves the running execution and jumps to
//!    `self`, which must be a suspended execution whose stack is mapped; the
//!    context is consumed, since a saved state can be resumed only once. The
//!    resumed side gets a `Transfer` holding the saved context of the
//!    execution that jumped to it, and `data`. `resume` returns, with such a
//!    `Transfer`, when someone jumps back to the execution it saved.
//! 4. Nothing runs the destructors of values on a stack that is never resumed
//!    again: the caller must make sure there are none before abandoning a
//!    stack, or else never unmap or reuse it (a value may be pinned there).
//!
//! # The protocol of a coroutine
//!
//! A coroutine's stack runs [`entry`]. Values cross a switch as a pointer, in
//! `data`, to a slot in the frame of the side that jumps; that side is
//! suspended until the other side has moved the value out of the slot, so the
//! slot is alive and nobody else touches it meanwhile. The slot is a
//! `ManuallyDrop`: the receiver moves the value out exactly once, on arrival,
//! and the sender never drops it. Nothing is allocated per switch.
//!
//! - Creation ([`RawCoroutine::new`]): the creator jumps into the new context
//!   with a pointer to its `Option<F>`; `entry` moves the closure onto the
//!   coroutine's stack and jumps straight back with `data` = 0. The coroutine
//!   is now suspended before its first line.
//! - Resumer to coroutine ([`RawCoroutine::switch`]): a pointer to the
//!   input `I`, or [`UNWIND`] (0, never a pointer) to ask it to unwind.
//! - Coroutine to resumer ([`Suspender::suspend`], [`Suspender::finish`]): a
//!   pointer to a `Message<T>`, whose alignment of at least 2 leaves the low
//!   bit free to say whether the coroutine yielded (bit clear, `T` = `Y`, and
//!   it is suspended) or finished ([`FINISHED`] set, `T` = `Outcome<R>`, and
//!   it never runs again). Neither side writes a tag to memory.
//!
//! Each switch into the coroutine runs inside [`Locals::resume`] of the
//! coroutine's block: the block it had current when it last suspended is
//! made current, and the resumer's comes back when it jumps out, also if
//! something between switches the stack behind co_runtime's back.
//!
//! # Dropping at odd times
//!
//! - A coroutine dropped while it runs can only be dropped by the thread's
//!   exit (`std::process::exit` inside it runs the thread-local destructors
//!   on its stack): its stack and block are leaked, never unmapped under
//!   the code that runs on them.
//! - A suspended coroutine dropped once the thread's thread-locals are being
//!   destroyed is leaked too, not unwound: frames on its stack may hold
//!   references into thread-locals destroyed before it ([`thread_exiting`]).

use core::cell::Cell;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::ptr;
use std::any::Any;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use co_local::Locals;
use context::stack::Stack;
use context::{Context, Transfer};

use crate::coroutine::{CoroutineResult, Yielder};
use crate::stack::PooledStack;

mod guard;

pub(crate) use self::guard::{valgrind_stack_deregister, valgrind_stack_register};

/// What the resumer asks of the coroutine it switches to.
enum Request<I> {
    /// Go on: the input of [`resume`](RawCoroutine::resume).
    Resume(I),
    /// Unwind the stack and finish: the coroutine is being dropped.
    Unwind,
}

/// What a coroutine's closure came to.
enum Outcome<R> {
    /// It returned.
    Returned(R),
    /// It panicked with this payload.
    Panicked(Box<dyn Any + Send>),
    /// It was unwound on request, or dropped before it started.
    Unwound,
}

/// The `data` of a jump into a coroutine that asks it to unwind: no pointer
/// is null.
const UNWIND: usize = 0;

/// Set in the `data` of a coroutine's last jump back: the message is a
/// `Message<Outcome<R>>`, not a `Message<Y>`.
const FINISHED: usize = 1;

/// The slot a coroutine passes back to its resumer: moved out by the
/// resumer ([`take_message`]). Aligned to 2 at least, so that the low bit of
/// its address is free for [`FINISHED`].
#[repr(C, align(2))]
struct Message<T>(ManuallyDrop<T>);

impl<T> Message<T> {
    fn new(value: T) -> Message<T> {
        Message(ManuallyDrop::new(value))
    }

    fn as_data(&mut self) -> usize {
        ptr::from_mut(self) as usize
    }
}

/// What a switch into the coroutine came back with.
enum Step<Y, R> {
    Yielded(Y),
    Finished(Outcome<R>),
}

/// The payload of the panic that unwinds a coroutine being dropped, raised
/// with `resume_unwind` so that the panic hook does not report it. Only
/// `suspend` makes one; since user code may catch it and raise it again
/// elsewhere, `run` also checks the `unwinding` flag before taking a panic
/// for the forced unwind.
struct ForcedUnwind;

/// Reports a broken invariant of this module and aborts: unwinding is not an
/// option where this is called (it would cross `entry`, or leave a stack
/// with live frames to be reused).
#[cold]
fn fatal(what: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "co_runtime: fatal error: {what}");
    std::process::abort()
}

/// The panic of `resume` on a finished coroutine.
#[cold]
#[inline(never)]
#[track_caller]
fn resume_finished() -> ! {
    panic!("cannot resume a coroutine that has finished")
}

/// Moves out the request a resumer passed in `data`.
///
/// # Safety
///
/// `data` must be the `data` of a jump made by [`RawCoroutine::switch`]:
/// [`UNWIND`], or a pointer to its input `I`, which stays alive and untouched
/// by anyone else until this coroutine jumps back (the resumer is suspended);
/// and this must be the only call for that jump.
unsafe fn take_request<I>(data: usize) -> Request<I> {
    if data == UNWIND {
        return Request::Unwind;
    }
    // SAFETY: the caller guarantees a live, initialised input that nobody
    // else reads or drops (`switch` keeps it in a `MaybeUninit`), moved out
    // once.
    Request::Resume(unsafe { ptr::read(data as *const I) })
}

/// Moves out the message a coroutine passed in `data`.
///
/// # Safety
///
/// `data` must be the `data` of a jump made by [`Suspender::suspend`] or
/// [`Suspender::finish`] of a coroutine whose types are `Y` and `R`: a pointer
/// to a `Message` on that coroutine's stack, which is still mapped and which
/// nobody else uses until the coroutine runs again; and this must be the only
/// call for that jump.
unsafe fn take_message<Y, R>(data: usize) -> Step<Y, R> {
    if data & FINISHED == 0 {
        // SAFETY: `suspend` sends a `Message<Y>`, whose address has the bit
        // clear; the caller guarantees it is alive, initialised and moved out
        // once (the coroutine never drops its `ManuallyDrop`).
        let value = unsafe { ptr::read(data as *const Message<Y>) };
        Step::Yielded(ManuallyDrop::into_inner(value.0))
    } else {
        // SAFETY: `finish` sends a `Message<Outcome<R>>` with the bit set on
        // its (even) address; alive and moved out once, as above.
        let value = unsafe { ptr::read((data & !FINISHED) as *const Message<Outcome<R>>) };
        Step::Finished(ManuallyDrop::into_inner(value.0))
    }
}

/// The entry point of every coroutine stack: takes the closure, waits for
/// the first request, runs the closure (catching any panic) and reports how
/// it ended. Never returns and never unwinds (rule 2).
extern "C" fn entry<I, Y, R, F>(transfer: Transfer) -> !
where
    F: FnOnce(&Yielder<I, Y>, I) -> R,
{
    // SAFETY: the first jump into a new context is the one in
    // `RawCoroutine::new`, whose `data` points to its `Option<F>`; `new` is
    // suspended in that jump, so the slot is alive and nobody else uses it.
    let f = unsafe { &mut *(transfer.data as *mut Option<F>) }.take();
    let Some(f) = f else {
        fatal("a coroutine started without its closure")
    };
    // SAFETY: `transfer.context` is `new`'s execution, saved by the jump that
    // started us and not resumed since; its stack is the creator's, alive
    // while `new` waits for exactly this jump back (it ignores `data`).
    let transfer = unsafe { transfer.context.resume(0) };
    let yielder = Yielder::from_raw(Suspender {
        resumer: Cell::new(Some(transfer.context)),
        unwinding: Cell::new(false),
        marker: PhantomData,
        not_send: PhantomData,
    });
    // SAFETY: once `new` has returned, only `RawCoroutine::switch` jumps into
    // a coroutine; this is the one read of the first request.
    let request = unsafe { take_request::<I>(transfer.data) };
    let outcome = run(f, &yielder, request);
    yielder.raw().finish(outcome)
}

/// Runs (or, if the coroutine is dropped before its first resume, drops) the
/// closure, catching every panic: nothing may unwind out of [`entry`].
fn run<I, Y, R, F>(f: F, yielder: &Yielder<I, Y>, request: Request<I>) -> Outcome<R>
where
    F: FnOnce(&Yielder<I, Y>, I) -> R,
{
    let input = match request {
        Request::Resume(input) => input,
        Request::Unwind => {
            yielder.raw().unwinding.set(true);
            return match panic::catch_unwind(AssertUnwindSafe(move || drop(f))) {
                Ok(()) => Outcome::Unwound,
                Err(payload) => Outcome::Panicked(payload),
            };
        }
    };
    match panic::catch_unwind(AssertUnwindSafe(move || f(yielder, input))) {
        Ok(value) => Outcome::Returned(value),
        Err(payload) if yielder.raw().unwinding.get() && payload.is::<ForcedUnwind>() => {
            Outcome::Unwound
        }
        Err(payload) => Outcome::Panicked(payload),
    }
}

/// The coroutine's side of the switch, inside its [`Yielder`]. It lives in
/// `entry`'s frame on the coroutine's stack; the closure only gets a shared
/// reference to it, so it is only ever used on that stack, while the
/// coroutine runs.
pub(crate) struct Suspender<I, Y> {
    /// The execution that resumed the coroutine, suspended in
    /// [`RawCoroutine::switch`]: `Some` while the coroutine runs. Taken to
    /// jump back, replaced by the next resumer on the way in.
    resumer: Cell<Option<Context>>,
    /// Set when the coroutine got the request to unwind: from then on it
    /// finishes, and may not suspend again.
    unwinding: Cell<bool>,
    /// `suspend` takes `Y` and returns `I`.
    marker: PhantomData<fn(Y) -> I>,
    /// A coroutine's yielder is used on its thread only: `!Send`, `!Sync`.
    not_send: PhantomData<*mut ()>,
}

// `finish` abandons the yielder on a finished stack (rule 4): it must have
// nothing to drop, whatever `I` and `Y` are.
const _: () = assert!(!core::mem::needs_drop::<Suspender<String, String>>());

impl<I, Y> Suspender<I, Y> {
    /// Jumps back to the resumer with `value`, and returns the input of the
    /// next resume. If the coroutine is dropped instead, unwinds the
    /// coroutine's stack with the private [`ForcedUnwind`] payload.
    #[inline]
    pub(crate) fn suspend(&self, value: Y) -> I {
        assert!(
            !self.unwinding.get(),
            "co_runtime: a coroutine that is being dropped cannot suspend \
             (the unwinding of its stack was caught and did not resume)"
        );
        let Some(resumer) = self.resumer.take() else {
            fatal("a coroutine suspended without a resumer")
        };
        let mut message = Message::new(value);
        // SAFETY: (rule 3) `resumer` is the execution suspended in `switch`
        // that resumed this coroutine: saved by that jump, and not resumed
        // since (`take` leaves `None`). Its stack is alive: that execution
        // cannot end while it waits for us. It moves the value out of
        // `message` (a `Message<Y>`, as the clear bit says) once, right after the
        // jump, and this frame is suspended meanwhile, so the slot is alive
        // and exclusive to it; `message` is never dropped here.
        let transfer = unsafe { resumer.resume(message.as_data()) };
        self.resumer.set(Some(transfer.context));
        // SAFETY: a suspended coroutine is resumed only by `switch`, and this
        // is the one read of its request.
        match unsafe { take_request::<I>(transfer.data) } {
            Request::Resume(input) => input,
            Request::Unwind => {
                self.unwinding.set(true);
                panic::resume_unwind(Box::new(ForcedUnwind))
            }
        }
    }

    /// Jumps back to the resumer for the last time with `outcome`.
    fn finish<R>(&self, outcome: Outcome<R>) -> ! {
        let Some(resumer) = self.resumer.take() else {
            fatal("a coroutine finished without a resumer")
        };
        let mut message = Message::new(outcome);
        // SAFETY: (rule 3) `resumer` as in `suspend`. The resumer moves the
        // outcome out of `message` and then drops this execution's context
        // without ever resuming it (`switch`), so this is the last thing this
        // stack runs. Nothing on it needs dropping (rule 4): the closure was
        // consumed by `run`, the outcome was moved out of a `ManuallyDrop`,
        // and the yielder in `entry`'s frame has no destructor.
        unsafe { resumer.resume(message.as_data() | FINISHED) };
        fatal("a finished coroutine was resumed")
    }
}

/// A coroutine: its stack, its saved execution, its co_local block.
pub(crate) struct RawCoroutine<I, Y, R> {
    /// The coroutine's saved execution: `Some` while it is suspended after
    /// its first resume, `None` before, while it runs and once it has
    /// finished.
    context: Option<Context>,
    /// The saved execution of a coroutine never resumed: `Some` until its
    /// first resume (or its drop) takes it. So `started` costs a resume no
    /// store of its own.
    first: Option<Context>,
    /// The stack it runs on: `Some` until it has finished, so whenever
    /// `context` is `Some` (rule 1).
    stack: Option<PooledStack>,
    /// Its co_local block: `Some` until it has finished. Its `resume`
    /// remembers the block to make current when the coroutine is next
    /// resumed: its own, or the one of a `Locals` it entered and suspended
    /// inside.
    locals: Option<Locals>,
    /// Takes `I`, gives `Y` and `R` (the variance of corosensei's).
    marker: PhantomData<fn(I) -> CoroutineResult<Y, R>>,
    /// A coroutine runs on the thread that made it: `!Send`, `!Sync`.
    not_send: PhantomData<*mut ()>,
}

impl<I, Y, R> RawCoroutine<I, Y, R> {
    /// Makes a coroutine that will run `f` on a stack of `stack_size` bytes.
    ///
    /// # Panics
    ///
    /// Panics if the stack cannot be mapped.
    #[track_caller]
    pub(crate) fn new<F>(stack_size: usize, f: F) -> Self
    where
        F: FnOnce(&Yielder<I, Y>, I) -> R + 'static,
    {
        let stack = PooledStack::new(stack_size);
        // `#[inherit]` values alive in the creator's block are copied now.
        let mut locals = Locals::inherit();
        mark_thread_alive();
        // The stack's bounds go in the coroutine's own block, once, for the
        // stack overflow report; a switch does nothing for it.
        guard::install_overflow_handler();
        let bounds = guard::StackBounds {
            guard: stack.bottom() as usize - Stack::min_size(),
            bottom: stack.bottom() as usize,
            top: stack.top() as usize,
        };
        locals.enter(|| guard::STACK_BOUNDS.set(bounds));
        // SAFETY: (rule 1) `stack` is kept in `self.stack` until the coroutine
        // has finished (`release`), when its last context has been dropped
        // unresumed; if the coroutine is leaked, so is the stack.
        let context = unsafe { Context::new(&stack, entry::<I, Y, R, F>) };
        let mut f = Some(f);
        // SAFETY: (rule 3) `context` is new and its stack is mapped. `entry`
        // moves the closure out of `f` through `data` and jumps straight
        // back; this frame is suspended meanwhile, so `f` is alive and
        // exclusive to it.
        let transfer = unsafe { context.resume(&raw mut f as usize) };
        debug_assert!(f.is_none());
        RawCoroutine {
            context: None,
            first: Some(transfer.context),
            stack: Some(stack),
            locals: Some(locals),
            marker: PhantomData,
            not_send: PhantomData,
        }
    }

    /// Resumes the coroutine with `input`; see `Coroutine::resume`.
    ///
    /// Always inlined into the caller, like `switch`: an extra call level
    /// around a stack switch costs a mispredicted return each way.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn resume(&mut self, input: I) -> CoroutineResult<Y, R> {
        let context = match self.context.take() {
            Some(context) => context,
            None => self.take_first(),
        };
        match self.switch(context, Request::Resume(input)) {
            Step::Yielded(value) => CoroutineResult::Yield(value),
            Step::Finished(outcome) => self.finished(outcome),
        }
    }

    /// The end of `resume` once the coroutine has finished: frees what it
    /// held, then returns its value or resumes its panic.
    #[cold]
    #[inline(never)]
    fn finished(&mut self, outcome: Outcome<R>) -> CoroutineResult<Y, R> {
        match outcome {
            Outcome::Returned(value) => {
                if let Err(payload) = self.release() {
                    panic::resume_unwind(payload);
                }
                CoroutineResult::Return(value)
            }
            Outcome::Panicked(payload) => {
                // The closure's panic is what the caller gets; a panic of a
                // co_local destructor after it has been reported by the hook.
                let _ = self.release();
                panic::resume_unwind(payload)
            }
            Outcome::Unwound => fatal("a coroutine unwound without being asked to"),
        }
    }

    /// The context of a coroutine resumed for the first time.
    ///
    /// # Panics
    ///
    /// If it has finished (it has no context at all).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn take_first(&mut self) -> Context {
        match self.first.take() {
            Some(context) => context,
            None => resume_finished(),
        }
    }

    /// Switches into the coroutine with `request` until it jumps back, with
    /// its saved block current meanwhile.
    #[inline(always)]
    fn switch(&mut self, context: Context, request: Request<I>) -> Step<Y, R> {
        let mut input = MaybeUninit::<I>::uninit();
        let data = match request {
            Request::Resume(value) => input.write(value) as *mut I as usize,
            Request::Unwind => UNWIND,
        };
        // SAFETY: `locals` is `Some` whenever the coroutine has a context
        // (the caller took it from `self.context` or `self.first`): both are
        // set in `new`, and `locals` is taken only by `release` and `drop`,
        // once the context is gone for good.
        let locals = unsafe { self.locals.as_mut().unwrap_unchecked() };
        // The block the coroutine had current when it last suspended is
        // current while it runs; the resumer's comes back when it jumps out.
        let transfer = locals.resume(|| {
            // SAFETY: (rule 3) `context` is the coroutine's suspended
            // execution, saved by its last jump out (in `entry` or `suspend`)
            // and taken out of `self.context` or `self.first`, so it is
            // resumed once; its stack is `self.stack`, mapped. The coroutine
            // moves the input out of `input` once, right after the jump
            // (`take_request`); this frame is suspended meanwhile, and a
            // `MaybeUninit` is never dropped. `data` is the input's address
            // (never null, even for a zero-sized `I`) or `UNWIND`.
            unsafe { context.resume(data) }
        });
        // SAFETY: a coroutine jumps back to `switch` only from `suspend` or
        // `finish`, with a `Message` on its stack, which stays mapped
        // (`self.stack`) and unused until the coroutine runs again; this is
        // the one read of it.
        let step = unsafe { take_message::<Y, R>(transfer.data) };
        if let Step::Yielded(_) = step {
            self.context = Some(transfer.context);
        }
        // Otherwise the context of the finished coroutine is dropped here,
        // never to be resumed.
        step
    }

    /// Frees what a finished coroutine holds: its stack goes back to the
    /// pool, and its co_local values are destroyed, with its block current.
    /// A panic of one of their destructors is returned.
    fn release(&mut self) -> std::thread::Result<()> {
        debug_assert!(self.context.is_none() && self.first.is_none());
        // Nothing on the stack needs dropping any more (see `finish`).
        self.stack = None;
        let locals = self.locals.take();
        panic::catch_unwind(AssertUnwindSafe(move || drop(locals)))
    }

    /// Runs `f` with the coroutine's own block current, if it has not
    /// finished.
    pub(crate) fn with_locals<T>(&mut self, f: impl FnOnce() -> T) -> Option<T> {
        self.locals.as_mut().map(|locals| locals.enter(f))
    }

    /// Whether the coroutine has been resumed at least once.
    pub(crate) fn started(&self) -> bool {
        self.first.is_none()
    }

    /// Whether the coroutine has finished: returned, panicked, or been
    /// unwound.
    pub(crate) fn done(&self) -> bool {
        self.stack.is_none()
    }

    /// The usable size of its stack, while it has one.
    pub(crate) fn stack_size(&self) -> Option<usize> {
        self.stack.as_ref().map(|stack| stack.len())
    }
}

impl<I, Y, R> Drop for RawCoroutine<I, Y, R> {
    /// Unwinds a suspended coroutine (or drops the closure of one that never
    /// started) on its own stack, then destroys its co_local values. A panic
    /// of the coroutine while it unwinds is resumed here, unless the thread
    /// is already panicking.
    fn drop(&mut self) {
        let started = self.started();
        let Some(context) = self.context.take().or_else(|| self.first.take()) else {
            if self.stack.is_some() {
                // Running: only the thread's exit drops a running coroutine
                // (its thread-local destructors run on this very stack).
                // Unmapping the stack, or destroying the block its code
                // uses, would pull them from under that code: leak both.
                core::mem::forget(self.stack.take());
                core::mem::forget(self.locals.take());
            }
            return;
        };
        if started && thread_exiting() {
            // The thread-locals are being destroyed: frames on the stack may
            // hold references into some that are gone, so unwinding them
            // cannot be safe. (A coroutine that never started has no frames:
            // its closure is dropped as usual.) Leak the stack with its frames (never resumed,
            // never unmapped); the block is dropped, keeping any value a
            // frame still refers to.
            // (`context` is a plain pointer: dropping it resumes nothing.)
            let _ = context;
            core::mem::forget(self.stack.take());
            drop(self.locals.take());
            return;
        }
        let outcome = match self.switch(context, Request::Unwind) {
            Step::Finished(outcome) => outcome,
            // `suspend` panics instead of suspending once it has the request
            // to unwind; abandoning a stack with live frames would be unsound.
            Step::Yielded(_) => fatal("a coroutine suspended while it was being dropped"),
        };
        let released = self.release();
        let panic = match outcome {
            Outcome::Panicked(payload) => Some(payload),
            Outcome::Returned(value) => {
                drop(value);
                released.err()
            }
            Outcome::Unwound => released.err(),
        };
        if let Some(payload) = panic {
            if !std::thread::panicking() {
                panic::resume_unwind(payload);
            }
        }
    }
}

/// Dropped with the thread's thread-locals: once it is gone, the thread is
/// exiting.
struct ThreadAlive;

impl Drop for ThreadAlive {
    fn drop(&mut self) {}
}

std::thread_local! {
    static THREAD_ALIVE: ThreadAlive = const { ThreadAlive };
}

/// Registers the marker of [`thread_exiting`] on this thread (its destructor
/// is registered by its first use: at the first coroutine made here).
fn mark_thread_alive() {
    let _ = THREAD_ALIVE.try_with(|_| ());
}

/// Whether the thread's thread-locals are being destroyed, as far as
/// co_runtime can tell: its marker, first used when the thread made its
/// first coroutine, is gone. std destroys thread-locals newest first, so
/// this holds for every thread-local first used before that coroutine was
/// made, and for any coroutine dropped after the marker.
fn thread_exiting() -> bool {
    THREAD_ALIVE.try_with(|_| ()).is_err()
}
