//! The thread's own block, for code outside every coroutine, `Locals` and
//! task; and whether such code may reach it (`deny_thread_values`).
//!
//! Owns `THREAD_BLOCK`, `DENIED` and `thread_block`, the slow path's way to
//! the thread's own block. Keeps SAFETY.md's I1 for the thread's block:
//! `CURRENT` names it only while the thread allows its values (denying them
//! unnames it, and every restore that would put it back checks it first and
//! finds it denied).

use core::cell::Cell;
use core::ptr::NonNull;

use super::block::Block;
use super::clock::advance;
use super::held::unname;
use super::switch::CURRENT;
use crate::error::{AccessError, AccessErrorKind};

/// The thread's own block, for code outside every coroutine.
pub(super) struct ThreadBlock(pub(super) Option<Block>);

impl Drop for ThreadBlock {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

std::thread_local! {
    static THREAD_BLOCK: ThreadBlock = ThreadBlock(Some(Block::new()));
    /// Set by `deny_thread_values`: code outside every block reaches no
    /// value on this thread.
    static DENIED: Cell<bool> = const { Cell::new(false) };
}

/// Makes the thread's own block current, making it first if needed; refuses
/// if the thread denies its values or its block is gone (thread exit).
pub(super) fn thread_block() -> Result<NonNull<u8>, AccessError> {
    if DENIED.get() {
        return Err(AccessError::new(AccessErrorKind::ThreadValuesDenied));
    }
    let base = THREAD_BLOCK
        .try_with(|b| b.0.as_ref().map(|b| b.base))
        .ok()
        .flatten()
        .ok_or(AccessError::new(AccessErrorKind::Destroyed))?;
    CURRENT.set(base.as_ptr());
    Ok(base)
}

/// Whether `block` is the thread's own block, and what a restore that names
/// it may do: `Some(true)` if the thread allows its values, `Some(false)` if
/// it denies them, `None` for any other block. Never makes the block.
pub(super) fn is_thread_block(block: *mut u8) -> Option<bool> {
    let thread = existing_thread_block()?;
    (thread == block).then(|| !DENIED.get())
}

/// The thread's own block if it was made and is not gone.
fn existing_thread_block() -> Option<*mut u8> {
    THREAD_BLOCK
        .try_with(|b| b.0.as_ref().map(Block::as_ptr))
        .ok()
        .flatten()
}

/// From now on, code on this thread outside every block reaches no value:
/// the thread's own block stops being current, `Locals` that remembered it
/// go back to their own blocks, and every restore pending on this thread
/// checks its block (the clock advances), so that none puts the thread's
/// block back.
pub(crate) fn deny_thread_values() {
    DENIED.set(true);
    if let Some(thread) = existing_thread_block() {
        // SAFETY: the thread's own block is alive while `THREAD_BLOCK` is.
        unsafe { unname(thread) };
    }
    advance();
}

/// Undoes [`deny_thread_values`]: the next access outside every block makes
/// the thread's own block current again.
pub(crate) fn allow_thread_values() {
    DENIED.set(false);
}
