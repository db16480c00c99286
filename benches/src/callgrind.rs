//! Instruction counts with `valgrind --tool=callgrind`.
//!
//! A count is exact and repeatable where time is not, but it includes the
//! start-up and tear-down of the process. So a case is counted twice, in
//! otherwise identical runs: `n` ops, then `2n` ops; the difference divided
//! by `n` is the instructions of one op, loop included.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether `valgrind` can be run.
pub fn available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The total instructions callgrind counted running `exe` with the request
/// `CO_LOCAL_BENCH_RUN=full_name`, `CO_LOCAL_BENCH_N=n`.
pub fn count(exe: &Path, full_name: &str, n: u64) -> io::Result<u64> {
    let out_file = out_dir()?.join(format!(
        "{}.{}.{n}.out",
        full_name.replace('/', "."),
        std::process::id()
    ));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg("--dump-line=no")
        .arg(exe)
        .env("CO_LOCAL_BENCH_RUN", full_name)
        .env("CO_LOCAL_BENCH_N", n.to_string())
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "callgrind run of {full_name} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let text = std::fs::read_to_string(&out_file)?;
    let _ = std::fs::remove_file(&out_file);
    parse_total(&text).ok_or_else(|| {
        io::Error::other(format!("no summary/totals line in {}", out_file.display()))
    })
}

/// The instructions of one op: `(count(2n) - count(n)) / n`.
pub fn per_op(exe: &Path, full_name: &str, n: u64) -> io::Result<f64> {
    let once = count(exe, full_name, n)?;
    let twice = count(exe, full_name, 2 * n)?;
    Ok((twice as f64 - once as f64) / n as f64)
}

/// The event count of the `summary:` line of a callgrind output file (or of
/// `totals:`, which callgrind writes instead in some versions).
pub fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .next_back()
}

fn out_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join("co_local_benches_callgrind");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::parse_total;

    #[test]
    fn reads_summary_or_totals() {
        let text = "events: Ir\nfl=x\n1 2\nsummary: 123456\n";
        assert_eq!(parse_total(text), Some(123456));
        assert_eq!(parse_total("events: Ir\ntotals: 42\n"), Some(42));
        assert_eq!(parse_total("events: Ir\n"), None);
    }
}
