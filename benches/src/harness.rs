//! Cases, groups, the environment requests every bench binary serves, and
//! the interleaved repetitions behind the time ratios.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{compiler_fence, Ordering};
use std::time::{Duration, Instant};

/// Runs `op` `n` times and returns how long that took.
///
/// Each op is followed by a compiler barrier (`compiler_fence(SeqCst)`), so
/// no part of it is hoisted out of the loop or merged with the next op. The
/// loop counter goes through [`opaque`] on each iteration, so the optimiser
/// cannot unroll the loop or delete an empty one: every case pays the same
/// loop (a decrement and a branch), which the `loop only` case measures.
#[inline(always)]
pub fn ops(n: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut left = n;
    while left != 0 {
        op();
        compiler_fence(Ordering::SeqCst);
        left -= 1;
        opaque(&mut left);
    }
    start.elapsed()
}

/// Makes `x` unknown to the optimiser, at no cost: an empty `asm!` that
/// claims to change the register holding it.
#[inline(always)]
pub fn opaque(x: &mut u64) {
    // SAFETY: the template is empty: it reads and writes nothing but the
    // register it is given, touches no memory and no stack, and keeps flags.
    unsafe {
        core::arch::asm!(
            "/* {0} */",
            inout(reg) * x,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// Runs a case's op `n` times and returns the time the `n` ops took (set-up
/// and tear-down excluded, where the case has any).
pub type RunFn = Box<dyn Fn(u64) -> Duration>;

/// One way of doing a group's op.
pub struct Case {
    /// Short name, unique in its group.
    pub name: &'static str,
    /// Runs the op `n` times; see [`RunFn`].
    pub run: RunFn,
}

impl Case {
    /// A case named `name` that runs with `run`.
    pub fn new(name: &'static str, run: impl Fn(u64) -> Duration + 'static) -> Case {
        Case {
            name,
            run: Box::new(run),
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// Cases that do the same op, compared with one another.
#[derive(Debug)]
pub struct Group {
    /// Short name, unique among the groups of a binary.
    pub name: &'static str,
    /// What one op is, for the reports.
    pub op: &'static str,
    /// Names of the cases ratios are taken to (one column each).
    pub baselines: Vec<&'static str>,
    /// Ops per repetition: enough for a repetition to last about a
    /// millisecond or more, so that the clock's resolution does not matter.
    pub ops_per_rep: u64,
    /// Ops per callgrind run (the second run does twice as many).
    pub ops_per_count: u64,
    /// The cases, baselines included.
    pub cases: Vec<Case>,
}

impl Group {
    /// Keeps the cases whose `group/case` name contains one of the
    /// comma-separated words of `CO_LOCAL_BENCH_FILTER`, if it is set (the
    /// baselines always stay).
    pub fn filtered(mut self) -> Group {
        if let Ok(filter) = std::env::var("CO_LOCAL_BENCH_FILTER") {
            let words: Vec<&str> = filter.split(',').filter(|w| !w.is_empty()).collect();
            let (name, baselines) = (self.name, self.baselines.clone());
            self.cases.retain(|c| {
                let full = format!("{name}/{}", c.name);
                baselines.contains(&c.name) || words.iter().any(|w| full.contains(w))
            });
        }
        self
    }

    /// The case called `name`.
    pub fn case(&self, name: &str) -> Option<&Case> {
        self.cases.iter().find(|c| c.name == name)
    }
}

/// Finds `group/case` among `groups`.
pub fn find<'a>(groups: &'a [Group], full_name: &str) -> Option<(&'a Group, &'a Case)> {
    let (group, case) = full_name.split_once('/')?;
    let group = groups.iter().find(|g| g.name == group)?;
    Some((group, group.case(case)?))
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Serves the request given in the environment, if any (see the crate docs),
/// and exits the process; returns if there is none.
pub fn serve(groups: &[Group]) {
    if std::env::var_os("CO_LOCAL_BENCH_INFO").is_some() {
        println!("{}", crate::system::BlockInfo::of_this_binary());
        std::process::exit(0);
    }
    for (var, timed) in [("CO_LOCAL_BENCH_RUN", false), ("CO_LOCAL_BENCH_TIME", true)] {
        let Ok(full_name) = std::env::var(var) else {
            continue;
        };
        let Some((group, case)) = find(groups, &full_name) else {
            eprintln!("{var}: no case {full_name:?} in this binary");
            std::process::exit(2);
        };
        let n = env_u64("CO_LOCAL_BENCH_N").unwrap_or(group.ops_per_rep);
        if timed {
            (case.run)(n);
            let t = (case.run)(n);
            println!("{}", t.as_nanos() as f64 / n as f64);
        } else {
            (case.run)(n);
        }
        std::process::exit(0);
    }
}

/// Summary of the repetitions of one case: nanoseconds per op.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
    /// Smallest.
    pub min: f64,
}

impl Stats {
    /// The median and quartiles of `samples` (not empty).
    pub fn of(samples: &mut [f64]) -> Stats {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let pos = q * (samples.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            samples[lo] + (samples[hi] - samples[lo]) * (pos - lo as f64)
        };
        Stats {
            median: at(0.5),
            q1: at(0.25),
            q3: at(0.75),
            min: samples[0],
        }
    }
}

/// Runs `rounds` rounds of every case of `group`, interleaved: round `r`
/// runs each case once for `group.ops_per_rep` ops, starting with case
/// `r mod len` so that no case always follows the same one. One untimed round
/// warms up first. Returns each case's [`Stats`], in the group's order.
pub fn interleaved(group: &Group, rounds: usize) -> Vec<Stats> {
    let k = group.ops_per_rep;
    let len = group.cases.len();
    for case in &group.cases {
        (case.run)(k);
    }
    let mut samples = vec![Vec::with_capacity(rounds); len];
    for r in 0..rounds {
        for i in 0..len {
            let c = (r + i) % len;
            let t = (group.cases[c].run)(k);
            samples[c].push(t.as_nanos() as f64 / k as f64);
        }
    }
    samples.iter_mut().map(|s| Stats::of(s)).collect()
}

/// Prints the Markdown table of `group`'s results: median ns per op, its
/// quartiles, and the ratio of medians to each baseline.
pub fn print_ratios(group: &Group, stats: &[Stats], out: &mut impl Write) -> std::io::Result<()> {
    let names: Vec<&str> = group.cases.iter().map(|c| c.name).collect();
    print_table(group.name, group.op, &names, &group.baselines, stats, out)
}

/// Prints a Markdown table: one row per case with its median ns per op, its
/// quartiles and minimum, the ratio of its median to each baseline's median,
/// and the ratio of its minimum to each baseline's minimum.
pub fn print_table(
    title: &str,
    op: &str,
    names: &[&str],
    baselines: &[&str],
    stats: &[Stats],
    out: &mut impl Write,
) -> std::io::Result<()> {
    writeln!(out, "\n### {title}: {op}\n")?;
    write!(out, "| case | median ns/op | q1–q3 | min |")?;
    for b in baselines {
        write!(out, " × {b} (medians) |")?;
    }
    for b in baselines {
        write!(out, " × {b} (minima) |")?;
    }
    writeln!(out)?;
    write!(out, "|---|---:|---:|---:|")?;
    for _ in 0..2 * baselines.len() {
        write!(out, "---:|")?;
    }
    writeln!(out)?;
    let base = |b: &&str| names.iter().position(|n| n == b).map(|i| stats[i]);
    for (name, s) in names.iter().zip(stats) {
        write!(
            out,
            "| {name} | {:.2} | {:.2}–{:.2} | {:.2} |",
            s.median, s.q1, s.q3, s.min
        )?;
        for b in baselines {
            match base(b) {
                Some(base) => write!(out, " {:.3} |", s.median / base.median)?,
                None => write!(out, " ? |")?,
            }
        }
        for b in baselines {
            match base(b) {
                Some(base) => write!(out, " {:.3} |", s.min / base.min)?,
                None => write!(out, " ? |")?,
            }
        }
        writeln!(out)?;
    }
    out.flush()
}
