//! [`Locals`]: one block of every declared coroutine-local value.

use core::fmt;

use crate::storage::{self, Block, RawBlock};

/// One block of coroutine-local storage: a copy of every value declared with
/// [`co_local!`](crate::co_local) in the binary.
///
/// A coroutine runtime gives each coroutine one `Locals` (`co_runtime` does),
/// and makes it current while the coroutine runs. Any other runtime can do
/// the same: hold one `Locals` per task and [`enter`](Locals::enter) it while
/// the task runs, or, for stackful switching, use
/// [`swap_current`](crate::swap_current).
///
/// Making a block costs one allocation and a copy of the template (constants
/// in place, lazy values marked not made); see
/// [`block_size`](crate::block_size). Dropping it destroys the values that
/// were made, with the block current, as described on [`LocalKey`](crate::LocalKey).
///
/// `Locals` is neither `Send` nor `Sync`: its values belong to the thread that
/// made it.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use co_local::{co_local, Locals};
///
/// co_local! {
///     static LOG: RefCell<Vec<&'static str>> = RefCell::new(Vec::new());
/// }
///
/// let mut a = Locals::new();
/// let mut b = Locals::new();
/// a.enter(|| LOG.with_borrow_mut(|log| log.push("a")));
/// b.enter(|| {
///     LOG.with_borrow_mut(|log| log.push("b"));
///     // Blocks nest: entering `a` inside `b` reaches `a`'s values.
///     a.enter(|| LOG.with_borrow(|log| assert_eq!(*log, ["a"])));
///     LOG.with_borrow(|log| assert_eq!(*log, ["b"]));
/// });
/// ```
pub struct Locals {
    block: Block,
}

impl Locals {
    /// Makes a block: every constant in place, every lazy value not made yet.
    pub fn new() -> Locals {
        Locals {
            block: Block::new(),
        }
    }

    /// Runs `f` with this block current on this thread, and makes the
    /// previous block current again afterwards, also if `f` panics.
    pub fn enter<R>(&mut self, f: impl FnOnce() -> R) -> R {
        storage::enter(self.block.as_ptr(), f)
    }

    /// A raw handle on this block, for [`swap_current`](crate::swap_current).
    pub fn as_raw(&self) -> RawBlock {
        RawBlock::from_block(&self.block)
    }
}

impl Default for Locals {
    fn default() -> Locals {
        Locals::new()
    }
}

impl fmt::Debug for Locals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locals")
            .field("block", &self.as_raw())
            .finish()
    }
}
