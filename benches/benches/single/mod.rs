//! The one declaration of the `one` bench binary, which `many` shares, and
//! the cases both run: `Locals::new()` + drop, and access to that one value.
//! Neither binary links co_runtime, which declares a co_local value of its
//! own.

use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use co_local::Locals;
use co_local_benches::{ops, Case, Group};

co_local::co_local! {
    /// The one declaration of the `one` bench binary.
    pub static ONE: Cell<u64> = const { Cell::new(0) };
}

#[inline(never)]
fn locals_new_drop(n: u64) -> Duration {
    ops(n, || drop(black_box(Locals::new())))
}

#[inline(never)]
fn one_const(n: u64) -> Duration {
    ops(n, || ONE.set(ONE.get() + 1))
}

/// A named case made at run time.
pub type NamedRun = (String, Box<dyn Fn(u64) -> Duration>);

/// `f` on the thread and inside `Locals::enter`. (Not inside a coroutine:
/// co_runtime declares a co_local value of its own, which would make the
/// `one` binary hold two declarations; the access code is the same function
/// wherever it runs, as the main suite's access group shows.)
pub fn everywhere(what: &'static str, f: fn(u64) -> Duration) -> [NamedRun; 2] {
    [
        (
            format!("{what}, thread"),
            Box::new(move |n| {
                f(1);
                f(n)
            }),
        ),
        (
            format!("{what}, Locals::enter"),
            Box::new(move |n| {
                Locals::new().enter(|| {
                    f(1);
                    f(n)
                })
            }),
        ),
    ]
}

/// The groups of `one`, plus access cases `extra` made by [`everywhere`].
pub fn groups(extra: Vec<NamedRun>) -> Vec<Group> {
    let access = everywhere("co const", one_const)
        .into_iter()
        .chain(extra)
        .map(|(name, run)| Case {
            name: Box::leak(name.into_boxed_str()),
            run,
        })
        .collect();
    vec![
        Group {
            name: "locals",
            op: "`Locals::new()` + drop",
            baselines: vec!["Locals::new + drop"],
            ops_per_rep: 100_000,
            ops_per_count: 20_000,
            cases: vec![Case::new("Locals::new + drop", locals_new_drop)],
        },
        Group {
            name: "access",
            op: "`X.set(X.get() + 1)` on a `Cell<u64>`",
            baselines: vec!["co const, thread"],
            ops_per_rep: 500_000,
            ops_per_count: 100_000,
            cases: access,
        },
    ]
}

/// What `one` and `many` do when run without a request: print their block
/// figures (the other bench binaries run them with requests).
pub fn main_without_request() {
    println!("{}", co_local_benches::system::BlockInfo::of_this_binary());
}
