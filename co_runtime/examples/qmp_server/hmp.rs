//! HMP: the human monitor's commands, one per line. Output goes to
//! `CUR_MON` through `monitor_printf()`; errors through `error_report()`.

use std::time::Duration;

use crate::monitor::{error_report, monitor_printf, CoYielder};
use crate::vm;

/// The banner an HMP client gets on connecting, before the first prompt.
pub fn banner() -> String {
    let (major, minor, micro) = vm::VERSION;
    format!("QEMU {major}.{minor}.{micro} monitor - type 'help' for more information\r\n")
}
/// The prompt, after the banner and after each command's output.
pub const PROMPT: &str = "(qemu) ";
/// A longer line is refused.
pub const MAX_LINE: usize = 64 << 10;
/// `report` waits at most this long.
pub const MAX_REPORT_MS: u64 = 60_000;

/// An HMP command's handler, with the rest of the line.
#[derive(Clone, Copy, Debug)]
pub enum Handler {
    /// Coroutine-incapable: runs in the main loop (or inline, inside
    /// `human-monitor-command`'s coroutine).
    Bh(fn(&str)),
    /// Coroutine-capable: runs in a coroutine and may suspend.
    Co(fn(&CoYielder, &str)),
}

/// One HMP command: its names (`|` between aliases), its parameters and
/// help as `help` shows them, and what runs it.
#[derive(Debug)]
pub struct Command {
    pub names: &'static str,
    pub params: &'static str,
    pub help: &'static str,
    pub handler: Handler,
}

impl Command {
    fn is(&self, name: &str) -> bool {
        self.names.split('|').any(|n| n == name)
    }
}

pub static COMMANDS: &[Command] = &[
    Command {
        names: "help|?",
        params: "[cmd]",
        help: "show the help",
        handler: Handler::Bh(help),
    },
    Command {
        names: "info",
        params: "[subcommand]",
        help: "show various information about the server state",
        handler: Handler::Bh(info),
    },
    Command {
        names: "stop",
        params: "",
        help: "stop the VM",
        handler: Handler::Bh(stop),
    },
    Command {
        names: "cont",
        params: "",
        help: "resume the VM",
        handler: Handler::Bh(cont),
    },
    Command {
        names: "report",
        params: "MS TEXT",
        help: "wait MS milliseconds on a timer, then error_report(TEXT)",
        handler: Handler::Co(report),
    },
    Command {
        names: "report-now",
        params: "TEXT",
        help: "error_report(TEXT) at once, outside every coroutine",
        handler: Handler::Bh(report_now),
    },
    Command {
        names: "quit",
        params: "",
        help: "stop the server",
        handler: Handler::Bh(quit),
    },
];

/// `info`'s subcommands.
pub static INFO: &[Command] = &[
    Command {
        names: "name",
        params: "",
        help: "show the current VM name",
        handler: Handler::Bh(info_name),
    },
    Command {
        names: "status",
        params: "",
        help: "show the current VM status (running|paused)",
        handler: Handler::Bh(info_status),
    },
    Command {
        names: "version",
        params: "",
        help: "show the version of the server",
        handler: Handler::Bh(info_version),
    },
];

/// A line's command, and the rest of the line; `None` for an empty line.
pub fn lookup(line: &str) -> Option<(Handler, String)> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start().to_string();
    match COMMANDS.iter().find(|c| c.is(name)) {
        Some(c) => Some((c.handler, rest)),
        None => Some((Handler::Bh(unknown), line.to_string())),
    }
}

/// Runs one line to the end on the current monitor, inside a coroutine
/// (`y`): coroutine-capable commands may suspend.
pub fn run_line(y: &CoYielder, line: &str) {
    match lookup(line) {
        None => {}
        Some((Handler::Bh(f), rest)) => f(&rest),
        Some((Handler::Co(f), rest)) => f(y, &rest),
    }
}

fn unknown(line: &str) {
    let name = line.split_whitespace().next().unwrap_or_default();
    monitor_printf(&format!("unknown command: '{name}'\n"));
}

fn help_line(prefix: &str, c: &Command) -> String {
    format!("{prefix}{} {} -- {}\n", c.names, c.params, c.help)
}

/// `help` lists every command; `help CMD` the one named (or, for `info`,
/// its subcommands); `help info SUB` one subcommand.
fn help(rest: &str) {
    let words: Vec<&str> = rest.split_whitespace().collect();
    let text = match words.as_slice() {
        [] => COMMANDS.iter().map(|c| help_line("", c)).collect(),
        ["info", sub @ ..] => match sub {
            [] => INFO.iter().map(|c| help_line("info ", c)).collect(),
            [sub, ..] => match INFO.iter().find(|c| c.is(sub)) {
                Some(c) => help_line("info ", c),
                None => format!("unknown command: 'info {sub}'\n"),
            },
        },
        [name, ..] => match COMMANDS.iter().find(|c| c.is(name)) {
            Some(c) => help_line("", c),
            None => format!("unknown command: '{name}'\n"),
        },
    };
    monitor_printf(&text);
}

fn info(rest: &str) {
    let sub = rest.split_whitespace().next().unwrap_or_default();
    if sub.is_empty() {
        return help("info");
    }
    match INFO.iter().find(|c| c.is(sub)) {
        Some(Command {
            handler: Handler::Bh(f),
            ..
        }) => f(""),
        _ => monitor_printf(&format!("unknown command: 'info {sub}'\n")),
    }
}

fn info_name(_: &str) {
    monitor_printf(&format!("{}\n", vm::NAME));
}

fn info_status(_: &str) {
    monitor_printf(if vm::running() {
        "VM status: running\n"
    } else {
        "VM status: paused\n"
    });
}

fn info_version(_: &str) {
    // QEMU prints the package right after the version, with nothing
    // between them.
    let (major, minor, micro) = vm::VERSION;
    monitor_printf(&format!("{major}.{minor}.{micro}{}\n", vm::PACKAGE));
}

fn stop(_: &str) {
    vm::set_running(false);
}

fn cont(_: &str) {
    vm::set_running(true);
}

fn quit(_: &str) {
    vm::request_quit("host-qmp-quit");
}

/// Splits `report`'s arguments: milliseconds and a text that is not empty.
pub fn parse_report(rest: &str) -> Option<(u64, &str)> {
    let (ms, text) = rest.trim().split_once(char::is_whitespace)?;
    let text = text.trim_start();
    (!text.is_empty()).then_some((ms.parse().ok()?, text))
}

fn report(y: &CoYielder, rest: &str) {
    let Some((ms, text)) = parse_report(rest) else {
        monitor_printf("report: usage: report MS TEXT\n");
        return;
    };
    if ms > MAX_REPORT_MS {
        monitor_printf(&format!("report: at most {MAX_REPORT_MS} ms\n"));
        return;
    }
    vm::sleep(y, Duration::from_millis(ms));
    error_report(text);
}

fn report_now(rest: &str) {
    if rest.trim().is_empty() {
        monitor_printf("report-now: usage: report-now TEXT\n");
        return;
    }
    error_report(rest);
}

/// Splits HMP input into lines. Lines longer than `MAX_LINE` are refused
/// (an `Err` line in their place) and skipped to their end.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    skipping: bool,
}

impl LineBuffer {
    /// Feeds bytes up to and including the first complete line, if any;
    /// returns how many were taken and the line.
    pub fn feed(&mut self, bytes: &[u8]) -> (usize, Option<Result<String, String>>) {
        let (chunk, complete) = match bytes.iter().position(|&b| b == b'\n') {
            Some(nl) => (&bytes[..=nl], true),
            None => (bytes, false),
        };
        if self.skipping {
            self.skipping = !complete;
            return (chunk.len(), None);
        }
        self.buf.extend_from_slice(chunk);
        let too_long = format!("line longer than {MAX_LINE} bytes, ignored\n");
        let line = if self.buf.len() > MAX_LINE {
            self.buf = Vec::new();
            self.skipping = !complete;
            Some(Err(too_long))
        } else if complete {
            let line = String::from_utf8_lossy(&self.buf)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            self.buf.clear();
            Some(Ok(line))
        } else {
            None
        };
        (chunk.len(), line)
    }
}
