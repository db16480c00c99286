//! The blocks of async tasks ([`WithLocals`] and [`LocalWithLocals`]) and
//! of [`SendLocals`](crate::SendLocals): their calls, the state of the task
//! around them, and the `unsafe` half of the wrappers (pinning of the inner
//! future, its drop in place). The wrappers' public face is in
//! `crate::task` and `crate::locals`.
//!
//! Owns [`TaskBlock`] (`call`, `end`, `destroy`), `poll_task` and the
//! `Future` impls. Keeps SAFETY.md's I7: between two calls nothing on any
//! thread reaches a task's block, so it may move with its task.

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll};

use super::block::{header, Block};
use super::chain::{link, unlink, ATTACHED};
use super::clock::{advance, changed, restore_checked, Saved, CHANGES};
use super::held::release;
use super::switch::{enter, CURRENT};
use crate::task::{LocalWithLocals, WithLocals};

/// The block of an async task: [`WithLocals`] (`SEND`) or
/// [`LocalWithLocals`], and the state of the task around it.
///
/// A `SEND` task block is in no thread's live set. It is current only inside
/// a call of its task ([`TaskBlock::call`]: a poll, a `with_locals`, the drop
/// of the future) and while it is destroyed; for that time it is *linked*
/// into the thread's chain (`chain.rs`, from `ATTACHED`), so that a restore
/// checked on that thread (after a block died meanwhile) still finds it,
/// wherever the call is in the chain by then. When the call ends:
///
/// - its link leaves the chain, wherever it is: calls may end in another
///   order than they began when another library's coroutine suspends inside
///   one and is resumed inside another;
/// - if `CHANGES` moved during the call (anything that records the current
///   block advances it when it begins), the thread's clocks advance, so that
///   any record left on this thread that names the block (a scope of another
///   library's coroutine that suspended inside the call) is checked before it
///   is restored, and, the block being neither in the live set nor linked
///   any more, is not; a `Locals` whose `resume` remembered the block goes
///   back to its own. If `CHANGES` did not move, nothing was recorded;
/// - if something on this thread still holds a pin on a `SEND` block (a
///   coroutine of another library suspended inside a `with` on one of its
///   values), that block stays on this thread, orphaned until the pin goes,
///   and the task goes on with a fresh block.
///
/// So between two calls nothing on any thread reaches a task block, and the
/// block may move with its task to another thread: a `SEND` block's values
/// are all of `Send` types (the header's `send_task` flag keeps the others
/// out), and its memory is freed into the pool of whichever thread drops it,
/// which holds blocks of the same, process-wide layout.
///
/// A block without `SEND` (a [`LocalWithLocals`]') never leaves its thread:
/// it is in the thread's live set like a `Locals`' block, and its calls are
/// plain `enter`s.
pub(crate) struct TaskBlock<const SEND: bool> {
    /// `None` once the block has been destroyed.
    pub(super) block: Option<Block>,
    /// [`BUSY`] and [`ENDED`]: one byte, so that a poll checks both at once.
    pub(super) state: u8,
}

/// A call of a `SEND` task block runs. Still set when the next call or the
/// destruction begins, it means a call never ended: its frame was leaked (a
/// generator that borrowed the task was forgotten while suspended inside
/// it), so the thread it ran on may still name the block. That block is then
/// abandoned (leaked, never freed, never used again here) and the task goes
/// on with a fresh one. Kept with the task, not in the block: the thread that
/// may still use the block never writes it.
pub(super) const BUSY: u8 = 1;

/// The task's future is gone (dropped, or being dropped): its wrapper is
/// polled no more, and `with_locals` gives `None`.
pub(super) const ENDED: u8 = 2;

// SAFETY: see `TaskBlock`: outside its calls and `destroy`, which borrow the
// task block mutably, no pointer on any thread names the block (`CURRENT`
// was restored and the call's link left the chain, records naming it fail
// their check, pins that outlived the call made it leave a `SEND` block
// behind), so moving the owner moves the only way to reach it. A call whose
// way out never ran (its frame leaked) left `BUSY` set: the next call or the
// drop, wherever it runs, abandons that block without touching it, and the
// task never uses it again (the leaked frame's link stays in its thread's
// chain, naming a block that is never freed). A `SEND` block holds only
// values whose type is `Send` (`fast_path` and `slow_path` refuse the
// others when the header's `send_task` is set), so they may be used, and
// dropped, on another thread. A block without `SEND` may hold any value: it
// is only ever owned by a `LocalWithLocals`, which is not `Send` (its
// `PhantomData<*const ()>`), so this impl never moves one; it exists so that
// the compiler's complaint about sending a `LocalWithLocals` names that type
// and not this one.
unsafe impl<const SEND: bool> Send for TaskBlock<SEND> {}

impl<const SEND: bool> TaskBlock<SEND> {
    /// A task block that starts with a copy of each `#[inherit]` value
    /// alive in the current block (of a `Send` type, for a `SEND` block).
    pub(crate) fn new() -> TaskBlock<SEND> {
        TaskBlock {
            block: Some(Self::fresh().with_inherited(SEND)),
            state: 0,
        }
    }

    /// A task block that starts as [`Block::new`] makes one: no value
    /// inherited. For a `SendLocals`.
    pub(crate) fn empty() -> TaskBlock<SEND> {
        TaskBlock {
            block: Some(Self::fresh()),
            state: 0,
        }
    }

    /// Runs `f` with the block current: a call of a block that has no
    /// future (a `SendLocals`), so it never ends.
    pub(crate) fn enter<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.run(task_done, f)
    }

    fn fresh() -> Block {
        if !SEND {
            // Never leaves the thread: a block like a `Locals`' one.
            return Block::new();
        }
        let block = Block::unlisted();
        // SAFETY: the block was just made.
        unsafe { header(block.as_ptr()) }.send_task.set(true);
        block
    }

    /// Runs `f` with the task's block current, for its wrapper's
    /// `with_locals`: `None` once the task's future is gone.
    pub(crate) fn with_locals<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        if self.is_done() {
            return None;
        }
        Some(self.run(task_done, f))
    }

    /// Whether the task's future is gone (or its block: the two go
    /// together, the future first).
    pub(crate) fn is_done(&self) -> bool {
        self.state & ENDED != 0 || self.block.is_none()
    }

    /// Makes the task ready for a call: `ended` (which panics) if its future
    /// is gone, and a fresh block if a call never ended (`BUSY`). One
    /// comparison when neither.
    #[inline(always)]
    fn ready(&mut self, ended: fn() -> !) {
        if self.state != 0 {
            if !SEND {
                // Never `BUSY`: `ENDED`.
                ended()
            }
            self.not_ready(ended);
        }
    }

    /// [`ready`](Self::ready) for a `SEND` task that is not: out of line, so
    /// that the poll checks the state byte in memory and reads nothing else.
    #[cold]
    #[inline(never)]
    fn not_ready(&mut self, ended: fn() -> !) {
        if self.is_done() {
            ended()
        }
        self.abandon();
    }

    /// Leaks the block of a call that never ended (see [`BUSY`]) and goes on
    /// with a fresh one.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self) {
        core::mem::forget(self.block.replace(Self::fresh()));
        self.state &= !BUSY;
    }

    /// Runs `f` with the block current, restoring the caller's afterwards,
    /// also if `f` panics: the task's own calls (a `with_locals`, the drop of
    /// its future), after [`ready`](Self::ready).
    ///
    /// # Panics
    ///
    /// Through `ended` if the task's future is gone.
    #[inline(always)]
    fn run<R>(&mut self, ended: fn() -> !, f: impl FnOnce() -> R) -> R {
        self.ready(ended);
        // SAFETY: `ready` returned: not `BUSY`, and the block is there.
        unsafe { self.call(0, f) }
    }

    /// Runs `f` with the block current, restoring the caller's afterwards,
    /// also if `f` panics, and leaves the state `after` (`0`, or [`ENDED`]
    /// for the drop of the future: a constant, so that the call writes the
    /// state twice and never reads it). A `SEND` block is linked into this
    /// thread's chain meanwhile (see [`TaskBlock`]); the other kind is in this
    /// thread's live set, so this is an `enter` of it.
    ///
    /// # Safety
    ///
    /// [`ready`](Self::ready) returned just before, or the caller checked
    /// the same: the block is there and no call is in progress (`BUSY`
    /// clear).
    #[inline(always)]
    unsafe fn call<R>(&mut self, after: u8, f: impl FnOnce() -> R) -> R {
        struct Detach<'a, const SEND: bool> {
            task: &'a mut TaskBlock<SEND>,
            base: *mut u8,
            /// When the call began and linked the block, and the head it
            /// linked it in front of (copies of the header's link, which
            /// the fast way out reads here).
            since: u64,
            outer: *mut u8,
            /// The block current when the call began.
            caller: *mut u8,
            after: u8,
        }
        impl<const SEND: bool> Drop for Detach<'_, SEND> {
            #[inline(always)]
            fn drop(&mut self) {
                if CHANGES.get() == self.since {
                    // Nothing began inside that may not have ended, no block
                    // died and no link left the chain (each advances
                    // `CHANGES`): the caller's block is as valid as it was,
                    // this link is still the head and its `outer` as it was.
                    // Nor was anything recorded that names this block: every
                    // `enter`, `resume`, task call and `swap_current`
                    // advances `CHANGES` when it begins. Records that an
                    // earlier call left behind made that call leave by
                    // `detach_changed`, which advanced both clocks past them
                    // for good.
                    CURRENT.set(self.caller);
                    ATTACHED.set(self.outer);
                } else {
                    detach_changed(self.base, self.caller, self.since);
                }
                self.task.state = self.after;
                // SAFETY: the block is owned by the task block, not freed.
                if unsafe { header(self.base) }.refs.get() != 0 {
                    self.task.leave_pinned();
                }
            }
        }
        // SAFETY: the caller's guarantee.
        let base = unsafe { self.block.as_ref().unwrap_unchecked() }.as_ptr();
        if !SEND {
            // Never `BUSY`: the state stays what it is (`after`).
            return enter(base, f);
        }
        self.state = after | BUSY;
        changed();
        let since = CHANGES.get();
        // SAFETY: the block is owned by the task block, which the call
        // borrows: it stays in memory until the call ends and unlinks it, or
        // for ever if the call never ends (`BUSY` then abandons it). It is
        // linked nowhere else: no other call of this task is in progress,
        // and its destruction needs the task.
        let outer = unsafe { link(base, since) };
        let _detach = Detach {
            task: self,
            base,
            since,
            outer,
            caller: CURRENT.replace(base),
            after,
        };
        f()
    }

    /// Leaves a block that something on this thread still pins behind,
    /// orphaned (the last pin destroys it, here), and goes on with a fresh one.
    #[cold]
    #[inline(never)]
    fn leave_pinned(&mut self) {
        let pinned = self.block.replace(Self::fresh());
        // Pinned: `Block::drop` orphans it without running any value's
        // destructor.
        drop(pinned);
    }

    /// Drops the task's future in place with the block current, unless it
    /// is gone already. [`ENDED`] is set first, so that a destructor that
    /// panics leaves it gone all the same.
    pub(crate) fn end<F>(&mut self, future: &mut ManuallyDrop<F>) {
        if self.is_done() {
            return;
        }
        if self.state & BUSY != 0 {
            // A call never ended; its frame, which borrowed the future, is
            // gone for good (leaked), and so is the block it names.
            self.abandon();
        }
        // `ENDED` from here on, also if the destructor panics.
        self.state = ENDED;
        // SAFETY: not `BUSY`, and the block is there (`is_done` was false).
        // The future was alive (not `ENDED`) and is never used again.
        unsafe { self.call(ENDED, || ManuallyDrop::drop(future)) };
    }

    /// Destroys the block's values, with it current (and linked while its
    /// destructors run: see `destroy_values`), and releases it. Nothing if
    /// it is destroyed already.
    fn destroy(&mut self) {
        if SEND && self.state & BUSY != 0 {
            // A call never ended: the block may still be named where it ran.
            core::mem::forget(self.block.take());
            self.state &= !BUSY;
            return;
        }
        drop(self.block.take());
    }
}

impl<const SEND: bool> Drop for TaskBlock<SEND> {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The way out of [`TaskBlock::call`] when `CHANGES` moved: lets go of the
/// task block `base`, linked at `since`, and restores the caller's block if
/// it is still there.
#[cold]
#[inline(never)]
pub(super) fn detach_changed(base: *mut u8, caller: *mut u8, since: u64) {
    // A `Locals` that remembered the block (its coroutine suspended inside
    // the call) goes back to its own.
    // SAFETY: the block is owned by the task block, which the call borrows.
    unsafe { release(base) };
    // Out of the chain, wherever it is by now: a call that began inside
    // this one and has not ended (a coroutine suspended in it) keeps its
    // link, and so do the calls this one runs inside. The caller's block
    // may be one of them.
    // SAFETY: linked by the call, which is ending.
    unsafe { unlink(base) };
    restore_checked(Saved {
        block: caller,
        at: since,
    });
    // Records left on this thread that name the block (a scope of a
    // coroutine that suspended inside the call) check it before they restore
    // it: they find `CHANGES` moved, and `LAST_DEATH` past them.
    advance();
}

#[cold]
#[inline(never)]
#[track_caller]
pub(super) fn task_done() -> ! {
    panic!("co_local: the task has completed: its block is gone")
}

/// One poll of a task's future with its block current; on completion, the
/// future is dropped with the block current, then the block is destroyed.
#[inline(always)]
pub(super) fn poll_task<F: Future, const SEND: bool>(
    future: &mut ManuallyDrop<F>,
    block: &mut TaskBlock<SEND>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    block.ready(polled_after_completion);
    // SAFETY: the future is alive (`ready` returned: not `ENDED`), pinned
    // with its wrapper (the caller has a `Pin<&mut _>` of it) and never moved:
    // it is only dropped in place (`TaskBlock::end`).
    let inner = unsafe { Pin::new_unchecked(&mut **future) };
    // SAFETY: `ready` just returned.
    let poll = unsafe { block.call(0, || inner.poll(cx)) };
    if poll.is_ready() {
        block.end(future);
        block.destroy();
    }
    poll
}

#[cold]
#[inline(never)]
#[track_caller]
pub(super) fn polled_after_completion() -> ! {
    panic!("co_local: a task wrapped with its locals was polled after it completed")
}

impl<F: Future> Future for WithLocals<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future is structurally pinned (`poll_task` never moves
        // it; `Drop` drops it in place); the block is not pinned and is only
        // used through `&mut`, which does not move the future.
        let this = unsafe { self.get_unchecked_mut() };
        poll_task(&mut this.future, &mut this.block, cx)
    }
}

impl<F: Future> Future for LocalWithLocals<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: as for `WithLocals`.
        let this = unsafe { self.get_unchecked_mut() };
        poll_task(&mut this.future, &mut this.block, cx)
    }
}
