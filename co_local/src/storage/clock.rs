//! The thread's clock and the check of a recorded block: what lets a scope
//! that began before another library's coroutine switched stacks put back
//! its block only if that block is still the same live one.
//!
//! Owns `CHANGES`, `LAST_DEATH`, the live set `LIVE`, [`Saved`] records,
//! `still_there` and `restore_checked`. Keeps SAFETY.md's I6 (with
//! `held.rs`): a record whose clock has not moved, or that no death
//! followed, is as valid as when it was taken; any other is checked in the
//! live set (or the chain of task blocks, `chain.rs`) before it is used.

use core::cell::{Cell, RefCell};
use core::ptr;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use super::block::header;
use super::chain::attached;
use super::switch::CURRENT;
use super::thread::is_thread_block;

std::thread_local! {
    /// Advanced by every owner's drop of a block (and every free, reset or
    /// orphaning), and by every switch that may still be unfinished when a
    /// `resume` begun before it returns (`enter`, a task's call,
    /// `swap_current`, a `resume` that remembers a block): what a restore
    /// compares, once (see the module docs of `storage`).
    pub(super) static CHANGES: Cell<u64> = const { Cell::new(0) };
    /// `CHANGES` as the last of those deaths (or a task block leaving the
    /// thread) left it: a record taken at `CHANGES` = `at` outlived no death
    /// if this is at most `at`.
    pub(super) static LAST_DEATH: Cell<u64> = const { Cell::new(0) };
    /// The blocks of this thread that are not freed (orphaned and pooled
    /// ones too): allocated and freed blocks come and go, recycled ones
    /// stay, so a block's life in steady state touches it not at all.
    pub(super) static LIVE: RefCell<HashSet<usize, BuildHasherDefault<AddressHasher>>> =
        RefCell::new(HashSet::default());
}

/// Advances `CHANGES` and marks the point in `LAST_DEATH`: a block died,
/// or left the thread.
#[inline(always)]
pub(super) fn advance() {
    let now = CHANGES.get() + 1;
    CHANGES.set(now);
    LAST_DEATH.set(now);
}

/// Advances `CHANGES` alone: a switch began that a `resume` must look at.
#[inline(always)]
pub(super) fn changed() {
    CHANGES.set(CHANGES.get() + 1);
}

/// Hashes block addresses: aligned, distinct pointers, so one multiply
/// spreads them well enough.
#[derive(Default)]
pub(super) struct AddressHasher(pub(super) u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }
}

/// Whether `block`, recorded when `CHANGES` was `at`, is still the same live
/// block that its owner has not dropped: in the live set, born no later
/// than the record, not orphaned. Null (the thread's own block) always is.
#[cold]
#[inline(never)]
pub(super) fn still_there(block: *mut u8, at: u64) -> bool {
    if block.is_null() {
        return true;
    }
    // A task block whose call is in progress here (the innermost one or
    // any call it runs inside, whatever the order the calls end in), or an
    // unlisted block whose destructors run: its link lives as long as that
    // call. A record older than the link named the block of an earlier
    // call, which may have moved or died since (or another block at that
    // address), and fails.
    if attached(block, at) {
        return true;
    }
    if let Some(allowed) = is_thread_block(block) {
        // The thread's own block, alive until the thread exits: the restore
        // a scheduler's `resume` makes most often. Not put back while the
        // thread denies its values.
        return allowed;
    }
    let live = LIVE
        .try_with(|live| live.borrow().contains(&(block as usize)))
        .unwrap_or(false);
    live && {
        // SAFETY: a block in the live set is not freed.
        let header = unsafe { header(block) };
        header.born.get() <= at && header.refs.get() >= 0 && !header.pooled.get()
    }
}

/// A block to put back as current: the one that was current when a scope
/// began, and the thread's clock then.
#[derive(Clone, Copy)]
pub(super) struct Saved {
    pub(super) block: *mut u8,
    pub(super) at: u64,
}

/// Puts back the block `saved` names as the current one, or the thread's
/// own block if that one was dropped since: at once if no block died since
/// the record (it is as valid as it was then), else after a look at it.
#[cold]
#[inline(never)]
pub(super) fn restore_checked(saved: Saved) {
    let block = if LAST_DEATH.get() <= saved.at || still_there(saved.block, saved.at) {
        saved.block
    } else {
        ptr::null_mut()
    };
    CURRENT.set(block);
}
