//! QMP: the JSON stream, request checking, the commands, events.
//!
//! Wire facts follow QEMU's docs/interop/qmp-spec and its dispatcher: the
//! greeting, `qmp_capabilities` first, `{"execute", "arguments", "id"}`
//! answered by `{"return"}` or `{"error": {"class", "desc"}}` with the `id`
//! echoed, events with a timestamp, and QEMU's error classes and messages.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::hmp;
use crate::monitor::{
    error_report, with_cur_fd, with_world, CaptureMonitor, CoYielder, Kind, Wait, CUR_MON,
    MAX_NAMED_FDS, OUT_HARD_LIMIT,
};
use crate::sys;

/// A message larger than this (still incomplete) is refused.
pub const MAX_MESSAGE: usize = 4 << 20;

/// The greeting, sent when a client connects.
pub fn greeting() -> Value {
    json!({"QMP": {
        "version": {"qemu": {"major": 9, "minor": 2, "micro": 0}, "package": "co_local qmp_server"},
        "capabilities": []
    }})
}

/// One line of QMP output.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.extend_from_slice(b"\r\n");
    bytes
}

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

/// The response to a request with `id` (if it had one).
pub fn response(result: Result<Value, QmpError>, id: Option<Value>) -> Value {
    let mut obj = Map::new();
    match result {
        Ok(v) => obj.insert("return".into(), v),
        Err(e) => obj.insert("error".into(), json!({"class": e.class, "desc": e.desc})),
    };
    if let Some(id) = id {
        obj.insert("id".into(), id);
    }
    Value::Object(obj)
}

// ----------------------------------------------------------------------------
// The input stream.

/// Splits a byte stream into JSON values: a value may span reads, a read
/// may hold several. After a syntax error, input is skipped up to the next
/// newline after the error, so one bad line does not end the session.
#[derive(Debug, Default)]
pub struct JsonStream {
    buf: Vec<u8>,
    skip_line: bool,
}

impl JsonStream {
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut VecDeque<Result<Value, QmpError>>) {
        if self.skip_line {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    self.skip_line = false;
                    bytes = &bytes[nl + 1..];
                }
                None => return,
            }
        }
        self.buf.extend_from_slice(bytes);
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b" \t\r\n".contains(b))
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if self.buf.is_empty() {
                return;
            }
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                None => {
                    self.buf.clear();
                    return;
                }
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    out.push_back(Ok(value));
                }
                Some(Err(e)) if e.is_eof() => {
                    if self.buf.len() > MAX_MESSAGE {
                        out.push_back(Err(QmpError::generic(format!(
                            "JSON parse error, message longer than {MAX_MESSAGE} bytes"
                        ))));
                        self.resync(self.buf.len());
                    }
                    return;
                }
                Some(Err(e)) => {
                    let at = offset_of(&self.buf, e.line(), e.column());
                    out.push_back(Err(QmpError::generic(format!("JSON parse error, {e}"))));
                    self.resync(at);
                }
            }
        }
    }

    /// Drops the buffer through the first newline at or after `at`, or all
    /// of it and what comes until the next newline.
    fn resync(&mut self, at: usize) {
        let at = at.min(self.buf.len());
        match self.buf[at..].iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.buf.drain(..at + nl + 1);
            }
            None => {
                self.buf.clear();
                self.skip_line = true;
            }
        }
    }
}

/// The byte offset of serde_json's (line, column), both from 1.
fn offset_of(buf: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for _ in 1..line {
        match buf[offset..].iter().position(|&b| b == b'\n') {
            Some(nl) => offset += nl + 1,
            None => return buf.len(),
        }
    }
    (offset + column.saturating_sub(1)).min(buf.len())
}

// ----------------------------------------------------------------------------
// Commands.

/// A command's handler: a bottom half runs in the main loop, outside every
/// coroutine; a coroutine handler runs in a coroutine of its own.
#[derive(Clone, Copy, Debug)]
pub enum Handler {
    Bh(fn(&Map<String, Value>) -> Result<Value, QmpError>),
    Co(fn(&CoYielder, &Map<String, Value>) -> Result<Value, QmpError>),
}

/// A parameter's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Array,
}

/// A command of the table.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    /// Parameters: name, type, required.
    pub params: &'static [(&'static str, Ty, bool)],
    pub handler: Handler,
}

/// Every QMP command.
pub static COMMANDS: &[Command] = &[
    Command {
        name: "qmp_capabilities",
        params: &[("enable", Ty::Array, false)],
        handler: Handler::Bh(qmp_capabilities),
    },
    Command {
        name: "query-commands",
        params: &[],
        handler: Handler::Bh(query_commands),
    },
    Command {
        name: "query-status",
        params: &[],
        handler: Handler::Bh(query_status),
    },
    Command {
        name: "stop",
        params: &[],
        handler: Handler::Bh(stop),
    },
    Command {
        name: "cont",
        params: &[],
        handler: Handler::Bh(cont),
    },
    Command {
        name: "human-monitor-command",
        params: &[
            ("command-line", Ty::Str, true),
            ("cpu-index", Ty::Int, false),
        ],
        handler: Handler::Co(human_monitor_command),
    },
    Command {
        name: "getfd",
        params: &[("fdname", Ty::Str, true)],
        handler: Handler::Bh(getfd),
    },
    Command {
        name: "closefd",
        params: &[("fdname", Ty::Str, true)],
        handler: Handler::Bh(closefd),
    },
    Command {
        name: "x-write-fd",
        params: &[("fdname", Ty::Str, true), ("data", Ty::Str, true)],
        handler: Handler::Co(x_write_fd),
    },
    Command {
        name: "x-query-server-stats",
        params: &[],
        handler: Handler::Bh(x_query_server_stats),
    },
    Command {
        name: "quit",
        params: &[],
        handler: Handler::Bh(quit),
    },
];

/// What to do with one request.
#[derive(Debug)]
pub enum Prepared {
    /// Answer this right away (a bad request).
    Reply(Value),
    /// Run this command with these arguments; answer with the `id`.
    Run {
        command: &'static Command,
        args: Map<String, Value>,
        id: Option<Value>,
    },
}

/// Checks a request as QEMU's dispatcher does, in the same order.
pub fn prepare(request: Result<Value, QmpError>, negotiated: bool) -> Prepared {
    let request = match request {
        Ok(r) => r,
        Err(e) => return Prepared::Reply(response(Err(e), None)),
    };
    let Value::Object(mut obj) = request else {
        return Prepared::Reply(response(
            Err(QmpError::generic("QMP input must be a JSON object")),
            None,
        ));
    };
    let id = obj.remove("id");
    let fail = |e: QmpError, id: Option<Value>| Prepared::Reply(response(Err(e), id));
    for (key, value) in &obj {
        match key.as_str() {
            "execute" if !value.is_string() => {
                return fail(
                    QmpError::generic("QMP input member 'execute' must be a string"),
                    id,
                )
            }
            "arguments" if !value.is_object() => {
                return fail(
                    QmpError::generic("QMP input member 'arguments' must be an object"),
                    id,
                )
            }
            "execute" | "arguments" => {}
            other => {
                return fail(
                    QmpError::generic(format!("QMP input member '{other}' is unexpected")),
                    id,
                )
            }
        }
    }
    let Some(Value::String(name)) = obj.remove("execute") else {
        return fail(QmpError::generic("QMP input lacks member 'execute'"), id);
    };
    if !negotiated && name != "qmp_capabilities" {
        return fail(
            QmpError::not_found("Expecting capabilities negotiation with 'qmp_capabilities'"),
            id,
        );
    }
    if negotiated && name == "qmp_capabilities" {
        return fail(
            QmpError::not_found("Capabilities negotiation is already complete, command ignored"),
            id,
        );
    }
    let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
        return fail(
            QmpError::not_found(format!("The command {name} has not been found")),
            id,
        );
    };
    let args = match obj.remove("arguments") {
        Some(Value::Object(args)) => args,
        _ => Map::new(),
    };
    if let Err(e) = check_args(command, &args) {
        return fail(e, id);
    }
    Prepared::Run { command, args, id }
}

fn check_args(command: &Command, args: &Map<String, Value>) -> Result<(), QmpError> {
    for &(name, ty, required) in command.params {
        match args.get(name) {
            None if required => {
                return Err(QmpError::generic(format!("Parameter '{name}' is missing")))
            }
            None => {}
            Some(v) => {
                let (ok, expected) = match ty {
                    Ty::Str => (v.is_string(), "string"),
                    Ty::Int => (v.is_i64() || v.is_u64(), "integer"),
                    Ty::Array => (v.is_array(), "array"),
                };
                if !ok {
                    return Err(QmpError::generic(format!(
                        "Invalid parameter type for '{name}', expected: {expected}"
                    )));
                }
            }
        }
    }
    if let Some(extra) = args
        .keys()
        .find(|k| !command.params.iter().any(|p| p.0 == k.as_str()))
    {
        return Err(QmpError::generic(format!(
            "Parameter '{extra}' is unexpected"
        )));
    }
    Ok(())
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// Sends an event to every negotiated QMP monitor.
pub fn emit_event(name: &str, data: Option<Value>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut event = json!({
        "event": name,
        "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()},
    });
    if let Some(data) = data {
        event["data"] = data;
    }
    let line = encode(&event);
    with_world(|w| {
        let mut dropped = 0;
        for m in w.monitors.values_mut() {
            if m.kind == Kind::Qmp && m.negotiated {
                if m.out.len() > OUT_HARD_LIMIT {
                    dropped += 1;
                } else {
                    m.out.extend_from_slice(&line);
                }
            }
        }
        w.stats.events_dropped += dropped;
    });
}

fn qmp_capabilities(args: &Map<String, Value>) -> Result<Value, QmpError> {
    if let Some(cap) = args
        .get("enable")
        .and_then(Value::as_array)
        .and_then(|caps| caps.first())
    {
        let cap = cap.as_str().unwrap_or("?");
        return Err(QmpError::generic(format!(
            "Capability '{cap}' not available"
        )));
    }
    let cur = CUR_MON.get();
    with_world(|w| {
        if let Some(m) = cur.and_then(|id| w.monitors.get_mut(&id)) {
            m.negotiated = true;
        }
    });
    Ok(json!({}))
}

fn query_commands(_: &Map<String, Value>) -> Result<Value, QmpError> {
    Ok(COMMANDS
        .iter()
        .map(|c| json!({"name": c.name}))
        .collect::<Vec<_>>()
        .into())
}

fn query_status(_: &Map<String, Value>) -> Result<Value, QmpError> {
    let running = with_world(|w| w.vm_running);
    Ok(json!({"running": running, "status": if running { "running" } else { "paused" }}))
}

/// Stops or continues the VM; emits STOP or RESUME if the state changes.
pub fn set_running(running: bool) {
    let changed = with_world(|w| std::mem::replace(&mut w.vm_running, running) != running);
    if changed {
        emit_event(if running { "RESUME" } else { "STOP" }, None);
    }
}

fn stop(_: &Map<String, Value>) -> Result<Value, QmpError> {
    set_running(false);
    Ok(json!({}))
}

fn cont(_: &Map<String, Value>) -> Result<Value, QmpError> {
    set_running(true);
    Ok(json!({}))
}

/// Asks the server to stop, as `quit` does.
pub fn request_quit() {
    let first = with_world(|w| !std::mem::replace(&mut w.quit, true));
    if first {
        emit_event(
            "SHUTDOWN",
            Some(json!({"guest": false, "reason": "host-qmp-quit"})),
        );
    }
}

fn quit(_: &Map<String, Value>) -> Result<Value, QmpError> {
    request_quit();
    Ok(json!({}))
}

fn human_monitor_command(y: &CoYielder, args: &Map<String, Value>) -> Result<Value, QmpError> {
    let line = str_arg(args, "command-line");
    // CUR_MON is a temporary HMP monitor for the command's duration.
    let capture = CaptureMonitor::new();
    capture.run(|| hmp::run_line(Some(y), line));
    let out = capture.take_output();
    drop(capture);
    Ok(Value::String(
        String::from_utf8_lossy(&out).replace("\r\n", "\n"),
    ))
}

fn getfd(args: &Map<String, Value>) -> Result<Value, QmpError> {
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

fn closefd(args: &Map<String, Value>) -> Result<Value, QmpError> {
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
fn x_write_fd(y: &CoYielder, args: &Map<String, Value>) -> Result<Value, QmpError> {
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

fn x_query_server_stats(_: &Map<String, Value>) -> Result<Value, QmpError> {
    let stacks = co_runtime::stack_stats();
    Ok(with_world(|w| {
        json!({
            "monitors": w.monitors.len(),
            "in-flight": w.stats.in_flight,
            "peak-in-flight": w.stats.peak_in_flight,
            "open-fds": w.open_fds(),
            "commands": w.stats.commands,
            "reports": w.stats.reports,
            "violations": w.stats.violations.len(),
            "peak-output-backlog": w.stats.peak_out,
            "fds-refused": w.stats.fds_refused,
            "events-dropped": w.stats.events_dropped,
            "cancelled": w.stats.cancelled,
            "stacks-mapped": stacks.process_mapped,
        })
    }))
}

/// Sleeps on a main-loop timer: always suspends at least once, like a timer
/// callback that fires on a later main-loop turn.
pub fn sleep(y: &CoYielder, duration: Duration) {
    let deadline = Instant::now() + duration;
    loop {
        y.suspend(Wait::Until(deadline));
        if Instant::now() >= deadline {
            return;
        }
    }
}
