//! What the reports read from the system: the machine, `/proc`, the other
//! bench binaries, and the block layout of this binary.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `nproc`, the CPU model and `rustc -V`, on one line each.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into());
    format!("cpus: {cpus}\ncpu: {model}\nrustc: {rustc}")
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`, ...).
pub fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How many memory mappings this process has now.
pub fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `vm.max_map_count`: the most memory mappings a process may have.
pub fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises `vm.max_map_count` to `want` if it is lower (this takes root);
/// returns the value in force afterwards.
pub fn raise_max_map_count(want: usize) -> Option<usize> {
    let now = max_map_count()?;
    if now < want {
        // Fails without root: then the caller measures what fits. Say so
        // either way: this changes a setting of the whole machine.
        match std::fs::write("/proc/sys/vm/max_map_count", want.to_string()) {
            Ok(()) => eprintln!(
                "note: raised vm.max_map_count from {now} to {want} for the live-coroutine cases"
            ),
            Err(err) => eprintln!(
                "note: vm.max_map_count is {now} and could not be raised to {want}: {err}"
            ),
        }
    }
    max_map_count()
}

/// The most recently built bench binary named `name` (cargo puts it next to
/// this one as `name-<hash>`), if any.
pub fn sibling(name: &str) -> Option<PathBuf> {
    let me = std::env::current_exe().ok()?;
    let dir = me.parent()?;
    let prefix = format!("{name}-");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file.strip_prefix(&prefix)
                .is_some_and(|hash| !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, path)| path)
}

/// Times `full_name` in a fresh process of `exe` (`CO_LOCAL_BENCH_TIME`):
/// nanoseconds per op of `n` ops, after `n` ops of warm-up.
pub fn time_in_process(exe: &Path, full_name: &str, n: u64) -> std::io::Result<f64> {
    let out = Command::new(exe)
        .env("CO_LOCAL_BENCH_TIME", full_name)
        .env("CO_LOCAL_BENCH_N", n.to_string())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} {full_name}: {}",
            exe.display(),
            out.status
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(std::io::Error::other)
}

/// Asks `exe` for its [`BlockInfo`] (`CO_LOCAL_BENCH_INFO`).
pub fn block_info_of(exe: &Path) -> std::io::Result<String> {
    let out = Command::new(exe).env("CO_LOCAL_BENCH_INFO", "1").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The block of this binary next to what its declarations need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// `co_local::declarations().len()`.
    pub declarations: usize,
    /// Of which lazy.
    pub lazy: usize,
    /// Sum of `size()` over the declarations.
    pub sum_sizes: usize,
    /// The SPEC's bound without the header and the links: each value's size
    /// plus its state byte (lazy values, constants with a destructor)
    /// rounded up to its alignment, summed.
    pub padded: usize,
    /// Values with a state byte: each may add a 4-byte link (round 3: the
    /// order of making).
    pub stateful: usize,
    /// `co_local::block_size()`.
    pub block_size: usize,
    /// The declarations not made by the bench binaries themselves (by
    /// co_runtime, say): `module::NAME` each.
    pub others: &'static [&'static str],
}

impl BlockInfo {
    /// The figures of the binary this runs in.
    pub fn of_this_binary() -> BlockInfo {
        let decls = co_local::declarations();
        let state = |d: &co_local::Declaration| usize::from(!d.is_const() || d.needs_drop());
        BlockInfo {
            declarations: decls.len(),
            lazy: decls.iter().filter(|d| !d.is_const()).count(),
            sum_sizes: decls.iter().map(|d| d.size()).sum(),
            padded: decls
                .iter()
                .map(|d| (d.size() + state(d)).next_multiple_of(d.align()))
                .sum(),
            stateful: decls.iter().map(state).sum(),
            block_size: co_local::block_size(),
            others: Vec::leak(
                decls
                    .iter()
                    .filter(|d| !d.module_path().starts_with(env!("CARGO_CRATE_NAME")))
                    .filter(|d| {
                        ![
                            "one",
                            "many",
                            "many_drop",
                            "ratios",
                            "instructions",
                            "memory",
                            "criterion",
                        ]
                        .iter()
                        .any(|b| d.module_path().split("::").next() == Some(b))
                    })
                    .map(|d| &*format!("{}::{}", d.module_path(), d.name()).leak())
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for BlockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The links are `u32`s after the values: up to 3 bytes of padding.
        let links = if self.stateful > 0 {
            4 * self.stateful + 3
        } else {
            0
        };
        let bound = self.padded + links + 64;
        write!(
            f,
            "{} declarations ({} lazy, {} with a state byte): block_size {} B; sum of sizes {} B; \
             sizes + state bytes, padded to alignment {} B; SPEC bound (that + 4 B per value \
             with a state byte + 64 B header) {} B: {}",
            self.declarations,
            self.lazy,
            self.stateful,
            self.block_size,
            self.sum_sizes,
            self.padded,
            bound,
            if self.block_size <= bound {
                "holds"
            } else {
                "does not hold"
            },
        )?;
        if !self.others.is_empty() {
            let shown = self.others.len().min(5);
            write!(
                f,
                " (declared by dependencies: {}",
                self.others[..shown].join(", ")
            )?;
            if self.others.len() > shown {
                write!(f, " and {} more", self.others.len() - shown)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}
