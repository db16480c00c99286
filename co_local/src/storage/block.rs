//! Blocks: one allocation of the layout each, its header, its making (fresh,
//! recycled or inheriting), its destruction and its reuse through the
//! thread's pool.
//!
//! Owns [`Header`], [`Block`] (`new`, `inherit`, `reset`, `Drop`),
//! `destroy`, `destroy_values`, `clean` and the per-thread `POOL`. Keeps
//! SAFETY.md's I4 (a value is read only when alive, written only while not
//! made, marked destroyed before it is dropped, linked into the list of what
//! the block made when made, destroyed newest first) and its part of I5 and
//! I6: a pinned block is orphaned, not destroyed; every death advances the
//! clock and releases what names the block.

use core::cell::{Cell, RefCell};
use core::ptr::{self, NonNull};
use std::alloc::{self, handle_alloc_error};
use std::panic::{self, AssertUnwindSafe};

use super::chain;
use super::clock::{advance, CHANGES, LIVE};
use super::held::{release, unname};
use super::layout::{layout, Layout, NONE};
use super::pins::BlockPin;
use super::switch::{enter, CURRENT};

/// State byte of a value that has not been made in this block.
pub(crate) const UNINIT: u8 = 0;

/// State byte of a value that is alive.
pub(crate) const ALIVE: u8 = 1;

/// State byte of a value that is being or has been destroyed.
pub(crate) const DESTROYED: u8 = 2;

/// The first bytes of every block.
#[repr(C)]
pub(super) struct Header {
    /// Pins (see `pins.rs`). Once the owner has dropped the block while
    /// it was pinned, [`ORPHAN`] is added: the count is then negative, and
    /// reaches exactly `ORPHAN` when the last pin goes.
    pub(super) refs: Cell<isize>,
    /// The newest value with a state byte made in this block and not yet
    /// taken by its destruction (its index), or [`NONE`]: the head of the
    /// list of made values, newest first, chained through the links (see
    /// [`Layout`]).
    pub(super) made: Cell<u32>,
    /// The head of the list of values destruction is done with (each
    /// destroyed, or kept alive to the end when it has no drop glue), or
    /// [`NONE`]: what cleaning resets.
    pub(super) dead: Cell<u32>,
    /// The thread's `CHANGES` when the block was made (see `clock.rs`). A
    /// task block, which moves between threads, is checked through the
    /// links of its calls instead, which carry their own time (`chain.rs`).
    pub(super) born: Cell<u64>,
    /// For the block of a [`Locals`](crate::Locals): the block its
    /// [`resume`](super::switch::resume) makes current next time: this
    /// block, null (the thread's own block), or a block that lists this one
    /// in `HELD` (alive: it sends this one back to itself before it dies).
    pub(super) next: Cell<*mut u8>,
    /// Set while the block waits in the thread's pool: no owner.
    pub(super) pooled: Cell<bool>,
    /// Set in the block of a task that may move between threads
    /// ([`WithLocals`](crate::WithLocals)): only declarations whose type is
    /// `Send` reach it.
    pub(super) send_task: Cell<bool>,
    /// Whether the block is in this thread's `LIVE` set. Task blocks are in
    /// none (they move between threads); every other block, pooled ones
    /// included, is in the set of its thread.
    pub(super) listed: Cell<bool>,
    /// Whether some `Locals` names this block as its `next` (see `HELD`).
    pub(super) held: Cell<bool>,
    /// While the block is linked into its thread's chain (`chain.rs`): the
    /// block linked before it, or null.
    pub(super) outer: Cell<*mut u8>,
    /// While the block is linked: `CHANGES` when it was linked.
    pub(super) since: Cell<u64>,
}

/// Added to `Header::refs` when the owner drops a pinned block.
pub(super) const ORPHAN: isize = isize::MIN;

/// Clean blocks of this thread, ready for reuse: the clean region is clean,
/// the prefix is copied anew when one is taken. Freed at thread exit.
pub(super) struct Pool(pub(super) RefCell<Vec<NonNull<u8>>>);

std::thread_local! {
    static POOL: Pool = const { Pool(RefCell::new(Vec::new())) };
}

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

/// The header of the block at `base`.
///
/// # Safety
///
/// `base` must be a block that is not freed: owned, or orphaned and pinned.
#[inline(always)]
pub(super) unsafe fn header<'a>(base: *mut u8) -> &'a Header {
    // SAFETY: the header is at offset 0 of the block, aligned (the block's
    // alignment is at least the header's), and only ever shared.
    unsafe { &*base.cast::<Header>() }
}

/// One block: an allocation of the layout, owned.
pub(crate) struct Block {
    pub(super) base: NonNull<u8>,
}

impl Block {
    /// Makes a block: a clean allocation (recycled or fresh) plus a copy of
    /// the prefix.
    pub(crate) fn new() -> Block {
        Block::make(true)
    }

    /// Makes a block that is in no thread's live set (a task's, see
    /// [`TaskBlock`](super::task::TaskBlock)).
    pub(super) fn unlisted() -> Block {
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
                // Zeroed: every state byte `UNINIT`.
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
    pub(super) fn with_inherited(self, send_only: bool) -> Block {
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
                    // bounds. The state byte and link are set only once the
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
            if made_any(header) {
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
pub(super) unsafe fn fill_prefix(base: *mut u8, layout: &Layout, listed: bool) {
    let head = size_of::<Header>();
    // SAFETY: the caller's guarantee; the header is at offset 0, aligned, and
    // the constants follow it in the image and in the block (the plan starts
    // after the header), so the image is at least `head` bytes long and
    // separate from the block.
    unsafe {
        base.cast::<Header>().write(Header {
            refs: Cell::new(0),
            made: Cell::new(NONE),
            dead: Cell::new(NONE),
            born: Cell::new(CHANGES.get()),
            next: Cell::new(base),
            pooled: Cell::new(false),
            send_task: Cell::new(false),
            listed: Cell::new(listed),
            held: Cell::new(false),
            outer: Cell::new(ptr::null_mut()),
            since: Cell::new(0),
        });
        ptr::copy_nonoverlapping(
            layout.prefix.as_ptr().cast::<u8>().add(head),
            base.add(head),
            layout.prefix.len() - head,
        );
    }
}

/// Marks the value whose state byte is at `state` (index `index`) made in
/// the block at `base`: the newest of its list of made values.
///
/// # Safety
///
/// `base` must be a block that is not freed, and the value must have just
/// been written to its slot, which held none.
pub(super) unsafe fn mark_made(base: *mut u8, layout: &Layout, state: usize, index: usize) {
    // SAFETY: the caller's guarantee.
    let header = unsafe { header(base) };
    // The layout keeps indices below `NONE`.
    let index32 = index as u32;
    // SAFETY: the caller's guarantee; the state byte and the link are inside
    // the block, the link aligned.
    unsafe {
        *base.add(state) = ALIVE;
        *made_link(base, layout, index) = header.made.get();
    }
    header.made.set(index32);
}

/// The made-list link of the value of index `index`: the index of the next
/// value of the list it is in.
///
/// # Safety
///
/// `base` must be a block that is not freed, and `index` a stateful index
/// of the layout.
#[inline(always)]
unsafe fn made_link(base: *mut u8, layout: &Layout, index: usize) -> *mut u32 {
    // SAFETY: the caller's guarantee: the links are inside the block, one
    // aligned `u32` per stateful index.
    unsafe { base.add(layout.links).cast::<u32>().add(index) }
}

impl Drop for Block {
    /// Destroys every value made in the block, with the block current, then
    /// cleans it and gives it to the pool (or frees it); if something may
    /// still reach it, orphans it instead (see `pins.rs`). A panicking
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
pub(super) unsafe fn destroy(base: *mut u8) -> Option<Box<dyn std::any::Any + Send>> {
    // SAFETY: the caller's guarantee.
    let (panic, done) = unsafe { destroy_values(base) };
    // SAFETY: the caller's guarantee: the block is not freed.
    let header = unsafe { header(base) };
    if made_any(header) {
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

/// Destroys the values the block made, newest first, with the block
/// current: until the list of made values is empty, takes its head (the
/// value made last), moves it to the list destruction is done with, and, if
/// it has drop glue, marks it destroyed and drops it. A destructor may reach
/// any value of the block not destroyed yet, and make one not made yet: it
/// joins the head of the list, so it is the next to die. Stops early,
/// returning `false`, if a destructor leaves a pin on the block: the values
/// left may be referenced (the last unpin goes on from there). Returns the
/// first destructor panic.
///
/// This ends: a value is made at most once in a block's life (made values
/// are `ALIVE` or `DESTROYED` until the block is cleaned, and only an
/// `UNINIT` value is made), and each turn takes one made value off the list
/// for good, so there are at most as many turns as values with a state
/// byte.
///
/// # Safety
///
/// `base` must be a block that is not freed and has no owner that uses it.
pub(super) unsafe fn destroy_values(
    base: *mut u8,
) -> (Option<Box<dyn std::any::Any + Send>>, bool) {
    // SAFETY: the caller's guarantee.
    let header = unsafe { header(base) };
    let mut first_panic = None;
    let mut done = true;
    if header.made.get() == NONE {
        return (first_panic, done);
    }
    let layout = layout();
    // Linked while its destructors run: the scopes they open and close put
    // it back even where no live set knows it (a task's block, or any block
    // once its thread's live set is gone at thread exit).
    struct Unlink(*mut u8);
    impl Drop for Unlink {
        fn drop(&mut self) {
            // SAFETY: linked below; the block is freed only after this.
            unsafe { chain::unlink(self.0) };
        }
    }
    // SAFETY: the caller's guarantee: nothing frees the block before this
    // returns; it is linked nowhere else now (a block is linked by its
    // calls, and by its destruction, never at once).
    unsafe { chain::link(base, CHANGES.get()) };
    let _unlink = Unlink(base);
    enter(base, || loop {
        let index = header.made.get();
        if index == NONE {
            break;
        }
        if header.refs.get() > 0 {
            done = false;
            break;
        }
        let index = index as usize;
        // SAFETY: a made value's index is a stateful index of the layout.
        let link = unsafe { made_link(base, layout, index) };
        // SAFETY: as above; the link is in the block.
        unsafe {
            header.made.set(*link);
            *link = header.dead.replace(index as u32);
        }
        let entry = &layout.stateful[index];
        let Some(ops) = entry.drop else { continue };
        // SAFETY: the state byte of a value in the plan is inside the block.
        let state = unsafe { base.add(entry.state) };
        // Marked first: from now on no access reaches the value, its own
        // key's included, and it is never made again in this block.
        // SAFETY: as above.
        unsafe { *state = DESTROYED };
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the value was alive (a made value is, until it is
            // taken here) and is now marked destroyed; the offset is aligned
            // and in the block.
            unsafe { ops.drop_value(base.add(entry.value)) }
        }));
        if let Err(payload) = result {
            first_panic.get_or_insert(payload);
        }
    });
    (first_panic, done)
}

/// Puts the clean region back as a fresh block has it: the state bytes of
/// what was made back to `UNINIT`, the lists empty.
///
/// # Safety
///
/// `base` must be a block whose values are all destroyed (its list of made
/// values is empty), that nothing refers to.
pub(super) unsafe fn clean(base: *mut u8) {
    let layout = layout();
    // SAFETY: the caller's guarantee.
    let header = unsafe { header(base) };
    let mut index = header.dead.replace(NONE);
    while index != NONE {
        let entry = &layout.stateful[index as usize];
        // SAFETY: the state byte and the link of a stateful index are in
        // the block.
        unsafe {
            *base.add(entry.state) = UNINIT;
            index = *made_link(base, layout, index as usize);
        }
    }
}

/// Whether the block made a value with a state byte since it was made, or
/// cleaned: whether destruction has anything to do, or ran user code.
pub(super) fn made_any(header: &Header) -> bool {
    header.made.get() != NONE || header.dead.get() != NONE
}
