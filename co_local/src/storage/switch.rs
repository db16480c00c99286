//! The current-block pointer and the switches that change it: `enter` (a
//! scope on one stack), `resume` (around a switch into another library's
//! coroutine) and the unchecked `swap_current`.
//!
//! Owns `CURRENT`. Keeps SAFETY.md's I1 (`CURRENT` is null or a block that
//! is neither freed nor orphaned) and the switch half of I6: every change of
//! `CURRENT` that may outlast a coroutine's run advances the clock, and every
//! restore either finds the clock unmoved or checks its block.

use core::cell::Cell;
use core::ptr;

use super::block::{header, Block};
use super::clock::{changed, restore_checked, Saved, CHANGES};
use super::held::set_next;
use crate::raw::RawBlock;

std::thread_local! {
    /// The block that accesses on this thread reach; null for the thread's own
    /// block (made on first use).
    pub(super) static CURRENT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// Runs `f` with `base` as the current block, restoring the previous one
/// afterwards, also on panic.
///
/// `CHANGES` advances on the way in, so that a `resume` whose coroutine
/// suspends inside `f` sees it. On the way out, if `CHANGES` has not moved
/// since, nothing else began or ended meanwhile and no block died: the
/// previous block goes back with no other check. Otherwise `CHANGES`
/// advances again (this may end in a later run of a coroutine than it began,
/// and the `resume` running now must see that what it made current changes)
/// and the restore compares `LAST_DEATH` before it looks at the block, so
/// that nested scopes cost a call and one more comparison, not a lookup.
#[inline(always)]
pub(crate) fn enter<R>(base: *mut u8, f: impl FnOnce() -> R) -> R {
    struct Restore(Saved);
    impl Drop for Restore {
        #[inline(always)]
        fn drop(&mut self) {
            if CHANGES.get() == self.0.at {
                CURRENT.set(self.0.block);
            } else {
                leave_enter_changed(self.0);
            }
        }
    }
    changed();
    let _restore = Restore(Saved {
        at: CHANGES.get(),
        block: CURRENT.replace(base),
    });
    f()
}

/// The way out of [`enter`] when `CHANGES` moved: tells a `resume` running
/// now, and restores the previous block if no block died since, else checks
/// it first.
#[inline(never)]
pub(super) fn leave_enter_changed(saved: Saved) {
    changed();
    restore_checked(saved);
}

/// Runs `f` with the block the `Locals` owning `block` makes current next
/// (its own, or the one its coroutine left current when it last suspended),
/// then restores the caller's block, also on panic; if anything happened
/// meanwhile that could change either, looks closer (see `leave_changed`).
///
/// The whole cost of a switch: two loads for the block to make current, a
/// swap of `CURRENT`, a read of `CHANGES` and, after `f`, one comparison and
/// the restore. Nothing is checked on the way in: a block named by
/// `Header::next` is alive, since it sends its holders back to their own
/// block before it dies.
#[inline(always)]
pub(crate) fn resume<R>(block: &Block, f: impl FnOnce() -> R) -> R {
    struct Leave<'a> {
        block: &'a Block,
        caller: *mut u8,
        changes: u64,
    }
    impl Drop for Leave<'_> {
        #[inline(always)]
        fn drop(&mut self) {
            if CHANGES.get() == self.changes {
                // Nothing began that may not have ended, and no block died:
                // `CURRENT` is still what `resume` made current, and the
                // caller's block is as valid as it was.
                CURRENT.set(self.caller);
            } else {
                leave_changed(self.block.as_ptr(), self.caller, self.changes);
            }
        }
    }
    let base = block.as_ptr();
    // SAFETY: the block is owned by the caller's `Locals`, not freed.
    let next = unsafe { header(base) }.next.get();
    // `f` may suspend a coroutine that an enclosing `resume` runs (a
    // symmetric switch, or a `resume` used as a scope): that one must see
    // the change.
    changed();
    let _leave = Leave {
        block,
        caller: CURRENT.replace(next),
        changes: CHANGES.get(),
    };
    f()
}

/// The way out of [`resume`] when `CHANGES` moved: remembers what the
/// coroutine left current (it may have suspended inside a scope of its own)
/// and restores the caller's block if it is still there.
#[cold]
#[inline(never)]
pub(super) fn leave_changed(base: *mut u8, caller: *mut u8, changes: u64) {
    let current = CURRENT.get();
    // SAFETY: `base` is owned by the `Locals` whose `resume` this is.
    if current != unsafe { header(base) }.next.get() {
        // SAFETY: `base` is owned; `current` is null or a block that is not
        // freed (the invariant of `CURRENT`).
        unsafe { set_next(base, current) };
    }
    // A `resume` or a task's call that this one runs inside sees that a
    // block is remembered, or that this one ended in a later run of its
    // coroutine than it began.
    changed();
    restore_checked(Saved {
        block: caller,
        at: changes,
    });
}

/// Makes `block` the current block of this thread and returns the previous
/// one: the unchecked switch primitive, for runtimes that manage blocks
/// themselves.
///
/// Most runtimes want [`Locals::resume`](crate::Locals::resume) instead: it
/// is safe, it remembers what a coroutine left current, and it copes with
/// blocks dropped while a coroutine is suspended. `swap_current` does none
/// of that: it swaps one pointer. A runtime calls it twice per resume, around
/// the context switch, and restores in a guard so that a panic coming out of
/// the switch does not leave the coroutine's block current:
///
/// ```
/// # let mut locals = co_local::Locals::new();
/// # let mut saved = locals.as_raw();
/// # let switch_into_coroutine = || {};
/// struct Restore(co_local::RawBlock);
/// impl Drop for Restore {
///     fn drop(&mut self) {
///         // SAFETY: the resumer's block was current before the switch and
///         // its owner outlives this resume.
///         unsafe { co_local::swap_current(self.0) };
///     }
/// }
/// // resume: the coroutine's saved block becomes current...
/// // SAFETY: `saved` is `locals`'s block or what the coroutine had current
/// // when it last suspended; both outlive this resume.
/// let restore = Restore(unsafe { co_local::swap_current(saved) });
/// switch_into_coroutine(); // runs until the coroutine suspends or returns
/// // ...and on the way back, what the coroutine left current is saved for
/// // the next resume (it may have entered another `Locals` and suspended
/// // inside it), and the resumer's is restored by the guard.
/// saved = co_local::RawBlock::current();
/// drop(restore);
/// ```
///
/// Dropping a suspended coroutine unwinds its stack: do it with the
/// coroutine's saved block swapped in the same way, so that destructors on
/// its stack see its values (and its nested `enter`s restore what they
/// expect).
///
/// # Safety
///
/// While `block` is current (until the next call that makes another block
/// current), it must stay alive: if it is the block of a
/// [`Locals`](crate::Locals), that `Locals` must not be dropped (moving it is
/// fine: the block does not move). `block` must come from
/// [`Locals::as_raw`](crate::Locals::as_raw) on this thread, from
/// [`RawBlock::THREAD`], or from an earlier `swap_current` or
/// [`RawBlock::current`] on this thread whose block is still alive. Before
/// the owner of the current block is dropped, or before
/// [`Locals::enter`](crate::Locals::enter) returns into code that expects its
/// own previous block, the runtime must swap back whatever it swapped in
/// (nesting like `enter`). References handed out by [`LocalKey::with`](crate::LocalKey::with) must
/// not outlive their block: a runtime keeps a suspended coroutine's block
/// alive until the coroutine's stack is gone.
#[inline]
pub unsafe fn swap_current(block: RawBlock) -> RawBlock {
    // A `resume` whose coroutine suspends before this is undone sees it.
    changed();
    RawBlock(CURRENT.replace(block.0))
}

/// The block current on this thread, for [`RawBlock::current`]: one load.
#[inline(always)]
pub(crate) fn current_raw() -> *mut u8 {
    CURRENT.get()
}
