//! The access path of [`LocalKey`]: read `CURRENT`, add the value's offset,
//! check its state byte if it has one; and the slow path that makes the
//! thread's block or a value, or says why a value cannot be reached.
//!
//! Owns `fast_path`, `slow_path`, `find`, the accessors' entry points
//! (`try_with`, `with`, `with_brief`, `initialize_with`) and
//! [`PinnedValue`]. Keeps SAFETY.md's I1 to I5 where values are reached: a
//! reference handed to user code points to an alive value of a block that is
//! pinned (or runs no user code while it lives).

use core::mem::{needs_drop, size_of};
use core::ptr::NonNull;

use super::block::{header, mark_made, ALIVE, UNINIT};
use super::layout::layout;
use super::pins::BlockPin;
use super::switch::CURRENT;
use super::thread::thread_block;
use crate::error::{panic_access_error, AccessError, AccessErrorKind};
use crate::key::LocalKey;

/// Whether the key's value has a state byte: lazy, or a constant with drop
/// glue. A compile-time fact for each key.
#[inline(always)]
pub(super) fn has_state<T: 'static>(key: &'static LocalKey<T>) -> bool {
    key.lazy || needs_drop::<T>()
}

/// The fast path: where the value of `key` is in the current block, if it
/// is there and alive. `None` sends the caller to [`slow_path`].
#[inline(always)]
pub(super) fn fast_path<T: 'static>(key: &'static LocalKey<T>) -> Option<NonNull<u8>> {
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
/// given; also while its block is destroyed, where it joins the values that
/// die next), or says why the value cannot be reached. On `Ok`, the value
/// was alive or made in the block that was current when this began; the
/// caller looks again (the block current now may differ if the initialiser
/// switched stacks).
#[cold]
#[inline(never)]
pub(super) fn slow_path<T: 'static>(
    key: &'static LocalKey<T>,
    preset: Option<&mut Option<T>>,
) -> Result<(), AccessError> {
    let base = match NonNull::new(CURRENT.get()) {
        Some(base) => base.as_ptr(),
        None => thread_block()?.as_ptr(),
    };
    // SAFETY: `base` is current, so not freed.
    if !key.send && unsafe { header(base) }.send_task.get() {
        return Err(AccessError::new(AccessErrorKind::NotSend));
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
    // A value being or already destroyed is never made again; nor is any
    // value of a block orphaned by its owner (refs negative), which only
    // waits for its last pin to go.
    match unsafe { *state } {
        ALIVE => return Ok(()),
        UNINIT if header.refs.get() >= 0 => {}
        _ => return Err(AccessError::new(AccessErrorKind::Destroyed)),
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
    let unused = if header.refs.get() < 0 {
        // Orphaned meanwhile: nothing is made any more.
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
            Err(AccessError::new(AccessErrorKind::Destroyed))
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
pub(super) fn find<T: 'static>(
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
pub(super) fn current() -> *mut u8 {
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
        Err(err) => panic_access_error(key.decl, err),
    };
    pinned(value, f)
}

/// Calls `f` on the value with its block pinned until `f` returns or
/// unwinds.
#[inline(always)]
pub(super) fn pinned<T, R>(value: NonNull<T>, f: impl FnOnce(&T) -> R) -> R {
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
    pub(super) _pin: BlockPin,
    pub(super) value: NonNull<T>,
}

impl<T: 'static> PinnedValue<T> {
    /// Finds the current block's value of `key` (making it if needed) and
    /// pins its block; panics like [`with`] if it cannot be reached.
    #[track_caller]
    pub(crate) fn of(key: &'static LocalKey<T>) -> PinnedValue<T> {
        PinnedValue::try_of(key).unwrap_or_else(|err| panic_access_error(key.decl, err))
    }

    /// Like [`of`](PinnedValue::of), but says why the value cannot be
    /// reached instead of panicking.
    pub(crate) fn try_of(key: &'static LocalKey<T>) -> Result<PinnedValue<T>, AccessError> {
        let value = find(key, None)?;
        // SAFETY: the value was just found in the current block, not freed.
        let _pin = unsafe { BlockPin::take(current()) };
        Ok(PinnedValue { _pin, value })
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
        Err(err) => panic_access_error(key.decl, err),
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
pub(super) fn initialize_with_slow<T: 'static, R>(
    key: &'static LocalKey<T>,
    init: T,
    f: impl FnOnce(Option<T>, &T) -> R,
) -> R {
    let mut init = Some(init);
    let value = match find(key, Some(&mut init)) {
        Ok(value) => value,
        Err(err) => panic_access_error(key.decl, err),
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
pub(super) unsafe fn value_ref<'a, T>(value: NonNull<T>) -> &'a T {
    // SAFETY: the caller guarantees the value is alive for `'a`.
    unsafe { value.as_ref() }
}
