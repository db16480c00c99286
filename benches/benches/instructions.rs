//! Instructions per op, counted by callgrind.
//!
//! Each case is run twice under `valgrind --tool=callgrind` in a fresh
//! process of a bench binary (this one, `one` or `many`), once with `n` ops
//! and once with `2n`; `(count(2n) - count(n)) / n` is the instructions of
//! one op with its loop. For the access group, "beyond the loop" subtracts
//! the `loop only` case (the loop and its barrier with no op).
//!
//! Set `CO_LOCAL_BENCH_ONLY=group` to count one group only (`access`,
//! `switch`, `creation`, `scaling`, `async`, `async-access`).

mod common;

use std::path::{Path, PathBuf};

use co_local_benches::{callgrind, system, Group};

fn main() -> std::io::Result<()> {
    let groups = common::groups();
    co_local_benches::serve(&groups);
    if !callgrind::available() {
        println!("valgrind is not installed: no instruction counts (apt-get install valgrind)");
        return Ok(());
    }
    let only = std::env::var("CO_LOCAL_BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let me = std::env::current_exe()?;
    println!("{}", system::machine());
    println!("instructions per op: (callgrind(2n) - callgrind(n)) / n\n");

    for group in &groups {
        if wanted(group.name) {
            count_group(&me, group)?;
        }
    }
    if wanted("scaling") {
        scaling(&me)?;
    }
    Ok(())
}

fn count_group(exe: &Path, group: &Group) -> std::io::Result<()> {
    let n = group.ops_per_count;
    println!("### {}: {} (n = {n})\n", group.name, group.op);
    let mut counts = Vec::new();
    for case in &group.cases {
        let full = format!("{}/{}", group.name, case.name);
        counts.push((case.name, callgrind::per_op(exe, &full, n)?));
    }
    let loop_only = counts
        .iter()
        .find(|(name, _)| *name == "loop only")
        .map(|&(_, c)| c);
    match loop_only {
        Some(_) => println!("| case | instructions/op | beyond the loop |\n|---|---:|---:|"),
        None => println!("| case | instructions/op |\n|---|---:|"),
    }
    for (name, c) in &counts {
        match loop_only {
            Some(l) => println!("| {name} | {c:.2} | {:.2} |", c - l),
            None => println!("| {name} | {c:.2} |"),
        }
    }
    println!();
    Ok(())
}

/// Access with 1 vs 1,000 more declarations in the binary, and
/// `Locals::new()` + drop in both.
fn scaling(me: &Path) -> std::io::Result<()> {
    let (Some(one), Some(many)) = (system::sibling("one"), system::sibling("many")) else {
        println!("scaling: the `one` and `many` bench binaries are not built; run `cargo bench`");
        return Ok(());
    };
    let n = 100_000;
    println!("### scaling: instructions per op with 1 and with 1 + 1,000 lazy declarations\n");
    println!("| case | binary A | A | binary B | B |\n|---|---|---:|---|---:|");
    let rows: [(&str, &PathBuf, &str, &Path, &str, u64); 5] = [
        (
            "co const, thread",
            &one,
            "access/co const, thread",
            &many,
            "access/co const, thread",
            n,
        ),
        (
            "co const, Locals::enter",
            &one,
            "access/co const, Locals::enter",
            &many,
            "access/co const, Locals::enter",
            n,
        ),
        (
            "co lazy, thread",
            &me.to_path_buf(),
            "access/co lazy, thread",
            &many,
            "access/co lazy, thread",
            n,
        ),
        (
            "co lazy, Locals::enter",
            &me.to_path_buf(),
            "access/co lazy, Locals::enter",
            &many,
            "access/co lazy, Locals::enter",
            n,
        ),
        (
            "Locals::new + drop",
            &one,
            "locals/Locals::new + drop",
            &many,
            "locals/Locals::new + drop",
            20_000,
        ),
    ];
    for (label, a, a_case, b, b_case, n) in rows {
        let ca = callgrind::per_op(a, a_case, n)?;
        let cb = callgrind::per_op(b, b_case, n)?;
        println!(
            "| {label} | {} | {ca:.2} | {} | {cb:.2} |",
            describe(a),
            describe(b)
        );
    }
    println!();
    if let Some(many_drop) = system::sibling("many_drop") {
        println!(
            "### scaling: a block's life with this suite's declarations and with 2,000 more \
             (`const {{}}` and lazy `RefCell<Vec<u64>>`), none of them touched\n"
        );
        println!(
            "| case | {} | {} | ratio |\n|---|---:|---:|---:|",
            describe(me),
            describe(&many_drop)
        );
        for case in common::BLOCK_CASES {
            let full = format!("blocks/{case}");
            let few = callgrind::per_op(me, &full, 20_000)?;
            let many = callgrind::per_op(&many_drop, &full, 20_000)?;
            println!("| {case} | {few:.2} | {many:.2} | {:.3} |", many / few);
        }
        println!();
        println!(
            "{}: {}",
            describe(&many_drop),
            system::block_info_of(&many_drop)?
        );
    } else {
        println!("scaling: the `many_drop` bench binary is not built; run `cargo bench`");
    }
    for exe in [me, &one, &many] {
        println!("{}: {}", describe(exe), system::block_info_of(exe)?);
    }
    Ok(())
}

fn describe(exe: &Path) -> String {
    let name = exe
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = name.rsplit_once('-').map_or(name.as_str(), |(b, _)| b);
    let decls = match base {
        "one" => "1 decl",
        "many" => "1,001 decls",
        "many_drop" => "2,005 decls",
        _ => "5 decls",
    };
    format!("`{base}` ({decls})")
}
