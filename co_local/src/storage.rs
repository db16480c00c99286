//! Blocks of coroutine-local storage and the current-block pointer.
//!
//! This is the only module of `co_local` with `unsafe` code. It owns:
//!
//! - `CURRENT`, the one thread-local pointer that names the block accesses
//!   reach (null: the thread's own block, not made yet or already destroyed);
//! - the process-wide [`Layout`]: offsets written into each declaration's
//!   [`Slot`] once, and the image of the constants copied into every block;
//! - [`Block`]: one allocation of that layout, its destruction, and a
//!   per-thread pool of clean blocks for reuse;
//! - what keeps a block alive while something other than its owner can
//!   still reach it, and the switches (`enter`, `resume`) that check it;
//! - the access path used by [`LocalKey`]: read `CURRENT`, add the offset,
//!   check the state byte for values that have one;
//! - the blocks of async tasks ([`TaskBlock`], under [`WithLocals`] and
//!   [`LocalWithLocals`]), which may move between threads between two polls.
//!
//! A block is `[Header | made map | plain constants | values with a state
//! byte]`. A value with a state byte (a lazy value, or a constant whose type
//! has drop glue) has it right after the value, so one offset finds both.
//! The made map (at most [`MADE_BITS`] bits, so that header and map take at
//! most 64 bytes) has a bit per such value, or, when the binary declares
//! more of them, per group of `2^k` consecutive ones: a bit says the block
//! made a value of that group, so that destroying and cleaning the block
//! looks at the state bytes of the groups it used, not at every
//! declaration of the binary.
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
//! A [`WithLocals`] task's block is in no live set: it is reachable only
//! while one of its task's calls runs on a thread (or its destructors),
//! which links it into that thread's chain ([`Attach`]) for that time, and
//! every trace of it on that thread fails its check once the call is over
//! (see [`TaskBlock`]). So it may move with its task between two calls.

use core::cell::{Cell, RefCell, UnsafeCell};
use core::fmt;
use core::future::Future;
use core::marker::PhantomData;
use core::mem::{align_of, needs_drop, size_of, ManuallyDrop, MaybeUninit};
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::task::{Context, Poll};
use std::alloc::{self, handle_alloc_error};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::key::{AccessError, LocalKey};
use crate::registry::{self, Declaration};

/// State byte of a value that has not been made in this block.
pub(crate) const UNINIT: u8 = 0;
/// State byte of a value that is alive.
pub(crate) const ALIVE: u8 = 1;
/// State byte of a value that is being or has been destroyed.
pub(crate) const DESTROYED: u8 = 2;

/// Where a declaration's value is in every block: its offset, and, for a
/// value with a state byte, its index among them (its made-map group is
/// that index shifted by `Layout::group_shift`).
pub struct Slot {
    offset: UnsafeCell<usize>,
    index: UnsafeCell<usize>,
}

// SAFETY: the slot is written exactly once, in `Layout::build`, which runs
// inside the `OnceLock` initialiser before the layout is published. It is read
// only by threads that have obtained the published layout (an acquire through
// `OnceLock`): `Layout::build` itself, and the access path, which reads it only
// when this thread's `CURRENT` is non-null. `CURRENT` is set only to a block
// made on this thread, which got the layout first, or to a task block
// (`TaskBlock`) that reached this thread by being moved: the move of its owner
// to this thread (by whatever synchronises the hand-over, as `Send` requires)
// happens after the block was made, so after the layout was obtained. So every
// read happens after the write, and there is no other write.
unsafe impl Sync for Slot {}

impl Slot {
    pub(crate) const fn new() -> Slot {
        Slot {
            offset: UnsafeCell::new(0),
            index: UnsafeCell::new(0),
        }
    }

    /// # Safety
    ///
    /// The layout must have been obtained on this thread (see `impl Sync`).
    #[inline(always)]
    unsafe fn offset(&self) -> usize {
        // SAFETY: the caller guarantees the write happened before; no write
        // happens after it.
        unsafe { *self.offset.get() }
    }

    /// # Safety
    ///
    /// As for [`Slot::offset`].
    unsafe fn index(&self) -> usize {
        // SAFETY: as in `offset`.
        unsafe { *self.index.get() }
    }
}

/// Type-erased operations on a key's value, for the layout and for blocks.
pub(crate) trait ErasedKey: Sync {
    /// Writes the initial value of a constant to `dst` (possibly unaligned).
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of the value's size.
    unsafe fn write_const(&self, dst: *mut u8);

    /// Drops the value at `value` in place.
    ///
    /// # Safety
    ///
    /// `value` must point to an alive, aligned value of the key's type that
    /// nobody uses afterwards.
    unsafe fn drop_value(&self, value: *mut u8);

    /// Writes to `dst` the copy of the value at `src` that a new block
    /// inherits (the declaration's `Clone` or `with` function).
    ///
    /// # Safety
    ///
    /// `src` must point to an alive, aligned value of the key's type that
    /// stays alive during the call; `dst` must be valid for an aligned write
    /// of one, and hold nothing that needs dropping.
    unsafe fn inherit_into(&self, src: *const u8, dst: *mut u8);
}

impl<T: 'static> ErasedKey for LocalKey<T> {
    unsafe fn write_const(&self, dst: *mut u8) {
        // SAFETY: the caller guarantees `dst` is valid for writes of a `T`.
        unsafe { dst.cast::<T>().write_unaligned((self.init)()) }
    }

    unsafe fn drop_value(&self, value: *mut u8) {
        // SAFETY: the caller guarantees an alive, aligned, unused `T`.
        unsafe { ptr::drop_in_place(value.cast::<T>()) }
    }

    unsafe fn inherit_into(&self, src: *const u8, dst: *mut u8) {
        // SAFETY: the caller guarantees an alive `T` at `src` for the call.
        let copy = (self.inherit)(unsafe { &*src.cast::<T>() });
        // SAFETY: the caller guarantees `dst` is valid for the write.
        unsafe { dst.cast::<T>().write(copy) };
    }
}

/// The first bytes of every block.
#[repr(C)]
struct Header {
    /// Pins (see the module docs). Once the owner has dropped the block while
    /// it was pinned, [`ORPHAN`] is added: the count is then negative, and
    /// reaches exactly `ORPHAN` when the last pin goes.
    refs: Cell<isize>,
    /// Values with a state byte made in this block: while it is zero, the
    /// stateful region and the made map are clean and destruction skips
    /// them.
    made: Cell<usize>,
    /// The thread's `CHANGES` when the block was made (see the module docs);
    /// for a task block, when a call last attached it to a thread (see
    /// `still_there`).
    born: Cell<u64>,
    /// For the block of a [`Locals`](crate::Locals): the block its
    /// [`resume`] makes current next time: this block, null (the thread's
    /// own block), or a block that lists this one in `HELD` (alive: it sends
    /// this one back to itself before it dies).
    next: Cell<*mut u8>,
    /// Set when destruction of the block starts: no value is made after.
    destroying: Cell<bool>,
    /// Set while the block waits in the thread's pool: no owner.
    pooled: Cell<bool>,
    /// Set in the block of a task that may move between threads
    /// ([`WithLocals`]): only declarations whose type is `Send` reach it.
    send_task: Cell<bool>,
    /// Whether the block is in this thread's `LIVE` set. Task blocks are in
    /// none (they move between threads); every other block, pooled ones
    /// included, is in the set of its thread.
    listed: Cell<bool>,
    /// Whether some `Locals` names this block as its `next` (see `HELD`).
    held: Cell<bool>,
}

/// Added to `Header::refs` when the owner drops a pinned block.
const ORPHAN: isize = isize::MIN;

/// A value with a state byte: where it and its state are, and how to
/// destroy it if it has drop glue.
struct Stateful {
    value: usize,
    state: usize,
    drop: Option<&'static dyn ErasedKey>,
}

/// An `#[inherit]` declaration: where its value is, and how to copy it.
struct Inherited {
    value: usize,
    /// The value's type is `Send`: a task block that may move copies it.
    send: bool,
    /// For a value with a state byte: its state byte and index.
    stateful: Option<(usize, usize)>,
    ops: &'static dyn ErasedKey,
}

/// The layout of every block, computed once per process.
///
/// A block is two regions: the *prefix* `[Header | made map | plain
/// constants]`, copied from [`Layout::prefix`] into every new block (the map
/// as zeros), and the *clean region* `[values with their state bytes]`,
/// which a new block only needs clean (every state byte `UNINIT`). A fresh allocation
/// is zeroed; a recycled block was cleaned when it was destroyed, touching
/// only what it had made. So making and destroying a block costs the same
/// whatever the number of declarations it did not use.
pub(crate) struct Layout {
    size: usize,
    align: usize,
    /// The image of the prefix: zeroed header, constants in place.
    prefix: Box<[MaybeUninit<u8>]>,
    /// Values with a state byte, by their index (plan order).
    stateful: Vec<Stateful>,
    /// Offset of the made map: `made_words` `u64` words after the header,
    /// one bit per group of `1 << group_shift` consecutive stateful values,
    /// set when the block makes one of them.
    made_map: usize,
    /// Words in the made map: at most [`MADE_BITS`] / 64.
    made_words: usize,
    /// Each bit of the made map covers `1 << group_shift` stateful values:
    /// 0 (one bit per value) up to [`MADE_BITS`] of them.
    group_shift: u32,
    /// The `#[inherit]` declarations, in registry order.
    inherited: Vec<Inherited>,
    /// How many clean blocks each thread keeps for reuse.
    pool_max: usize,
}

/// Bytes of clean blocks a thread keeps for reuse, at most.
const POOL_BYTES: usize = 256 * 1024;
/// Clean blocks a thread keeps for reuse, at most.
const POOL_BLOCKS: usize = 64;
/// Bits of the made map at most: with the header, 64 bytes, the SPEC's
/// bound on what a block may add to its values and their state bytes.
const MADE_BITS: usize = 192;
const _: () = assert!(size_of::<Header>() + MADE_BITS / 8 <= 64);
const _: () = assert!(size_of::<Header>() % align_of::<u64>() == 0);
const _: () = assert!(align_of::<Header>() >= align_of::<u64>());

static LAYOUT: OnceLock<Layout> = OnceLock::new();

/// The layout of the registry linked into this binary.
pub(crate) fn layout() -> &'static Layout {
    LAYOUT.get_or_init(|| Layout::build(registry()))
}

/// Every declaration linked into this binary: the distributed slice.
#[cfg(not(test))]
pub(crate) fn registry() -> &'static [Declaration] {
    crate::__private::DECLARATIONS.static_slice()
}

/// The unit tests' registry is a hand-made list, so that they run without
/// the linker's help (and under Miri, which cannot read linkme's sections).
#[cfg(test)]
pub(crate) fn registry() -> &'static [Declaration] {
    &tests::DECLARATIONS
}

impl Layout {
    fn build(decls: &'static [Declaration]) -> Layout {
        let (stateful, plain): (Vec<&Declaration>, Vec<&Declaration>) =
            decls.iter().partition(|d| d.has_state());
        let shapes = |ds: &[&Declaration]| ds.iter().map(|d| d.shape()).collect::<Vec<_>>();
        let groups = |shift: u32| stateful.len().div_ceil(1 << shift);
        let mut group_shift = 0;
        while groups(group_shift) > MADE_BITS {
            group_shift += 1;
        }
        let made_words = groups(group_shift).div_ceil(64);
        // The made map follows the header, `u64`-aligned like it: the two
        // take at most 64 bytes, and what padding follows is the first
        // value's alignment. Zero in the prefix image: a new block gets it
        // clean.
        let made_map = size_of::<Header>();
        let head = (
            made_map + made_words * size_of::<u64>(),
            align_of::<Header>(),
        );
        let prefix_plan = registry::plan(head, &shapes(&plain));
        let stateful_plan = registry::plan((prefix_plan.size, 1), &shapes(&stateful));
        let size = stateful_plan.size;
        let align = prefix_plan
            .align
            .max(stateful_plan.align)
            .max(align_of::<u64>());
        if alloc::Layout::from_size_align(size, align).is_err() {
            registry::too_large();
        }

        let mut prefix = vec![MaybeUninit::new(0u8); prefix_plan.size].into_boxed_slice();
        let mut inherited = Vec::new();
        for (decl, &value) in plain.iter().zip(&prefix_plan.offsets) {
            if decl.inherits() {
                inherited.push(Inherited {
                    value,
                    send: decl.is_send(),
                    stateful: None,
                    ops: decl.ops,
                });
            }
            // SAFETY: we are inside the `OnceLock` initialiser, before the
            // layout is published: no thread reads any slot yet (see `Slot`).
            unsafe { *decl.offset.offset.get() = value };
            // SAFETY: `plan` keeps `value + size` within the prefix.
            unsafe { decl.ops.write_const(prefix.as_mut_ptr().add(value).cast()) };
        }
        let mut entries = Vec::with_capacity(stateful.len());
        for (index, (decl, &value)) in stateful.iter().zip(&stateful_plan.offsets).enumerate() {
            // SAFETY: as above.
            unsafe {
                *decl.offset.offset.get() = value;
                *decl.offset.index.get() = index;
            }
            entries.push(Stateful {
                value,
                state: value + decl.size(),
                drop: decl.needs_drop().then_some(decl.ops),
            });
            if decl.inherits() {
                inherited.push(Inherited {
                    value,
                    send: decl.is_send(),
                    stateful: Some((value + decl.size(), index)),
                    ops: decl.ops,
                });
            }
        }
        Layout {
            size,
            align,
            prefix,
            stateful: entries,
            made_map,
            made_words,
            group_shift,
            inherited,
            pool_max: (POOL_BYTES / size).clamp(1, POOL_BLOCKS),
        }
    }

    /// Bytes of one block.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn alloc_layout(&self) -> alloc::Layout {
        alloc::Layout::from_size_align(self.size, self.align)
            .unwrap_or_else(|_| registry::too_large())
    }
}

std::thread_local! {
    /// The block that accesses on this thread reach; null for the thread's own
    /// block (made on first use).
    static CURRENT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// Clean blocks of this thread, ready for reuse: the clean region is clean,
/// the prefix is copied anew when one is taken. Freed at thread exit.
struct Pool(RefCell<Vec<NonNull<u8>>>);

impl Drop for Pool {
    fn drop(&mut self) {
        let layout = layout();
        advance();
        for base in self.0.get_mut().drain(..) {
            let _ = LIVE.try_with(|live| live.borrow_mut().remove(&(base.as_ptr() as usize)));
            // SAFETY: pooled blocks were allocated with this layout and are
            // owned by the pool alone.
            unsafe { alloc::dealloc(base.as_ptr(), layout.alloc_layout()) };
        }
    }
}

std::thread_local! {
    static POOL: Pool = const { Pool(RefCell::new(Vec::new())) };
    /// Advanced by every owner's drop of a block (and every free, reset or
    /// orphaning), and by every switch that may still be unfinished when a
    /// `resume` begun before it returns (`enter`, a task's call,
    /// `swap_current`, a `resume` that remembers a block): what a restore
    /// compares, once (see the module docs).
    static CHANGES: Cell<u64> = const { Cell::new(0) };
    /// `CHANGES` as the last of those deaths (or a task block leaving the
    /// thread) left it: a record taken at `CHANGES` = `at` outlived no death
    /// if this is at most `at`.
    static LAST_DEATH: Cell<u64> = const { Cell::new(0) };
    /// For each block that a `Locals` remembered as its `next`: the blocks of
    /// those `Locals`, sent back to themselves when it dies.
    static HELD: Held = Held(RefCell::new(HashMap::default()));
    /// The blocks of this thread that are not freed (orphaned and pooled
    /// ones too): allocated and freed blocks come and go, recycled ones
    /// stay, so a block's life in steady state touches it not at all.
    static LIVE: RefCell<HashSet<usize, BuildHasherDefault<AddressHasher>>> =
        RefCell::new(HashSet::default());
    /// The innermost [`Attach`] of this thread: the chain of the task blocks
    /// that a call in progress here attached, or that are dying here, or
    /// null (see [`TaskBlock`]).
    static ATTACHED: Cell<*const Attach> = const { Cell::new(ptr::null()) };
}

/// A block that is alive on this thread although it is in no live set: the
/// block of a `Send` task while one of its calls ([`TaskBlock::run`]) is in
/// progress here, or any unlisted block while its destructors run
/// ([`destroy_values`]). Each lives in the frame of that call (its guard),
/// and is linked into the thread's chain (`ATTACHED`, innermost first) for
/// as long as the frame is: it unlinks itself on the way out, wherever it is
/// in the chain by then, so calls may end in any order (a coroutine of
/// another library may suspend inside one and be resumed inside another).
/// A checked restore whose block is in the chain, and whose record is not
/// older than the link, puts it back (see `still_there`).
struct Attach {
    block: *mut u8,
    /// `CHANGES` when the block was linked: a record at least as new that
    /// names its address names this block, which has held the address since.
    since: u64,
    /// The next link of the chain, outward; rewritten when that one unlinks.
    outer: Cell<*const Attach>,
}

impl Attach {
    /// A link for `block`, linked after the chain's current head once
    /// [`link`](Attach::link) is called on it where it stays.
    #[inline(always)]
    fn new(block: *mut u8, since: u64) -> Attach {
        Attach {
            block,
            since,
            outer: Cell::new(ATTACHED.get()),
        }
    }

    /// Makes this link the chain's head. It must not move until
    /// [`unlink`](Attach::unlink) (it lives in a guard of the frame).
    #[inline(always)]
    fn link(&self) {
        ATTACHED.set(self);
    }

    /// Takes this link out of the chain: at once when it is the head
    /// (calls that nested), else by rewriting the `outer` of the link that
    /// points to it.
    #[inline(always)]
    fn unlink(&self) {
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
fn attached(block: *mut u8, at: u64) -> bool {
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

/// Advances `CHANGES` and marks the point in `LAST_DEATH`: a block died,
/// or left the thread.
#[inline(always)]
fn advance() {
    let now = CHANGES.get() + 1;
    CHANGES.set(now);
    LAST_DEATH.set(now);
}

/// Advances `CHANGES` alone: a switch began that a `resume` must look at.
#[inline(always)]
fn changed() {
    CHANGES.set(CHANGES.get() + 1);
}

/// The blocks remembered by `Locals` of this thread, and who remembered
/// each (both by address).
struct Held(RefCell<HashMap<usize, Vec<usize>, BuildHasherDefault<AddressHasher>>>);

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
unsafe fn set_next(base: *mut u8, next: *mut u8) {
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
unsafe fn unhold(block: *mut u8, holder: *mut u8) {
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
unsafe fn release(block: *mut u8) {
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
unsafe fn unname(block: *mut u8) {
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
unsafe fn release_slow(block: *mut u8) {
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

/// Hashes block addresses: aligned, distinct pointers, so one multiply
/// spreads them well enough.
#[derive(Default)]
struct AddressHasher(u64);

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
fn still_there(block: *mut u8, at: u64) -> bool {
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
    let thread = THREAD_BLOCK
        .try_with(|b| b.0.as_ref().map(Block::as_ptr))
        .ok()
        .flatten();
    if thread == Some(block) {
        // The thread's own block, alive until the thread exits: the restore
        // a scheduler's `resume` makes most often.
        return true;
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

/// The header of the block at `base`.
///
/// # Safety
///
/// `base` must be a block that is not freed: owned, or orphaned and pinned.
#[inline(always)]
unsafe fn header<'a>(base: *mut u8) -> &'a Header {
    // SAFETY: the header is at offset 0 of the block, aligned (the block's
    // alignment is at least the header's), and only ever shared.
    unsafe { &*base.cast::<Header>() }
}

/// Takes a pin on the block at `base`.
///
/// # Safety
///
/// `base` must be a block that is not freed.
#[inline(always)]
unsafe fn pin(base: *mut u8) {
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
unsafe fn unpin(base: *mut u8) {
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
struct BlockPin(*mut u8);

impl BlockPin {
    /// Pins the block at `base`.
    ///
    /// # Safety
    ///
    /// `base` must be a block that is not freed.
    #[inline(always)]
    unsafe fn take(base: *mut u8) -> BlockPin {
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
unsafe fn finish_orphan(base: *mut u8) {
    // SAFETY: the caller's guarantee: nothing refers to the block any more.
    let listed = unsafe { header(base) }.listed.get();
    // SAFETY: as above.
    let destroy = || unsafe {
        header(base).refs.set(0);
        destroy(base)
    };
    let panic = if listed {
        destroy()
    } else {
        dying_unlisted(base, destroy)
    };
    if let Some(payload) = panic {
        if !std::thread::panicking() {
            panic::resume_unwind(payload);
        }
    }
}

/// Runs `destroy`, which destroys the unlisted block (a task's) at `base`,
/// with that block linked into the thread's chain (see [`Attach`]): in no
/// live set, it is alive for restores only through a link, and the scopes
/// its destructors open and close must find it.
#[cold]
#[inline(never)]
fn dying_unlisted<R>(base: *mut u8, destroy: impl FnOnce() -> R) -> R {
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

/// One block: an allocation of the layout, owned.
pub(crate) struct Block {
    base: NonNull<u8>,
}

impl Block {
    /// Makes a block: a clean allocation (recycled or fresh) plus a copy of
    /// the prefix.
    pub(crate) fn new() -> Block {
        Block::make(true)
    }

    /// Makes a block that is in no thread's live set (a task's, see
    /// [`TaskBlock`]).
    fn unlisted() -> Block {
        Block::make(false)
    }

    /// Makes a block, in this thread's live set or not. Pooled blocks are in
    /// it already: one taken for a task leaves it.
    fn make(listed: bool) -> Block {
        let layout = layout();
        let recycled = POOL.try_with(|p| p.0.borrow_mut().pop()).ok().flatten();
        let base = match recycled {
            Some(base) => {
                if !listed {
                    let _ =
                        LIVE.try_with(|live| live.borrow_mut().remove(&(base.as_ptr() as usize)));
                }
                base
            }
            None => {
                let alloc_layout = layout.alloc_layout();
                // SAFETY: `alloc_layout` has a non-zero size (the header).
                // Zeroed: every state byte `UNINIT`, every made-map bit 0.
                let base = unsafe { alloc::alloc_zeroed(alloc_layout) };
                let Some(base) = NonNull::new(base) else {
                    handle_alloc_error(alloc_layout)
                };
                if listed {
                    let _ = LIVE.try_with(|live| live.borrow_mut().insert(base.as_ptr() as usize));
                }
                base
            }
        };
        // SAFETY: the block is valid for writes and used by nobody.
        unsafe { fill_prefix(base.as_ptr(), layout, listed) };
        Block { base }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Makes a block that starts with a copy of each `#[inherit]` value
    /// alive in the current block (the thread's own block outside every
    /// coroutine). The copies run with the current block current; if one
    /// panics, the new block is dropped (destroying the copies made) and the
    /// panic goes on. With no `#[inherit]` declaration, this is
    /// [`Block::new`].
    #[inline]
    pub(crate) fn inherit() -> Block {
        Block::new().with_inherited(false)
    }

    /// Copies into this new block each `#[inherit]` value alive in the
    /// current block (only those of `Send` types if `send_only`: the block
    /// of a task that may move between threads reaches no other).
    #[inline(always)]
    fn with_inherited(self, send_only: bool) -> Block {
        if layout().inherited.is_empty() {
            // No declaration inherits: nothing more than `Block::new`.
            return self;
        }
        self.copy_inherited(send_only)
    }

    #[inline(never)]
    fn copy_inherited(self, send_only: bool) -> Block {
        let block = self;
        let layout = layout();
        let parent = CURRENT.get();
        if parent.is_null() {
            // The thread's own block is not made: only constants, which the
            // new block has already.
            return block;
        }
        // The copies are user code: the pin keeps the parent's memory and
        // values while they run, whatever they do.
        // SAFETY: `parent` is current, so not freed.
        let _pin = unsafe { BlockPin::take(parent) };
        let child = block.as_ptr();
        for entry in &layout.inherited {
            if send_only && !entry.send {
                continue;
            }
            match entry.stateful {
                None => {
                    // SAFETY: plain constants are alive in every block; the
                    // new block's copy has no drop glue, so it may be
                    // overwritten. Both offsets are in the plan.
                    unsafe {
                        entry
                            .ops
                            .inherit_into(parent.add(entry.value), child.add(entry.value));
                    }
                }
                Some((state, index)) => {
                    // SAFETY: the state byte is in the pinned parent block.
                    if unsafe { *parent.add(state) } != ALIVE {
                        continue;
                    }
                    // SAFETY: the parent's value is alive and pinned; the
                    // child's slot is not made (a new block), aligned and in
                    // bounds. The state byte and made map are set only once the
                    // copy is written, so a panic leaves it not made.
                    unsafe {
                        entry
                            .ops
                            .inherit_into(parent.add(entry.value), child.add(entry.value));
                        mark_made(child, layout, state, index);
                    }
                }
            }
        }
        block
    }

    /// Makes the block as [`Block::new`] made it, in place when nothing but
    /// its owner can reach it: its values destroyed (with it current),
    /// constants back. Otherwise it is dropped (kept alive as an orphan for
    /// whoever still reaches it) and a new block takes its place.
    pub(crate) fn reset(&mut self) {
        let base = self.as_ptr();
        advance();
        // SAFETY: the owner's block is not freed. Whoever remembered it
        // remembers their own block instead, made anew or not.
        unsafe { unname(base) };
        // SAFETY: as above.
        let header = unsafe { header(base) };
        let mut panic = None;
        let mut in_place = header.refs.get() == 0;
        if in_place {
            // SAFETY: no pin, and the owner (`self`) does not use it now.
            let (first, done) = unsafe { destroy_values(base) };
            panic = first;
            in_place = done && header.refs.get() == 0;
        }
        if in_place {
            let layout = layout();
            let listed = header.listed.get();
            if header.made.get() > 0 {
                // The destructors were user code: a scope one of them left
                // open (another library's coroutine suspended in it) began
                // with this block current, and must not put back the block
                // made anew. Its record is older than the clock's advance,
                // and than the new birth.
                advance();
            }
            // SAFETY: every value is destroyed and nothing refers to the
            // block (a `resume` that remembered it meanwhile forgets it
            // here; `CURRENT` does not name it: `unname` above, and
            // `destroy_values`' `enter` put back what was current before).
            // Born anew: restores recorded before now see a different block.
            unsafe {
                release(base);
                clean(base);
                fill_prefix(base, layout, listed);
            }
        } else {
            let old = core::mem::replace(self, Block::new());
            // Orphaned (or, with destruction stopped half-way, orphaned
            // with the rest of its values) until the last reference goes.
            drop(old);
        }
        if let Some(payload) = panic {
            if !std::thread::panicking() {
                panic::resume_unwind(payload);
            }
        }
    }
}

/// Writes the prefix of a block made, or made anew in place: a fresh header
/// (born now, its own `next`, in this thread's live set or not) and the
/// constants from the prefix image. The image's header bytes are not copied.
///
/// # Safety
///
/// `base` must be a block that nothing refers to, whose clean region is
/// clean, valid for writes.
unsafe fn fill_prefix(base: *mut u8, layout: &Layout, listed: bool) {
    let head = size_of::<Header>();
    // SAFETY: the caller's guarantee; the header is at offset 0, aligned, and
    // the constants follow it in the image and in the block (the plan starts
    // after the header), so the image is at least `head` bytes long and
    // separate from the block.
    unsafe {
        base.cast::<Header>().write(Header {
            refs: Cell::new(0),
            made: Cell::new(0),
            born: Cell::new(CHANGES.get()),
            next: Cell::new(base),
            destroying: Cell::new(false),
            pooled: Cell::new(false),
            send_task: Cell::new(false),
            listed: Cell::new(listed),
            held: Cell::new(false),
        });
        ptr::copy_nonoverlapping(
            layout.prefix.as_ptr().cast::<u8>().add(head),
            base.add(head),
            layout.prefix.len() - head,
        );
    }
}

/// Marks the value whose state byte is at `state` (index `index`)
/// made in the block at `base`.
///
/// # Safety
///
/// `base` must be a block that is not freed, and the value must have just
/// been written to its slot, which held none.
unsafe fn mark_made(base: *mut u8, layout: &Layout, state: usize, index: usize) {
    let group = index >> layout.group_shift;
    // SAFETY: the caller's guarantee; the state byte and the made map's
    // words are inside the block, aligned.
    unsafe {
        *base.add(state) = ALIVE;
        *base.add(layout.made_map).cast::<u64>().add(group / 64) |= 1 << (group % 64);
        let header = header(base);
        header.made.set(header.made.get() + 1);
    }
}

impl Drop for Block {
    /// Destroys every value made in the block, with the block current, then
    /// cleans it and gives it to the pool (or frees it); if something may
    /// still reach it, orphans it instead (see the module docs). A panicking
    /// destructor does not stop the others; the first panic is resumed once
    /// the block is released (unless the thread is already unwinding: the
    /// panic hook has reported it).
    #[inline]
    fn drop(&mut self) {
        let base = self.base.as_ptr();
        // Restores and `resume`s recorded before this point check their
        // block before putting it back.
        advance();
        // SAFETY: the owner's block is not freed. If it is current, a scope
        // that did not nest left it so (another library's coroutine switched
        // stacks inside it): nothing will restore it. A `Locals` that
        // remembered it makes its own block current instead.
        unsafe { unname(base) };
        // SAFETY: the owner's block is not freed.
        let header = unsafe { header(base) };
        if header.refs.get() > 0 {
            header.refs.set(header.refs.get() + ORPHAN);
            return;
        }
        // SAFETY: no pin: nothing but this owner reaches the block.
        let panic = unsafe { destroy(base) };
        if let Some(payload) = panic {
            if !std::thread::panicking() {
                panic::resume_unwind(payload);
            }
        }
    }
}

/// Destroys the values of the block at `base`, then cleans it and pools or
/// frees it, unless something pinned it meanwhile (a destructor that let
/// another library's coroutine suspend inside a `with`): it is then
/// orphaned, and the last unpin goes on where this stopped. Returns the
/// first destructor panic.
///
/// # Safety
///
/// `base` must be a block that nobody owns any more and that has no pin.
unsafe fn destroy(base: *mut u8) -> Option<Box<dyn std::any::Any + Send>> {
    // SAFETY: the caller's guarantee.
    let (panic, done) = unsafe { destroy_values(base) };
    // SAFETY: the caller's guarantee: the block is not freed.
    let header = unsafe { header(base) };
    if header.made.get() > 0 {
        // The destructors were user code: a `resume` may have remembered
        // the block meanwhile, and a restore may have made it current again.
        // Neither may outlive this: the block is orphaned or freed now.
        // SAFETY: the block is not freed.
        unsafe { unname(base) };
    }
    if !done || header.refs.get() > 0 {
        header.refs.set(header.refs.get() + ORPHAN);
        // Restores recorded while the destructors ran (a scope left open by
        // a coroutine that suspended in one) check the block, and find it
        // orphaned.
        advance();
        return panic;
    }
    // SAFETY: every value is destroyed and nothing refers to the block.
    unsafe { clean(base) };
    advance();
    let layout = layout();
    // A pooled block is in this thread's live set, wherever it was made (a
    // task's block may have come from another thread).
    let listed = header.listed.get();
    header.pooled.set(true);
    let pooled = POOL
        .try_with(|p| {
            let mut p = p.0.borrow_mut();
            if p.len() >= layout.pool_max {
                return false;
            }
            if !listed
                && LIVE
                    .try_with(|live| live.borrow_mut().insert(base as usize))
                    .is_err()
            {
                return false;
            }
            header.listed.set(true);
            // SAFETY: blocks are never null.
            p.push(unsafe { NonNull::new_unchecked(base) });
            true
        })
        .unwrap_or(false);
    if !pooled {
        if listed {
            let _ = LIVE.try_with(|live| live.borrow_mut().remove(&(base as usize)));
        }
        // SAFETY: allocated in `Block::make` with the same layout; nobody
        // reaches it: no owner, no pin, and `CURRENT` does not name it.
        unsafe { alloc::dealloc(base, layout.alloc_layout()) };
    }
    panic
}

/// Marks the block dying and drops each of its alive values with a
/// destructor, with the block current. Stops early, returning `false`, if a
/// destructor leaves a pin on the block: the values left may be referenced.
/// Returns the first destructor panic.
///
/// # Safety
///
/// `base` must be a block that is not freed and has no owner that uses it.
unsafe fn destroy_values(base: *mut u8) -> (Option<Box<dyn std::any::Any + Send>>, bool) {
    let layout = layout();
    // SAFETY: the caller's guarantee.
    let header = unsafe { header(base) };
    header.destroying.set(true);
    let mut first_panic = None;
    let mut done = true;
    if header.made.get() > 0 {
        enter(base, || {
            for_each_made(base, layout, |entry| {
                let Some(ops) = entry.drop else { return true };
                // SAFETY: the state byte of a value in the plan is inside
                // the block.
                let state = unsafe { base.add(entry.state) };
                // SAFETY: `state` is in the block.
                if unsafe { *state } != ALIVE {
                    return true;
                }
                if header.refs.get() > 0 {
                    done = false;
                    return false;
                }
                // Marked first: from now on no access reaches the value, its
                // own key's included.
                // SAFETY: as above.
                unsafe { *state = DESTROYED };
                let result = panic::catch_unwind(AssertUnwindSafe(|| {
                    // SAFETY: the value was alive and is now marked
                    // destroyed; the offset is aligned and in the block.
                    unsafe { ops.drop_value(base.add(entry.value)) }
                }));
                if let Err(payload) = result {
                    first_panic.get_or_insert(payload);
                }
                true
            });
        });
    }
    (first_panic, done)
}

/// Puts the clean region back as a fresh block has it: the state bytes of
/// what was made back to `UNINIT`, made-map words to zero. Values without drop
/// glue were never marked destroyed.
///
/// # Safety
///
/// `base` must be a block whose values are all destroyed, that nothing
/// refers to.
unsafe fn clean(base: *mut u8) {
    let layout = layout();
    // SAFETY: the caller's guarantee.
    let header = unsafe { header(base) };
    if header.made.get() == 0 {
        return;
    }
    for_each_made(base, layout, |entry| {
        // SAFETY: the state byte is in the block.
        unsafe { *base.add(entry.state) = UNINIT };
        true
    });
    for word in 0..layout.made_words {
        // SAFETY: the made map's words are inside the block, aligned.
        unsafe { *base.add(layout.made_map).cast::<u64>().add(word) = 0 };
    }
    header.made.set(0);
}

/// Calls `f` for each value the block made (its state byte is not
/// `UNINIT`), in plan order, until it returns `false`. Looks only at the
/// groups the made map marks: each made value's group, of one value when
/// the binary declares at most [`MADE_BITS`] values with a state byte, and
/// of `2^k` (the least that fits the map) beyond.
fn for_each_made(base: *mut u8, layout: &Layout, mut f: impl FnMut(&Stateful) -> bool) {
    let count = layout.stateful.len();
    for word in 0..layout.made_words {
        // SAFETY: the made map's words are inside the block, aligned.
        let mut bits = unsafe { *base.add(layout.made_map).cast::<u64>().add(word) };
        while bits != 0 {
            let group = word * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let first = group << layout.group_shift;
            let end = (first + (1 << layout.group_shift)).min(count);
            for entry in &layout.stateful[first..end] {
                // SAFETY: the state byte of a value in the plan is inside
                // the block.
                if unsafe { *base.add(entry.state) } != UNINIT && !f(entry) {
                    return;
                }
            }
        }
    }
}

/// A block to put back as current: the one that was current when a scope
/// began, and the thread's clock then.
#[derive(Clone, Copy)]
struct Saved {
    block: *mut u8,
    at: u64,
}

/// Puts back the block `saved` names as the current one, or the thread's
/// own block if that one was dropped since: at once if no block died since
/// the record (it is as valid as it was then), else after a look at it.
#[cold]
#[inline(never)]
fn restore_checked(saved: Saved) {
    let block = if LAST_DEATH.get() <= saved.at || still_there(saved.block, saved.at) {
        saved.block
    } else {
        ptr::null_mut()
    };
    CURRENT.set(block);
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
fn leave_enter_changed(saved: Saved) {
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
fn leave_changed(base: *mut u8, caller: *mut u8, changes: u64) {
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

/// The thread's own block, for code outside every coroutine.
struct ThreadBlock(Option<Block>);

impl Drop for ThreadBlock {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}

std::thread_local! {
    static THREAD_BLOCK: ThreadBlock = ThreadBlock(Some(Block::new()));
}

/// Makes the thread's own block current, making it first if needed.
fn thread_block() -> Result<NonNull<u8>, AccessError> {
    let base = THREAD_BLOCK
        .try_with(|b| b.0.as_ref().map(|b| b.base))
        .ok()
        .flatten()
        .ok_or(AccessError::new())?;
    CURRENT.set(base.as_ptr());
    Ok(base)
}

/// Whether the key's value has a state byte: lazy, or a constant with drop
/// glue. A compile-time fact for each key.
#[inline(always)]
fn has_state<T: 'static>(key: &'static LocalKey<T>) -> bool {
    key.lazy || needs_drop::<T>()
}

/// The fast path: where the value of `key` is in the current block, if it
/// is there and alive. `None` sends the caller to [`slow_path`].
#[inline(always)]
fn fast_path<T: 'static>(key: &'static LocalKey<T>) -> Option<NonNull<u8>> {
    let base = NonNull::new(CURRENT.get())?;
    // A compile-time fact for each key: only keys whose type is not `Send`
    // look at the header.
    // SAFETY: `base` is a block that is not freed (the invariant of `CURRENT`).
    if !key.send && unsafe { header(base.as_ptr()) }.send_task.get() {
        return None;
    }
    // SAFETY: `CURRENT` is non-null, so this thread has the layout (`Slot`).
    let offset = unsafe { key.decl.offset.offset() };
    // SAFETY: `base` is a block that is not freed (the invariant of
    // `CURRENT`), and the plan puts the value inside it.
    let value = unsafe { base.add(offset) };
    if has_state(key) {
        // SAFETY: the plan puts the state byte right after the value.
        if unsafe { *value.as_ptr().add(size_of::<T>()) } != ALIVE {
            return None;
        }
    }
    Some(value)
}

/// Everything the fast path does not handle: makes the thread's block, makes
/// a value with a state byte (from `preset` instead of its initialiser if
/// given), or reports a value being or already destroyed. On `Ok`, the value
/// was alive or made in the block that was current when this began; the
/// caller looks again (the block current now may differ if the initialiser
/// switched stacks).
#[cold]
#[inline(never)]
fn slow_path<T: 'static>(
    key: &'static LocalKey<T>,
    preset: Option<&mut Option<T>>,
) -> Result<(), AccessError> {
    let base = match NonNull::new(CURRENT.get()) {
        Some(base) => base.as_ptr(),
        None => thread_block()?.as_ptr(),
    };
    // SAFETY: `base` is current, so not freed.
    if !key.send && unsafe { header(base) }.send_task.get() {
        return Err(AccessError::not_send());
    }
    if !has_state(key) {
        return Ok(());
    }
    let layout = layout();
    // SAFETY: `CURRENT` is non-null now, so this thread has the layout.
    let (offset, index) = unsafe { (key.decl.offset.offset(), key.decl.offset.index()) };
    // SAFETY: the plan puts the state byte after the value, in the block.
    let state = unsafe { base.add(offset + size_of::<T>()) };
    // SAFETY: `base` is current, so not freed.
    let header = unsafe { header(base) };
    // SAFETY: as above.
    match unsafe { *state } {
        ALIVE => return Ok(()),
        UNINIT if !header.destroying.get() => {}
        _ => return Err(AccessError::new()),
    }

    // The initialiser is user code: it may reach this key again, or suspend
    // and let the block's owner drop it. The pin keeps the memory.
    // SAFETY: `base` is current, so not freed.
    let unpin_on_exit = unsafe { BlockPin::take(base) };
    let new = match preset.and_then(Option::take) {
        Some(v) => v,
        None => (key.init)(),
    };
    // `header` is still valid: the block is pinned, so not freed.
    let unused = if header.refs.get() < 0 || header.destroying.get() {
        // Orphaned or dying meanwhile: nothing is made any more.
        Some(Err(new))
    } else {
        // SAFETY: `state` is in the pinned block.
        match unsafe { *state } {
            UNINIT => {
                // SAFETY: the slot is aligned, in bounds and holds no value;
                // the block is pinned.
                unsafe {
                    base.add(offset).cast::<T>().write(new);
                    mark_made(base, layout, offset + size_of::<T>(), index);
                }
                None
            }
            // Made meanwhile, by an inner access or while the initialiser
            // was suspended: references to that value may be alive, so it
            // stays, and the late one is dropped.
            ALIVE => Some(Ok(new)),
            _ => Some(Err(new)),
        }
    };
    drop(unpin_on_exit);
    match unused {
        None => Ok(()),
        Some(Ok(late)) => {
            drop(late);
            Ok(())
        }
        Some(Err(late)) => {
            drop(late);
            Err(AccessError::new())
        }
    }
}

/// Finds the current block's value of `key`, making it reachable first if
/// needed (see [`slow_path`]).
///
/// The loop leaves only through the inlined [`fast_path`], so whichever way
/// the value was found, the compiler knows the pointer, the offset and the
/// state check it went through: a second access right after
/// (`X.set(X.get() + 1)`) reuses them instead of redoing them.
#[inline(always)]
fn find<T: 'static>(
    key: &'static LocalKey<T>,
    mut preset: Option<&mut Option<T>>,
) -> Result<NonNull<T>, AccessError> {
    loop {
        if let Some(value) = fast_path(key) {
            return Ok(value.cast());
        }
        slow_path(key, preset.as_deref_mut())?;
    }
}

/// The block a value found by [`find`] is in: the current one.
#[inline(always)]
fn current() -> *mut u8 {
    CURRENT.get()
}

/// Runs `f` with a reference to the current block's value of `key`, or
/// returns why the value cannot be reached. The block is pinned while `f`
/// runs: `f` may suspend a coroutine.
#[inline]
pub(crate) fn try_with<T: 'static, R>(
    key: &'static LocalKey<T>,
    f: impl FnOnce(&T) -> R,
) -> Result<R, AccessError> {
    let value = find(key, None)?;
    Ok(pinned(value, f))
}

/// Runs `f` with a reference to the current block's value of `key`; panics
/// if the value cannot be reached. The block is pinned while `f` runs.
#[inline]
#[track_caller]
pub(crate) fn with<T: 'static, R>(key: &'static LocalKey<T>, f: impl FnOnce(&T) -> R) -> R {
    let value = match find(key, None) {
        Ok(value) => value,
        Err(err) => crate::key::panic_access_error(key.decl.name(), err),
    };
    pinned(value, f)
}

/// Calls `f` on the value with its block pinned until `f` returns or
/// unwinds.
#[inline(always)]
fn pinned<T, R>(value: NonNull<T>, f: impl FnOnce(&T) -> R) -> R {
    // SAFETY: the value was just found in the current block, which is not
    // freed.
    let _pin = unsafe { BlockPin::take(current()) };
    // SAFETY: see `value_ref`; the pin keeps the block's memory and values
    // while `f` runs, even if the owner drops the block meanwhile.
    f(unsafe { value_ref(value) })
}

/// The current block's value of a key, with its block pinned: it stays
/// alive, in that block, as long as this guard, whatever runs meanwhile (the
/// coroutine may suspend, its block's owner may drop it). For `scope`.
pub(crate) struct PinnedValue<T: 'static> {
    _pin: BlockPin,
    value: NonNull<T>,
}

impl<T: 'static> PinnedValue<T> {
    /// Finds the current block's value of `key` (making it if needed) and
    /// pins its block; panics like [`with`] if it cannot be reached.
    #[track_caller]
    pub(crate) fn of(key: &'static LocalKey<T>) -> PinnedValue<T> {
        let value = match find(key, None) {
            Ok(value) => value,
            Err(err) => crate::key::panic_access_error(key.decl.name(), err),
        };
        // SAFETY: the value was just found in the current block, not freed.
        let _pin = unsafe { BlockPin::take(current()) };
        PinnedValue { _pin, value }
    }

    pub(crate) fn get(&self) -> &T {
        // SAFETY: the pin keeps the block, and the value in it, alive while
        // `self` lives: destruction stops at a pinned block.
        unsafe { value_ref(self.value) }
    }
}

/// Runs `f` with a reference to the current block's value of `key`, without
/// a pin; panics if the value cannot be reached. For the `Cell` and
/// `RefCell` helpers: `f` must not run user code (no initialiser, no
/// destructor, no closure of the caller), so nothing can switch stacks while
/// the reference lives.
#[inline(always)]
#[track_caller]
pub(crate) fn with_brief<T: 'static, R>(key: &'static LocalKey<T>, f: impl FnOnce(&T) -> R) -> R {
    let value = match find(key, None) {
        Ok(value) => value,
        Err(err) => crate::key::panic_access_error(key.decl.name(), err),
    };
    // SAFETY: see `value_ref`; `f` runs no user code, so the block cannot be
    // dropped while it runs.
    f(unsafe { value_ref(value) })
}

/// Like [`with_brief`], but a value not made yet is made from `init`
/// instead of its initialiser; `f` gets `init` back if it was not used.
///
/// The fast path passes `init` straight to `f`; only the cold path puts it in
/// an `Option` whose address the slow path takes, so the fast path stores
/// nothing to the stack and, after an access on the same key
/// (`X.set(X.get() + 1)`), reuses that access's checks.
#[inline]
#[track_caller]
pub(crate) fn initialize_with<T: 'static, R>(
    key: &'static LocalKey<T>,
    init: T,
    f: impl FnOnce(Option<T>, &T) -> R,
) -> R {
    match fast_path(key) {
        // SAFETY: see `value_ref`; `f` runs no user code (the caller's
        // guarantee, as for `with_brief`).
        Some(found) => f(Some(init), unsafe { value_ref(found.cast()) }),
        None => initialize_with_slow(key, init, f),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn initialize_with_slow<T: 'static, R>(
    key: &'static LocalKey<T>,
    init: T,
    f: impl FnOnce(Option<T>, &T) -> R,
) -> R {
    let mut init = Some(init);
    let value = match find(key, Some(&mut init)) {
        Ok(value) => value,
        Err(err) => crate::key::panic_access_error(key.decl.name(), err),
    };
    // SAFETY: see `value_ref`.
    f(init, unsafe { value_ref(value) })
}

/// The reference handed to an accessor's closure.
///
/// # Safety
///
/// `value` must come from [`find`] just now: an alive value of the current
/// block. It then stays alive while the closure runs: the block is pinned
/// ([`pinned`]) or the closure runs no user code ([`with_brief`]), so the
/// owner cannot drop the block under it; destruction marks a value destroyed
/// before dropping it, so no new reference is made to a dying value; a late
/// initialiser never replaces a made value. Only shared references are ever
/// made to values.
#[inline(always)]
unsafe fn value_ref<'a, T>(value: NonNull<T>) -> &'a T {
    // SAFETY: the caller guarantees the value is alive for `'a`.
    unsafe { value.as_ref() }
}

/// The block that code on a thread reaches, as a raw handle: what a
/// coroutine runtime saves and restores on each switch.
///
/// A `RawBlock` is either [`RawBlock::THREAD`] (the thread's own block) or the
/// block of a live [`Locals`](crate::Locals), from [`Locals::as_raw`](crate::Locals::as_raw).
/// It is a plain pointer: copying it does nothing, and it does not keep the
/// block alive. It is neither `Send` nor `Sync`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawBlock(*mut u8);

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
        RawBlock(CURRENT.get())
    }

    pub(crate) fn from_block(block: &Block) -> RawBlock {
        RawBlock(block.as_ptr())
    }
}

impl core::fmt::Debug for RawBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.0.is_null() {
            f.write_str("RawBlock::THREAD")
        } else {
            f.debug_tuple("RawBlock").field(&self.0).finish()
        }
    }
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
/// (nesting like `enter`). References handed out by [`LocalKey::with`] must
/// not outlive their block: a runtime keeps a suspended coroutine's block
/// alive until the coroutine's stack is gone.
#[inline]
pub unsafe fn swap_current(block: RawBlock) -> RawBlock {
    // A `resume` whose coroutine suspends before this is undone sees it.
    changed();
    RawBlock(CURRENT.replace(block.0))
}

/// The block of an async task: [`WithLocals`] (`SEND`) or
/// [`LocalWithLocals`], and the state of the task around it.
///
/// A `SEND` task block is in no thread's live set. It is current only inside
/// a call of its task ([`TaskBlock::call`]: a poll, a `with_locals`, the drop
/// of the future) and while it is destroyed; for that time it is *linked*
/// into the thread's chain ([`Attach`], from `ATTACHED`), so that a restore
/// checked on that thread (after a block died meanwhile) still finds it,
/// wherever the call is in the chain by then. When the call ends:
///
/// - its link leaves the chain, wherever it is: calls may end in another
///   order than they began when another library's coroutine suspends inside
///   one and is resumed inside another;
/// - if `CHANGES` moved during the call (anything that records the current
///   block advances it when it begins), the thread's clocks advance, so that
///   any record left on this thread that names the block (a scope of another
///   library's coroutine that suspended inside the call) is checked before it
///   is restored, and, the block being neither in the live set nor linked
///   any more, is not; a `Locals` whose `resume` remembered the block goes
///   back to its own. If `CHANGES` did not move, nothing was recorded;
/// - if something on this thread still holds a pin on a `SEND` block (a
///   coroutine of another library suspended inside a `with` on one of its
///   values), that block stays on this thread, orphaned until the pin goes,
///   and the task goes on with a fresh block.
///
/// So between two calls nothing on any thread reaches a task block, and the
/// block may move with its task to another thread: a `SEND` block's values
/// are all of `Send` types (the header's `send_task` flag keeps the others
/// out), and its memory is freed into the pool of whichever thread drops it,
/// which holds blocks of the same, process-wide layout.
///
/// A block without `SEND` (a [`LocalWithLocals`]') never leaves its thread:
/// it is in the thread's live set like a `Locals`' block, and its calls are
/// plain `enter`s.
pub(crate) struct TaskBlock<const SEND: bool> {
    /// `None` once the block has been destroyed.
    block: Option<Block>,
    /// [`BUSY`] and [`ENDED`]: one byte, so that a poll checks both at once.
    state: u8,
}

/// A call of a `SEND` task block runs. Still set when the next call or the
/// destruction begins, it means a call never ended: its frame was leaked (a
/// generator that borrowed the task was forgotten while suspended inside
/// it), so the thread it ran on may still name the block. That block is then
/// abandoned (leaked, never freed, never used again here) and the task goes
/// on with a fresh one. Kept with the task, not in the block: the thread that
/// may still use the block never writes it.
const BUSY: u8 = 1;
/// The task's future is gone (dropped, or being dropped): its wrapper is
/// polled no more, and `with_locals` gives `None`.
const ENDED: u8 = 2;

// SAFETY: see `TaskBlock`: outside its calls and `destroy`, which borrow the
// task block mutably, no pointer on any thread names the block (`CURRENT`
// was restored and the call's link left the chain, records naming it fail
// their check, pins that outlived the call made it leave a `SEND` block
// behind), so moving the owner moves the only way to reach it. A call whose
// way out never ran (its frame leaked) left `BUSY` set: the next call or the
// drop, wherever it runs, abandons that block without touching it, and the
// task never uses it again (the leaked frame's link stays in its thread's
// chain, naming a block that is never freed). A `SEND` block holds only
// values whose type is `Send` (`fast_path` and `slow_path` refuse the
// others when the header's `send_task` is set), so they may be used, and
// dropped, on another thread. A block without `SEND` may hold any value: it
// is only ever owned by a `LocalWithLocals`, which is not `Send` (its
// `PhantomData<*const ()>`), so this impl never moves one; it exists so that
// the compiler's complaint about sending a `LocalWithLocals` names that type
// and not this one.
unsafe impl<const SEND: bool> Send for TaskBlock<SEND> {}

impl<const SEND: bool> TaskBlock<SEND> {
    /// A task block that starts with a copy of each `#[inherit]` value
    /// alive in the current block (of a `Send` type, for a `SEND` block).
    pub(crate) fn new() -> TaskBlock<SEND> {
        TaskBlock {
            block: Some(Self::fresh().with_inherited(SEND)),
            state: 0,
        }
    }

    fn fresh() -> Block {
        if !SEND {
            // Never leaves the thread: a block like a `Locals`' one.
            return Block::new();
        }
        let block = Block::unlisted();
        // SAFETY: the block was just made.
        unsafe { header(block.as_ptr()) }.send_task.set(true);
        block
    }

    /// Whether the task's future is gone (or its block: the two go
    /// together, the future first).
    pub(crate) fn is_done(&self) -> bool {
        self.state & ENDED != 0 || self.block.is_none()
    }

    /// Makes the task ready for a call: `ended` (which panics) if its future
    /// is gone, and a fresh block if a call never ended (`BUSY`). One
    /// comparison when neither.
    #[inline(always)]
    fn ready(&mut self, ended: fn() -> !) {
        if self.state != 0 {
            if !SEND {
                // Never `BUSY`: `ENDED`.
                ended()
            }
            self.not_ready(ended);
        }
    }

    /// [`ready`](Self::ready) for a `SEND` task that is not: out of line, so
    /// that the poll checks the state byte in memory and reads nothing else.
    #[cold]
    #[inline(never)]
    fn not_ready(&mut self, ended: fn() -> !) {
        if self.is_done() {
            ended()
        }
        self.abandon();
    }

    /// Leaks the block of a call that never ended (see [`BUSY`]) and goes on
    /// with a fresh one.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self) {
        core::mem::forget(self.block.replace(Self::fresh()));
        self.state &= !BUSY;
    }

    /// Runs `f` with the block current, restoring the caller's afterwards,
    /// also if `f` panics: the task's own calls (a `with_locals`, the drop of
    /// its future), after [`ready`](Self::ready).
    ///
    /// # Panics
    ///
    /// Through `ended` if the task's future is gone.
    #[inline(always)]
    fn run<R>(&mut self, ended: fn() -> !, f: impl FnOnce() -> R) -> R {
        self.ready(ended);
        // SAFETY: `ready` returned: not `BUSY`, and the block is there.
        unsafe { self.call(0, f) }
    }

    /// Runs `f` with the block current, restoring the caller's afterwards,
    /// also if `f` panics, and leaves the state `after` (`0`, or [`ENDED`]
    /// for the drop of the future: a constant, so that the call writes the
    /// state twice and never reads it). A `SEND` block is linked into this
    /// thread's chain meanwhile (see [`TaskBlock`]); the other kind is in this
    /// thread's live set, so this is an `enter` of it.
    ///
    /// # Safety
    ///
    /// [`ready`](Self::ready) returned just before, or the caller checked
    /// the same: the block is there and no call is in progress (`BUSY`
    /// clear).
    #[inline(always)]
    unsafe fn call<R>(&mut self, after: u8, f: impl FnOnce() -> R) -> R {
        struct Detach<'a, 'l, const SEND: bool> {
            task: &'a mut TaskBlock<SEND>,
            /// The call's link; `base`, `since` and `outer` are its fields,
            /// copied here, where the fast way out reads them: the link
            /// itself is shared with the chain's walkers.
            link: &'l Attach,
            base: *mut u8,
            since: u64,
            outer: *const Attach,
            /// The block current when the call began.
            caller: *mut u8,
            after: u8,
        }
        impl<const SEND: bool> Drop for Detach<'_, '_, SEND> {
            #[inline(always)]
            fn drop(&mut self) {
                if CHANGES.get() == self.since {
                    // Nothing began inside that may not have ended, no block
                    // died and no link left the chain (each advances
                    // `CHANGES`): the caller's block is as valid as it was,
                    // this link is still the head and its `outer` as it was.
                    // Nor was anything recorded that names this block: every
                    // `enter`, `resume`, task call and `swap_current`
                    // advances `CHANGES` when it begins. Records that an
                    // earlier call left behind made that call leave by
                    // `detach_changed`, which advanced both clocks past them
                    // for good.
                    CURRENT.set(self.caller);
                    ATTACHED.set(self.outer);
                } else {
                    detach_changed(self.link, self.caller);
                }
                self.task.state = self.after;
                // SAFETY: the block is owned by the task block, not freed.
                if unsafe { header(self.base) }.refs.get() != 0 {
                    self.task.leave_pinned();
                }
            }
        }
        // SAFETY: the caller's guarantee.
        let base = unsafe { self.block.as_ref().unwrap_unchecked() }.as_ptr();
        if !SEND {
            // Never `BUSY`: the state stays what it is (`after`).
            return enter(base, f);
        }
        self.state = after | BUSY;
        changed();
        let since = CHANGES.get();
        let link = Attach::new(base, since);
        // Linked where it stays: `link` is not moved until it is dropped,
        // after `detach` (declared later), which unlinks it.
        link.link();
        let _detach = Detach {
            task: self,
            link: &link,
            base,
            since,
            outer: link.outer.get(),
            caller: CURRENT.replace(base),
            after,
        };
        f()
    }

    /// Leaves a block that something on this thread still pins behind,
    /// orphaned (the last pin destroys it, here), and goes on with a fresh one.
    #[cold]
    #[inline(never)]
    fn leave_pinned(&mut self) {
        let pinned = self.block.replace(Self::fresh());
        // Pinned: `Block::drop` orphans it without running any value's
        // destructor.
        drop(pinned);
    }

    /// Drops the task's future in place with the block current, unless it
    /// is gone already. [`ENDED`] is set first, so that a destructor that
    /// panics leaves it gone all the same.
    fn end<F>(&mut self, future: &mut ManuallyDrop<F>) {
        if self.is_done() {
            return;
        }
        if self.state & BUSY != 0 {
            // A call never ended; its frame, which borrowed the future, is
            // gone for good (leaked), and so is the block it names.
            self.abandon();
        }
        // `ENDED` from here on, also if the destructor panics.
        self.state = ENDED;
        // SAFETY: not `BUSY`, and the block is there (`is_done` was false).
        // The future was alive (not `ENDED`) and is never used again.
        unsafe { self.call(ENDED, || ManuallyDrop::drop(future)) };
    }

    /// Destroys the block's values, with it current (and, for a `SEND`
    /// block, linked while its destructors run: see [`dying_unlisted`]), and
    /// releases it. Nothing if it is destroyed already.
    fn destroy(&mut self) {
        if SEND && self.state & BUSY != 0 {
            // A call never ended: the block may still be named where it ran.
            core::mem::forget(self.block.take());
            self.state &= !BUSY;
            return;
        }
        let Some(block) = self.block.take() else {
            return;
        };
        if SEND {
            let base = block.as_ptr();
            dying_unlisted(base, || drop(block));
        } else {
            drop(block);
        }
    }
}

impl<const SEND: bool> Drop for TaskBlock<SEND> {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// The way out of [`TaskBlock::call`] when `CHANGES` moved: lets go of the
/// task block (`link`'s) and restores the caller's block if it is still
/// there.
#[cold]
#[inline(never)]
fn detach_changed(link: &Attach, caller: *mut u8) {
    // A `Locals` that remembered the block (its coroutine suspended inside
    // the call) goes back to its own.
    // SAFETY: the block is owned by the task block, which the call borrows.
    unsafe { release(link.block) };
    // Out of the chain, wherever it is by now: a call that began inside
    // this one and has not ended (a coroutine suspended in it) keeps its
    // link, and so do the calls this one runs inside. The caller's block
    // may be one of them.
    link.unlink();
    restore_checked(Saved {
        block: caller,
        at: link.since,
    });
    // Records left on this thread that name the block (a scope of a
    // coroutine that suspended inside the call) check it before they restore
    // it: they find `CHANGES` moved, and `LAST_DEATH` past them.
    advance();
}

#[cold]
#[inline(never)]
#[track_caller]
fn task_done() -> ! {
    panic!("co_local: the task has completed: its block is gone")
}

/// A future with a block of coroutine-local values of its own: an async
/// task's values, for executors that may move tasks between threads.
///
/// `WithLocals::new(fut)` gives `fut` a block, as a coroutine has one. Each
/// [`poll`](Future::poll) runs with that block current, so every
/// [`co_local!`](crate::co_local) static that `fut` reaches, at any depth and
/// across every `.await`, is the task's own copy. The inner future is dropped
/// with its block current too (when it completes, or with the wrapper), and
/// then the block's values are destroyed, with the block current, by the
/// rules of every block (see [`LocalKey`]): when the task completes, is
/// aborted, or loses a `select!`.
///
/// `WithLocals<F>` is `Send` when `F` is, so `tokio::spawn` takes it on the
/// multi-thread runtime, and the task may go on on another worker after any
/// `.await`. For that, its block reaches only declarations whose type is
/// `Send` ([`Declaration::is_send`](crate::Declaration::is_send)): an access
/// to any other one, in the task, fails as
/// [`try_with`](LocalKey::try_with) does, with [`AccessError`], and the
/// methods that cannot fail panic naming the static. Accesses to declarations
/// of `Send` types cost what they cost elsewhere. On a single-threaded
/// executor, [`LocalWithLocals`] reaches every declaration.
///
/// Code outside every wrapper, on a worker thread, reaches that thread's own
/// values, as with `std::thread_local!`.
///
/// Each poll costs a few pointer swaps, whatever the number of declarations:
/// no value is moved in or out.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use co_local::{co_local, WithLocals};
///
/// co_local! {
///     /// The request the current task serves.
///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
///     /// Lines logged by the current task, made on first use.
///     static LOG: std::cell::RefCell<Vec<String>> = std::cell::RefCell::new(Vec::new());
/// }
///
/// fn log(line: &str) {
///     LOG.with_borrow_mut(|log| log.push(format!("[{}] {line}", REQUEST_ID.get())));
/// }
///
/// async fn handle() -> Vec<String> {
///     log("start");
///     tokio::task::yield_now().await; // may go on on another worker
///     log("done");
///     LOG.take()
/// }
///
/// #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// async fn main() {
///     let mut tasks = Vec::new();
///     for id in 1..=3 {
///         let mut task = WithLocals::new(handle());
///         task.with_locals(|| REQUEST_ID.set(id)); // seeded before spawning
///         tasks.push(tokio::spawn(task));
///     }
///     for (id, task) in (1..=3).zip(tasks) {
///         assert_eq!(task.await.unwrap(), [format!("[{id}] start"), format!("[{id}] done")]);
///     }
///     assert_eq!(REQUEST_ID.get(), 0); // this thread's own copy
/// }
/// ```
pub struct WithLocals<F> {
    /// Dropped in place, with the block current, by `TaskBlock::end`.
    future: ManuallyDrop<F>,
    block: TaskBlock<true>,
}

/// A future with a block of coroutine-local values of its own, for
/// executors that keep a task on one thread (tokio's `LocalSet`,
/// `futures::executor::LocalPool`, a current-thread runtime's `spawn_local`).
///
/// Like [`WithLocals`], but it reaches every declaration, whatever its type,
/// and is not `Send`.
///
/// # Examples
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use co_local::{co_local, LocalWithLocals};
///
/// co_local! {
///     static SHARED: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
/// }
///
/// let mut task = LocalWithLocals::new(async {
///     SHARED.with_borrow(|s| s.as_deref().map(str::len))
/// });
/// task.with_locals(|| SHARED.set(Some(Rc::from("hello"))));
/// assert_eq!(futures::executor::block_on(task), Some(5));
/// ```
pub struct LocalWithLocals<F> {
    /// Dropped in place, with the block current, by `TaskBlock::end`.
    future: ManuallyDrop<F>,
    block: TaskBlock<false>,
    /// Not `Send`: the block may hold values of any type.
    _thread_bound: PhantomData<*const ()>,
}

impl<F> WithLocals<F> {
    /// Wraps `future` with a new block: every constant in place, every lazy
    /// value not made yet, except the `#[inherit]` values of `Send` types
    /// alive in the current block, which the task starts with a copy of (see
    /// [`Locals::inherit`](crate::Locals::inherit)).
    pub fn new(future: F) -> WithLocals<F> {
        WithLocals {
            future: ManuallyDrop::new(future),
            block: TaskBlock::new(),
        }
    }

    /// Runs `f` with the task's block current, to seed values before the
    /// task is spawned (`task.with_locals(|| REQUEST_ID.set(id))`) or read
    /// them; `None` once the task has completed.
    ///
    /// Inside `f`, as in the task, only declarations whose type is `Send`
    /// are reachable.
    pub fn with_locals<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        with_locals(&mut self.block, f)
    }
}

impl<F> LocalWithLocals<F> {
    /// Wraps `future` with a new block: every constant in place, every lazy
    /// value not made yet, except the `#[inherit]` values alive in the
    /// current block, which the task starts with a copy of (see
    /// [`Locals::inherit`](crate::Locals::inherit)).
    pub fn new(future: F) -> LocalWithLocals<F> {
        LocalWithLocals {
            future: ManuallyDrop::new(future),
            block: TaskBlock::new(),
            _thread_bound: PhantomData,
        }
    }

    /// Runs `f` with the task's block current, to seed values before the
    /// task is spawned or read them; `None` once the task has completed.
    pub fn with_locals<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        with_locals(&mut self.block, f)
    }
}

fn with_locals<R, const SEND: bool>(
    block: &mut TaskBlock<SEND>,
    f: impl FnOnce() -> R,
) -> Option<R> {
    if block.is_done() {
        return None;
    }
    Some(block.run(task_done, f))
}

/// One poll of a task's future with its block current; on completion, the
/// future is dropped with the block current, then the block is destroyed.
#[inline(always)]
fn poll_task<F: Future, const SEND: bool>(
    future: &mut ManuallyDrop<F>,
    block: &mut TaskBlock<SEND>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    block.ready(polled_after_completion);
    // SAFETY: the future is alive (`ready` returned: not `ENDED`), pinned
    // with its wrapper (the caller has a `Pin<&mut _>` of it) and never moved:
    // it is only dropped in place (`TaskBlock::end`).
    let inner = unsafe { Pin::new_unchecked(&mut **future) };
    // SAFETY: `ready` just returned.
    let poll = unsafe { block.call(0, || inner.poll(cx)) };
    if poll.is_ready() {
        block.end(future);
        block.destroy();
    }
    poll
}

#[cold]
#[inline(never)]
#[track_caller]
fn polled_after_completion() -> ! {
    panic!("co_local: a task wrapped with its locals was polled after it completed")
}

impl<F: Future> Future for WithLocals<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future is structurally pinned (`poll_task` never moves
        // it; `Drop` drops it in place); the block is not pinned and is only
        // used through `&mut`, which does not move the future.
        let this = unsafe { self.get_unchecked_mut() };
        poll_task(&mut this.future, &mut this.block, cx)
    }
}

impl<F: Future> Future for LocalWithLocals<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: as for `WithLocals`.
        let this = unsafe { self.get_unchecked_mut() };
        poll_task(&mut this.future, &mut this.block, cx)
    }
}

impl<F> Drop for WithLocals<F> {
    fn drop(&mut self) {
        self.block.end(&mut self.future);
    }
}

impl<F> Drop for LocalWithLocals<F> {
    fn drop(&mut self) {
        self.block.end(&mut self.future);
    }
}

impl<F> fmt::Debug for WithLocals<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithLocals")
            .field("done", &self.block.is_done())
            .finish_non_exhaustive()
    }
}

impl<F> fmt::Debug for LocalWithLocals<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalWithLocals")
            .field("done", &self.block.is_done())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
