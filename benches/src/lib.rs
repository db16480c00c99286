//! The harness behind the benchmarks of `co_local` and `co_runtime`: cases
//! and groups, interleaved repetitions with medians, instruction counts with
//! callgrind, and what the memory figures read from `/proc`.
//!
//! The cases themselves live in the bench targets (`benches/*.rs`), because
//! the peers they compare with (tokio, may, corosensei, context, libc) are
//! dev-dependencies. Every bench target serves the same requests, given in
//! environment variables, so that one binary can run another (or itself)
//! under callgrind, or time a case in a fresh process:
//!
//! - `CO_LOCAL_BENCH_RUN=group/case CO_LOCAL_BENCH_N=n`: run the case's op
//!   `n` times and exit (what callgrind counts, see [`callgrind`]);
//! - `CO_LOCAL_BENCH_TIME=group/case CO_LOCAL_BENCH_N=n`: run it once to warm
//!   up, then once more, and print the nanoseconds per op of the second run;
//! - `CO_LOCAL_BENCH_INFO=1`: print the block layout figures of the binary
//!   ([`system::BlockInfo`]).
//!
//! See `BENCHMARKS.md` at the root of the repository for what is measured and
//! the results.

pub mod callgrind;
pub mod harness;
pub mod system;

pub use harness::{ops, serve, Case, Group};
