//! The scenario co_local comes from: QEMU's "current monitor", made a
//! per-coroutine property.
//!
//! Several monitors (one HMP, two QMP) queue commands. A main loop dispatches
//! them one at a time. Coroutine-capable commands run in a coroutine each and
//! suspend in the middle (simulated I/O), so their execution interleaves;
//! coroutine-incapable commands run outside every coroutine. Deep inside,
//! code that knows nothing about monitors reports errors with
//! `error_report()`, which prints to `CUR_MON` when it is set and to stderr
//! otherwise. The dispatcher seeds `CUR_MON` of a command's coroutine before
//! the first resume, as QEMU's `monitor_set_cur()` does.
//!
//! The invariant of the seed, checked on every report: while a command runs,
//! `CUR_MON` is its monitor; otherwise it is none.
//!
//! Run it with `cargo run --release --example monitor`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;

use co_local::co_local;
use co_runtime::{Coroutine, CoroutineResult, Yielder};

/// Which monitor, by index into the dispatcher's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorId(pub usize);

co_local! {
    /// The monitor executing the current command, if any.
    pub static CUR_MON: Cell<Option<MonitorId>> = const { Cell::new(None) };
}

/// Where `error_report()` sent a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Monitor(MonitorId),
    Stderr,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Monitor(m) => write!(f, "monitor {}", m.0),
            Destination::Stderr => f.write_str("stderr"),
        }
    }
}

std::thread_local! {
    /// Every monitor's output, and what went to stderr, in order.
    static OUTPUT: RefCell<Output> = const { RefCell::new(Output::new()) };
}

/// The transcripts the program prints at the end.
#[derive(Debug, Default)]
pub struct Output {
    pub monitors: Vec<(String, Vec<String>)>,
    pub stderr: Vec<String>,
}

impl Output {
    const fn new() -> Output {
        Output {
            monitors: Vec::new(),
            stderr: Vec::new(),
        }
    }
}

/// Prints an error to the current monitor, or to stderr outside commands.
/// Knows nothing about which command runs: only `CUR_MON`.
pub fn error_report(msg: &str) -> Destination {
    match CUR_MON.get() {
        Some(mon) => {
            OUTPUT.with_borrow_mut(|o| o.monitors[mon.0].1.push(format!("    error: {msg}")));
            Destination::Monitor(mon)
        }
        None => {
            OUTPUT.with_borrow_mut(|o| o.stderr.push(format!("error: {msg}")));
            Destination::Stderr
        }
    }
}

/// A simulated I/O request: how many main-loop turns until it completes.
#[derive(Clone, Copy, Debug)]
pub struct Io {
    pub turns: u32,
}

/// What a coroutine-capable command sees: a way to wait for I/O.
pub type CoYielder = Yielder<(), Io>;

/// Where each report of a command went, with what reported it. Kept on the
/// command's own stack and checked by the dispatcher when the command ends.
pub type Reports = Vec<(Destination, &'static str)>;

/// What a command returns.
pub type Outcome = Result<String, String>;

/// A command's handler.
#[derive(Clone, Copy, Debug)]
pub enum Handler {
    /// Runs in a coroutine and may wait for I/O.
    Coroutine(fn(&CoYielder, &str, &mut Reports) -> Outcome),
    /// Runs in the main loop, outside every coroutine.
    Plain(fn(&str, &mut Reports) -> Outcome),
}

/// One command a monitor received.
#[derive(Debug)]
pub struct Command {
    pub monitor: MonitorId,
    pub line: &'static str,
    pub handler: Handler,
}

/// The invariant checks made on every report.
#[derive(Debug, Default)]
pub struct Checks {
    pub reports: usize,
    pub violations: Vec<String>,
}

impl Checks {
    fn expect(&mut self, got: Destination, want: Destination, context: &str) {
        self.reports += 1;
        if got != want {
            self.violations
                .push(format!("{context}: report went to {got}, expected {want}"));
        }
    }
}

// ----------------------------------------------------------------------------
// Code below the monitor: block layer, migration, ... It knows no monitor.

mod block {
    use super::{error_report, CoYielder, Destination, Io};

    /// Flushes a device; fails on read-only devices. Waits for I/O.
    pub fn flush(y: &CoYielder, device: &str) -> Result<(), Destination> {
        y.suspend(Io { turns: 2 });
        if device.ends_with("-ro") {
            return Err(error_report(&format!(
                "cannot flush read-only device '{device}'"
            )));
        }
        y.suspend(Io { turns: 1 });
        Ok(())
    }

    /// Looks a device up without waiting; reports unknown names.
    pub fn lookup(device: &str) -> Result<(), Destination> {
        if device.starts_with("nvme") || device.starts_with("virtio") {
            Ok(())
        } else {
            Err(error_report(&format!("device '{device}' not found")))
        }
    }
}

/// The commands the monitors know.
pub mod commands {
    use super::*;

    /// `block-flush DEV...`: flushes each device, waiting for I/O.
    pub fn block_flush(y: &CoYielder, args: &str, reports: &mut Reports) -> Outcome {
        let mut done = Vec::new();
        let mut failed = 0;
        for dev in args.split_whitespace() {
            match block::flush(y, dev) {
                Ok(()) => done.push(dev),
                Err(dest) => {
                    reports.push((dest, "block-flush"));
                    failed += 1;
                }
            }
        }
        let flushed = if done.is_empty() {
            "nothing".to_string()
        } else {
            done.join(", ")
        };
        if failed > 0 {
            Err(format!("{failed} device(s) failed, flushed {flushed}"))
        } else {
            Ok(format!("flushed {flushed}"))
        }
    }

    /// `savevm NAME`: writes a snapshot in several rounds of I/O.
    pub fn savevm(y: &CoYielder, name: &str, reports: &mut Reports) -> Outcome {
        for round in 0..3 {
            y.suspend(Io { turns: 1 + round });
        }
        if name.is_empty() {
            let dest = error_report("savevm needs a snapshot name");
            reports.push((dest, "savevm"));
            return Err("no name".into());
        }
        Ok(format!("snapshot '{name}' saved"))
    }

    /// `device_del DEV`: coroutine-incapable, runs in the main loop.
    pub fn device_del(args: &str, reports: &mut Reports) -> Outcome {
        match block::lookup(args.trim()) {
            Ok(()) => Ok(format!("deleted {}", args.trim())),
            Err(dest) => {
                reports.push((dest, "device_del"));
                Err("lookup failed".into())
            }
        }
    }

    /// `info status`: coroutine-incapable, prints and reports nothing.
    pub fn info_status(_: &str, _: &mut Reports) -> Outcome {
        Ok("VM status: running".into())
    }
}

/// A command in flight in a coroutine.
struct InFlight {
    command: Command,
    co: Coroutine<(), Io, (Outcome, Reports)>,
    wait: u32,
}

/// Runs every command of `script` to completion, as QEMU's main loop would,
/// and returns the transcripts and the invariant checks.
pub fn run(monitor_names: &[&str], script: Vec<Command>) -> (Output, Checks) {
    OUTPUT.with_borrow_mut(|o| {
        *o = Output::default();
        o.monitors = monitor_names
            .iter()
            .map(|n| (n.to_string(), Vec::new()))
            .collect();
    });
    let mut checks = Checks::default();
    let mut queue: VecDeque<Command> = script.into();
    let mut in_flight: Vec<InFlight> = Vec::new();
    let mut turn = 0u32;

    while !queue.is_empty() || !in_flight.is_empty() {
        turn += 1;
        // 1. Dispatch at most one new command per turn.
        if let Some(command) = queue.pop_front() {
            let mon = command.monitor;
            echo(mon, &format!("turn {turn:>2}  > {}", command.line));
            let args = command.line.split_once(' ').map_or("", |(_, args)| args);
            match command.handler {
                Handler::Plain(f) => {
                    // Coroutine-incapable: runs right here, outside every
                    // coroutine, with the thread's CUR_MON set around it.
                    let mut reports = Reports::new();
                    CUR_MON.set(Some(mon));
                    let result = f(args, &mut reports);
                    CUR_MON.set(None);
                    finish(&mut checks, mon, command.line, result, reports);
                }
                Handler::Coroutine(f) => {
                    let args: &'static str = args;
                    let mut co = Coroutine::new(move |y: &CoYielder, ()| {
                        let mut reports = Reports::new();
                        let result = f(y, args, &mut reports);
                        (result, reports)
                    });
                    // monitor_set_cur(): seed the coroutine's CUR_MON.
                    co.with_locals(|| CUR_MON.set(Some(mon)));
                    in_flight.push(InFlight {
                        command,
                        co,
                        wait: 0,
                    });
                }
            }
        }

        // 2. Outside every command, the main loop reports to stderr.
        if turn % 4 == 0 {
            let dest = error_report(&format!(
                "main loop: turn {turn}, {} in flight",
                in_flight.len()
            ));
            checks.expect(dest, Destination::Stderr, "main loop");
        }

        // 3. Resume every coroutine whose I/O completed.
        let mut i = 0;
        while i < in_flight.len() {
            let f = &mut in_flight[i];
            if f.wait > 0 {
                f.wait -= 1;
                // A suspended command still has its monitor: read it.
                let seen = f.co.with_locals(|| CUR_MON.get()).flatten();
                if seen != Some(f.command.monitor) {
                    checks.violations.push(format!(
                        "suspended '{}' has CUR_MON {seen:?}",
                        f.command.line
                    ));
                }
                i += 1;
                continue;
            }
            match f.co.resume(()) {
                CoroutineResult::Yield(io) => {
                    f.wait = io.turns;
                    i += 1;
                }
                CoroutineResult::Return((result, reports)) => {
                    let done = in_flight.swap_remove(i);
                    finish(
                        &mut checks,
                        done.command.monitor,
                        done.command.line,
                        result,
                        reports,
                    );
                }
            }
            // Between two coroutines, the main loop has no monitor.
            if CUR_MON.get().is_some() {
                checks
                    .violations
                    .push(format!("main loop saw CUR_MON {:?}", CUR_MON.get()));
            }
        }
    }
    (OUTPUT.take(), checks)
}

fn echo(mon: MonitorId, line: &str) {
    OUTPUT.with_borrow_mut(|o| o.monitors[mon.0].1.push(line.to_string()));
}

/// Prints a command's result to its monitor and checks what it reported.
fn finish(checks: &mut Checks, mon: MonitorId, line: &str, result: Outcome, reports: Reports) {
    for (dest, context) in reports {
        checks.expect(dest, Destination::Monitor(mon), context);
    }
    match result {
        Ok(msg) => echo(mon, &format!("  ok   '{line}': {msg}")),
        Err(msg) => echo(mon, &format!("  FAIL '{line}': {msg}")),
    }
}

/// The commands the three monitors receive.
pub fn script() -> Vec<Command> {
    use commands::*;
    let hmp = MonitorId(0);
    let qmp0 = MonitorId(1);
    let qmp1 = MonitorId(2);
    let co = Handler::Coroutine;
    let plain = Handler::Plain;
    vec![
        Command {
            monitor: hmp,
            line: "savevm before-upgrade",
            handler: co(savevm),
        },
        Command {
            monitor: qmp0,
            line: "block-flush nvme0 cdrom-ro nvme1",
            handler: co(block_flush),
        },
        Command {
            monitor: qmp1,
            line: "device_del floppy0",
            handler: plain(device_del),
        },
        Command {
            monitor: qmp1,
            line: "block-flush virtio0",
            handler: co(block_flush),
        },
        Command {
            monitor: hmp,
            line: "info status",
            handler: plain(info_status),
        },
        Command {
            monitor: qmp0,
            line: "savevm",
            handler: co(savevm),
        },
        Command {
            monitor: hmp,
            line: "block-flush usb-ro",
            handler: co(block_flush),
        },
        Command {
            monitor: qmp1,
            line: "device_del nvme1",
            handler: plain(device_del),
        },
    ]
}

#[allow(dead_code)] // used by the example's `main`, not by the test that includes this file
fn main() {
    let names = ["hmp0", "qmp0", "qmp1"];
    let (output, checks) = run(&names, script());
    for (name, lines) in &output.monitors {
        println!("== monitor {name}");
        for line in lines {
            println!("{line}");
        }
    }
    println!("== stderr");
    for line in &output.stderr {
        println!("{line}");
    }
    println!();
    if checks.violations.is_empty() {
        println!(
            "invariant held: {} reports, each at the monitor running its command",
            checks.reports
        );
    } else {
        for v in &checks.violations {
            println!("invariant broken: {v}");
        }
        std::process::exit(1);
    }
}
