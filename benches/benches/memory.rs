//! Memory: the block of each bench binary next to the sum of its declared
//! sizes, and the resident memory each live suspended coroutine costs.
//!
//! Each RSS figure is taken in a fresh process of this binary (requested with
//! `CO_LOCAL_BENCH_MEMORY`): `VmRSS` from `/proc/self/status` before and
//! after making `count` objects, kept alive, divided by `count`. Set
//! `CO_LOCAL_BENCH_LIVE` to change the count (default 100,000, or the most
//! that `vm.max_map_count` allows).

mod common;

use std::hint::black_box;
use std::mem::size_of;
use std::process::Command;

use co_local::Locals;
use co_local_benches::system;
use co_runtime::Coroutine;

fn main() -> std::io::Result<()> {
    co_local_benches::serve(&common::groups());
    if let Ok(what) = std::env::var("CO_LOCAL_BENCH_MEMORY") {
        let count = std::env::var("CO_LOCAL_BENCH_LIVE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        measure(&what, count);
        return Ok(());
    }

    println!("{}\n", system::machine());
    println!("### blocks\n");
    let me = std::env::current_exe()?;
    println!(
        "- `memory` (2 declarations): {}",
        system::block_info_of(&me)?
    );
    for name in ["one", "many"] {
        match system::sibling(name) {
            Some(exe) => println!("- `{name}`: {}", system::block_info_of(&exe)?),
            None => println!("- `{name}`: not built; run `cargo bench`"),
        }
    }

    let want = std::env::var("CO_LOCAL_BENCH_LIVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let count = common::live_capacity(want);
    if count < want {
        println!(
            "\nonly {count} coroutines fit (vm.max_map_count {:?}); measured that",
            system::max_map_count()
        );
    }
    println!("\n### resident memory per object ({count} objects, fresh process each)\n");
    println!(
        "size_of::<Coroutine<(), (), ()>>() = {} B, co_local::block_size() = {} B\n",
        size_of::<Coroutine<(), (), ()>>(),
        co_local::block_size()
    );
    println!("| objects | RSS delta / object |\n|---|---:|");
    for (what, label) in [
        ("locals", "`Locals::new()` blocks"),
        ("co16", "suspended coroutines, 16 KiB stacks"),
        ("co256", "suspended coroutines, default stacks (256 KiB)"),
        (
            "co16-access",
            "suspended coroutines, 16 KiB stacks, each made its lazy value",
        ),
    ] {
        let out = Command::new(&me)
            .env("CO_LOCAL_BENCH_MEMORY", what)
            .env("CO_LOCAL_BENCH_LIVE", count.to_string())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!("| {label} | {} |", text.trim());
    }
    Ok(())
}

/// Makes `count` objects of kind `what`, keeps them, prints the RSS delta
/// per object.
fn measure(what: &str, count: usize) {
    let stack = match what {
        "co256" => co_runtime::DEFAULT_STACK_SIZE,
        _ => common::LIVE_STACK,
    };
    let access = what == "co16-access";
    let before = system::status_kib("VmRSS").expect("VmRSS");
    let kept: Box<dyn std::any::Any> = if what == "locals" {
        Box::new((0..count).map(|_| Locals::new()).collect::<Vec<_>>())
    } else {
        let cos: Vec<_> = (0..count)
            .map(|_| {
                let mut co = Coroutine::<(), (), ()>::with_stack_size(stack, move |y, ()| loop {
                    if access {
                        common::CO_LAZY.set(common::CO_LAZY.get() + 1);
                    }
                    y.suspend(());
                });
                co.resume(());
                co
            })
            .collect();
        Box::new(cos)
    };
    let after = system::status_kib("VmRSS").expect("VmRSS");
    black_box(&kept);
    let per = (after - before) as f64 * 1024.0 / count as f64;
    println!("{per:.0} B ({} KiB in all)", after - before);
}
