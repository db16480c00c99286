//! The chain of the blocks alive on this thread that are in no live set:
//! the block of a `Send` task while one of its calls is in progress here,
//! and any unlisted block while its destructors run.
//!
//! Owns `ATTACHED`, [`Attach`] (a link, kept in the frame of its call) and
//! `dying_unlisted`. Keeps SAFETY.md's I7: every link in the chain lives in
//! a frame that has not ended (or on a leaked stack) and names a block its
//! call borrows; links leave the chain in any order; a checked restore
//! accepts a block a link names only for a record not older than the link.

use core::cell::Cell;
use core::ptr;

use super::clock::CHANGES;

std::thread_local! {
    /// The innermost [`Attach`] of this thread, or null.
    pub(super) static ATTACHED: Cell<*const Attach> = const { Cell::new(ptr::null()) };
}

/// A block that is alive on this thread although it is in no live set: the
/// block of a `Send` task while one of its calls
/// ([`TaskBlock::call`](super::task::TaskBlock::call)) is in progress here,
/// or any unlisted block while its destructors run ([`dying_unlisted`]).
/// Each lives in the frame of that call (its guard), and is linked into the
/// thread's chain (`ATTACHED`, innermost first) for as long as the frame
/// is: it unlinks itself on the way out, wherever it is
/// in the chain by then, so calls may end in any order (a coroutine of
/// another library may suspend inside one and be resumed inside another).
/// A checked restore whose block is in the chain, and whose record is not
/// older than the link, puts it back (see `still_there`).
pub(super) struct Attach {
    pub(super) block: *mut u8,
    /// `CHANGES` when the block was linked: a record at least as new that
    /// names its address names this block, which has held the address since.
    pub(super) since: u64,
    /// The next link of the chain, outward; rewritten when that one unlinks.
    pub(super) outer: Cell<*const Attach>,
}

impl Attach {
    /// A link for `block`, linked after the chain's current head once
    /// [`link`](Attach::link) is called on it where it stays.
    #[inline(always)]
    pub(super) fn new(block: *mut u8, since: u64) -> Attach {
        Attach {
            block,
            since,
            outer: Cell::new(ATTACHED.get()),
        }
    }

    /// Makes this link the chain's head. It must not move until
    /// [`unlink`](Attach::unlink) (it lives in a guard of the frame).
    #[inline(always)]
    pub(super) fn link(&self) {
        ATTACHED.set(self);
    }

    /// Takes this link out of the chain: at once when it is the head
    /// (calls that nested), else by rewriting the `outer` of the link that
    /// points to it.
    #[inline(always)]
    pub(super) fn unlink(&self) {
        let outer = self.outer.get();
        if ptr::eq(ATTACHED.get(), self) {
            ATTACHED.set(outer);
        } else {
            self.unlink_inner(outer);
        }
    }

    #[cold]
    #[inline(never)]
    fn unlink_inner(&self, outer: *const Attach) {
        let mut link = ATTACHED.get();
        while !link.is_null() {
            // SAFETY: every link in the chain lives in a frame that has not
            // ended (each unlinks itself on its way out; a frame that never
            // ends, leaked with its coroutine's stack, stays in memory), so
            // it may be read; `outer` is a `Cell`, only shared.
            let this = unsafe { &*link };
            let next = this.outer.get();
            if ptr::eq(next, self) {
                this.outer.set(outer);
                return;
            }
            link = next;
        }
    }
}

/// Whether `block`, recorded when `CHANGES` was `at`, is in this thread's
/// chain of [`Attach`] links with a record not older than its link.
pub(super) fn attached(block: *mut u8, at: u64) -> bool {
    let mut link = ATTACHED.get();
    while !link.is_null() {
        // SAFETY: as in `Attach::unlink_inner`.
        let this = unsafe { &*link };
        if this.block == block && this.since <= at {
            return true;
        }
        link = this.outer.get();
    }
    false
}

/// Runs `destroy`, which destroys the unlisted block (a task's) at `base`,
/// with that block linked into the thread's chain (see [`Attach`]): in no
/// live set, it is alive for restores only through a link, and the scopes
/// its destructors open and close must find it.
#[cold]
#[inline(never)]
pub(super) fn dying_unlisted<R>(base: *mut u8, destroy: impl FnOnce() -> R) -> R {
    struct Unlink(Attach);
    impl Drop for Unlink {
        fn drop(&mut self) {
            self.0.unlink();
        }
    }
    let link = Unlink(Attach::new(base, CHANGES.get()));
    // Linked where it stays, until it is dropped at the end of this call.
    link.0.link();
    destroy()
}
