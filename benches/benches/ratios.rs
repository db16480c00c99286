//! Time ratios: medians of interleaved repetitions.
//!
//! For each group, round `r` runs every case once for the group's number of
//! ops (starting with case `r mod len`); the median over the rounds is each
//! case's figure and the report gives its ratio to the group's baseline.
//! The `Locals::new` comparison between the binary with one declaration and
//! the one with 1,000 more runs each repetition in a fresh process of the
//! `one` and `many` bench binaries, interleaved the same way. Set
//! `CO_LOCAL_BENCH_ROUNDS` to change the number of rounds (default 31) and
//! `CO_LOCAL_BENCH_LIVE` the large live-coroutine count (default 100,000);
//! `CO_LOCAL_BENCH_FILTER=word,word` keeps the cases whose `group/case`
//! name contains one of the words (and the baselines).

mod common;

use std::io::stdout;

use co_local_benches::harness::{interleaved, print_ratios, print_table, Stats};
use co_local_benches::{system, Group};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> std::io::Result<()> {
    let groups = common::groups();
    co_local_benches::serve(&groups);
    let rounds = env_usize("CO_LOCAL_BENCH_ROUNDS", 31);
    let mut out = stdout();

    println!("{}", system::machine());
    println!("rounds: {rounds} (medians of interleaved repetitions)");
    for group in groups.into_iter().map(Group::filtered) {
        if group.cases.len() > group.baselines.len() {
            let stats = interleaved(&group, rounds);
            print_ratios(&group, &stats, &mut out)?;
        }
    }

    if !filtered_out("locals/") {
        locals_one_vs_many(rounds, &mut out)?;
    }
    if !filtered_out("blocks/") {
        blocks_few_vs_many(rounds, &mut out)?;
    }
    if filtered_out("live/") {
        return Ok(());
    }

    let want = env_usize("CO_LOCAL_BENCH_LIVE", 100_000);
    let large = common::live_capacity(want);
    if large < want {
        println!(
            "\nlive: only {large} coroutines fit (vm.max_map_count {:?}); measured that",
            system::max_map_count()
        );
    }
    let live = common::live_group(10, large);
    let stats = interleaved(&live, rounds);
    print_ratios(&live, &stats, &mut out)
}

/// Whether `CO_LOCAL_BENCH_FILTER` is set and no word of it is in `name`.
fn filtered_out(name: &str) -> bool {
    std::env::var("CO_LOCAL_BENCH_FILTER")
        .is_ok_and(|f| !f.split(',').any(|w| !w.is_empty() && name.contains(w)))
}

/// A block's life (the blocks group) in this binary and in `many_drop`, which
/// declares 2,000 more values with drop glue, each repetition in a fresh
/// process.
fn blocks_few_vs_many(rounds: usize, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let Some(many_drop) = system::sibling("many_drop") else {
        println!("\nblocks: the `many_drop` bench binary is not built; run `cargo bench`");
        return Ok(());
    };
    let me = std::env::current_exe()?;
    for case in common::BLOCK_CASES {
        let full = format!("blocks/{case}");
        let exes = [
            ("this suite (5 declarations)", &me),
            ("+ 2,000 with drop glue", &many_drop),
        ];
        let mut samples = vec![Vec::new(); exes.len()];
        for r in 0..rounds {
            for i in 0..exes.len() {
                let c = (r + i) % exes.len();
                samples[c].push(system::time_in_process(exes[c].1, &full, 20_000)?);
            }
        }
        let stats: Vec<Stats> = samples.iter_mut().map(|s| Stats::of(s)).collect();
        let names: Vec<&str> = exes.iter().map(|e| e.0).collect();
        print_table(
            "blocks",
            &format!("{case}, one fresh process per repetition"),
            &names,
            &names[..1],
            &stats,
            out,
        )?;
    }
    Ok(())
}

/// `Locals::new()` + drop with one declaration (`one`) and with 1,000 more
/// untouched lazy ones (`many`), each repetition in a fresh process.
fn locals_one_vs_many(rounds: usize, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let (Some(one), Some(many)) = (system::sibling("one"), system::sibling("many")) else {
        println!("\nlocals: the `one` and `many` bench binaries are not built; run `cargo bench`");
        return Ok(());
    };
    let exes = [
        ("1 declaration", one),
        ("1 + 1,000 lazy declarations", many),
    ];
    let mut samples = vec![Vec::new(); exes.len()];
    for r in 0..rounds {
        for i in 0..exes.len() {
            let c = (r + i) % exes.len();
            let ns = system::time_in_process(&exes[c].1, "locals/Locals::new + drop", 100_000)?;
            samples[c].push(ns);
        }
    }
    let stats: Vec<Stats> = samples.iter_mut().map(|s| Stats::of(s)).collect();
    let names: Vec<&str> = exes.iter().map(|e| e.0).collect();
    print_table(
        "locals",
        "`Locals::new()` + drop, one fresh process per repetition",
        &names,
        &names[..1],
        &stats,
        out,
    )
}
