//! [`RawBlock`], the handle on a block that a coroutine runtime saves and
//! restores around its switches (with [`swap_current`](crate::swap_current)).

use core::fmt;
use core::ptr;

use crate::storage::{self, Block};

/// The block that code on a thread reaches, as a raw handle: what a
/// coroutine runtime saves and restores on each switch.
///
/// A `RawBlock` is either [`RawBlock::THREAD`] (the thread's own block) or the
/// block of a live [`Locals`](crate::Locals), from [`Locals::as_raw`](crate::Locals::as_raw).
/// It is a plain pointer: copying it does nothing, and it does not keep the
/// block alive. It is neither `Send` nor `Sync`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawBlock(pub(crate) *mut u8);

impl RawBlock {
    /// The thread's own block, used by code outside every coroutine.
    pub const THREAD: RawBlock = RawBlock(ptr::null_mut());

    /// The block current on this thread now, read without changing it: the
    /// block of the running coroutine or entered [`Locals`](crate::Locals),
    /// else the thread's own block ([`RawBlock::THREAD`] until it is made by
    /// a first access, then its address).
    ///
    /// It only loads a thread-local pointer, so it is also fine in a signal
    /// handler.
    ///
    /// # Examples
    ///
    /// ```
    /// use co_local::{Locals, RawBlock};
    ///
    /// let mut block = Locals::new();
    /// let raw = block.as_raw();
    /// let outside = RawBlock::current();
    /// block.enter(|| assert_eq!(RawBlock::current(), raw));
    /// assert_eq!(RawBlock::current(), outside);
    /// ```
    pub fn current() -> RawBlock {
        RawBlock(storage::current_raw())
    }

    pub(crate) fn from_block(block: &Block) -> RawBlock {
        RawBlock(block.as_ptr())
    }
}

impl fmt::Debug for RawBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_null() {
            f.write_str("RawBlock::THREAD")
        } else {
            f.debug_tuple("RawBlock").field(&self.0).finish()
        }
    }
}
