//! Integration tests of `co_local` and `co_runtime` used together, as a user
//! would: the tests live in `tests/*.rs`. This library holds the helpers
//! they share. (The README is `co_local`'s crate documentation: its examples
//! run as `co_local`'s doc tests.)

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use co_local::Locals;

/// Runs `f`, catching a panic: `Err` holds its payload.
pub fn catch<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    panic::catch_unwind(AssertUnwindSafe(f))
}

/// The message of a panic payload (`&str` or `String`), or a placeholder for
/// any other payload.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("<not a message>")
    }
}

/// Makes 200 blocks and lets `fill` write into each (given 0..200), so that
/// memory a dangling pointer still names is reused and shows up as a wrong
/// value, not only under valgrind.
pub fn churn(mut fill: impl FnMut(u32)) -> Vec<Locals> {
    (0..200)
        .map(|i| {
            let mut block = Locals::new();
            block.enter(|| fill(i));
            block
        })
        .collect()
}

/// A block dies here: a fresh `Locals`, written by `fill` with it current,
/// then dropped. Every restore pending on this thread checks its block from
/// then on, and the memory the block had may be reused.
pub fn a_block_dies(fill: impl FnOnce()) {
    let mut block = Locals::new();
    block.enter(fill);
    drop(block);
}

/// Polls `fut` once with a waker that does nothing.
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    Pin::new(fut).poll(&mut Context::from_waker(&waker))
}
