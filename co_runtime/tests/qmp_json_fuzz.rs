//! Fuzzing the JSON reader of qmp_server (json.rs) and its writer
//! (qobject.rs) with proptest: arbitrary bytes never panic and never grow
//! its buffers past QEMU's limits; after a reset byte (0xFF, or any ASCII
//! control character but the three whitespace ones, as qmp-spec tells
//! clients) every complete command that follows is read exactly, whatever
//! came before (garbage, commands cut anywhere, control characters); what
//! serde_json writes and what QEMU's single-quoted dialect says reads as
//! the same value; what the writer writes is ASCII that serde_json reads
//! back as the same value.

#[path = "../examples/qmp_server/json.rs"]
#[allow(dead_code)]
mod json;
#[path = "../examples/qmp_server/qobject.rs"]
#[allow(dead_code)]
mod qobject;

use json::{JsonStream, Message, MAX_NESTING, MAX_TOKEN_SIZE};
use proptest::prelude::*;
use qobject::{write_json, QDict, QObject};
use serde_json::Value;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn feed(stream: &mut JsonStream, bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    for &b in bytes {
        stream.feed_byte(b, &mut out);
    }
    out
}

/// A code point the reader accepts in a string.
fn valid_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("not a noncharacter", |&c| {
        qobject::valid_code_point(u32::from(c))
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z'\"\\\\ /-]{0,8}",
        proptest::collection::vec(valid_char(), 0..8).prop_map(|v| v.into_iter().collect()),
    ]
}

/// Values as serde_json holds them (no duplicate keys by construction).
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A QMP command: execute, maybe arguments, maybe an id.
fn command() -> impl Strategy<Value = Value> {
    (
        "[a-z][a-z-]{0,12}",
        proptest::option::of(proptest::collection::btree_map(text(), value(), 0..4)),
        proptest::option::of(value()),
    )
        .prop_map(|(name, args, id)| {
            let mut cmd = serde_json::Map::new();
            cmd.insert("execute".into(), Value::String(name));
            if let Some(args) = args {
                cmd.insert(
                    "arguments".into(),
                    Value::Object(args.into_iter().collect()),
                );
            }
            if let Some(id) = id {
                cmd.insert("id".into(), id);
            }
            Value::Object(cmd)
        })
}

/// A string in QEMU's single-quoted form.
fn single_quoted(s: &str) -> String {
    let mut out = String::from("'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A value in QEMU's dialect: single-quoted strings, with `ws` between
/// tokens.
fn render_qemu(v: &Value, ws: &str, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(&single_quoted(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(ws);
                }
                render_qemu(item, ws, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            out.push_str(ws);
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&single_quoted(k));
                out.push_str(ws);
                out.push(':');
                out.push_str(ws);
                render_qemu(item, ws, out);
            }
            out.push_str(ws);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Bytes that reset the reader wherever it is.
fn reset_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        Just(0xFFu8),
        Just(0xFE),
        (0u8..0x20).prop_filter("not whitespace", |b| !matches!(b, b'\t' | b'\n' | b'\r')),
    ]
}

/// Input that may leave the reader anywhere: garbage, commands cut at a
/// random point, control characters.
fn junk() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        (command(), any::<prop::sample::Index>()).prop_map(|(c, at)| {
            let bytes = serde_json::to_vec(&c).unwrap();
            let cut = at.index(bytes.len() + 1);
            bytes[..cut].to_vec()
        }),
        proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'['), Just(b'"'), Just(b'\''), Just(b'\\')],
            0..8
        ),
    ];
    proptest::collection::vec(piece, 0..6).prop_map(|v| v.concat())
}

/// Equal values, numbers compared by value: QEMU writes a whole double
/// without a fraction, so it reads back as an integer.
fn same(a: &QObject, b: &QObject) -> bool {
    let num = |q: &QObject| match q {
        QObject::Int(i) => Some(*i as f64),
        QObject::Uint(u) => Some(*u as f64),
        QObject::Double(d) => Some(*d),
        _ => None,
    };
    match (a, b) {
        (QObject::List(x), QObject::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (QObject::Dict(x), QObject::Dict(y)) => {
            // By key: a dictionary's order is its writer's business.
            let (mut x, mut y): (Vec<_>, Vec<_>) = (x.iter().collect(), y.iter().collect());
            x.sort_by_key(|e| e.0);
            y.sort_by_key(|e| e.0);
            x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn parsed(msgs: Vec<Message>) -> Vec<QObject> {
    msgs.into_iter()
        .map(|m| m.unwrap_or_else(|e| panic!("expected a value, got error {e}")))
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut s = JsonStream::default();
        let mut out = Vec::new();
        for &b in &bytes {
            s.feed_byte(b, &mut out);
            prop_assert!(s.buffered() <= 4 * bytes.len() * std::mem::size_of::<usize>() + 64);
        }
        // Every error is one of QEMU's, in its words.
        for msg in &out {
            if let Err(e) = msg {
                prop_assert!(e.starts_with("JSON parse error, ") || e.starts_with("JSON ") && e.ends_with("limit exceeded"), "{e}");
            }
        }
    }

    #[test]
    fn every_command_after_a_reset_is_read(
        junk in junk(),
        reset in reset_byte(),
        commands in proptest::collection::vec(command(), 1..5),
        spaces in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n"), Just("\r\n\t")], 5),
    ) {
        let mut s = JsonStream::default();
        feed(&mut s, &junk);
        feed(&mut s, &[reset]);
        let mut input = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            input.extend_from_slice(serde_json::to_string(c).unwrap().as_bytes());
            input.extend_from_slice(spaces[i % spaces.len()].as_bytes());
        }
        let got = parsed(feed(&mut s, &input));
        let want: Vec<QObject> = commands.iter().map(QObject::from).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn commands_split_anywhere_read_the_same(commands in proptest::collection::vec(command(), 1..4), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        let input: Vec<u8> = commands.iter().flat_map(|c| serde_json::to_vec(c).unwrap()).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut s = JsonStream::default();
        let mut got = Vec::new();
        let mut from = 0;
        for p in points.into_iter().chain([input.len()]) {
            got.extend(feed(&mut s, &input[from..p]));
            from = p;
        }
        let want: Vec<QObject> = commands.iter().map(QObject::from).collect();
        prop_assert_eq!(parsed(got), want);
    }

    #[test]
    fn qemus_dialect_reads_as_json_does(v in value(), ws in prop_oneof![Just(""), Just(" "), Just("\n ")]) {
        let mut q = String::new();
        render_qemu(&v, ws, &mut q);
        // A top-level number or keyword needs the next byte to end.
        q.push(' ');
        let mut s = JsonStream::default();
        let got = parsed(feed(&mut s, q.as_bytes()));
        prop_assert_eq!(got, vec![QObject::from(&v)]);
        let mut s = JsonStream::default();
        let mut standard = serde_json::to_vec(&v).unwrap();
        standard.push(b'\n');
        prop_assert_eq!(parsed(feed(&mut s, &standard)), vec![QObject::from(&v)]);
    }

    #[test]
    fn the_writer_writes_ascii_that_reads_back(v in value()) {
        let q = QObject::from(&v);
        let mut out = Vec::new();
        write_json(&q, &mut out);
        prop_assert!(out.iter().all(|&b| (0x20..0x7F).contains(&b)), "{}", String::from_utf8_lossy(&out));
        // Valid JSON for anyone (serde_json), the same value for the reader
        // (whose doubles are exact; serde_json's default parse is not).
        let _: Value = serde_json::from_slice(&out).unwrap();
        out.push(b'\n');
        let back = parsed(feed(&mut JsonStream::default(), &out));
        prop_assert_eq!(back.len(), 1);
        prop_assert!(same(&back[0], &q), "{:?} read back as {:?}", q, back[0]);
    }

    #[test]
    fn duplicate_keys_are_refused_anywhere(v in value(), key in text(), depth in 0usize..4) {
        let mut dup = String::from("{");
        dup.push_str(&single_quoted(&key));
        dup.push_str(": 1, ");
        dup.push_str(&single_quoted(&key));
        dup.push_str(": ");
        dup.push_str(&serde_json::to_string(&v).unwrap());
        dup.push('}');
        let wrapped = format!("{}{dup}{}", "[".repeat(depth), "]".repeat(depth));
        let mut s = JsonStream::default();
        let got = feed(&mut s, wrapped.as_bytes());
        prop_assert_eq!(got, vec![Err("JSON parse error, duplicate key".to_string())]);
    }
}

#[test]
fn nesting_is_bounded_whatever_the_input() {
    let mut s = JsonStream::default();
    let mut out = Vec::new();
    let mut peak = 0;
    for _ in 0..(3 << 20) {
        s.feed_byte(b'[', &mut out);
        peak = peak.max(s.buffered());
    }
    // One refusal per 1025 brackets; never more than 1024 of them held.
    assert_eq!(out.len(), (3 << 20) / (MAX_NESTING as usize + 1));
    assert!(out
        .iter()
        .all(|m| m == &Err("JSON nesting depth limit exceeded".to_string())));
    assert!(peak <= (MAX_NESTING as usize + 1) * 32, "{peak}");
}

#[test]
fn one_token_is_bounded_whatever_the_input() {
    let mut s = JsonStream::default();
    let mut out = Vec::new();
    s.feed_byte(b'"', &mut out);
    let chunk = vec![b'a'; 1 << 20];
    let mut peak = 0;
    for _ in 0..65 {
        for &b in &chunk {
            s.feed_byte(b, &mut out);
        }
        peak = peak.max(s.buffered());
    }
    assert_eq!(out, vec![Err("JSON token size limit exceeded".to_string())]);
    assert!(peak <= MAX_TOKEN_SIZE + 1);
    // The dictionary writer keeps QEMU's order for what the reader read.
    let mut d = QDict::new();
    for k in ["major", "minor", "micro"] {
        d.insert(k, QObject::Int(0));
    }
    let keys: Vec<&str> = d.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["micro", "minor", "major"]);
}
