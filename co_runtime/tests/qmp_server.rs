//! The qmp_server example over real Unix sockets: the server runs on a
//! thread of this process, clients talk to it as any client would.
//!
//! `python_qemu_qmp_client` drives it with QEMU's own Python client
//! (`qemu.qmp`) when `QMP_PYTHON` names an interpreter that has it (`.ci/run`
//! makes such a venv); without `QMP_PYTHON` that test says it was skipped.

include!("qmp_common/example.rs");
mod qmp_common;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use client::{HmpClient, QmpClient};
use monitor::Stats;
use qmp_common::Server;

/// The clients of the example and the counters, for a server of
/// `qmp_common` (here started with `Server::start_with(false)`, reporting
/// to stderr as the binary does).
impl Server {
    fn qmp_client(&self) -> QmpClient {
        QmpClient::connect_negotiated(&self.qmp).unwrap()
    }

    fn hmp_client(&self) -> HmpClient {
        HmpClient::connect(&self.hmp).unwrap().0
    }

    /// Stops the server and returns its counters (see `join`).
    fn finish(mut self) -> Stats {
        self.join(true)
    }

    /// The server's counters, asked over QMP, once `ready` holds for them
    /// (polled for at most 10 s).
    fn stats_when(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let mut c = self.qmp_client();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = c
                .execute("x-query-server-stats", json!({}))
                .unwrap()
                .unwrap();
            if ready(&stats) || Instant::now() > deadline {
                return stats;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn err(class: &str, desc: &str) -> Result<Value, (String, String)> {
    Err((class.to_string(), desc.to_string()))
}

fn raw_reply(c: &mut QmpClient, bytes: &[u8]) -> Value {
    c.send_raw(bytes).unwrap();
    c.reply().unwrap()
}

#[test]
fn negotiation_greeting_and_ids() {
    let f = Server::start_with(false);
    let (mut c, greeting) = QmpClient::connect(&f.qmp).unwrap();
    let version = &greeting["QMP"]["version"];
    assert!(version["qemu"]["major"].is_u64() && version["qemu"]["micro"].is_u64());
    assert!(version["package"].is_string());
    assert_eq!(greeting["QMP"]["capabilities"], json!(["oob"]));

    assert_eq!(
        c.execute("query-status", json!({})).unwrap(),
        err(
            "CommandNotFound",
            "Expecting capabilities negotiation with 'qmp_capabilities'"
        )
    );
    assert_eq!(
        c.execute("qmp_capabilities", json!({"enable": ["bogus"]}))
            .unwrap(),
        err(
            "GenericError",
            "Parameter 'null' does not accept value 'bogus'"
        )
    );
    assert_eq!(
        c.execute("qmp_capabilities", json!({})).unwrap(),
        Ok(json!({}))
    );
    assert_eq!(
        c.execute("qmp_capabilities", json!({})).unwrap(),
        err(
            "CommandNotFound",
            "Capabilities negotiation is already complete, command ignored"
        )
    );
    // Any JSON value is an id, echoed as is; no id, no id.
    for id in [json!("a string"), json!(7), json!({"nested": [1, null]})] {
        let mut line = serde_json::to_vec(&json!({"execute": "query-status", "id": id})).unwrap();
        line.push(b'\n');
        let reply = raw_reply(&mut c, &line);
        assert_eq!(reply["id"], id);
        assert_eq!(reply["return"]["status"], "running");
    }
    let reply = raw_reply(&mut c, b"{\"execute\": \"query-status\"}\n");
    assert!(reply.get("id").is_none(), "{reply}");
    let names: Vec<Value> = c
        .execute("query-commands", json!({}))
        .unwrap()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert!(names.contains(&json!("human-monitor-command")));
    drop(c);
    f.finish();
}

#[test]
fn qmp_errors_and_bad_input() {
    let f = Server::start_with(false);
    let mut c = f.qmp_client();
    assert_eq!(
        c.execute("no-such", json!({})).unwrap(),
        err("CommandNotFound", "The command no-such has not been found")
    );
    assert_eq!(
        c.execute("getfd", json!({})).unwrap(),
        err("GenericError", "Parameter 'fdname' is missing")
    );
    assert_eq!(
        c.execute(
            "human-monitor-command",
            json!({"command-line": "", "cpu-index": "x"})
        )
        .unwrap(),
        err(
            "GenericError",
            "Invalid parameter type for 'cpu-index', expected: integer"
        )
    );
    assert_eq!(
        c.execute("closefd", json!({"fdname": "a", "extra": 1}))
            .unwrap(),
        err("GenericError", "Parameter 'extra' is unexpected")
    );
    let generic = |reply: &Value| reply["error"]["class"] == "GenericError";
    let desc = |reply: &Value| {
        reply["error"]["desc"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let reply = raw_reply(&mut c, b"[1, 2]\n");
    assert_eq!(desc(&reply), "QMP input must be a JSON object");
    let reply = raw_reply(&mut c, b"{\"execute\": 1}\n");
    assert_eq!(desc(&reply), "QMP input member 'execute' must be a string");
    let reply = raw_reply(&mut c, b"{\"execute\": \"stop\", \"arguments\": []}\n");
    assert_eq!(
        desc(&reply),
        "QMP input member 'arguments' must be an object"
    );
    let reply = raw_reply(&mut c, b"{\"arguments\": {}}\n");
    assert_eq!(desc(&reply), "QMP input lacks member 'execute'");
    let reply = raw_reply(&mut c, b"{\"exec-oob\": \"stop\"}\n");
    assert_eq!(desc(&reply), "QMP input member 'exec-oob' is unexpected");

    // Malformed JSON: an error, and the monitor keeps going. Here two, as
    // QEMU: "-s" cannot start a token; recovery skips to the '}', which
    // closes nothing.
    let reply = raw_reply(&mut c, b"{\"execute\": query-status}\n");
    assert_eq!(desc(&reply), "JSON parse error, stray '-s'");
    let reply = c.reply().unwrap();
    assert!(generic(&reply), "{reply}");
    assert_eq!(desc(&reply), "JSON parse error, expecting value");
    // Truncated JSON, then a line that cannot continue it.
    let reply = raw_reply(
        &mut c,
        b"{\"execute\": \"query-status\", \"arguments\": {\n]\n",
    );
    assert!(
        generic(&reply) && desc(&reply).starts_with("JSON parse error"),
        "{reply}"
    );
    // Bytes that are not UTF-8, inside and outside a string: a lexical
    // error for each byte QEMU's lexer refuses (0xFF, 0xFE), then the
    // unbalanced '}' it resynchronises on; then a lone lead byte, and 0xFF
    // after the '(' recovery skipped.
    let descs: Vec<String> = {
        c.send_raw(b"{\"execute\": \"qu\xff\xfery\"}\n\xc3\x28\xff\n")
            .unwrap();
        (0..5).map(|_| desc(&c.reply().unwrap())).collect()
    };
    assert_eq!(
        descs,
        [
            "JSON parse error, stray '\"qu\u{fffd}'",
            "JSON parse error, stray '\u{fffd}'",
            "JSON parse error, expecting value",
            "JSON parse error, stray '\u{fffd}'",
            "JSON parse error, stray '\u{fffd}'",
        ]
    );
    assert_eq!(
        c.execute("query-status", json!({})).unwrap().unwrap()["running"],
        true
    );

    // Several objects in one write; one object over several writes.
    c.send_raw(
        b"{\"execute\": \"query-status\", \"id\": 1}{\"execute\": \"query-status\", \"id\": 2}\n",
    )
    .unwrap();
    assert_eq!(c.reply().unwrap()["id"], 1);
    assert_eq!(c.reply().unwrap()["id"], 2);
    for piece in [
        &b"{\"exec"[..],
        b"ute\": \"query-",
        b"status\", \"id\"",
        b": 3}\n",
    ] {
        c.send_raw(piece).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.reply().unwrap()["id"], 3);

    // A 1 MiB line: answered, here with the 1 MiB report it asked for.
    let text = "x".repeat(1 << 20);
    let got = c
        .execute(
            "human-monitor-command",
            json!({"command-line": format!("report-now {text}")}),
        )
        .unwrap()
        .unwrap();
    assert_eq!(got.as_str().map(str::len), Some(text.len() + 2)); // CRLF
                                                                  // 5 MiB in one message: within QEMU's 64 MiB.
    let text = "y".repeat(5 << 20);
    let got = c
        .execute(
            "human-monitor-command",
            json!({"command-line": format!("report-now {text}")}),
        )
        .unwrap()
        .unwrap();
    assert_eq!(got.as_str().map(str::len), Some(text.len() + 2)); // CRLF
    drop(c);
    f.finish();
}

#[test]
fn hmp_session() {
    let f = Server::start_with(false);
    let (mut h, banner) = HmpClient::connect(&f.hmp).unwrap();
    assert!(
        banner.starts_with("QEMU ") && banner.contains("monitor"),
        "{banner}"
    );
    assert!(h.cmd("help").unwrap().contains("report-now TEXT"));
    assert_eq!(h.cmd("info status").unwrap(), "VM status: running\n");
    assert_eq!(h.cmd("stop").unwrap(), "");
    assert_eq!(h.cmd("info status").unwrap(), "VM status: paused\n");
    assert_eq!(h.cmd("cont").unwrap(), "");
    assert_eq!(h.cmd("report 5 after a timer").unwrap(), "after a timer\n");
    assert_eq!(h.cmd("report-now at once").unwrap(), "at once\n");
    assert_eq!(
        h.cmd("frobnicate 1").unwrap(),
        "unknown command: 'frobnicate'\n"
    );
    assert_eq!(
        h.cmd("report soon x").unwrap(),
        "report: usage: report MS TEXT\n"
    );
    assert_eq!(h.cmd("").unwrap(), "");
    // Not UTF-8, and a line too long: answered, and the monitor goes on.
    assert_eq!(
        h.cmd_bytes(b"report-now \xff\xfe\n").unwrap(),
        "\u{fffd}\u{fffd}\n"
    );
    let long = "z".repeat(hmp::MAX_LINE + 10);
    assert!(h.cmd(&long).unwrap().contains("longer than"));
    assert_eq!(h.cmd("info status").unwrap(), "VM status: running\n");
    drop(h);
    let stats = f.finish();
    assert_eq!(stats.stderr_reports, 0);
}

#[test]
fn reports_of_concurrent_clients_stay_with_them() {
    let f = Server::start_with(false);
    let result = load::run(&f.qmp, 8, 25).unwrap();
    assert!(result.crossed.is_empty(), "{:#?}", result.crossed);
    assert_eq!(result.commands, 200);
    // HMP monitors at the same time: their reports reach them only.
    let handles: Vec<_> = (0..3)
        .map(|n| {
            let path = f.hmp.clone();
            thread::spawn(move || {
                let (mut h, _) = HmpClient::connect(&path).unwrap();
                for i in 0..10 {
                    let tag = format!("hmp {n} #{i}");
                    assert_eq!(
                        h.cmd(&format!("report {} {tag}", i % 3)).unwrap(),
                        format!("{tag}\n")
                    );
                }
            })
        })
        .collect();
    let result = load::run(&f.qmp, 4, 10).unwrap();
    assert!(result.crossed.is_empty(), "{:#?}", result.crossed);
    for h in handles {
        h.join().unwrap();
    }
    let stats = f.finish();
    // Each load client also yanks a spare connection out-of-band, which
    // reports from the I/O thread.
    assert_eq!(stats.reports, 200 + 40 + 30 + 8 + 4);
    assert_eq!(stats.oob_reports, 8 + 4);
    assert!(stats.peak_in_flight > 1, "commands never interleaved");
}

#[test]
fn fd_passing_is_per_monitor() {
    let f = Server::start_with(false);
    let mut owner = f.qmp_client();
    let mut other = f.qmp_client();
    let (mine, theirs) = UnixStream::pair().unwrap();
    assert_eq!(
        owner.execute("getfd", json!({"fdname": "p"})).unwrap(),
        err("GenericError", "No file descriptor supplied via SCM_RIGHTS")
    );
    owner.send_fd(theirs.as_fd()).unwrap();
    drop(theirs);
    assert_eq!(
        owner.execute("getfd", json!({"fdname": "p"})).unwrap(),
        Ok(json!({}))
    );
    assert_eq!(
        owner.execute("getfd", json!({"fdname": "9p"})).unwrap(),
        err(
            "GenericError",
            "Parameter 'fdname' expects a name not starting with a digit"
        )
    );
    assert_eq!(
        owner
            .execute("x-write-fd", json!({"fdname": "p", "data": "to the pipe"}))
            .unwrap(),
        Ok(json!({}))
    );
    mine.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0; 32];
    let n = (&mine).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"to the pipe");
    for (cmd, args) in [
        ("x-write-fd", json!({"fdname": "p", "data": "x"})),
        ("closefd", json!({"fdname": "p"})),
    ] {
        assert_eq!(
            other.execute(cmd, args).unwrap(),
            err("GenericError", "File descriptor named 'p' not found")
        );
    }
    assert_eq!(
        owner.execute("closefd", json!({"fdname": "p"})).unwrap(),
        Ok(json!({}))
    );
    // Closed: the other end sees the end of the stream.
    assert_eq!((&mine).read(&mut buf).unwrap(), 0);
    assert_eq!(
        owner.execute("closefd", json!({"fdname": "p"})).unwrap(),
        err("GenericError", "File descriptor named 'p' not found")
    );
    drop((owner, other));
    f.finish();
}

#[test]
fn x_write_fd_suspends_while_the_fd_would_block() {
    let f = Server::start_with(false);
    let mut writer = f.qmp_client();
    let (mine, theirs) = UnixStream::pair().unwrap();
    writer.send_fd(theirs.as_fd()).unwrap();
    drop(theirs);
    writer
        .execute("getfd", json!({"fdname": "slow"}))
        .unwrap()
        .unwrap();
    let data = "d".repeat(4 << 20);
    let mut line = serde_json::to_vec(
        &json!({"execute": "x-write-fd", "arguments": {"fdname": "slow", "data": data}, "id": "w"}),
    )
    .unwrap();
    line.push(b'\n');
    writer.send_raw(&line).unwrap();
    // The write blocks: the command waits in its coroutine while other
    // monitors are served, and its own monitor answers nothing else yet.
    let stats = f.stats_when(|s| s["in-flight"] == 1);
    assert_eq!(stats["in-flight"], 1);
    let mut h = f.hmp_client();
    assert_eq!(h.cmd("report 1 meanwhile").unwrap(), "meanwhile\n");
    // Reading the other end lets it finish.
    mine.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut total = 0;
    let mut buf = vec![0; 64 << 10];
    while total < data.len() {
        let n = (&mine).read(&mut buf).unwrap();
        assert!(n > 0);
        total += n;
    }
    let reply = writer.reply().unwrap();
    assert_eq!(reply, json!({"return": {}, "id": "w"}));
    drop((writer, h));
    f.finish();
}

#[test]
fn stop_and_cont_events_reach_every_qmp_client() {
    let f = Server::start_with(false);
    let mut clients: Vec<QmpClient> = (0..3).map(|_| f.qmp_client()).collect();
    let mut h = f.hmp_client();
    clients[0].execute("stop", json!({})).unwrap().unwrap();
    // Already stopped: no second event.
    clients[0].execute("stop", json!({})).unwrap().unwrap();
    assert_eq!(h.cmd("cont").unwrap(), "");
    for c in &mut clients {
        assert_eq!(
            c.execute("query-status", json!({})).unwrap().unwrap()["status"],
            "running"
        );
        let names: Vec<&str> = c
            .events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["STOP", "RESUME"]);
        for e in &c.events {
            assert!(e["timestamp"]["seconds"].is_u64());
            assert!(e["timestamp"]["microseconds"].as_u64().unwrap() < 1_000_000);
        }
    }
    drop((clients, h));
    f.finish();
}

#[test]
fn a_client_that_leaves_during_its_command_leaks_nothing() {
    let f = Server::start_with(false);
    let mut h = f.hmp_client();
    h.send("report 30000 never printed").unwrap();
    let mut q = f.qmp_client();
    q.send_raw(b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"report 30000 lost\"}}\n")
        .unwrap();
    // A QMP client blocked in x-write-fd on a socket nobody reads.
    let mut w = f.qmp_client();
    let (peer, theirs) = UnixStream::pair().unwrap();
    w.send_fd(theirs.as_fd()).unwrap();
    w.send_fd(theirs.as_fd()).unwrap(); // one for getfd, one left pending
    drop(theirs);
    w.execute("getfd", json!({"fdname": "stuck"}))
        .unwrap()
        .unwrap();
    let big = "b".repeat(2 << 20);
    let mut line = serde_json::to_vec(
        &json!({"execute": "x-write-fd", "arguments": {"fdname": "stuck", "data": big}}),
    )
    .unwrap();
    line.push(b'\n');
    w.send_raw(&line).unwrap();
    let stats = f.stats_when(|s| s["in-flight"] == 3);
    assert_eq!(stats["in-flight"], 3, "{stats}");
    assert_eq!(stats["open-fds"], 2, "{stats}");
    drop((h, q, w));
    let stats = f.stats_when(|s| s["monitors"] == 1 && s["in-flight"] == 0);
    assert_eq!(stats["monitors"], 1, "{stats}");
    assert_eq!(stats["in-flight"], 0, "{stats}");
    assert_eq!(stats["open-fds"], 0, "{stats}");
    assert_eq!(stats["cancelled"], 3, "{stats}");
    // The server's descriptors are closed: the peer sees the end.
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0; 64 << 10];
    while (&peer).read(&mut buf).unwrap() > 0 {}
    let stats = f.finish();
    assert_eq!(stats.cancelled, 3);
    // One line on stderr per cancelled command, from the main loop.
    assert_eq!(stats.stderr_reports, 3);
}

#[test]
fn a_client_that_never_reads_is_throttled_and_others_are_served() {
    let f = Server::start_with(false);
    let mut lazy = f.qmp_client();
    lazy.stream.set_nonblocking(true).unwrap();
    let request = b"{\"execute\": \"query-commands\"}\n";
    let mut sent = 0usize;
    let mut blocked = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Bounded: the server must stop reading long before 64 MiB.
    while sent < (64 << 20) && Instant::now() < deadline {
        match lazy.stream.write(request) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(blocked, "the server read {sent} bytes without stopping");
    let mut other = f.qmp_client();
    assert_eq!(
        other.execute("query-status", json!({})).unwrap().unwrap()["running"],
        true
    );
    let stats = other
        .execute("x-query-server-stats", json!({}))
        .unwrap()
        .unwrap();
    let backlog = stats["peak-output-backlog"].as_u64().unwrap() as usize;
    assert!(backlog < monitor::OUT_SOFT_LIMIT + (64 << 10), "{stats}");
    drop((lazy, other));
    f.finish();
}

#[test]
fn a_monitor_keeps_a_bounded_number_of_fds() {
    let f = Server::start_with(false);
    let mut c = f.qmp_client();
    let (_mine, theirs) = UnixStream::pair().unwrap();
    for _ in 0..monitor::MAX_PENDING_FDS + 4 {
        c.send_fd(theirs.as_fd()).unwrap();
    }
    for i in 0..monitor::MAX_PENDING_FDS {
        assert_eq!(
            c.execute("getfd", json!({"fdname": format!("f{i}")}))
                .unwrap(),
            Ok(json!({}))
        );
    }
    assert_eq!(
        c.execute("getfd", json!({"fdname": "extra"})).unwrap(),
        err("GenericError", "No file descriptor supplied via SCM_RIGHTS")
    );
    let stats = c
        .execute("x-query-server-stats", json!({}))
        .unwrap()
        .unwrap();
    assert_eq!(stats["fds-refused"], 4);
    // Named descriptors are bounded too.
    for i in monitor::MAX_PENDING_FDS..monitor::MAX_NAMED_FDS {
        c.send_fd(theirs.as_fd()).unwrap();
        assert_eq!(
            c.execute("getfd", json!({"fdname": format!("f{i}")}))
                .unwrap(),
            Ok(json!({}))
        );
    }
    c.send_fd(theirs.as_fd()).unwrap();
    let (class, desc) = c
        .execute("getfd", json!({"fdname": "one-too-many"}))
        .unwrap()
        .unwrap_err();
    assert_eq!(class, "GenericError");
    assert!(desc.starts_with("Too many file descriptors"), "{desc}");
    // Replacing a name is fine.
    assert_eq!(
        c.execute("getfd", json!({"fdname": "f0"})).unwrap(),
        Ok(json!({}))
    );
    let stats = c
        .execute("x-query-server-stats", json!({}))
        .unwrap()
        .unwrap();
    assert_eq!(stats["open-fds"], monitor::MAX_NAMED_FDS);
    drop(c);
    let stats = f.stats_when(|s| s["open-fds"] == 0);
    assert_eq!(stats["open-fds"], 0);
    f.finish();
}

#[test]
fn quit_stops_the_server_and_removes_its_sockets() {
    let mut f = Server::start_with(false);
    let mut c = f.qmp_client();
    let mut watcher = f.qmp_client();
    assert_eq!(c.execute("quit", json!({})).unwrap(), Ok(json!({})));
    let stats = f.thread.take().unwrap().join().unwrap();
    assert!(stats.violations.is_empty());
    assert!(!f.qmp.exists() && !f.hmp.exists());
    // Both monitors got SHUTDOWN before their connections closed; the
    // quitting one after quit's reply (execute returned it above).
    for client in [&mut c, &mut watcher] {
        let event = client.recv().unwrap();
        assert_eq!(event["event"], "SHUTDOWN");
        assert_eq!(
            event["data"],
            json!({"guest": false, "reason": "host-qmp-quit"})
        );
        assert!(client.recv().is_err(), "the connection is closed");
    }
}

#[test]
fn python_qemu_qmp_client() {
    let Some(python) = std::env::var_os("QMP_PYTHON") else {
        println!("skipped: QMP_PYTHON is not set (.ci/run sets it to a venv with qemu.qmp)");
        return;
    };
    let f = Server::start_with(false);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/qmp_interop.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&f.qmp)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{python:?} {script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("qmp_interop: ok"), "{stdout}\n{stderr}");
    println!("{stdout}");
    let stats = f.finish();
    assert!(stats.reports >= 160, "{stats:?}");
}
