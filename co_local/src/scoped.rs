//! Overriding a value for a while: the logic shared by
//! [`LocalKey::scope`] (for the length of a call) and
//! [`LocalKey::scope_future`] (for each poll of a future, [`Scoped`]).

use core::cell::{Cell, RefCell};
use core::fmt;
use core::mem::ManuallyDrop;

use crate::key::{already_borrowed, LocalKey};
use crate::storage::PinnedValue;

/// The cells whose content [`LocalKey::scope`] and
/// [`LocalKey::scope_future`] override for a while: [`Cell`] and
/// [`RefCell`]. Sealed: no other type implements it.
pub trait ScopeCell: sealed::Sealed + 'static {
    /// What the cell holds: the `T` of `Cell<T>` and `RefCell<T>`.
    type Value;

    /// Puts `value` in the cell and returns what was there; gives `value`
    /// back if the cell is borrowed (a `RefCell`).
    #[doc(hidden)]
    fn swap_value(&self, value: Self::Value) -> Result<Self::Value, Self::Value>;
}

mod sealed {
    pub trait Sealed {}
    impl<T> Sealed for core::cell::Cell<T> {}
    impl<T> Sealed for core::cell::RefCell<T> {}
}

impl<T: 'static> ScopeCell for Cell<T> {
    type Value = T;

    fn swap_value(&self, value: T) -> Result<T, T> {
        Ok(self.replace(value))
    }
}

impl<T: 'static> ScopeCell for RefCell<T> {
    type Value = T;

    fn swap_value(&self, value: T) -> Result<T, T> {
        match self.try_borrow_mut() {
            Ok(mut borrowed) => Ok(core::mem::replace(&mut *borrowed, value)),
            Err(_) => Err(value),
        }
    }
}

/// Puts the value that was in place before an override back into the same
/// block (pinned meanwhile), and hands the overriding value to `back`.
struct PutBack<'a, C: ScopeCell> {
    slot: PinnedValue<C>,
    previous: Option<C::Value>,
    back: &'a mut Option<C::Value>,
    name: &'static str,
}

impl<C: ScopeCell> Drop for PutBack<'_, C> {
    fn drop(&mut self) {
        let Some(previous) = self.previous.take() else {
            return;
        };
        match self.slot.get().swap_value(previous) {
            Ok(scoped) => *self.back = Some(scoped),
            // A `RefCell` still borrowed: as `replace` would, unless a panic
            // is already on its way (the previous value is then dropped).
            Err(previous) if std::thread::panicking() => drop(previous),
            Err(previous) => already_borrowed(self.name, previous),
        }
    }
}

/// Runs `f` with `value` in place of the current block's value of `key`
/// (made first if needed), then puts the previous value back into the same
/// block, also if `f` panics, and hands the value that was in place (it may
/// have changed meanwhile) to `back`, also if `f` panics. Panics like
/// [`LocalKey::with`] if the value cannot be reached, and if a `RefCell` is
/// borrowed when the values are swapped (then `back` stays empty).
#[track_caller]
pub(crate) fn with_value_in_place<C: ScopeCell, R>(
    key: &'static LocalKey<C>,
    value: C::Value,
    back: &mut Option<C::Value>,
    f: impl FnOnce() -> R,
) -> R {
    let slot = PinnedValue::of(key);
    let previous = match slot.get().swap_value(value) {
        Ok(previous) => previous,
        Err(value) => {
            drop(slot);
            already_borrowed(key.declaration().name(), value)
        }
    };
    let _put_back = PutBack {
        slot,
        previous: Some(previous),
        back,
        name: key.declaration().name(),
    };
    f()
}

/// A future that runs each poll of the future it wraps with a value of its
/// own in place of a coroutine-local value: what
/// [`LocalKey::scope_future`] returns.
///
/// At each poll it puts its value in place in the block current then (the
/// task's), polls the inner future, and puts the previous value back, so
/// that the rest of the task between two polls (another branch of a
/// `join!`, code after a sibling's `.await`) sees its own value; the
/// overriding value lives in the wrapper meanwhile, with what the inner
/// future made of it. The inner future is dropped with the value in place
/// too, unless it cannot be put in place then (the block's value already
/// destroyed, or a `RefCell` borrowed): then it is dropped as it is, and the
/// value after it, and `drop` never panics for it.
///
/// `Scoped` is `Send` when the value and the inner future are.
#[must_use = "futures do nothing unless polled"]
pub struct Scoped<C: ScopeCell, F> {
    pub(crate) key: &'static LocalKey<C>,
    /// The overriding value between polls; `None` during a poll, and after
    /// one whose value could not be put back.
    pub(crate) value: Option<C::Value>,
    /// Dropped in place, with the value in place.
    pub(crate) future: ManuallyDrop<F>,
}

impl<C: ScopeCell, F> Scoped<C, F> {
    pub(crate) fn new(key: &'static LocalKey<C>, value: C::Value, future: F) -> Scoped<C, F> {
        Scoped {
            key,
            value: Some(value),
            future: ManuallyDrop::new(future),
        }
    }
}

// The value is moved in and out at each poll, never pinned: only the inner
// future is.
impl<C: ScopeCell, F: Unpin> Unpin for Scoped<C, F> {}

/// One poll of a `Scoped`'s inner future (`poll`) with its value in place.
#[track_caller]
pub(crate) fn poll_scoped<C: ScopeCell, R>(
    key: &'static LocalKey<C>,
    value: &mut Option<C::Value>,
    poll: impl FnOnce() -> R,
) -> R {
    let Some(scoped) = value.take() else {
        panic!(
            "co_local: a future scoped with `{}` was polled again after a poll that could not \
             swap its value back (the `RefCell` was borrowed then)",
            key.declaration().name()
        )
    };
    // The value comes back into the wrapper when the poll ends, also if it
    // panics: the future may still be dropped (or polled) with it.
    with_value_in_place(key, scoped, value, poll)
}

/// The drop of a `Scoped`'s inner future (`drop_future`): with the value in
/// place if it can be put there, else as it is; never a panic of its own.
pub(crate) fn drop_scoped<C: ScopeCell>(
    key: &'static LocalKey<C>,
    value: &mut Option<C::Value>,
    drop_future: impl FnOnce(),
) {
    /// Puts the previous value back after the drop, also if it panics;
    /// drops whatever cannot be put back.
    struct Restore<C: ScopeCell> {
        slot: PinnedValue<C>,
        previous: Option<C::Value>,
    }
    impl<C: ScopeCell> Drop for Restore<C> {
        fn drop(&mut self) {
            if let Some(previous) = self.previous.take() {
                let _ = self.slot.get().swap_value(previous);
            }
        }
    }
    let Some(scoped) = value.take() else {
        return drop_future();
    };
    let Ok(slot) = PinnedValue::try_of(key) else {
        drop_future();
        return drop(scoped);
    };
    match slot.get().swap_value(scoped) {
        Ok(previous) => {
            let _restore = Restore {
                slot,
                previous: Some(previous),
            };
            drop_future();
        }
        Err(scoped) => {
            drop(slot);
            drop_future();
            drop(scoped);
        }
    }
}

impl<C: ScopeCell, F> fmt::Debug for Scoped<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
