//! Integration tests of `co_local` and `co_runtime` used together, as a user
//! would: the tests live in `tests/*.rs`. This library only anchors the
//! package, and compiles the README's example as a doc test so it cannot rot.

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

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
