//! QMP: request checking, the commands, replies.
//!
//! Wire facts follow QEMU's docs/interop/qmp-spec and its dispatcher: the
//! greeting offering `oob`, `qmp_capabilities` first, `{"execute" |
//! "exec-oob", "arguments", "id"}` answered by `{"return"}` or `{"error":
//! {"class", "desc"}}` with the `id` echoed, QEMU's error classes and
//! messages, checked in QEMU's order (the members of a request in the order
//! QEMU's dictionary iterates them).

use std::io;

use serde_json::{json, Value};

use crate::hmp;
use crate::monitor::{
    error_report, run_outside_coroutines, with_cur_fd, with_world, CaptureMonitor, CoYielder, Kind,
    MonId, Wait, CUR_MON, MAX_NAMED_FDS,
};
use crate::qobject::{QDict, QObject};
use crate::sys;
use crate::vm;

/// A QMP error: class and description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QmpError {
    pub class: &'static str,
    pub desc: String,
}

impl QmpError {
    pub fn generic(desc: impl Into<String>) -> QmpError {
        QmpError {
            class: "GenericError",
            desc: desc.into(),
        }
    }

    pub fn not_found(desc: impl Into<String>) -> QmpError {
        QmpError {
            class: "CommandNotFound",
            desc: desc.into(),
        }
    }
}

/// The greeting, sent when a client connects.
pub fn greeting() -> QObject {
    QObject::from(json!({"QMP": {
        "version": vm::version_info(),
        "capabilities": ["oob"],
    }}))
}

/// The response to a request with `id` (if it had one).
pub fn response(result: Result<QObject, QmpError>, id: Option<QObject>) -> QObject {
    let mut rsp = QDict::new();
    match result {
        Ok(v) => rsp.insert("return", v),
        Err(e) => {
            let mut err = QDict::new();
            err.insert("class", QObject::Str(e.class.into()));
            err.insert("desc", QObject::Str(e.desc));
            rsp.insert("error", QObject::Dict(err));
        }
    }
    if let Some(id) = id {
        rsp.insert("id", id);
    }
    QObject::Dict(rsp)
}

// ----------------------------------------------------------------------------
// Commands.

type Args = QDict;
type Reply = Result<Value, QmpError>;

/// A command's handler: a bottom half runs outside every coroutine (in the
/// main loop, or out-of-band in the I/O thread); a coroutine handler runs
/// in a coroutine of its own in the main loop.
#[derive(Clone, Copy, Debug)]
pub enum Handler {
    Bh(fn(&Args) -> Reply),
    Co(fn(&CoYielder, &Args) -> Reply),
}

/// A parameter's type, as QAPI checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    /// A list of `QMPCapability` (`"oob"`).
    Capabilities,
    /// A list of `YankInstance`.
    YankInstances,
}

/// A command of the table.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    /// Parameters: name, type, required.
    pub params: &'static [(&'static str, Ty, bool)],
    pub handler: Handler,
    /// May run out-of-band (`exec-oob`).
    pub allow_oob: bool,
}

const fn bh(
    name: &'static str,
    params: &'static [(&'static str, Ty, bool)],
    f: fn(&Args) -> Reply,
) -> Command {
    Command {
        name,
        params,
        handler: Handler::Bh(f),
        allow_oob: false,
    }
}

/// Every QMP command.
pub static COMMANDS: &[Command] = &[
    bh(
        "qmp_capabilities",
        &[("enable", Ty::Capabilities, false)],
        qmp_capabilities,
    ),
    bh("query-commands", &[], query_commands),
    bh("query-version", &[], query_version),
    bh("query-name", &[], query_name),
    bh("query-status", &[], query_status),
    bh("stop", &[], stop),
    bh("cont", &[], cont),
    Command {
        name: "human-monitor-command",
        params: &[
            ("command-line", Ty::Str, true),
            ("cpu-index", Ty::Int, false),
        ],
        handler: Handler::Co(human_monitor_command),
        allow_oob: false,
    },
    bh("getfd", &[("fdname", Ty::Str, true)], getfd),
    bh("closefd", &[("fdname", Ty::Str, true)], closefd),
    Command {
        name: "x-write-fd",
        params: &[("fdname", Ty::Str, true), ("data", Ty::Str, true)],
        handler: Handler::Co(x_write_fd),
        allow_oob: false,
    },
    bh("x-query-server-stats", &[], x_query_server_stats),
    Command {
        name: "yank",
        params: &[("instances", Ty::YankInstances, true)],
        handler: Handler::Bh(yank),
        allow_oob: true,
    },
    bh("quit", &[], quit),
];

/// What to do with one request.
#[derive(Debug)]
pub enum Prepared {
    /// Answer this right away (a bad request).
    Reply(QObject),
    /// Run this command with these arguments; answer with the `id`.
    Run {
        command: &'static Command,
        args: QDict,
        id: Option<QObject>,
    },
}

/// Whether a request is to run out-of-band: it has `exec-oob` and no
/// `execute` (QEMU's test, made before any other check).
pub fn is_oob(request: &QObject) -> bool {
    request
        .as_dict()
        .is_some_and(|d| d.contains_key("exec-oob") && !d.contains_key("execute"))
}

/// Checks a request as QEMU's dispatcher does, in the same order, for a
/// monitor in the given state.
pub fn prepare(request: QObject, negotiated: bool, oob_enabled: bool) -> Prepared {
    let QObject::Dict(dict) = request else {
        return Prepared::Reply(response(
            Err(QmpError::generic("QMP input must be a JSON object")),
            None,
        ));
    };
    let id = dict.get("id").cloned();
    let fail =
        |e: QmpError| Prepared::Reply(response(Err(fix_not_found(e, negotiated)), id.clone()));
    let mut exec_key: Option<&str> = None;
    for (key, value) in dict.iter() {
        match key {
            "execute" | "exec-oob" if key == "execute" || oob_enabled => {
                if !matches!(value, QObject::Str(_)) {
                    return fail(QmpError::generic(format!(
                        "QMP input member '{key}' must be a string"
                    )));
                }
                if let Some(other) = exec_key {
                    return fail(QmpError::generic(format!(
                        "QMP input member '{key}' clashes with '{other}'"
                    )));
                }
                exec_key = Some(key);
            }
            "arguments" if !matches!(value, QObject::Dict(_)) => {
                return fail(QmpError::generic(
                    "QMP input member 'arguments' must be an object",
                ))
            }
            "arguments" | "id" => {}
            other => {
                return fail(QmpError::generic(format!(
                    "QMP input member '{other}' is unexpected"
                )))
            }
        }
    }
    let Some(exec_key) = exec_key else {
        return fail(QmpError::generic("QMP input lacks member 'execute'"));
    };
    let oob = exec_key == "exec-oob";
    let name = dict
        .get(exec_key)
        .and_then(QObject::as_str)
        .unwrap_or_default();
    // Before negotiation, only qmp_capabilities exists.
    let command = COMMANDS
        .iter()
        .find(|c| c.name == name && (negotiated || c.name == "qmp_capabilities"));
    let Some(command) = command else {
        return fail(QmpError::not_found(format!(
            "The command {name} has not been found"
        )));
    };
    if oob && !command.allow_oob {
        return fail(QmpError::generic(format!(
            "The command {name} does not support OOB"
        )));
    }
    let args = match dict.get("arguments") {
        Some(QObject::Dict(args)) => args.clone(),
        _ => QDict::new(),
    };
    if let Err(e) = check_args(command, &args) {
        return fail(e);
    }
    Prepared::Run { command, args, id }
}

/// Before negotiation QEMU replaces the text of every CommandNotFound.
pub fn fix_not_found(e: QmpError, negotiated: bool) -> QmpError {
    if !negotiated && e.class == "CommandNotFound" {
        QmpError::not_found("Expecting capabilities negotiation with 'qmp_capabilities'")
    } else {
        e
    }
}

fn invalid_type(name: &str, expected: &str) -> QmpError {
    QmpError::generic(format!(
        "Invalid parameter type for '{name}', expected: {expected}"
    ))
}

fn missing(name: &str) -> QmpError {
    QmpError::generic(format!("Parameter '{name}' is missing"))
}

/// The error for a key of `dict` that is none of `known` (the members the
/// command reads, in the order it reads them): the one QEMU names.
fn unexpected(dict: &QDict, known: &[&str], prefix: &str) -> Result<(), QmpError> {
    let taken: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| dict.contains_key(k))
        .collect();
    match dict.first_key_left(&taken) {
        Some(k) => Err(QmpError::generic(format!(
            "Parameter '{prefix}{k}' is unexpected"
        ))),
        None => Ok(()),
    }
}

fn check_args(command: &Command, args: &QDict) -> Result<(), QmpError> {
    for &(name, ty, required) in command.params {
        let Some(v) = args.get(name) else {
            if required {
                return Err(missing(name));
            }
            continue;
        };
        match ty {
            Ty::Str if !matches!(v, QObject::Str(_)) => return Err(invalid_type(name, "string")),
            // A `Uint` is above `i64::MAX`: not an integer here, as in QEMU.
            Ty::Int if !matches!(v, QObject::Int(_)) => return Err(invalid_type(name, "integer")),
            Ty::Capabilities => {
                let QObject::List(items) = v else {
                    return Err(invalid_type(name, "array"));
                };
                for (i, item) in items.iter().enumerate() {
                    match item {
                        QObject::Str(s) if s == "oob" => {}
                        // QAPI names an enum inside a list 'null'.
                        QObject::Str(s) => {
                            return Err(QmpError::generic(format!(
                                "Parameter 'null' does not accept value '{s}'"
                            )))
                        }
                        _ => return Err(invalid_type(&format!("{name}[{i}]"), "string")),
                    }
                }
            }
            Ty::YankInstances => {
                let QObject::List(items) = v else {
                    return Err(invalid_type(name, "array"));
                };
                for (i, item) in items.iter().enumerate() {
                    check_yank_instance(&format!("{name}[{i}]"), item)?;
                }
            }
            Ty::Str | Ty::Int => {}
        }
    }
    let known: Vec<&str> = command.params.iter().map(|p| p.0).collect();
    unexpected(args, &known, "")
}

fn check_yank_instance(name: &str, item: &QObject) -> Result<(), QmpError> {
    let QObject::Dict(d) = item else {
        return Err(invalid_type(name, "object"));
    };
    let ty = match d.get("type") {
        None => return Err(missing(&format!("{name}.type"))),
        Some(QObject::Str(s)) => s.as_str(),
        Some(_) => return Err(invalid_type(&format!("{name}.type"), "string")),
    };
    let member = match ty {
        "block-node" => Some("node-name"),
        "chardev" => Some("id"),
        "migration" => None,
        other => {
            return Err(QmpError::generic(format!(
                "Parameter 'type' does not accept value '{other}'"
            )))
        }
    };
    if let Some(member) = member {
        match d.get(member) {
            None => return Err(missing(&format!("{name}.{member}"))),
            Some(QObject::Str(_)) => {}
            Some(_) => return Err(invalid_type(&format!("{name}.{member}"), "string")),
        }
    }
    let known: Vec<&str> = ["type"].into_iter().chain(member).collect();
    unexpected(d, &known, &format!("{name}."))
}

fn str_arg<'a>(args: &'a Args, name: &str) -> &'a str {
    args.get(name).and_then(QObject::as_str).unwrap_or_default()
}

/// Runs an out-of-band request at once on this (the I/O) thread, outside
/// every coroutine, with `CUR_MON` set to `mon` on the thread's own block:
/// its reply.
pub fn dispatch_oob(mon: MonId, request: QObject, negotiated: bool, oob_enabled: bool) -> QObject {
    match prepare(request, negotiated, oob_enabled) {
        Prepared::Reply(reply) => reply,
        Prepared::Run { command, args, id } => {
            with_world(|w| w.stats.oob_commands += 1);
            let Handler::Bh(f) = command.handler else {
                unreachable!("out-of-band commands run outside coroutines");
            };
            run_bh(mon, command.name, f, &args, id)
        }
    }
}

/// Runs a command that never suspends at once, outside every coroutine,
/// with `CUR_MON` set to `mon`: its reply, a panic of its handler answered
/// as an error.
pub fn run_bh(
    mon: MonId,
    name: &str,
    f: fn(&Args) -> Reply,
    args: &Args,
    id: Option<QObject>,
) -> QObject {
    let result =
        run_outside_coroutines(mon, name, || f(args)).unwrap_or_else(|()| Err(panicked(name)));
    response(result.map(QObject::from), id)
}

/// The error of a command that panicked.
pub fn panicked(name: &str) -> QmpError {
    QmpError::generic(format!("internal error: '{name}' panicked"))
}

fn qmp_capabilities(args: &Args) -> Reply {
    let cur = CUR_MON.get();
    let oob = matches!(args.get("enable"), Some(QObject::List(l)) if !l.is_empty());
    with_world(|w| {
        let m = cur
            .and_then(|id| w.monitors.get_mut(&id))
            .ok_or_else(|| QmpError::generic("No monitor"))?;
        if m.negotiated {
            return Err(QmpError::not_found(
                "Capabilities negotiation is already complete, command ignored",
            ));
        }
        m.negotiated = true;
        m.oob = oob;
        Ok(json!({}))
    })
}

fn query_commands(_: &Args) -> Reply {
    Ok(COMMANDS
        .iter()
        .map(|c| json!({"name": c.name}))
        .collect::<Vec<_>>()
        .into())
}

fn query_version(_: &Args) -> Reply {
    Ok(vm::version_info())
}

fn query_name(_: &Args) -> Reply {
    Ok(json!({"name": vm::NAME}))
}

fn query_status(_: &Args) -> Reply {
    let running = vm::running();
    Ok(json!({"running": running, "status": if running { "running" } else { "paused" }}))
}

fn stop(_: &Args) -> Reply {
    vm::set_running(false);
    Ok(json!({}))
}

fn cont(_: &Args) -> Reply {
    vm::set_running(true);
    Ok(json!({}))
}

fn quit(_: &Args) -> Reply {
    vm::request_quit("host-qmp-quit");
    Ok(json!({}))
}

/// Shuts down the connections named by `chardev` instances (each connection
/// is a chardev named as its monitor), as QEMU's yank shuts a chardev's
/// socket down; `error_report()`s each through `CUR_MON`. An instance that
/// does not exist fails the command before anything is yanked.
fn yank(args: &Args) -> Reply {
    let Some(QObject::List(instances)) = args.get("instances") else {
        return Err(missing("instances"));
    };
    let ids = with_world(|w| {
        instances
            .iter()
            .map(|inst| {
                let d = inst.as_dict()?;
                if d.get("type")?.as_str()? != "chardev" {
                    return None;
                }
                let name = d.get("id")?.as_str()?;
                w.monitors
                    .iter()
                    .find(|(_, m)| {
                        m.name == name && !m.hung_up && matches!(m.kind, Kind::Qmp | Kind::Hmp)
                    })
                    .map(|(id, m)| (*id, m.name.clone()))
            })
            .collect::<Option<Vec<_>>>()
    });
    let Some(ids) = ids else {
        return Err(QmpError {
            class: "DeviceNotFound",
            desc: "Instance not found".into(),
        });
    };
    for (id, name) in ids {
        with_world(|w| w.yanked.push(id));
        error_report(&format!("yank: chardev '{name}' shut down"));
    }
    Ok(json!({}))
}

fn human_monitor_command(y: &CoYielder, args: &Args) -> Reply {
    let line = str_arg(args, "command-line");
    // CUR_MON is a temporary HMP monitor for the command's duration.
    let capture = CaptureMonitor::new();
    capture.run(|| hmp::run_line(y, line));
    let out = capture.take_output();
    drop(capture);
    // As QEMU returns it: the monitor's own output, each newline written
    // as CRLF.
    Ok(Value::String(String::from_utf8_lossy(&out).into_owned()))
}

fn getfd(args: &Args) -> Reply {
    let name = str_arg(args, "fdname");
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(QmpError::generic(
            "Parameter 'fdname' expects a name not starting with a digit",
        ));
    }
    let cur = CUR_MON.get();
    with_world(|w| {
        let m = cur
            .and_then(|id| w.monitors.get_mut(&id))
            .ok_or_else(|| QmpError::generic("No monitor"))?;
        if !m.named_fds.contains_key(name) && m.named_fds.len() >= MAX_NAMED_FDS {
            return Err(QmpError::generic(format!(
                "Too many file descriptors named in this monitor (at most {MAX_NAMED_FDS})"
            )));
        }
        let fd = m
            .pending_fds
            .pop_front()
            .ok_or_else(|| QmpError::generic("No file descriptor supplied via SCM_RIGHTS"))?;
        let _ = sys::set_nonblocking(std::os::fd::AsFd::as_fd(&fd));
        m.named_fds.insert(name.to_string(), fd);
        Ok(json!({}))
    })
}

fn closefd(args: &Args) -> Reply {
    let name = str_arg(args, "fdname");
    let cur = CUR_MON.get();
    let closed = with_world(|w| {
        cur.and_then(|id| w.monitors.get_mut(&id))
            .and_then(|m| m.named_fds.remove(name))
    });
    match closed {
        Some(fd) => {
            drop(fd);
            Ok(json!({}))
        }
        None => Err(fd_not_found(name)),
    }
}

fn fd_not_found(name: &str) -> QmpError {
    QmpError::generic(format!("File descriptor named '{name}' not found"))
}

/// Writes `data` to the current monitor's descriptor `fdname`, suspending
/// to the main loop while the descriptor would block.
fn x_write_fd(y: &CoYielder, args: &Args) -> Reply {
    let name = str_arg(args, "fdname");
    let data = str_arg(args, "data").as_bytes();
    let mut written = 0;
    while written < data.len() {
        let result = with_cur_fd(name, |fd| {
            let r = sys::write_fd(fd, &data[written..]);
            (std::os::fd::AsRawFd::as_raw_fd(&fd), r)
        });
        match result {
            None => return Err(fd_not_found(name)),
            Some((_, Ok(n))) => written += n,
            Some((raw, Err(e))) if e.kind() == io::ErrorKind::WouldBlock => {
                y.suspend(Wait::Writable(raw));
            }
            Some((_, Err(e))) if e.kind() == io::ErrorKind::Interrupted => {}
            Some((_, Err(e))) => {
                error_report(&format!("x-write-fd: writing to '{name}': {e}"));
                return Err(QmpError::generic(format!(
                    "Cannot write to file descriptor '{name}': {e}"
                )));
            }
        }
    }
    Ok(json!({}))
}

fn x_query_server_stats(_: &Args) -> Reply {
    let stacks = co_runtime::stack_stats();
    let cur = CUR_MON.get();
    Ok(with_world(|w| {
        json!({
            "self": w.name(cur),
            "monitors": w.monitors.len(),
            "in-flight": w.stats.in_flight,
            "peak-in-flight": w.stats.peak_in_flight,
            "open-fds": w.open_fds(),
            "commands": w.stats.commands,
            "oob-commands": w.stats.oob_commands,
            "reports": w.stats.reports,
            "oob-reports": w.stats.oob_reports,
            "violations": w.stats.violations.len(),
            "peak-output-backlog": w.stats.peak_out,
            "peak-queue": w.stats.peak_queue,
            "peak-parser-bytes": w.stats.peak_parser_bytes,
            "fds-refused": w.stats.fds_refused,
            "events-dropped": w.stats.events_dropped,
            "cancelled": w.stats.cancelled,
            "stacks-mapped": stacks.process_mapped,
        })
    }))
}
