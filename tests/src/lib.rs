//! Integration tests of `co_local` and `co_runtime` used together, as a user
//! would: the tests live in `tests/*.rs`. This library only anchors the
//! package, and compiles the README's example as a doc test so it cannot rot.

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
