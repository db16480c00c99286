//! A client load: many QMP clients at once, each running `report` through
//! `human-monitor-command` and checking that every reply carries its own
//! report and no other client's, with out-of-band commands mixed in.

use std::io;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::QmpClient;

/// What a load measured.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// In-band commands.
    pub commands: usize,
    /// Out-of-band commands.
    pub oob_commands: usize,
    /// Out-of-band replies that arrived before the reply of the in-band
    /// command sent just before them.
    pub oob_overtook: usize,
    pub elapsed: Duration,
    /// Every in-band command's round trip, sorted.
    pub latencies: Vec<Duration>,
    /// Every out-of-band command's round trip, sorted.
    pub oob_latencies: Vec<Duration>,
    /// Replies that did not carry their own report, or were missing.
    pub crossed: Vec<String>,
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

impl LoadResult {
    pub fn per_second(&self) -> f64 {
        (self.commands + self.oob_commands) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    oob_latencies: Vec<Duration>,
    overtook: usize,
    crossed: Vec<String>,
}

fn hmc(tag: &str, ms: u64, id: &str) -> Value {
    json!({"execute": "human-monitor-command",
           "arguments": {"command-line": format!("report {ms} {tag}")}, "id": id})
}

/// One client: `commands` in-band `report` commands; every tenth is sent
/// together with an out-of-band `yank` of nothing. At the end the client
/// yanks, out-of-band, a spare connection it opened, whose monitor reports
/// that from the I/O thread.
fn client(path: &Path, c: usize, commands: usize) -> io::Result<ClientResult> {
    let mut client = QmpClient::connect_oob(path)?;
    let mut spare = QmpClient::connect_negotiated(path)?;
    let spare_name = spare
        .execute("x-query-server-stats", json!({}))?
        .map_err(|e| io::Error::other(format!("{e:?}")))?["self"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut r = ClientResult::default();
    let check = |r: &mut ClientResult, tag: &str, got: &Value| {
        let want = json!(format!("{tag}\r\n"));
        if got.get("return") != Some(&want) {
            r.crossed
                .push(format!("client {c} sent '{tag}', got {got}"));
        }
    };
    for i in 0..commands {
        let tag = format!("client {c} command {i}");
        let ms = u64::from(i % 10 == 9);
        let t = Instant::now();
        if i % 10 != 5 {
            client.send(&hmc(&tag, ms, &format!("ib-{i}")))?;
            let got = client.reply()?;
            r.latencies.push(t.elapsed());
            check(&mut r, &tag, &got);
            continue;
        }
        client.send(&hmc(&tag, 1, &format!("ib-{i}")))?;
        client.send(
            &json!({"exec-oob": "yank", "arguments": {"instances": []}, "id": format!("oob-{i}")}),
        )?;
        let (mut inband, mut oob) = (false, false);
        while !(inband && oob) {
            let got = client.reply()?;
            if got["id"] == json!(format!("oob-{i}")) {
                r.oob_latencies.push(t.elapsed());
                if got.get("return") != Some(&json!({})) {
                    r.crossed
                        .push(format!("client {c}: out-of-band yank got {got}"));
                }
                r.overtook += usize::from(!inband);
                oob = true;
            } else {
                r.latencies.push(t.elapsed());
                check(&mut r, &tag, &got);
                inband = true;
            }
        }
    }
    let t = Instant::now();
    let got = {
        client.send(&json!({"exec-oob": "yank", "id": "spare",
            "arguments": {"instances": [{"type": "chardev", "id": spare_name}]}}))?;
        client.reply()?
    };
    r.oob_latencies.push(t.elapsed());
    if got.get("return") != Some(&json!({})) {
        r.crossed
            .push(format!("client {c}: yanking {spare_name} got {got}"));
    }
    // The yanked connection ends.
    if spare.recv().is_ok() {
        r.crossed
            .push(format!("client {c}: {spare_name} still open after yank"));
    }
    Ok(r)
}

/// `clients` clients at once, each running `commands` in-band commands
/// (`report 0 TAG`, a timer turn of the main loop; every tenth `report 1
/// TAG`) and `commands / 10 + 1` out-of-band ones.
pub fn run(qmp: &Path, clients: usize, commands: usize) -> io::Result<LoadResult> {
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let path = qmp.to_path_buf();
            thread::Builder::new()
                .name(format!("load-{c}"))
                .stack_size(256 << 10)
                .spawn(move || client(&path, c, commands))
        })
        .collect::<io::Result<_>>()?;
    let mut result = LoadResult::default();
    for t in threads {
        let r = t
            .join()
            .map_err(|_| io::Error::other("a load client panicked"))??;
        result.commands += r.latencies.len();
        result.oob_commands += r.oob_latencies.len();
        result.oob_overtook += r.overtook;
        result.latencies.extend(r.latencies);
        result.oob_latencies.extend(r.oob_latencies);
        result.crossed.extend(r.crossed);
    }
    result.elapsed = start.elapsed();
    result.latencies.sort_unstable();
    result.oob_latencies.sort_unstable();
    Ok(result)
}

/// The process's peak resident set size (VmHWM), in KiB, if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
