//! The bench binary with exactly one `co_local!` declaration: the baseline
//! of `many` for `Locals::new()` and for access instruction counts. It serves
//! the requests of `ratios` and `instructions`; run alone, it prints its
//! block figures.

mod single;

fn main() {
    co_local_benches::serve(&single::groups(Vec::new()));
    single::main_without_request();
}
