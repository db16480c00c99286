//! Blocks of coroutine-local storage and the current-block pointer.
//!
//! This folder is the only part of `co_local` with `unsafe` code (the crate
//! denies `unsafe_code` everywhere else). One file per concept, each opening
//! with what it owns and which invariant of SAFETY.md it keeps:
//!
//! - `layout.rs`: the process-wide [`Layout`](layout::Layout): offsets
//!   written into each declaration's [`Slot`] once, the image of the
//!   constants copied into every block, where the order of making is kept;
//!   the two constructors that pair a key with its registry entry (I2, I3);
//! - `block.rs`: [`Block`], one allocation of that layout: its header, its
//!   making and inheriting, its destruction, a per-thread pool of clean
//!   blocks for reuse, and the thread's own block (I4, parts of I5 and I6);
//! - `pins.rs`: what keeps a block while something other than its owner
//!   still reaches into it, and orphans (I5);
//! - `clock.rs`: the thread's clock and the check of a recorded block
//!   (I6);
//! - `held.rs`: the blocks a `Locals`' `resume` remembers between two
//!   switches (I6);
//! - `chain.rs`: the blocks alive on a thread that a restore must find
//!   without a live set: task blocks during their calls, blocks while they
//!   die (I7);
//! - `switch.rs`: `CURRENT`, the one thread-local pointer that names the
//!   block accesses reach, and the switches that change it: `enter`,
//!   `resume`, `swap_current` (I1, I6);
//! - `access.rs`: the access path used by [`LocalKey`](crate::LocalKey):
//!   read `CURRENT`, add the offset, check the state byte for values that
//!   have one (I1 to I5);
//! - `thread.rs`: the thread's own block, and whether code outside every
//!   block may reach it (`deny_thread_values`) (I1);
//! - `scoped.rs`: the pin projection and in-place drop of the future of
//!   `LocalKey::scope_future` ([`Scoped`](crate::Scoped));
//! - `task.rs`: the blocks of async tasks, under
//!   [`WithLocals`](crate::WithLocals) and
//!   [`LocalWithLocals`](crate::LocalWithLocals), and of
//!   [`SendLocals`](crate::SendLocals), which may move between threads
//!   between two calls (I7).
//!
//! A block is `[Header | plain constants | values with a state byte |
//! links]`. A value with a state byte (a lazy value, or a constant whose
//! type has drop glue) has it right after the value, so one offset finds
//! both. The links (a `u32` per such value) chain the values the block made
//! into a list, newest first, whose head is in the header: destruction pops
//! it, so values die in reverse order of their making (and a value made by
//! a destructor dies next), and destroying and cleaning a block visit what
//! it made, not every declaration of the binary.
//!
//! # Who may reach a block
//!
//! A block's owner (a [`Locals`](crate::Locals), or the thread for its own
//! block) drops it. Other things may still name it then, because another
//! library's coroutine can switch stacks in the middle of any scope:
//!
//! - a reference handed to a `with` closure that is suspended, or a lazy
//!   initialiser that is running: these hold a *pin* (`Header::refs`). A
//!   block dropped while pinned is *orphaned*: nothing in it is destroyed
//!   or freed until the last pin goes, which destroys and frees it;
//! - the block a pending `enter`, `resume` or task call will restore: these
//!   record the thread's clock, `CHANGES`. It advances at every owner's drop
//!   (and free, reset or orphaning) of a block, which also sets `LAST_DEATH`
//!   to it, and whenever a switch begins that may outlive an enclosing
//!   `resume` (every `enter` on the way in, and on the way out if anything
//!   happened since, every `resume` on the way in, a task's call,
//!   `swap_current`). A restore whose clock has not moved puts its block back
//!   at the cost of one comparison: nothing began that may not have ended,
//!   and no block died. Otherwise, if `LAST_DEATH` is not past the record,
//!   the block is as valid as it was; else the restore first checks the
//!   block in the thread's set of allocated blocks (its address, born no
//!   later than the record, neither orphaned nor pooled) and makes the
//!   thread's own block current if the block is gone. So a `resume` learns
//!   from one comparison that its coroutine came back with the block
//!   `resume` made current (every change of `CURRENT` that may outlast the
//!   run advances `CHANGES`), and `enter`s nested inside an `enter` cost it
//!   one more comparison, not a lookup;
//! - the block a [`Locals`](crate::Locals)' `resume` makes current next
//!   (`Header::next`), when its coroutine suspended with another block
//!   current (inside an `enter`, or inside a task's poll): that block lists
//!   it in the thread's `HELD` table, and before it dies, is made anew or
//!   leaves the thread, sends it back to its own block. So `resume` reads
//!   `next` without any check;
//! - `CURRENT` itself: the owner's drop resets it to the thread's block if
//!   it names the block.
//!
//! The block of a [`WithLocals`](crate::WithLocals) task or a
//! [`SendLocals`](crate::SendLocals) is in no live set: it is reachable only
//! while one of its calls runs on a thread (or its destructors), which
//! links it into that thread's chain (`chain.rs`) for that time, and every
//! trace of it on that thread fails its check once the call is over (see
//! [`TaskBlock`]). So it may move with its owner between two calls.

mod access;
mod block;
mod chain;
mod clock;
mod held;
mod layout;
mod pins;
mod scoped;
mod switch;
mod task;
mod thread;

pub(crate) use access::{initialize_with, try_with, with, with_brief, PinnedValue};
pub(crate) use block::Block;
pub(crate) use layout::{layout, registry, ErasedKey, Slot};
pub use switch::swap_current;
pub(crate) use switch::{current_raw, enter, resume};
pub(crate) use task::TaskBlock;
pub(crate) use thread::{allow_thread_values, deny_thread_values};

#[cfg(test)]
mod tests;
