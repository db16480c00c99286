//! qmp_server on the wire, byte for byte: the cases of QEMU's qmp-test
//! (protocol, malformed input) and the rules of qmp-spec, with the bytes
//! qemu-storage-daemon 10.0.2 answers (`qmp_side_by_side.rs` checks the
//! same cases against it live when it is installed).

include!("qmp_common/example.rs");
mod qmp_common;

use qmp_common::{generic, Raw, Server};

const NOT_FOUND: &[u8] =
    b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command no-such-cmd has not been found\"}}\r\n";
const EXPECTING_NEGOTIATION: &[u8] =
    b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n";

/// qmp-test's malformed cases, each followed by its "recovered" check: a
/// command with no newline after it, answered at once.
fn malformed(raw: &mut Raw, negotiated: bool) {
    let recovered: &[u8] = if negotiated {
        NOT_FOUND
    } else {
        EXPECTING_NEGOTIATION
    };
    let cases: &[(&[u8], &str)] = &[
        (b"{]\n", "JSON parse error, expecting value"),
        (b"{\xFF", "JSON parse error, stray '\\uFFFD'"),
        (b"{\x01", "JSON parse error, stray '\\u0001'"),
        (b"{'bad \xFF", "JSON parse error, stray ''bad \\uFFFD'"),
        (
            b"{'execute': 'nonexistent', 'id':'\n",
            "JSON parse error, stray ''\\n'",
        ),
        (b"%p", "JSON parse error, stray '%'"),
    ];
    for (bad, desc) in cases {
        assert_eq!(
            String::from_utf8_lossy(&raw.ask(bad)),
            String::from_utf8_lossy(&generic(desc)),
            "after {bad:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&raw.ask(b"{ 'execute': 'no-such-cmd' }")),
            String::from_utf8_lossy(recovered),
            "the command after {bad:?}"
        );
    }
    let requests: &[(&[u8], &str)] = &[
        (b"null", "QMP input must be a JSON object"),
        (b"{}", "QMP input lacks member 'execute'"),
        (
            b"{ 'execute': true }",
            "QMP input member 'execute' must be a string",
        ),
        (
            b"{ 'execute': 'no-such-cmd', 'arguments': [] }",
            "QMP input member 'arguments' must be an object",
        ),
        (
            b"{ 'execute': 'no-such-cmd', 'extra': true }",
            "QMP input member 'extra' is unexpected",
        ),
    ];
    for (request, desc) in requests {
        // `null` is a keyword: the newline ends it.
        let mut line = request.to_vec();
        line.push(b'\n');
        assert_eq!(raw.ask(&line), generic(desc), "{request:?}");
    }
}

#[test]
fn qmp_test_protocol_and_malformed_input() {
    let mut server = Server::start();
    let (mut raw, greeting) = Raw::connect(&server.qmp);
    assert_eq!(
        greeting,
        b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 9}, \"package\": \"co_local qmp_server\"}, \"capabilities\": [\"oob\"]}}\r\n"
    );
    assert_eq!(
        raw.ask(b"{ 'execute': 'query-version' }"),
        EXPECTING_NEGOTIATION
    );
    malformed(&mut raw, false);
    assert_eq!(
        raw.ask(b"{ 'execute': 'qmp_capabilities' }"),
        b"{\"return\": {}}\r\n"
    );
    assert_eq!(
        raw.ask(b"{ 'execute': 'qmp_capabilities' }"),
        b"{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Capabilities negotiation is already complete, command ignored\"}}\r\n"
    );
    assert_eq!(
        raw.ask(b"{ 'execute': 'query-version' }"),
        b"{\"return\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 9}, \"package\": \"co_local qmp_server\"}}\r\n"
    );
    malformed(&mut raw, true);
    assert_eq!(
        raw.ask(b"{ 'execute': 'query-name', 'id': 'cookie#1' }"),
        b"{\"return\": {\"name\": \"co_local\"}, \"id\": \"cookie#1\"}\r\n"
    );
    assert_eq!(
        raw.ask(b"{ 'execute': 'human-monitor-command', 'id': 2 }"),
        b"{\"id\": 2, \"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'command-line' is missing\"}}\r\n"
    );
    drop(raw);
    server.join(true);
}

#[test]
fn recovery_points_need_no_newline() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    // A syntax error and the next command on one line: both answered.
    raw.send(b"{]{\"execute\": \"query-name\", \"id\": 1}");
    assert_eq!(raw.line(), generic("JSON parse error, expecting value"));
    assert_eq!(
        raw.line(),
        b"{\"return\": {\"name\": \"co_local\"}, \"id\": 1}\r\n"
    );
    // 0xFF resets the parser in the middle of a string, a control
    // character in the middle of an object; the command after each runs.
    raw.send(b"{\"execute\": \"quer\xFF{\"execute\": \"query-name\", \"id\": 2}");
    assert_eq!(
        raw.line(),
        generic("JSON parse error, stray '\\\"quer\\uFFFD'")
    );
    assert_eq!(
        raw.line(),
        b"{\"return\": {\"name\": \"co_local\"}, \"id\": 2}\r\n"
    );
    raw.send(b"{\"execute\": \x1b{\"execute\": \"query-name\", \"id\": 3}");
    assert_eq!(raw.line(), generic("JSON parse error, stray '\\u001B'"));
    assert_eq!(
        raw.line(),
        b"{\"return\": {\"name\": \"co_local\"}, \"id\": 3}\r\n"
    );
    // After a lexical error, input up to the next structural character is
    // skipped: here the rest of a bad number, up to the ','.
    raw.send(b"[1, 0123 garbage, 2]");
    assert_eq!(raw.line(), generic("JSON parse error, stray '01'"));
    assert_eq!(raw.line(), generic("JSON parse error, expecting value"));
    assert_eq!(raw.line(), generic("QMP input must be a JSON object"));
    assert_eq!(raw.line(), generic("JSON parse error, expecting value"));
    assert_eq!(
        raw.ask(b"{'execute': 'query-name'}"),
        b"{\"return\": {\"name\": \"co_local\"}}\r\n"
    );
}

#[test]
fn qemus_json_single_quotes_escapes_and_duplicate_keys() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    assert_eq!(
        raw.ask(b"{'execute': 'query-name', 'id': 'it\\'s \"q\" \\/'}"),
        b"{\"return\": {\"name\": \"co_local\"}, \"id\": \"it's \\\"q\\\" /\"}\r\n"
    );
    assert_eq!(
        raw.ask(b"{\"execute\": \"query-name\", \"id\": \"a\", \"id\": \"b\"}"),
        generic("JSON parse error, duplicate key")
    );
    assert_eq!(
        raw.ask(b"{\"execute\": \"query-name\", \"arguments\": {\"x\": 1, \"x\": 1}}"),
        generic("JSON parse error, duplicate key")
    );
    for (bad, desc) in [
        (
            &b"\"\\x\"\n"[..],
            "JSON parse error, invalid escape sequence in string",
        ),
        (
            b"\"\\uD800\"\n",
            "JSON parse error, \\\\uD800 is not a valid Unicode character",
        ),
        (
            b"\"\\uFFFF\"\n",
            "JSON parse error, \\\\uFFFF is not a valid Unicode character",
        ),
        (
            b"\"\xc3\x28\"\n",
            "JSON parse error, invalid UTF-8 sequence in string",
        ),
        (
            b"\"\xed\xa0\x80\"\n",
            "JSON parse error, invalid UTF-8 sequence in string",
        ),
        (b"tru\n", "JSON parse error, invalid keyword 'tru'"),
        (
            b"{1: 2}\n",
            "JSON parse error, key is not a string in object",
        ),
        (b"{\"a\" 1}\n", "JSON parse error, missing : in object pair"),
        (b"[1 2]\n", "JSON parse error, expected separator in list"),
        (
            b"{\"a\": 1 \"b\": 2}\n",
            "JSON parse error, expected separator in dict",
        ),
    ] {
        assert_eq!(
            String::from_utf8_lossy(&raw.ask(bad)),
            String::from_utf8_lossy(&generic(desc)),
            "{bad:?}"
        );
    }
}

#[test]
fn human_monitor_command_returns_the_monitors_crlf_lines() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    // QEMU's monitor writes every newline as CRLF, also into the buffer of
    // the temporary monitor whose text the command returns.
    assert_eq!(
        raw.ask(b"{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"info name\"}}"),
        b"{\"return\": \"co_local\\r\\n\"}\r\n"
    );
}

#[test]
fn a_long_parse_error_is_cut_where_qemus_buffer_ends() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    // What follows "JSON parse error, " fits QEMU's 1024-byte buffer, its
    // NUL included: "invalid keyword '" and 1006 letters, no closing quote.
    let mut keyword = b"a".repeat(5000);
    keyword.push(b'\n');
    let cut = format!("JSON parse error, invalid keyword '{}", "a".repeat(1006));
    assert_eq!(raw.ask(&keyword), generic(&cut));
    let mut short = b"a".repeat(1005);
    short.push(b'\n');
    let whole = format!("JSON parse error, invalid keyword '{}'", "a".repeat(1005));
    assert_eq!(raw.ask(&short), generic(&whole));
}

#[test]
fn output_is_ascii_with_qemus_escapes_numbers_and_member_order() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    assert_eq!(
        raw.ask("{\"execute\": \"query-name\", \"id\": \"caf\u{e9} \u{7f} \u{1F600} \\u0001\\b\\f\\n\\r\\t\\u0000\"}".as_bytes()),
        b"{\"return\": {\"name\": \"co_local\"}, \"id\": \"caf\\u00E9 \\u007F \\uD83D\\uDE00 \\u0001\\b\\f\\n\\r\\t\\u0000\"}\r\n"
    );
    assert_eq!(
        raw.ask(b"{\"execute\": \"no-such-cmd\", \"id\": [0.1, 1.5, 100.0, 1e300, -0, -0.0, 1e-7, 123456789012345678901234567890, 18446744073709551615, -9223372036854775809, 1E2, 1e400]}"),
        b"{\"id\": [0.10000000000000001, 1.5, 100, 1.0000000000000001e+300, 0, -0, 9.9999999999999995e-08, 1.2345678901234568e+29, 18446744073709551615, -9.2233720368547758e+18, 100, inf], \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command no-such-cmd has not been found\"}}\r\n"
    );
    assert_eq!(
        raw.ask(b"{\"execute\": \"no-such-cmd\", \"id\": {\"b\": 1, \"a\": 2, \"exec-oob\": 3, \"execute\": 4, \"id\": 5, \"arguments\": 6}}"),
        b"{\"id\": {\"exec-oob\": 3, \"a\": 2, \"execute\": 4, \"b\": 1, \"arguments\": 6, \"id\": 5}, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command no-such-cmd has not been found\"}}\r\n"
    );
    // Members are checked in that order too: 'exec-oob' comes first.
    assert_eq!(
        raw.ask(b"{\"execute\": \"x\", \"exec-oob\": \"y\"}"),
        generic("QMP input member 'exec-oob' is unexpected")
    );
}

#[test]
fn the_unexpected_argument_named_is_the_one_qemu_names() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    // Not the first of the request: the first of the GLib hash table that
    // QEMU's input visitor keeps the names in (the answers of
    // qemu-storage-daemon 10.0.2).
    let twelve: Vec<String> = (0..12).map(|i| format!("\"k{i}\": {i}")).collect();
    let twelve = format!(
        "{{\"execute\": \"query-version\", \"arguments\": {{{}}}}}",
        twelve.join(", ")
    );
    for (request, named) in [
        (
            &b"{\"execute\": \"query-version\", \"arguments\": {\"a\": 1, \"b\": 2}}"[..],
            "b",
        ),
        (
            b"{\"execute\": \"query-version\", \"arguments\": {\"x\": 1, \"y\": 2, \"z\": 3}}",
            "z",
        ),
        (twelve.as_bytes(), "k10"),
        (
            b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [], \"zz\": 1, \"a\": 2}}",
            "a",
        ),
    ] {
        assert_eq!(
            String::from_utf8_lossy(&raw.ask(request)),
            String::from_utf8_lossy(&generic(&format!("Parameter '{named}' is unexpected"))),
        );
    }
}

#[test]
fn qemus_limits_keep_the_id_and_the_monitor() {
    let server = Server::start();
    let mut raw = Raw::negotiated(&server.qmp, false);
    // 1024 levels: a message; the id comes back whole.
    let deep = format!("{}1{}", "[".repeat(1023), "]".repeat(1023));
    let reply = raw.ask(format!("{{\"execute\": \"query-name\", \"id\": {deep}}}").as_bytes());
    assert_eq!(
        reply,
        format!("{{\"return\": {{\"name\": \"co_local\"}}, \"id\": {deep}}}\r\n").into_bytes()
    );
    // 1025: refused where it crosses the limit; each ']' left over then
    // closes nothing, as in QEMU.
    raw.send(format!("{}{}", "[".repeat(1025), "]".repeat(3)).as_bytes());
    assert_eq!(raw.line(), generic("JSON nesting depth limit exceeded"));
    for _ in 0..3 {
        assert_eq!(raw.line(), generic("JSON parse error, expecting value"));
    }
    // More than 2 Mi tokens in one message.
    let mut many = b"[".to_vec();
    for _ in 0..(1 << 20) {
        many.extend_from_slice(b"0,");
    }
    many.extend_from_slice(b"0]\n");
    raw.send(&many);
    assert_eq!(raw.line(), generic("JSON token count limit exceeded"));
    // The rest of that message, read afresh: a '0', and a ']' that closes
    // nothing.
    assert_eq!(raw.line(), generic("QMP input must be a JSON object"));
    assert_eq!(raw.line(), generic("JSON parse error, expecting value"));
    // A string longer than 64 MiB: one token over the limit.
    let mut huge = b"{\"execute\": \"".to_vec();
    huge.resize(huge.len() + (64 << 20) + 16, b'x');
    huge.extend_from_slice(b"\"}\n");
    raw.send(&huge);
    assert_eq!(raw.line(), generic("JSON token size limit exceeded"));
    // What follows the cut is read as new input: a keyword, then a string
    // that a newline breaks.
    assert_eq!(
        raw.line(),
        generic(&format!(
            "JSON parse error, invalid keyword '{}'",
            "x".repeat(16)
        ))
    );
    assert_eq!(raw.line(), generic("JSON parse error, stray '\\\"}\\n'"));
    assert_eq!(
        raw.ask(b"{'execute': 'query-name'}"),
        b"{\"return\": {\"name\": \"co_local\"}}\r\n"
    );
}
