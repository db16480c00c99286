//! Pins: what keeps a block's memory and values while something other than
//! its owner may still reach into it (a `with` closure, a running lazy
//! initialiser, a `scope`, an `#[inherit]` copy), and the orphans an
//! owner's drop leaves while a pin is held.
//!
//! Owns `pin`, `unpin`, [`BlockPin`] and `finish_orphan`. Keeps SAFETY.md's
//! I5: memory and values of a block stay while its header's `refs` is
//! positive; the last unpin of an orphan destroys and frees it.

use std::panic;

use super::block::{destroy, header, ORPHAN};

/// Takes a pin on the block at `base`.
///
/// # Safety
///
/// `base` must be a block that is not freed.
#[inline(always)]
pub(super) unsafe fn pin(base: *mut u8) {
    // SAFETY: the caller's guarantee.
    let refs = unsafe { &header(base).refs };
    refs.set(refs.get() + 1);
}

/// Gives back a pin on the block at `base`. The last pin of an orphaned
/// block (its owner dropped it) destroys and frees it.
///
/// # Safety
///
/// `base` must be a block on which the caller holds a pin.
#[inline(always)]
pub(super) unsafe fn unpin(base: *mut u8) {
    // SAFETY: pinned, so not freed.
    let refs = unsafe { &header(base).refs };
    let left = refs.get() - 1;
    refs.set(left);
    if left == ORPHAN {
        // SAFETY: the owner is gone and this was the last pin.
        unsafe { finish_orphan(base) };
    }
}

/// A pin on a block, given back when dropped, also while unwinding: what
/// every piece of code that lets user code run with a reference into a
/// block (or with the block's address) holds meanwhile.
pub(super) struct BlockPin(pub(super) *mut u8);

impl BlockPin {
    /// Pins the block at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be a block that is not freed.
    #[inline(always)]
    pub(super) unsafe fn take(base: *mut u8) -> BlockPin {
        // SAFETY: the caller's guarantee.
        unsafe { pin(base) };
        BlockPin(base)
    }
}

impl Drop for BlockPin {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: pinned in `take`.
        unsafe { unpin(self.0) };
    }
}

/// Destroys and frees an orphaned block whose last pin is gone.
///
/// # Safety
///
/// `base` must be an orphaned block with no pin left.
#[cold]
#[inline(never)]
pub(super) unsafe fn finish_orphan(base: *mut u8) {
    // SAFETY: the caller's guarantee: nothing refers to the block any more.
    let panic = unsafe {
        header(base).refs.set(0);
        destroy(base)
    };
    if let Some(payload) = panic {
        if !std::thread::panicking() {
            panic::resume_unwind(payload);
        }
    }
}
