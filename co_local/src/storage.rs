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
//! - the access path used by [`LocalKey`]: read `CURRENT`, add the offset,
//!   check the state byte for values that have one.
//!
//! A block is `[Header | values...]`. A lazy value has its state byte right
//! after it, so one offset finds both; constants have none (the header tracks
//! the destruction of those with a destructor).

use core::cell::{Cell, RefCell, UnsafeCell};
use core::mem::{align_of, needs_drop, size_of, MaybeUninit};
use core::ptr::{self, NonNull};
use std::alloc::{self, handle_alloc_error};
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::key::{AccessError, LocalKey};
use crate::registry::{self, Declaration};

/// State byte of a lazy value that has not been made in this block.
pub(crate) const UNINIT: u8 = 0;
/// State byte of a value that is alive.
pub(crate) const ALIVE: u8 = 1;
/// State byte of a value that is being or has been destroyed.
pub(crate) const DESTROYED: u8 = 2;

/// The offset of a declaration's value in every block.
pub struct Slot(UnsafeCell<usize>);

// SAFETY: the offset is written exactly once, in `Layout::build`, which runs
// inside the `OnceLock` initialiser before the layout is published. It is read
// only by threads that have obtained the published layout (an acquire through
// `OnceLock`): `Layout::build` itself, and the access path, which reads it only
// when this thread's `CURRENT` is non-null. `CURRENT` is set only to a block
// made on this thread (blocks are `!Send`), and making a block gets the layout
// first. So every read happens after the write, and there is no other write.
unsafe impl Sync for Slot {}

impl Slot {
    pub(crate) const fn new() -> Slot {
        Slot(UnsafeCell::new(0))
    }

    /// # Safety
    ///
    /// The layout must have been obtained on this thread (see `impl Sync`).
    #[inline(always)]
    unsafe fn get(&self) -> usize {
        // SAFETY: the caller guarantees the write happened before; no write
        // happens after it.
        unsafe { *self.0.get() }
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
}

/// The first bytes of every block.
#[repr(C)]
struct Header {
    /// Set when destruction of the block starts: no lazy value is made after.
    destroying: Cell<bool>,
    /// Lazy values made in this block. While it is zero, the lazy region is
    /// clean (every state byte `UNINIT`) and destruction skips it.
    lazy_made: Cell<usize>,
    /// Constants with a destructor whose destruction has started, in the
    /// order of `Layout::const_drops`: while the block is dying, the constant
    /// at index `i` is destroyed if `i < consts_dropped`. Constants need no
    /// state byte of their own.
    consts_dropped: Cell<usize>,
}

/// A constant whose type has drop glue: blocks destroy it.
struct ConstDrop {
    value: usize,
    ops: &'static dyn ErasedKey,
}

/// A lazy value: its state byte, and how to destroy it if it has drop glue.
struct Lazy {
    value: usize,
    state: usize,
    drop: Option<&'static dyn ErasedKey>,
}

/// The layout of every block, computed once per process.
///
/// A block is two regions: the *prefix* `[Header | constants]`, copied from
/// [`Layout::prefix`] into every new block, and the *lazy region*
/// `[lazy values with their state bytes]`, which a block only needs clean
/// (every state byte `UNINIT`). A fresh allocation zeroes it; a recycled
/// block was cleaned when it was destroyed. So making a block costs the same
/// whatever the number of lazy declarations.
pub(crate) struct Layout {
    size: usize,
    align: usize,
    /// The image of the prefix: zeroed header, constants in place.
    prefix: Box<[MaybeUninit<u8>]>,
    const_drops: Vec<ConstDrop>,
    lazies: Vec<Lazy>,
    /// How many clean blocks each thread keeps for reuse.
    pool_max: usize,
}

/// Bytes of clean blocks a thread keeps for reuse, at most.
const POOL_BYTES: usize = 256 * 1024;
/// Clean blocks a thread keeps for reuse, at most.
const POOL_BLOCKS: usize = 64;

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
        let (consts, lazies): (Vec<&Declaration>, Vec<&Declaration>) =
            decls.iter().partition(|d| d.is_const());
        let shapes = |ds: &[&Declaration]| ds.iter().map(|d| d.shape()).collect::<Vec<_>>();
        let header = (size_of::<Header>(), align_of::<Header>());
        let prefix_plan = registry::plan(header, &shapes(&consts));
        let lazy_plan = registry::plan((prefix_plan.size, 1), &shapes(&lazies));
        let size = lazy_plan.size.max(prefix_plan.size);
        let align = prefix_plan.align.max(lazy_plan.align);

        let mut prefix = vec![MaybeUninit::new(0u8); prefix_plan.size].into_boxed_slice();
        let mut const_drops = Vec::new();
        for (decl, &value) in consts.iter().zip(&prefix_plan.offsets) {
            // SAFETY: we are inside the `OnceLock` initialiser, before the
            // layout is published: no thread reads any slot yet (see `Slot`).
            unsafe { *decl.offset.0.get() = value };
            // SAFETY: `plan` keeps `value + size` within the prefix.
            unsafe { decl.ops.write_const(prefix.as_mut_ptr().add(value).cast()) };
            if decl.needs_drop() {
                const_drops.push(ConstDrop {
                    value,
                    ops: decl.ops,
                });
            }
        }
        let mut lazy_entries = Vec::with_capacity(lazies.len());
        for (decl, &value) in lazies.iter().zip(&lazy_plan.offsets) {
            // SAFETY: as above.
            unsafe { *decl.offset.0.get() = value };
            lazy_entries.push(Lazy {
                value,
                state: value + decl.size(),
                drop: decl.needs_drop().then_some(decl.ops),
            });
        }
        Layout {
            size,
            align,
            prefix,
            const_drops,
            lazies: lazy_entries,
            pool_max: (POOL_BYTES / size).clamp(1, POOL_BLOCKS),
        }
    }

    /// Bytes of one block.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    fn alloc_layout(&self) -> alloc::Layout {
        alloc::Layout::from_size_align(self.size, self.align)
            .expect("co_local: block layout is too large")
    }
}

std::thread_local! {
    /// The block that accesses on this thread reach; null for the thread's own
    /// block (made on first use).
    static CURRENT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// Clean blocks of this thread, ready for reuse: the lazy region is clean,
/// the prefix is copied anew when one is taken. Freed at thread exit.
struct Pool(RefCell<Vec<NonNull<u8>>>);

impl Drop for Pool {
    fn drop(&mut self) {
        let layout = layout();
        for base in self.0.get_mut().drain(..) {
            // SAFETY: pooled blocks were allocated with this layout and are
            // owned by the pool alone.
            unsafe { alloc::dealloc(base.as_ptr(), layout.alloc_layout()) };
        }
    }
}

std::thread_local! {
    static POOL: Pool = const { Pool(RefCell::new(Vec::new())) };
}

/// One block: an allocation of the layout, owned.
pub(crate) struct Block {
    base: NonNull<u8>,
}

impl Block {
    /// Makes a block: a clean allocation (recycled or fresh) plus a copy of
    /// the prefix.
    pub(crate) fn new() -> Block {
        let layout = layout();
        let recycled = POOL.try_with(|p| p.0.borrow_mut().pop()).ok().flatten();
        let base = recycled.unwrap_or_else(|| {
            let alloc_layout = layout.alloc_layout();
            // SAFETY: `alloc_layout` has a non-zero size (the header).
            let base = unsafe { alloc::alloc(alloc_layout) };
            let Some(base) = NonNull::new(base) else {
                handle_alloc_error(alloc_layout)
            };
            let lazy_start = layout.prefix.len();
            // SAFETY: the lazy region `lazy_start..size` is inside the new
            // allocation; zeroing it makes every state byte `UNINIT`.
            unsafe { ptr::write_bytes(base.as_ptr().add(lazy_start), 0, layout.size - lazy_start) };
            base
        });
        // SAFETY: the prefix is shorter than a block, the image is a separate
        // allocation, and the block is valid for writes and used by nobody.
        unsafe {
            ptr::copy_nonoverlapping(
                layout.prefix.as_ptr().cast::<u8>(),
                base.as_ptr(),
                layout.prefix.len(),
            );
        }
        Block { base }
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for Block {
    /// Destroys every alive value with a destructor, with this block current,
    /// then cleans the block and gives it to the pool (or frees it). A
    /// panicking destructor does not stop the others; the first panic is
    /// resumed once the block is released (unless the thread is already
    /// unwinding: the panic hook has reported it).
    fn drop(&mut self) {
        let base = self.base.as_ptr();
        let layout = layout();
        // SAFETY: `base` is a live block; the header is at offset 0, aligned
        // (the block's alignment is at least the header's).
        let header = unsafe { &*base.cast::<Header>() };
        header.destroying.set(true);
        let mut first_panic = None;
        // Drops the value at `value`, which is alive and marked destroyed
        // (so no access reaches it again, its own key's included).
        let mut destroy = |value: usize, ops: &dyn ErasedKey| {
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: the caller marked the alive value destroyed; the
                // offset is aligned and inside the block (the plan).
                unsafe { ops.drop_value(base.add(value)) }
            }));
            if let Err(payload) = result {
                first_panic.get_or_insert(payload);
            }
        };
        enter(base, || {
            for (index, c) in layout.const_drops.iter().enumerate() {
                // Constants are alive until this point: marking this one (and
                // those before it) destroyed is moving the cursor past it.
                header.consts_dropped.set(index + 1);
                destroy(c.value, c.ops);
            }
            if header.lazy_made.get() > 0 {
                for lazy in &layout.lazies {
                    let Some(ops) = lazy.drop else { continue };
                    // SAFETY: the state byte is within the block (the plan).
                    let state = unsafe { base.add(lazy.state) };
                    // SAFETY: `state` points into this live block.
                    if unsafe { *state } == ALIVE {
                        // SAFETY: as above.
                        unsafe { *state = DESTROYED };
                        destroy(lazy.value, ops);
                    }
                }
            }
        });
        if header.lazy_made.get() > 0 {
            for lazy in &layout.lazies {
                // SAFETY: the state byte is in the block; every value is
                // destroyed, so marking them all not made cleans the region.
                unsafe { *base.add(lazy.state) = UNINIT };
            }
        }
        let pooled = POOL
            .try_with(|p| {
                let mut p = p.0.borrow_mut();
                let room = p.len() < layout.pool_max;
                if room {
                    p.push(self.base);
                }
                room
            })
            .unwrap_or(false);
        if !pooled {
            // SAFETY: allocated in `Block::new` with the same layout; no
            // access can reach it any more: it is not current, and all
            // references into it were handed to closures that have returned.
            unsafe { alloc::dealloc(base, layout.alloc_layout()) };
        }
        if let Some(payload) = first_panic {
            if !std::thread::panicking() {
                panic::resume_unwind(payload);
            }
        }
    }
}

/// Runs `f` with `base` as the current block, restoring the previous one
/// afterwards, also on panic.
pub(crate) fn enter<R>(base: *mut u8, f: impl FnOnce() -> R) -> R {
    struct Restore(*mut u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.set(self.0);
        }
    }
    let _restore = Restore(CURRENT.replace(base));
    f()
}

/// The thread's own block, for code outside every coroutine.
struct ThreadBlock(Option<Block>);

impl Drop for ThreadBlock {
    fn drop(&mut self) {
        if let Some(block) = self.0.take() {
            let base = block.as_ptr();
            drop(block);
            if CURRENT.get() == base {
                CURRENT.set(ptr::null_mut());
            }
        }
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

/// The fast path: where the value of `key` is in the current block, if it
/// is there and alive, as the block and the value's offset. `None` sends the
/// caller to [`slow_path`].
#[inline(always)]
fn fast_path<T: 'static>(key: &'static LocalKey<T>) -> Option<(NonNull<u8>, usize)> {
    let base = NonNull::new(CURRENT.get())?;
    // SAFETY: `CURRENT` is non-null, so this thread has the layout (`Slot`).
    let offset = unsafe { key.decl.offset.get() };
    if key.lazy {
        // SAFETY: `base` is a live block (the invariant of `CURRENT`), and
        // the plan puts the state byte right after the value, inside it.
        if unsafe { *base.as_ptr().add(offset + size_of::<T>()) } != ALIVE {
            return None;
        }
    } else if needs_drop::<T>() {
        // A constant with a destructor is alive unless its block is dying.
        // SAFETY: the header is at the start of the live block.
        if unsafe { base.cast::<Header>().as_ref() }.destroying.get() {
            return None;
        }
    }
    Some((base, offset))
}

/// The value at `offset` in the block at `base`, as [`fast_path`] found it.
#[inline(always)]
fn value_at<T>((base, offset): (NonNull<u8>, usize)) -> NonNull<T> {
    // SAFETY: `fast_path` returns offsets of values inside the live block.
    unsafe { base.add(offset) }.cast::<T>()
}

/// Everything the fast path does not handle: makes the thread's block, makes
/// a lazy value (from `preset` instead of the initialiser if given), or
/// reports a value being or already destroyed.
///
/// `Ok(None)`: the fast path now finds the value. `Ok(Some(found))`: the
/// value is alive but only the slow path can tell: a constant with a
/// destructor in a dying block, not destroyed yet.
#[cold]
#[inline(never)]
fn slow_path<T: 'static>(
    key: &'static LocalKey<T>,
    preset: Option<&mut Option<T>>,
) -> Result<Option<(NonNull<u8>, usize)>, AccessError> {
    let base = match NonNull::new(CURRENT.get()) {
        Some(base) => base,
        None => thread_block()?,
    };
    // SAFETY: `CURRENT` is non-null now, so this thread has the layout.
    let offset = unsafe { key.decl.offset.get() };
    // SAFETY: the header is at the start of the live block.
    let header = unsafe { base.cast::<Header>().as_ref() };
    if !key.lazy {
        if !needs_drop::<T>() || !header.destroying.get() {
            return Ok(None);
        }
        // The block is dying: the constant is destroyed if the cursor of
        // `Block::drop` has reached it.
        let index = layout()
            .const_drops
            .iter()
            .position(|c| c.value == offset)
            .expect("co_local: a constant with a destructor is missing from the layout");
        return if index < header.consts_dropped.get() {
            Err(AccessError::new())
        } else {
            Ok(Some((base, offset)))
        };
    }
    // SAFETY: as in `fast_path`.
    let value = unsafe { base.as_ptr().add(offset) }.cast::<T>();
    // SAFETY: the state byte follows the value.
    let state = unsafe { value.cast::<u8>().add(size_of::<T>()) };
    // SAFETY: `state` is in the live block.
    match unsafe { *state } {
        ALIVE => return Ok(None),
        UNINIT => {}
        _ => return Err(AccessError::new()),
    }
    if header.destroying.get() {
        return Err(AccessError::new());
    }
    let new = match preset.and_then(Option::take) {
        Some(v) => v,
        None => (key.init)(),
    };
    // The initialiser may have reached this key again and made the value: read
    // the state anew (as std does, the outer value wins; the inner is dropped).
    // SAFETY: the block is still alive: it cannot be destroyed while an access
    // to it is running (see `Block` and `Locals`).
    match unsafe { *state } {
        UNINIT => {
            // SAFETY: the slot is aligned, in bounds and holds no value.
            unsafe {
                value.write(new);
                *state = ALIVE;
            }
            header.lazy_made.set(header.lazy_made.get() + 1);
        }
        ALIVE => {
            // SAFETY: the slot holds an alive value that no reference points
            // to: the inner accesses that made it have returned.
            drop(unsafe { value.replace(new) });
        }
        _ => {
            drop(new);
            return Err(AccessError::new());
        }
    }
    Ok(None)
}

/// Finds the current block's value of `key`, making it reachable first if
/// needed (see [`slow_path`]).
///
/// The slow branch ends with the same inlined [`fast_path`] as the fast
/// branch, so whichever way the value was found, the compiler knows the
/// pointer, the offset and the state check it went through: a second access
/// right after (`X.set(X.get() + 1)`) reuses them instead of redoing them.
#[inline(always)]
fn find<T: 'static>(
    key: &'static LocalKey<T>,
    preset: Option<&mut Option<T>>,
) -> Result<NonNull<T>, AccessError> {
    let found = match fast_path(key) {
        Some(found) => found,
        None => match slow_path(key, preset)? {
            // Only for a constant with a destructor (a compile-time fact: the
            // arm is gone for every other key, which keeps the shared checks).
            Some(found) if !key.lazy && needs_drop::<T>() => found,
            _ => match fast_path(key) {
                Some(found) => found,
                None => unreachable_after_slow_path(),
            },
        },
    };
    Ok(value_at(found))
}

#[cold]
#[inline(never)]
fn unreachable_after_slow_path() -> ! {
    unreachable!("co_local: the slow path left the value unreachable")
}

/// Runs `f` with a reference to the current block's value of `key`, or
/// returns why the value cannot be reached.
#[inline]
pub(crate) fn try_with<T: 'static, R>(
    key: &'static LocalKey<T>,
    f: impl FnOnce(&T) -> R,
) -> Result<R, AccessError> {
    let value = find(key, None)?;
    // SAFETY: see `value_ref`.
    Ok(f(unsafe { value_ref(value) }))
}

/// Runs `f` with a reference to the current block's value of `key`; panics
/// if the value cannot be reached.
#[inline]
#[track_caller]
pub(crate) fn with<T: 'static, R>(key: &'static LocalKey<T>, f: impl FnOnce(&T) -> R) -> R {
    let value = match find(key, None) {
        Ok(value) => value,
        Err(err) => crate::key::panic_access_error(key.decl.name(), err),
    };
    // SAFETY: see `value_ref`.
    f(unsafe { value_ref(value) })
}

/// Like [`with`], but a lazy value not made yet is made from `init` instead
/// of its initialiser; `f` gets `init` back if it was not used.
///
/// The fast path passes `init` straight to `f`; only the cold path puts it in
/// an `Option` whose address the slow path takes, so the fast path stores
/// nothing to the stack and, after a `with` on the same key
/// (`X.set(X.get() + 1)`), reuses that access's checks.
#[inline]
#[track_caller]
pub(crate) fn initialize_with<T: 'static, R>(
    key: &'static LocalKey<T>,
    init: T,
    f: impl FnOnce(Option<T>, &T) -> R,
) -> R {
    match fast_path(key) {
        // SAFETY: see `value_ref`.
        Some(found) => f(Some(init), unsafe { value_ref(value_at(found)) }),
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
/// `value` must come from [`fast_path`] or [`slow_path`] just now: an alive
/// value of the current block. It then stays alive while the closure runs:
/// the block is owned by the running coroutine, an entered `Locals` (borrowed
/// for the whole `enter`) or the thread (destroyed only at thread exit), none
/// of which can end during the closure; destruction marks a value destroyed
/// before dropping it, so no new reference is made to a dying value. Only
/// shared references are ever made to values.
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
/// one: the switch primitive of coroutine runtimes.
///
/// A runtime calls it twice per resume, around the context switch:
///
/// ```
/// # let mut locals = co_local::Locals::new();
/// # let mut saved = locals.as_raw();
/// # let switch_into_coroutine = || {};
/// // resume: the coroutine's saved block becomes current...
/// // SAFETY: `saved` is `locals`'s block or what the coroutine had current
/// // when it last suspended; both outlive this resume.
/// let resumer = unsafe { co_local::swap_current(saved) };
/// switch_into_coroutine(); // runs until the coroutine suspends or returns
/// // ...and on the way back, the resumer's is restored. Saving what the
/// // coroutine had current (it may have entered another `Locals` and
/// // suspended inside it) gives it that block back on the next resume.
/// // SAFETY: `resumer` was current before and its owner is still alive.
/// saved = unsafe { co_local::swap_current(resumer) };
/// ```
///
/// That is the whole per-switch cost: one thread-local pointer swapped, no
/// per-variable work, no allocation, no lock.
///
/// # Safety
///
/// While `block` is current (until the next call that makes another block
/// current), it must stay alive: if it is the block of a
/// [`Locals`](crate::Locals), that `Locals` must not be dropped (moving it is
/// fine: the block does not move). `block` must come from
/// [`Locals::as_raw`](crate::Locals::as_raw) on this thread, from
/// [`RawBlock::THREAD`], or from an earlier `swap_current` on this thread
/// whose block is still alive. Before the owner of the current block is
/// dropped, or before [`Locals::enter`](crate::Locals::enter) returns into
/// code that expects its own previous block, the runtime must swap back
/// whatever it swapped in (nesting like `enter`). References handed out by
/// [`LocalKey::with`] must not outlive their block: a runtime keeps a
/// suspended coroutine's block alive until the coroutine's stack is gone.
#[inline]
pub unsafe fn swap_current(block: RawBlock) -> RawBlock {
    RawBlock(CURRENT.replace(block.0))
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
