//! A client load: many QMP clients at once, each running `report` through
//! `human-monitor-command` and checking that every reply carries its own
//! report and no other client's.

use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::QmpClient;

/// What a load measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    pub commands: usize,
    pub elapsed: Duration,
    /// Every command's round trip, sorted.
    pub latencies: Vec<Duration>,
    /// Replies that did not carry their own report.
    pub crossed: Vec<String>,
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        self.commands as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let at = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[at]
    }
}

/// `clients` clients, each running `commands` commands in a row: `report 0
/// TAG` (a timer turn of the main loop), every tenth `report 1 TAG`.
pub fn run(qmp: &Path, clients: usize, commands: usize) -> io::Result<LoadResult> {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let path = qmp.to_path_buf();
            thread::Builder::new()
                .name(format!("load-{c}"))
                .stack_size(256 << 10)
                .spawn(move || -> io::Result<(Vec<Duration>, Vec<String>)> {
                    let mut client = QmpClient::connect_negotiated(&path)?;
                    let mut latencies = Vec::with_capacity(commands);
                    let mut crossed = Vec::new();
                    for i in 0..commands {
                        let tag = format!("client {c} command {i}");
                        let ms = if i % 10 == 9 { 1 } else { 0 };
                        let t = Instant::now();
                        let got = client.execute(
                            "human-monitor-command",
                            json!({"command-line": format!("report {ms} {tag}")}),
                        )?;
                        latencies.push(t.elapsed());
                        let want = format!("{tag}\n");
                        if got.as_ref().ok().and_then(|v| v.as_str()) != Some(want.as_str()) {
                            crossed.push(format!("client {c} sent '{tag}', got {got:?}"));
                        }
                    }
                    Ok((latencies, crossed))
                })
        })
        .collect::<io::Result<_>>()?;
    let mut result = LoadResult::default();
    for t in threads {
        let (latencies, crossed) = t
            .join()
            .map_err(|_| io::Error::other("a load client panicked"))??;
        result.commands += latencies.len();
        result.latencies.extend(latencies);
        result.crossed.extend(crossed);
    }
    result.elapsed = start.elapsed();
    result.latencies.sort_unstable();
    Ok(result)
}

/// The process's peak resident set size (VmHWM), in KiB, if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
