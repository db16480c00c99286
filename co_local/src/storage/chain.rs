//! The chain of the blocks alive on this thread that may be in no live set
//! when a restore checks them: the block of a `Send` task while one of its
//! calls is in progress here, and any block while its destructors run.
//!
//! Owns `ATTACHED` (the chain's head) and the link fields of the header
//! (`Header::outer`, `Header::since`). Keeps SAFETY.md's I7: a block is
//! linked only while something keeps its memory (the call that borrows its
//! task, the destruction that owns it, or nothing ever again, when a call
//! never ended and the block was abandoned, leaked), so walking the chain
//! reads no freed memory, whatever happened to the stacks of the calls;
//! links leave the chain in any order; a checked restore accepts a linked
//! block only for a record not older than its link.

use core::cell::Cell;
use core::ptr;

use super::block::header;

std::thread_local! {
    /// The block linked last on this thread and still linked, or null: the
    /// head of the chain, which goes on through `Header::outer`.
    pub(super) static ATTACHED: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// Links the block at `base` into this thread's chain, as its head, for a
/// record taken at `since` or later; returns the head it links in front of.
///
/// # Safety
///
/// `base` must be a block that stays in memory until it is unlinked (or
/// forever), and is linked nowhere now.
#[inline(always)]
pub(super) unsafe fn link(base: *mut u8, since: u64) -> *mut u8 {
    let outer = ATTACHED.replace(base);
    // SAFETY: the caller's guarantee.
    let header = unsafe { header(base) };
    header.outer.set(outer);
    header.since.set(since);
    outer
}

/// Takes the block at `base` out of this thread's chain, wherever it is in
/// it: at once when it is the head (calls that nested), else by rewriting
/// the `outer` of the block that points to it.
///
/// # Safety
///
/// `base` must be linked into this thread's chain.
#[inline(always)]
pub(super) unsafe fn unlink(base: *mut u8) {
    // SAFETY: the caller's guarantee: a linked block is in memory.
    let outer = unsafe { header(base) }.outer.get();
    if ATTACHED.get() == base {
        ATTACHED.set(outer);
    } else {
        // SAFETY: as above.
        unsafe { unlink_inner(base, outer) };
    }
}

/// [`unlink`] of a block that is not the head.
///
/// # Safety
///
/// As for [`unlink`].
#[cold]
#[inline(never)]
unsafe fn unlink_inner(base: *mut u8, outer: *mut u8) {
    let mut link = ATTACHED.get();
    while !link.is_null() {
        // SAFETY: every block in the chain is in memory while it is linked
        // (see the module docs).
        let this = unsafe { header(link) };
        let next = this.outer.get();
        if next == base {
            this.outer.set(outer);
            return;
        }
        link = next;
    }
}

/// Whether `block`, recorded when `CHANGES` was `at`, is linked into this
/// thread's chain for records at least as old as `at`: it has held that
/// address since it was linked, so a record not older than the link names
/// it (an older one named the block of an earlier call, or another block
/// that had the address).
pub(super) fn attached(block: *mut u8, at: u64) -> bool {
    let mut link = ATTACHED.get();
    while !link.is_null() {
        // SAFETY: as in `unlink_inner`.
        let this = unsafe { header(link) };
        if link == block && this.since.get() <= at {
            return true;
        }
        link = this.outer.get();
    }
    false
}
