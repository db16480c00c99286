//! Criterion's view of the access, switch and creation groups: the same
//! cases as `ratios` (time per op with confidence intervals), each measured
//! with `iter_custom` so that only the ops are timed.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

fn groups(c: &mut Criterion) {
    for group in common::groups() {
        let mut g = c.benchmark_group(group.name);
        for case in &group.cases {
            g.bench_function(case.name, |b| b.iter_custom(|iters| (case.run)(iters)));
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = groups
}
criterion_main!(benches);
