//! The demo (`qmp_server` with no arguments) and the load figures
//! (`--load`): a server on a thread of this process, clients on others,
//! over real sockets.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::client::{HmpClient, QmpClient};
use crate::load;
use crate::server::{self, Config};

/// A directory for the sockets, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> std::io::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("qmp_server-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One monitor's transcript, as the demo prints it.
#[derive(Default)]
struct Transcript {
    lines: Vec<String>,
    crossed: Vec<String>,
}

fn short(v: &str) -> String {
    let v = v.trim_end().replace('\n', "\\n");
    if v.chars().count() > 90 {
        format!("{}...", v.chars().take(87).collect::<String>())
    } else {
        v
    }
}

impl Transcript {
    fn qmp(&mut self, c: &mut QmpClient, name: &str, args: Value) -> std::io::Result<()> {
        self.exec(c, name, args).map(drop)
    }

    fn exec(
        &mut self,
        c: &mut QmpClient,
        name: &str,
        args: Value,
    ) -> std::io::Result<Result<Value, (String, String)>> {
        let got = c.execute(name, args.clone())?;
        let args = if args == json!({}) {
            String::new()
        } else {
            format!(" {args}")
        };
        let shown = match &got {
            Ok(v) => format!("return {}", short(&v.to_string())),
            Err((class, desc)) => format!("error {class}: {desc}"),
        };
        self.lines.push(format!("  -> {name}{args}"));
        self.lines.push(format!("  <- {shown}"));
        Ok(got)
    }

    /// `human-monitor-command` with a report that must come back here.
    fn hmc_report(&mut self, c: &mut QmpClient, ms: u64, text: &str) -> std::io::Result<()> {
        let got = self.exec(
            c,
            "human-monitor-command",
            json!({"command-line": format!("report {ms} {text}")}),
        )?;
        if got.as_ref().ok().and_then(Value::as_str) != Some(format!("{text}\r\n").as_str()) {
            self.crossed.push(format!("'{text}' came back as {got:?}"));
        }
        Ok(())
    }

    fn hmp(&mut self, c: &mut HmpClient, line: &str) -> std::io::Result<String> {
        let out = c.cmd(line)?;
        self.lines.push(format!("  (qemu) {line}"));
        for l in out.lines() {
            self.lines.push(format!("  {}", short(l)));
        }
        Ok(out)
    }
}

fn qmp_a(path: &Path) -> std::io::Result<Transcript> {
    let mut t = Transcript::default();
    let (mut c, greeting) = QmpClient::connect(path)?;
    t.lines
        .push(format!("  <- {}", short(&greeting.to_string())));
    t.qmp(&mut c, "query-status", json!({}))?;
    t.qmp(&mut c, "qmp_capabilities", json!({}))?;
    t.hmc_report(&mut c, 40, "qmp-A: slow report, 40 ms on a timer")?;
    // Pass one end of a socket pair; x-write-fd writes to it.
    let (mine, theirs) = UnixStream::pair()?;
    c.send_fd(theirs.as_fd())?;
    drop(theirs);
    t.lines.push("  -> (SCM_RIGHTS: one descriptor)".into());
    t.qmp(&mut c, "getfd", json!({"fdname": "log"}))?;
    t.qmp(
        &mut c,
        "x-write-fd",
        json!({"fdname": "log", "data": "hello through the passed fd\n"}),
    )?;
    mine.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = [0; 64];
    let n = (&mine).read(&mut buf)?;
    t.lines.push(format!(
        "  (the pipe's other end reads {:?})",
        String::from_utf8_lossy(&buf[..n])
    ));
    t.qmp(&mut c, "getfd", json!({"fdname": "again"}))?;
    t.hmc_report(&mut c, 5, "qmp-A: second report")?;
    t.qmp(&mut c, "closefd", json!({"fdname": "log"}))?;
    Ok(t)
}

fn qmp_b(path: &Path) -> std::io::Result<Transcript> {
    let mut t = Transcript::default();
    let mut c = QmpClient::connect_negotiated(path)?;
    t.lines.push("  (negotiated)".into());
    t.hmc_report(&mut c, 10, "qmp-B: quick report")?;
    t.qmp(&mut c, "closefd", json!({"fdname": "log"}))?;
    c.send_raw(b"{\"execute\": oops}\n")?;
    let reply = c.reply()?;
    t.lines.push("  -> {\"execute\": oops}".into());
    t.lines.push(format!("  <- {}", short(&reply.to_string())));
    t.qmp(&mut c, "no-such-command", json!({}))?;
    t.qmp(&mut c, "getfd", json!({}))?;
    t.qmp(&mut c, "human-monitor-command", json!({"command-line": 42}))?;
    t.hmc_report(&mut c, 25, "qmp-B: report after the errors")?;
    Ok(t)
}

fn hmp_1(path: &Path) -> std::io::Result<Transcript> {
    let mut t = Transcript::default();
    let (mut c, banner) = HmpClient::connect(path)?;
    t.lines.push(format!("  {}", short(&banner)));
    t.hmp(&mut c, "info status")?;
    for (line, want) in [
        ("report 30 hmp-1: after 30 ms", "hmp-1: after 30 ms"),
        ("report-now hmp-1: right away", "hmp-1: right away"),
    ] {
        let out = t.hmp(&mut c, line)?;
        if out.trim_end() != want {
            t.crossed.push(format!("'{line}' printed {out:?}"));
        }
    }
    t.hmp(&mut c, "bogus")?;
    Ok(t)
}

fn hmp_2(path: &Path) -> std::io::Result<Transcript> {
    let mut t = Transcript::default();
    let (mut c, _) = HmpClient::connect(path)?;
    let out = t.hmp(&mut c, "report 20 hmp-2: hello")?;
    if out.trim_end() != "hmp-2: hello" {
        t.crossed.push(format!("hmp-2's report printed {out:?}"));
    }
    // A client that leaves while its command waits: the command is dropped.
    let (mut gone, _) = HmpClient::connect(path)?;
    gone.send("report 5000 nobody will read this")?;
    thread::sleep(Duration::from_millis(20));
    drop(gone);
    t.lines
        .push("  (another HMP client sent 'report 5000 ...' and hung up)".into());
    Ok(t)
}

fn events(path: &Path) -> std::io::Result<Transcript> {
    let mut t = Transcript::default();
    let mut a = QmpClient::connect_negotiated(path)?;
    let mut b = QmpClient::connect_negotiated(path)?;
    t.qmp(&mut a, "stop", json!({}))?;
    t.qmp(&mut b, "query-status", json!({}))?;
    t.qmp(&mut a, "cont", json!({}))?;
    t.qmp(&mut b, "query-status", json!({}))?;
    for (who, c) in [("first", &a), ("second", &b)] {
        let names: Vec<&str> = c
            .events
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        t.lines
            .push(format!("  the {who} client got events {names:?}"));
        if names != ["STOP", "RESUME"] {
            t.crossed
                .push(format!("the {who} client got events {names:?}"));
        }
    }
    Ok(t)
}

/// An in-band command blocks (x-write-fd to a socket nobody reads), a quick
/// one queues behind it, and an out-of-band `yank` from the same monitor
/// answers first: it runs in the I/O thread, where `CUR_MON` is that
/// thread's own value, and shuts down another client's connection.
fn out_of_band(path: &Path) -> std::io::Result<Transcript> {
    let mut t = Transcript::default();
    let mut c = QmpClient::connect_oob(path)?;
    t.lines
        .push("  (negotiated with {\"enable\": [\"oob\"]})".into());
    let mut victim = QmpClient::connect_negotiated(path)?;
    let victim_name = victim
        .execute("x-query-server-stats", json!({}))?
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?["self"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (mine, theirs) = UnixStream::pair()?;
    c.send_fd(theirs.as_fd())?;
    drop(theirs);
    t.qmp(&mut c, "getfd", json!({"fdname": "slow"}))?;
    let data = "z".repeat(4 << 20);
    let requests = [
        json!({"execute": "x-write-fd", "arguments": {"fdname": "slow", "data": data}, "id": "ib-blocks"}),
        json!({"execute": "query-name", "id": "ib-quick"}),
        json!({"exec-oob": "yank", "arguments": {"instances": [{"type": "chardev", "id": victim_name}]}, "id": "oob"}),
    ];
    for r in &requests {
        c.send(r)?;
        let shown = if r["id"] == "ib-blocks" {
            "{\"execute\": \"x-write-fd\", ... 4 MiB to a socket nobody reads, \"id\": \"ib-blocks\"}".to_string()
        } else {
            r.to_string()
        };
        t.lines.push(format!("  -> {shown}"));
    }
    let first = c.reply()?;
    t.lines.push(format!("  <- {}", short(&first.to_string())));
    if first["id"] != "oob" {
        t.crossed.push(format!(
            "the first reply was not the out-of-band one: {first}"
        ));
    }
    let gone = victim.recv().is_err();
    t.lines.push(format!(
        "  ({victim_name}, yanked, sees its connection end: {gone})"
    ));
    if !gone {
        t.crossed
            .push(format!("{victim_name} still open after yank"));
    }
    // Reading the other end lets the blocked command finish.
    let reader = thread::spawn(move || {
        let mut buf = vec![0; 64 << 10];
        let mut total = 0;
        while total < (4 << 20) {
            match (&mine).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    });
    for want in ["ib-blocks", "ib-quick"] {
        let reply = c.reply()?;
        t.lines.push(format!("  <- {}", short(&reply.to_string())));
        if reply["id"] != want {
            t.crossed
                .push(format!("expected the reply to {want}, got {reply}"));
        }
    }
    let total = reader
        .join()
        .map_err(|_| std::io::Error::other("reader panicked"))?;
    t.lines
        .push(format!("  (the socket's other end read {total} bytes)"));
    Ok(t)
}

/// The demo: scripted monitors at once, out-of-band commands, events, a
/// load; ends with the invariant line.
pub fn run() -> std::io::Result<ExitCode> {
    let dir = TempDir::new("demo")?;
    let qmp_path = dir.0.join("qmp.sock");
    let hmp_path = dir.0.join("hmp.sock");
    let (stop, server) = server::spawn(Config {
        qmp: Some(qmp_path.clone()),
        hmp: Some(hmp_path.clone()),
        signals: false,
        quiet: true,
    })?;
    println!(
        "server on {} (QMP) and {} (HMP)",
        qmp_path.display(),
        hmp_path.display()
    );

    type Script = fn(&Path) -> std::io::Result<Transcript>;
    let scripts: [(&str, Script, &PathBuf); 4] = [
        ("QMP monitor A", qmp_a, &qmp_path),
        ("QMP monitor B", qmp_b, &qmp_path),
        ("HMP monitor 1", hmp_1, &hmp_path),
        ("HMP monitor 2", hmp_2, &hmp_path),
    ];
    let mut results = Vec::new();
    thread::scope(|s| {
        let handles: Vec<_> = scripts
            .iter()
            .map(|(name, f, path)| (name, s.spawn(move || f(path))))
            .collect();
        for (name, h) in handles {
            results.push((
                name.to_string(),
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panicked"))),
            ));
        }
    });
    results.push(("STOP/RESUME to every QMP monitor".into(), events(&qmp_path)));
    results.push((
        "out-of-band: yank overtakes a blocked in-band command".into(),
        out_of_band(&qmp_path),
    ));

    let load = load::run(&qmp_path, 16, 100)?;
    stop.stop();
    let stats = server
        .join()
        .map_err(|_| std::io::Error::other("the server thread panicked"))?;

    let mut broken: Vec<String> = stats.violations.clone();
    for (name, result) in &results {
        println!("\n== {name}");
        match result {
            Ok(t) => {
                for l in &t.lines {
                    println!("{l}");
                }
                broken.extend(t.crossed.iter().map(|c| format!("{name}: {c}")));
            }
            Err(e) => broken.push(format!("{name}: client failed: {e}")),
        }
    }
    broken.extend(load.crossed.iter().map(|c| format!("load: {c}")));
    println!(
        "\n== load: 16 QMP clients x 100 human-monitor-command 'report', out-of-band yanks mixed in\n  {} in-band + {} out-of-band commands in {:.2?}: {:.0} commands/s, p50 {} µs, p99 {} µs",
        load.commands,
        load.oob_commands,
        load.elapsed,
        load.per_second(),
        load.percentile(0.5).as_micros(),
        load.percentile(0.99).as_micros(),
    );
    println!(
        "  server: {} in-band and {} out-of-band commands, {} reports ({} from the I/O thread, {} to stderr), peak {} in flight, {} cancelled",
        stats.commands, stats.oob_commands, stats.reports, stats.oob_reports, stats.stderr_reports, stats.peak_in_flight, stats.cancelled
    );
    println!();
    if broken.is_empty() && stats.reports > 0 {
        println!(
            "invariant held: {} reports, each at the monitor running its command",
            stats.reports
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for b in &broken {
            println!("invariant broken: {b}");
        }
        if stats.reports == 0 {
            println!("invariant not checked: no report was made");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `--load`: the figures of BENCHMARKS.md.
pub fn load_figures(clients: usize, commands: usize) -> std::io::Result<ExitCode> {
    let dir = TempDir::new("load")?;
    let qmp_path = dir.0.join("qmp.sock");
    let (stop, server) = server::spawn(Config {
        qmp: Some(qmp_path.clone()),
        quiet: true,
        ..Config::default()
    })?;
    let load = load::run(&qmp_path, clients, commands)?;
    stop.stop();
    let stats = server
        .join()
        .map_err(|_| std::io::Error::other("the server thread panicked"))?;
    println!(
        "{clients} clients x {commands} in-band commands (human-monitor-command 'report 0|1 TAG'), \
         every tenth sent with an out-of-band yank, and one out-of-band yank of a spare connection each"
    );
    println!(
        "{} in-band + {} out-of-band commands in {:.2?}: {:.0} commands/s",
        load.commands,
        load.oob_commands,
        load.elapsed,
        load.per_second(),
    );
    println!(
        "in-band p50 {} µs, p99 {} µs; out-of-band p50 {} µs, p99 {} µs; {} out-of-band replies overtook the in-band command sent before them",
        load.percentile(0.5).as_micros(),
        load.percentile(0.99).as_micros(),
        load::percentile(&load.oob_latencies, 0.5).as_micros(),
        load::percentile(&load.oob_latencies, 0.99).as_micros(),
        load.oob_overtook,
    );
    println!(
        "server: {} reports checked ({} from the I/O thread), {} violations, peak {} commands in flight, peak queue {}, peak output backlog {} bytes",
        stats.reports,
        stats.oob_reports,
        stats.violations.len(),
        stats.peak_in_flight,
        stats.peak_queue,
        stats.peak_out
    );
    if let Some(kib) = load::peak_rss_kib() {
        println!("peak RSS of the process (server and clients): {kib} KiB");
    }
    println!("crossed reports: {}", load.crossed.len());
    Ok(if load.crossed.is_empty() && stats.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
