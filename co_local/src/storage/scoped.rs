//! The `unsafe` half of [`Scoped`], `LocalKey::scope_future`'s future:
//! projecting its pin onto the inner future, and dropping that future in
//! place. The logic around them (putting the value in place and back) is
//! safe code, in `crate::scoped`.
//!
//! Keeps the pinning contract of the inner future: it is never moved out of
//! the wrapper, and it is dropped exactly once, in place, by the wrapper's
//! `Drop`.

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{Context, Poll};

use crate::scoped::{drop_scoped, poll_scoped, ScopeCell, Scoped};

impl<C: ScopeCell, F: Future> Future for Scoped<C, F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the inner future is structurally pinned: it is never moved
        // (only dropped in place, in `Drop` below); the other fields are not
        // pinned, and moving them does not move the future.
        let this = unsafe { self.get_unchecked_mut() };
        let key = this.key;
        // SAFETY: as above: the future stays where it is until it is dropped.
        let future = unsafe { Pin::new_unchecked(&mut *this.future) };
        poll_scoped(key, &mut this.value, || future.poll(cx))
    }
}

impl<C: ScopeCell, F> Drop for Scoped<C, F> {
    fn drop(&mut self) {
        let future = &mut self.future;
        // SAFETY: the future is dropped here and nowhere else, once (the
        // wrapper is being dropped), in place: it may be pinned.
        drop_scoped(self.key, &mut self.value, || unsafe {
            ManuallyDrop::drop(future)
        });
    }
}
