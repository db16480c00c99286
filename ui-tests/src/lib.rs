//! trybuild cases live in `pass/` and `fail/`; see `tests/compiletest.rs`.
