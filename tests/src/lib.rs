//! Integration tests live in `tests/*.rs`; this library only anchors the package.
