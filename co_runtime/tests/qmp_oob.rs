//! Out-of-band execution in qmp_server: the `oob` capability, `exec-oob`
//! overtaking queued in-band commands (qmp-test's oob case), QEMU's flow
//! control (at most 8 queued in-band requests before the I/O thread stops
//! reading a monitor), and `CUR_MON` on the I/O thread.

include!("qmp_common/example.rs");
mod qmp_common;

use std::time::Duration;

use qmp_common::{generic_with_id as generic, id_of, Blocker, Raw, Server};

#[test]
fn the_oob_capability() {
    let server = Server::start();
    let (mut raw, greeting) = Raw::connect(&server.qmp);
    assert!(greeting.ends_with(b"\"capabilities\": [\"oob\"]}}\r\n"));
    // exec-oob is unexpected until oob is enabled.
    assert_eq!(
        raw.ask(b"{\"exec-oob\": \"query-version\", \"id\": \"a\"}"),
        generic("QMP input member 'exec-oob' is unexpected", Some("a"))
    );
    assert_eq!(
        raw.ask(
            b"{'execute': 'qmp_capabilities', 'arguments': {'enable': ['cap-does-not-exist']}}"
        ),
        generic(
            "Parameter 'null' does not accept value 'cap-does-not-exist'",
            None
        )
    );
    assert_eq!(
        raw.ask(b"{'execute': 'qmp_capabilities', 'arguments': {'enable': ['oob']}}"),
        b"{\"return\": {}}\r\n"
    );
    // A command that does not allow out-of-band execution is refused there.
    assert_eq!(
        raw.ask(b"{\"exec-oob\": \"query-version\", \"id\": \"b\"}"),
        generic("The command query-version does not support OOB", Some("b"))
    );
    assert_eq!(
        raw.ask(b"{\"execute\": \"query-name\", \"exec-oob\": \"yank\"}"),
        generic("QMP input member 'execute' clashes with 'exec-oob'", None)
    );
    assert_eq!(
        raw.ask(b"{\"exec-oob\": 1}"),
        generic("QMP input member 'exec-oob' must be a string", None)
    );
    // yank allows it; its arguments are checked as QAPI does.
    assert_eq!(
        raw.ask(b"{\"exec-oob\": \"yank\", \"arguments\": {\"instances\": []}, \"id\": \"c\"}"),
        b"{\"return\": {}, \"id\": \"c\"}\r\n"
    );
    assert_eq!(
        raw.ask(b"{\"exec-oob\": \"yank\", \"id\": \"d\"}"),
        generic("Parameter 'instances' is missing", Some("d"))
    );
    assert_eq!(
        raw.ask(b"{\"exec-oob\": \"yank\", \"arguments\": {\"instances\": [{\"type\": \"chardev\", \"id\": \"nobody\"}]}, \"id\": \"e\"}"),
        b"{\"id\": \"e\", \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Instance not found\"}}\r\n"
    );
    assert_eq!(
        raw.ask(b"{\"exec-oob\": \"yank\", \"arguments\": {\"instances\": [{\"type\": \"disk\"}]}, \"id\": \"f\"}"),
        generic("Parameter 'type' does not accept value 'disk'", Some("f"))
    );
    assert_eq!(
        raw.ask(b"{\"exec-oob\": \"yank\", \"arguments\": {\"instances\": [{\"type\": \"chardev\"}]}, \"id\": \"g\"}"),
        generic("Parameter 'instances[0].id' is missing", Some("g"))
    );
}

#[test]
fn oob_commands_overtake_a_blocked_in_band_command() {
    let mut server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, true);
    let mut blocker = Blocker::new(&mut raw, "slow");
    raw.send(&Blocker::request("slow", "ib-blocks-1"));
    raw.send(b"{ 'execute': 'query-name', 'id': 'ib-quick-1' }");
    raw.send(b"{ 'exec-oob': 'yank', 'id': 'oob-1', 'arguments': {'instances': []} }");
    assert_eq!(id_of(&raw.line()), "oob-1");
    let reader = blocker.release();
    assert_eq!(id_of(&raw.line()), "ib-blocks-1");
    assert_eq!(id_of(&raw.line()), "ib-quick-1");
    assert_eq!(reader.join().unwrap(), qmp_common::BLOCKER_BYTES);

    // Even a malformed in-band request fails in-band, after the one before.
    let mut blocker = Blocker::new(&mut raw, "slow2");
    raw.send(&Blocker::request("slow2", "blocks-2"));
    raw.send(b"{ 'id': 'err-2' }");
    raw.send(b"{ 'exec-oob': 'yank', 'id': 'oob-2', 'arguments': {'instances': []} }");
    assert_eq!(id_of(&raw.line()), "oob-2");
    let reader = blocker.release();
    assert_eq!(id_of(&raw.line()), "blocks-2");
    assert_eq!(
        raw.line(),
        generic("QMP input lacks member 'execute'", Some("err-2"))
    );
    reader.join().unwrap();
    drop(raw);
    let stats = server.join(true);
    assert_eq!(stats.oob_commands, 2);
}

/// With `queued` quick requests behind a blocked one, whether an exec-oob
/// sent after them is answered before the blocked one is released.
fn oob_answered_while_blocked(server: &Server, queued: usize) -> bool {
    let mut raw = Raw::negotiated(&server.qmp, true);
    let mut blocker = Blocker::new(&mut raw, "slow");
    raw.send(&Blocker::request("slow", "blocks"));
    for i in 0..queued {
        raw.send(format!("{{\"execute\": \"query-name\", \"id\": \"q{i}\"}}").as_bytes());
    }
    raw.send(b"{\"exec-oob\": \"yank\", \"id\": \"oob\", \"arguments\": {\"instances\": []}}");
    // A correct server answers within microseconds or never: the wait only
    // bounds the test (a slow machine cannot turn "never" into "yes").
    let early = raw.line_within(Duration::from_millis(if queued < 8 { 30_000 } else { 500 }));
    let answered = early.is_some();
    if let Some(line) = early {
        assert_eq!(id_of(&line), "oob");
    }
    let reader = blocker.release();
    let mut ids: Vec<String> = (0..queued + 1 + usize::from(!answered))
        .map(|_| id_of(&raw.line()))
        .collect();
    reader.join().unwrap();
    // In-band replies in order, the blocked one first.
    let oob_at = ids.iter().position(|id| id == "oob");
    if let Some(at) = oob_at {
        ids.remove(at);
    }
    let want: Vec<String> = std::iter::once("blocks".to_string())
        .chain((0..queued).map(|i| format!("q{i}")))
        .collect();
    assert_eq!(ids, want);
    answered
}

#[test]
fn at_most_eight_queued_requests_then_the_monitor_is_not_read() {
    let server = Server::start();
    // The blocked command runs; 7 wait: the I/O thread still reads.
    assert!(oob_answered_while_blocked(&server, 7));
    // 8 wait: it stops reading that monitor, so the exec-oob behind them
    // waits too (as in QEMU).
    assert!(!oob_answered_while_blocked(&server, 8));
    // Another monitor is read all the while.
    let mut other = Raw::negotiated(&server.qmp, true);
    assert_eq!(
        other.ask(b"{\"execute\": \"query-name\"}"),
        b"{\"return\": {\"name\": \"co_local\"}}\r\n"
    );
}

#[test]
fn without_oob_one_request_is_read_at_a_time() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    let mut blocker = Blocker::new(&mut raw, "slow");
    raw.send(&Blocker::request("slow", "blocks"));
    raw.send(b"{\"exec-oob\": \"yank\", \"id\": \"oob\", \"arguments\": {\"instances\": []}}");
    // Not read while the blocked command runs: no early answer.
    assert_eq!(raw.line_within(Duration::from_millis(500)), None);
    let reader = blocker.release();
    assert_eq!(id_of(&raw.line()), "blocks");
    assert_eq!(
        raw.line(),
        generic("QMP input member 'exec-oob' is unexpected", Some("oob"))
    );
    reader.join().unwrap();
}

#[test]
fn an_oob_command_reports_through_the_io_threads_own_cur_mon() {
    let mut server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, true);
    let mut victim = client::QmpClient::connect_negotiated(&server.qmp).unwrap();
    let victim_name = victim
        .execute("x-query-server-stats", serde_json::json!({}))
        .unwrap()
        .unwrap()["self"]
        .as_str()
        .unwrap()
        .to_string();
    // This monitor's own command waits in a coroutine of the main loop
    // (CUR_MON = this monitor there), an HMP monitor's report waits on a
    // timer in another, while the out-of-band yank runs on the I/O thread.
    let mut blocker = Blocker::new(&mut raw, "slow");
    raw.send(&Blocker::request("slow", "blocks"));
    let mut hmp = Raw::connect_quiet(&server.hmp);
    hmp.until(b"(qemu) ");
    hmp.send(b"report 200 from hmp\n");
    raw.send(format!(
        "{{\"exec-oob\": \"yank\", \"id\": \"oob\", \"arguments\": {{\"instances\": [{{\"type\": \"chardev\", \"id\": \"{victim_name}\"}}]}}}}"
    ).as_bytes());
    assert_eq!(raw.line(), b"{\"return\": {}, \"id\": \"oob\"}\r\n");
    assert!(victim.recv().is_err(), "the yanked connection is closed");
    assert_eq!(hmp.until(b"(qemu) "), b"from hmp\r\n(qemu) ");
    let reader = blocker.release();
    assert_eq!(id_of(&raw.line()), "blocks");
    reader.join().unwrap();
    drop((raw, hmp));
    let stats = server.join(true);
    // The yank's report was made on the I/O thread and checked against what
    // that thread ran; the HMP report against the main loop's coroutine.
    assert_eq!(stats.oob_reports, 1);
    assert_eq!(stats.reports, 2);
}
