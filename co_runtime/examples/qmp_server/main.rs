//! The seed's monitor, for real: a QMP/HMP server over Unix sockets whose
//! "current monitor" is a `co_local!` (`CUR_MON`).
//!
//! ```text
//! qmp_server --qmp PATH [--hmp PATH]   serve until `quit`, SIGINT or SIGTERM
//! qmp_server                           the demo: server and clients over temporary sockets
//! qmp_server --load CLIENTS COMMANDS   the load figures (commands/s, p50/p99, peak RSS)
//! qmp_server --help                    this usage
//! ```
//!
//! QEMU's threads and coroutines, as the seed lists them: a monitor I/O
//! thread reads every monitor and runs out-of-band commands at once,
//! outside coroutine context (`CUR_MON` is that thread's own value while
//! one runs); a main loop on `mio` runs in-band commands, coroutine-capable
//! ones (`human-monitor-command`, `x-write-fd`, HMP's `report`) in stackful
//! coroutines of `co_runtime` that suspend to it on timers and blocking
//! descriptors, the others outside every coroutine. `error_report()` and
//! the descriptor lookup of `x-write-fd` find their monitor through
//! `CUR_MON` only, and every report is checked against the monitor whose
//! command the reporting thread's dispatcher is running.
//!
//! Run the demo with `cargo run --release --example qmp_server`.

mod client;
mod demo;
mod hmp;
mod iothread;
mod json;
mod load;
mod monitor;
mod qmp;
mod qobject;
mod server;
mod sys;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use server::Config;

const USAGE: &str = "\
usage: qmp_server --qmp PATH [--hmp PATH]   serve QMP (and HMP) on Unix sockets
                                           until quit, SIGINT or SIGTERM
       qmp_server                          the demo, over temporary sockets
       qmp_server --load CLIENTS COMMANDS  load figures (default 64 200)
       qmp_server --help                   this text";

/// What the command line asks for.
enum Mode {
    Demo,
    Help,
    Load(usize, usize),
    Serve(Config),
}

fn parse_args() -> Result<Mode, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut config = Config {
        signals: true,
        ..Config::default()
    };
    let mut load = None;
    let mut any = false;
    while let Some(arg) = parser.next()? {
        any = true;
        match arg {
            Short('h') | Long("help") => return Ok(Mode::Help),
            Long("qmp") => config.qmp = Some(PathBuf::from(parser.value()?)),
            Long("hmp") => config.hmp = Some(PathBuf::from(parser.value()?)),
            Long("load") => {
                let mut numbers = parser.values().ok().into_iter().flatten();
                let clients = numbers.next().map(|v| v.parse()).transpose()?;
                let commands = numbers.next().map(|v| v.parse()).transpose()?;
                if let Some(extra) = numbers.next() {
                    return Err(lexopt::Error::UnexpectedValue {
                        option: "load".into(),
                        value: extra,
                    });
                }
                load = Some((clients.unwrap_or(64), commands.unwrap_or(200)));
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if let Some((clients, commands)) = load {
        if config.qmp.is_some() || config.hmp.is_some() {
            return Err("--load takes no --qmp or --hmp".into());
        }
        return Ok(Mode::Load(clients, commands));
    }
    if !any {
        return Ok(Mode::Demo);
    }
    if config.qmp.is_none() {
        return Err("--qmp PATH is required".into());
    }
    Ok(Mode::Serve(config))
}

fn main() -> ExitCode {
    let mode = match parse_args() {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("qmp_server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match mode {
        Mode::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Mode::Demo => demo::run(),
        Mode::Load(clients, commands) => demo::load_figures(clients, commands),
        Mode::Serve(config) => return serve(&config),
    };
    result.unwrap_or_else(|e| {
        eprintln!("qmp_server: {e}");
        ExitCode::FAILURE
    })
}

fn serve(config: &Config) -> ExitCode {
    let server = match server::Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qmp_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = server.run();
    if stats.violations.is_empty() {
        eprintln!(
            "qmp_server: invariant held: {} reports, each at the monitor running its command",
            stats.reports
        );
        ExitCode::SUCCESS
    } else {
        for v in &stats.violations {
            eprintln!("qmp_server: invariant broken: {v}");
        }
        ExitCode::FAILURE
    }
}
