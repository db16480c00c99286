//! What a `Locals`' `resume` remembers between two switches: the block its
//! coroutine left current (`Header::next`), and the thread's `HELD` table
//! through which that block sends its holders back to their own blocks
//! before it dies, is made anew, or leaves the thread.
//!
//! Owns `HELD`, `set_next`, `unhold`, `release` and `unname`. Keeps the
//! part of SAFETY.md's I6 that lets `resume` read `next` with no check: a
//! block named by `next` is alive.

use core::cell::RefCell;
use core::ptr;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::block::header;
use super::clock::AddressHasher;
use super::switch::CURRENT;

std::thread_local! {
    /// For each block that a `Locals` remembered as its `next`: the blocks of
    /// those `Locals`, sent back to themselves when it dies.
    static HELD: Held = Held(RefCell::new(HashMap::default()));
}

/// The blocks remembered by `Locals` of this thread, and who remembered
/// each (both by address).
pub(super) struct Held(
    pub(super) RefCell<HashMap<usize, Vec<usize>, BuildHasherDefault<AddressHasher>>>,
);

impl Drop for Held {
    /// At thread exit: every `Locals` goes back to its own block, since no
    /// block can tell them any more when it dies.
    fn drop(&mut self) {
        for (held, holders) in self.0.get_mut().drain() {
            // SAFETY: a block in the table is not freed (it leaves the table
            // before), nor are its holders (each leaves it when dropped).
            unsafe {
                header(held as *mut u8).held.set(false);
                for holder in holders {
                    header(holder as *mut u8).next.set(holder as *mut u8);
                }
            }
        }
    }
}

/// Makes `next` the block that the `Locals` owning `base` makes current at
/// its next `resume`. A block other than `base` and the thread's (null) is
/// listed in `HELD`; if it cannot be (thread exit), `base` is used instead.
///
/// # Safety
///
/// `base` must be an owned block; `next` null, `base`, or a block that is
/// not freed.
pub(super) unsafe fn set_next(base: *mut u8, next: *mut u8) {
    // SAFETY: the caller's guarantee.
    let own = unsafe { header(base) };
    let old = own.next.get();
    if old == next {
        return;
    }
    if !old.is_null() && old != base {
        // SAFETY: a block named by `next` is not freed (see `Header::next`).
        unsafe { unhold(old, base) };
    }
    let next = if next.is_null() || next == base {
        next
    } else {
        let listed = HELD
            .try_with(|held| {
                let mut held = held.0.borrow_mut();
                held.entry(next as usize).or_default().push(base as usize);
            })
            .is_ok();
        if listed {
            // SAFETY: the caller's guarantee.
            unsafe { header(next) }.held.set(true);
            next
        } else {
            base
        }
    };
    own.next.set(next);
}

/// Takes `holder` off the list of the `Locals` that remembered `block`.
///
/// # Safety
///
/// `block` must not be freed.
pub(super) unsafe fn unhold(block: *mut u8, holder: *mut u8) {
    let _ = HELD.try_with(|held| {
        let mut held = held.0.borrow_mut();
        let Some(holders) = held.get_mut(&(block as usize)) else {
            return;
        };
        if let Some(at) = holders.iter().position(|&h| h == holder as usize) {
            holders.swap_remove(at);
        }
        if holders.is_empty() {
            held.remove(&(block as usize));
            // SAFETY: the caller's guarantee.
            unsafe { header(block) }.held.set(false);
        }
    });
}

/// Sends every `Locals` that remembered `block` back to its own block, and
/// makes the `Locals` owning `block` (if any) forget what it remembered:
/// `block` is about to die, be made anew, or leave the thread. Two loads
/// and two comparisons when neither happened (nearly always).
///
/// # Safety
///
/// `block` must not be freed.
#[inline(always)]
pub(super) unsafe fn release(block: *mut u8) {
    // SAFETY: the caller's guarantee.
    let header = unsafe { header(block) };
    if header.next.get() != block || header.held.get() {
        // SAFETY: the caller's guarantee.
        unsafe { release_slow(block) };
    }
}

/// Makes sure nothing on this thread names `block` any more, neither as
/// the current block (the thread's own is then current) nor as a `Locals`'
/// `next` ([`release`]): it is about to die, be made anew, or be orphaned.
///
/// # Safety
///
/// As for [`release`].
#[inline(always)]
pub(super) unsafe fn unname(block: *mut u8) {
    if CURRENT.get() == block {
        CURRENT.set(ptr::null_mut());
    }
    // SAFETY: the caller's guarantee.
    unsafe { release(block) };
}

/// [`release`] when there is something to do.
///
/// # Safety
///
/// As for [`release`].
#[cold]
#[inline(never)]
pub(super) unsafe fn release_slow(block: *mut u8) {
    // SAFETY: the caller's guarantee.
    let dying = unsafe { header(block) };
    // SAFETY: as above; `block` itself is always allowed.
    unsafe { set_next(block, block) };
    if !dying.held.get() {
        return;
    }
    dying.held.set(false);
    let holders = HELD
        .try_with(|held| held.0.borrow_mut().remove(&(block as usize)))
        .ok()
        .flatten();
    for holder in holders.into_iter().flatten() {
        // SAFETY: a holder leaves the list before its block is freed.
        unsafe { header(holder as *mut u8) }
            .next
            .set(holder as *mut u8);
    }
}
