//! The bench binary with the declaration of `one` plus 1,000 lazy
//! declarations (`thousand.rs`, made by `benches/gen_thousand.py`), none of
//! which `Locals::new()` touches. It serves the requests of `ratios` and
//! `instructions`; run alone, it prints its block figures.

#[path = "../single/mod.rs"]
mod single;
mod thousand;

use std::time::Duration;

#[inline(never)]
fn last_lazy(n: u64) -> Duration {
    use thousand::LAZY_0999 as X;
    co_local_benches::ops(n, || X.set(X.get() + 1))
}

fn main() {
    let extra = single::everywhere("co lazy", last_lazy);
    co_local_benches::serve(&single::groups(extra.into()));
    single::main_without_request();
}
