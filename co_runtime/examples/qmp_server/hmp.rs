//! HMP: the human monitor's commands, one per line. Output goes to
//! `CUR_MON` through `monitor_printf()`; errors through `error_report()`.

use std::time::Duration;

use crate::monitor::{error_report, monitor_printf, with_world, CoYielder};
use crate::qmp;

/// The banner an HMP client gets on connecting, before the first prompt.
pub const BANNER: &str = "QEMU 9.2.0 monitor - type 'help' for more information\r\n";
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

/// One HMP command.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    pub args: &'static str,
    pub help: &'static str,
    pub handler: Handler,
}

pub static COMMANDS: &[Command] = &[
    Command {
        name: "help",
        args: "",
        help: "show the commands",
        handler: Handler::Bh(help),
    },
    Command {
        name: "info",
        args: "status",
        help: "show the VM status",
        handler: Handler::Bh(info),
    },
    Command {
        name: "stop",
        args: "",
        help: "stop the VM",
        handler: Handler::Bh(stop),
    },
    Command {
        name: "cont",
        args: "",
        help: "resume the VM",
        handler: Handler::Bh(cont),
    },
    Command {
        name: "report",
        args: "MS TEXT",
        help: "wait MS milliseconds on a timer, then error_report(TEXT)",
        handler: Handler::Co(report),
    },
    Command {
        name: "report-now",
        args: "TEXT",
        help: "error_report(TEXT) at once, outside every coroutine",
        handler: Handler::Bh(report_now),
    },
    Command {
        name: "quit",
        args: "",
        help: "stop the server",
        handler: Handler::Bh(quit),
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
    match COMMANDS.iter().find(|c| c.name == name) {
        Some(c) => Some((c.handler, rest)),
        None => Some((Handler::Bh(unknown), line.to_string())),
    }
}

/// Runs one line to the end on the current monitor. With a yielder (inside
/// a coroutine), coroutine-capable commands may suspend; without one they
/// are refused, which the dispatcher never lets happen.
pub fn run_line(y: Option<&CoYielder>, line: &str) {
    match lookup(line) {
        None => {}
        Some((Handler::Bh(f), rest)) => f(&rest),
        Some((Handler::Co(f), rest)) => match y {
            Some(y) => f(y, &rest),
            None => monitor_printf("this command needs a coroutine\n"),
        },
    }
}

fn unknown(line: &str) {
    let name = line.split_whitespace().next().unwrap_or_default();
    monitor_printf(&format!("unknown command: '{name}'\n"));
}

fn help(_: &str) {
    let mut text = String::new();
    for c in COMMANDS {
        let usage = format!("{} {}", c.name, c.args);
        text.push_str(&format!("{:<20} -- {}\n", usage.trim_end(), c.help));
    }
    monitor_printf(&text);
}

fn info(rest: &str) {
    match rest.trim() {
        "status" => {
            let running = with_world(|w| w.vm_running);
            monitor_printf(if running {
                "VM status: running\n"
            } else {
                "VM status: paused\n"
            });
        }
        "" => monitor_printf("info status -- show the VM status\n"),
        other => monitor_printf(&format!("info: unknown subcommand '{other}'\n")),
    }
}

fn stop(_: &str) {
    qmp::set_running(false);
}

fn cont(_: &str) {
    qmp::set_running(true);
}

fn quit(_: &str) {
    qmp::request_quit();
}

fn report(y: &CoYielder, rest: &str) {
    let (ms, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let Ok(ms) = ms.parse::<u64>() else {
        monitor_printf("report: usage: report MS TEXT\n");
        return;
    };
    if ms > MAX_REPORT_MS {
        monitor_printf(&format!("report: at most {MAX_REPORT_MS} ms\n"));
        return;
    }
    qmp::sleep(y, Duration::from_millis(ms));
    error_report(text.trim_start());
}

fn report_now(rest: &str) {
    error_report(rest);
}

/// Splits HMP input into lines. Lines longer than `MAX_LINE` are refused
/// (an empty `Err` line in their place) and skipped to their end.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
    skipping: bool,
}

impl LineBuffer {
    pub fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut std::collections::VecDeque<Result<String, String>>,
    ) {
        for chunk in bytes.split_inclusive(|&b| b == b'\n') {
            let complete = chunk.last() == Some(&b'\n');
            if self.skipping {
                if complete {
                    self.skipping = false;
                }
                continue;
            }
            self.buf.extend_from_slice(chunk);
            if complete && self.buf.len() > MAX_LINE {
                self.buf.clear();
                out.push_back(Err(format!("line longer than {MAX_LINE} bytes, ignored\n")));
            } else if complete {
                let line = String::from_utf8_lossy(&self.buf)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                self.buf.clear();
                out.push_back(Ok(line));
            } else if self.buf.len() > MAX_LINE {
                self.buf.clear();
                self.skipping = true;
                out.push_back(Err(format!("line longer than {MAX_LINE} bytes, ignored\n")));
            }
        }
    }
}
