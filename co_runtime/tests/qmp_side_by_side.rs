//! The same protocol cases against QEMU's own QMP server,
//! qemu-storage-daemon, and against qmp_server: the answers must be the
//! same bytes (versions aside), so that the expected answers are QEMU's.
//! Where qemu-storage-daemon lacks a command (HMP, query-name, yank, ...)
//! only what it has is compared; 200 sessions of seeded random input, made
//! of pieces of requests, bad bytes and resets, must answer alike too.
//! Skipped, with a message, when
//! qemu-storage-daemon is not installed (Debian: qemu-utils).

include!("qmp_common/example.rs");
mod qmp_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use qmp_common::{id_of, Blocker, Raw, Server, TempDir};

/// qemu-storage-daemon with one QMP monitor on a Unix socket.
struct Qsd {
    child: Child,
    dir: TempDir,
    sock: PathBuf,
}

impl Qsd {
    fn start() -> Option<Qsd> {
        let dir = TempDir::new("qsd");
        let sock = dir.0.join("qmp.sock");
        let spawned = Command::new("qemu-storage-daemon")
            .arg("--chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=c0",
                sock.display()
            ))
            .arg("--monitor")
            .arg("chardev=c0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                println!("skipped: cannot run qemu-storage-daemon ({e}); install qemu-utils to compare with QEMU");
                return None;
            }
        };
        let deadline = Instant::now() + qmp_common::TIMEOUT;
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "qemu-storage-daemon did not listen"
            );
            thread::sleep(Duration::from_millis(10));
        }
        Some(Qsd { child, dir, sock })
    }
}

impl Drop for Qsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One of the two servers.
enum Target {
    Qemu(Qsd),
    Ours(Server),
}

impl Target {
    fn path(&self) -> &Path {
        match self {
            Target::Qemu(q) => &q.sock,
            Target::Ours(s) => &s.qmp,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Qemu(_) => "qemu-storage-daemon",
            Target::Ours(_) => "qmp_server",
        }
    }
}

/// Both servers, or none if QEMU's is not installed.
fn both() -> Option<[Target; 2]> {
    let qsd = Qsd::start()?;
    Some([Target::Qemu(qsd), Target::Ours(Server::start())])
}

/// The bytes of a greeting's version (`{"qemu": ..., "package": ...}`), to
/// compare transcripts of servers of different versions.
fn version_of(greeting: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(greeting);
    let start = text.find("{\"qemu\"").unwrap();
    let end = text.find(", \"capabilities\"").unwrap();
    text[start..end].as_bytes().to_vec()
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// A session: connect, send the chunks, then a reset byte and a marked
/// request; everything the server wrote up to the marked reply, with the
/// version replaced by `VERSION`.
fn session(target: &Target, chunks: &[&[u8]]) -> String {
    let (mut raw, greeting) = Raw::connect(target.path());
    let version = version_of(&greeting);
    let mut transcript = greeting.clone();
    for chunk in chunks {
        raw.send(chunk);
    }
    raw.send(b"\xFF{\"execute\": \"query-version\", \"id\": \"sync\"}");
    loop {
        let line = raw.line();
        transcript.extend_from_slice(&line);
        if id_of(&line) == "sync" {
            break;
        }
    }
    String::from_utf8(replace_all(&transcript, &version, b"VERSION")).unwrap()
}

fn compare(targets: &[Target; 2], name: &str, chunks: &[&[u8]]) {
    let qemu = session(&targets[0], chunks);
    let ours = session(&targets[1], chunks);
    assert_eq!(
        ours, qemu,
        "case {name}: qmp_server (left) and QEMU (right) differ"
    );
}

const NEGOTIATE: &[u8] = b"{\"execute\": \"qmp_capabilities\"}";
const NEGOTIATE_OOB: &[u8] =
    b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}";

/// qmp-test's malformed input, each followed by its recovery check.
const MALFORMED: &[&[u8]] = &[
    b"{]\n",
    b"{ 'execute': 'no-such-cmd' }",
    b"{\xFF",
    b"{ 'execute': 'no-such-cmd' }",
    b"{\x01",
    b"{ 'execute': 'no-such-cmd' }",
    b"{'bad \xFF",
    b"{ 'execute': 'no-such-cmd' }",
    b"{'execute': 'nonexistent', 'id':'\n",
    b"{ 'execute': 'no-such-cmd' }",
    b"%p",
    b"{ 'execute': 'no-such-cmd' }",
    b"null\n",
    b"{}",
    b"{ 'execute': true }",
    b"{ 'execute': 'no-such-cmd', 'arguments': [] }",
    b"{ 'execute': 'no-such-cmd', 'extra': true }",
];

#[test]
fn protocol_cases_answer_as_qemu_does() {
    let Some(targets) = both() else {
        return;
    };
    compare(
        &targets,
        "before negotiation",
        &[
            b"{ 'execute': 'query-version' }",
            b"{\"exec-oob\": \"query-version\", \"id\": 1}",
        ],
    );
    compare(&targets, "malformed before negotiation", MALFORMED);
    let mut after = vec![
        NEGOTIATE,
        b"{ 'execute': 'qmp_capabilities' }",
        b"{ 'execute': 'query-version' }",
    ];
    after.extend_from_slice(MALFORMED);
    compare(&targets, "malformed after negotiation", &after);
    compare(&targets, "capabilities", &[
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"cap-does-not-exist\"]}}",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [1]}}",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\", 1]}}",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": \"oob\"}}",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"x\": 1}}",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\", \"oob\"]}, \"id\": \"e\"}",
        b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}",
    ]);
    // Out-of-band requests first: an in-band one before them could be
    // answered before or after them, in QEMU as here.
    compare(
        &targets,
        "out-of-band refusals",
        &[
            NEGOTIATE_OOB,
            b"{\"exec-oob\": \"query-version\", \"id\": 2}",
            b"{\"exec-oob\": 1}",
            b"{\"exec-oob\": \"nosuch\", \"id\": 8}",
            b"{\"execute\": \"x\", \"exec-oob\": \"y\"}",
        ],
    );
    compare(
        &targets,
        "exec-oob without the capability",
        &[NEGOTIATE, b"{\"exec-oob\": \"query-version\", \"id\": 3}"],
    );
}

#[test]
fn json_cases_answer_as_qemu_does() {
    let Some(targets) = both() else {
        return;
    };
    let cases: &[&[u8]] = &[
        NEGOTIATE,
        b"-\n", b"1.\n", b"1e\n", b"\"\\x\"\n", b"\"\\u12\"\n", b"\"\\uD800\"\n",
        b"\"\\uD800\\u0041\"\n", b"\"\\uFFFF\"\n", b"\"\\uD83F\\uDFFE\"\n", b"\"\xc3\x28\"\n",
        b"\"\xed\xa0\x80\"\n", b"\"\xc0\x80\"\n", b"\"\xef\xbf\xbf\"\n", b"tru\n", b"{\"a\" 1}\n", b"{1:2}\n",
        b"{\"a\":}\n", b"[1 2]\n", b"{\"a\":1,}\n", b"[1,]\n", b"00\n",
        b"{\"execute\": \"nosuch\", \"id\": [0.1, 1.5, 100.0, 1e300, -0, -0.0, 1e-7, 123456789012345678901234567890, 18446744073709551615, -9223372036854775809, 1E2, 0.000001, 12345678901234567, 1e400]}\n",
        b"{\"execute\": \"nosuch\", \"id\": \"\\u0000\\b\\f\\n\\r\\t\\/\\\"\\\\'\xc2\x80\\u2028\\uDBFF\\uDFFD caf\xc3\xa9 \x7f\"}\n",
        b"{\"execute\": \"nosuch\", \"id\": {\"b\": 1, \"a\": 2, \"exec-oob\": 3, \"execute\": 4, \"id\": 5, \"arguments\": 6}}\n",
        b"{'execute': 'query-version', 'id': 'it\\'s'}",
        b"{\"execute\": \"query-version\", \"id\": \"a\", \"id\": \"b\"}",
        b"{\"execute\": \"query-version\", \"arguments\": {\"x\": 1}, \"id\": 1}",
        b"{\"execute\": \"query-version\", \"id\": null}",
        b"\xfe{\"execute\": \"query-version\", \"id\": \"fe\"}\n",
        b"\"abc\x7f\xc3\xa9\" {\"execute\": \"nosuch\"}\n",
        b"{\"a\": 1 %% \"x\" , \"execute\": \"nosuch\"}\n",
        b"{\"execute\": \"nosuch\"}]\n",
        b"{\"execute\": \"nosuch\",\x01 \"id\": 1}\n",
        b"\"\x01\"\n",
        b"{\"execute\": \"nosuch\", \"id\": \"x\ty\"}\n",
        b"\x00\n", b"\"a\x00b\"\n", b"tr\xffue\n",
        b"{]{\"execute\": \"query-version\", \"id\": \"same line\"}",
    ];
    compare(&targets, "QEMU's JSON", cases);
    let deep = format!(
        "{{\"execute\": \"query-version\", \"id\": {}1{}}}",
        "[".repeat(1023),
        "]".repeat(1023)
    );
    let deeper = format!("{}{}", "[".repeat(1025), "]".repeat(4));
    compare(
        &targets,
        "nesting",
        &[NEGOTIATE, deep.as_bytes(), deeper.as_bytes()],
    );
    let long_keywords: Vec<Vec<u8>> = [1000, 1006, 1007, 5000]
        .map(|n| [&b"a".repeat(n)[..], b"\n"].concat())
        .into();
    let mut chunks: Vec<&[u8]> = vec![NEGOTIATE];
    chunks.extend(long_keywords.iter().map(Vec::as_slice));
    compare(&targets, "long keywords", &chunks);
}

/// With `queued` quick requests behind one that blocks, whether an exec-oob
/// is answered before the blocked one is released, and the in-band
/// replies' ids in order.
fn flow_control(target: &Target, oob: bool, queued: usize) -> (bool, Vec<String>) {
    static NODE: AtomicUsize = AtomicUsize::new(0);
    let mut raw = Raw::negotiated(target.path(), oob);
    let mut release: Box<dyn FnMut()> = match target {
        Target::Qemu(q) => {
            // QEMU's own blocking command (qmp-test): blkdebug reading its
            // config from a FIFO nobody writes yet.
            let fifo = q
                .dir
                .0
                .join(format!("fifo{}", NODE.fetch_add(1, Ordering::Relaxed)));
            assert!(Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success());
            raw.send(format!(
                "{{\"execute\": \"blockdev-add\", \"id\": \"blocks\", \"arguments\": {{\"driver\": \"blkdebug\", \"node-name\": \"n{}\", \"config\": \"{}\", \"image\": {{\"driver\": \"null-co\"}}}}}}",
                NODE.fetch_add(1, Ordering::Relaxed),
                fifo.display()
            ).as_bytes());
            Box::new(move || drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap()))
        }
        Target::Ours(_) => {
            let mut blocker = Blocker::new(&mut raw, "slow");
            raw.send(&Blocker::request("slow", "blocks"));
            Box::new(move || drop(blocker.release()))
        }
    };
    for i in 0..queued {
        raw.send(format!("{{\"execute\": \"query-version\", \"id\": \"q{i}\"}}").as_bytes());
    }
    raw.send(b"{\"exec-oob\": \"query-version\", \"id\": \"oob\"}");
    // Answered within microseconds or never (the reading stopped): the
    // wait only bounds the test.
    let wait = if oob && queued < 8 {
        qmp_common::TIMEOUT
    } else {
        Duration::from_millis(500)
    };
    let early = raw.line_within(wait);
    release();
    let mut ids: Vec<String> = (0..queued + 1 + usize::from(early.is_none()))
        .map(|_| id_of(&raw.line()))
        .collect();
    ids.retain(|id| id != "oob");
    (early.is_some(), ids)
}

#[test]
fn flow_control_and_out_of_band_as_qemu() {
    let Some(targets) = both() else {
        return;
    };
    for (oob, queued) in [(true, 0), (true, 7), (true, 8), (false, 1)] {
        let [qemu, ours] = [&targets[0], &targets[1]].map(|t| flow_control(t, oob, queued));
        assert_eq!(
            ours,
            qemu,
            "oob {oob}, {queued} queued: {} (left) and {} (right)",
            targets[1].name(),
            targets[0].name()
        );
    }
}

#[test]
fn quit_replies_as_qemu() {
    let Some(targets) = both() else {
        return;
    };
    // QEMU's storage daemon sends no SHUTDOWN event; the reply is the same.
    for target in &targets {
        let mut raw = Raw::negotiated(target.path(), false);
        assert_eq!(
            raw.ask(b"{\"execute\": \"quit\", \"id\": \"bye\"}"),
            b"{\"return\": {}, \"id\": \"bye\"}\r\n",
            "{}",
            target.name()
        );
    }
}

/// A small seeded generator (xorshift64), so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random input made of pieces of requests, JSON, bad bytes and resets;
/// no out-of-band request (whose answer may overtake in-band ones) and no
/// command qemu-storage-daemon lacks.
fn random_input(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b" ",
        b"\n",
        b"\t",
        b"\r",
        b"\"execute\"",
        b"'execute'",
        b"\"query-version\"",
        b"'nosuch'",
        b"\"id\"",
        b"\"arguments\"",
        b"{}",
        b"[]",
        b"null",
        b"true",
        b"fals",
        b"nul",
        b"0",
        b"-1",
        b"12.5e3",
        b"1e",
        b"-",
        b"007",
        b"1.",
        b"18446744073709551616",
        b"\"a\\u00e9\"",
        b"\"\\uD800\"",
        b"\"\\uD83D\\uDE00\"",
        b"'it\\'s'",
        b"\"\\x\"",
        b"\"\\",
        b"\"caf\xc3\xa9\"",
        b"\"\xc3\x28\"",
        b"\"\xed\xa0\x80\"",
        b"\xff",
        b"\xfe",
        b"\x00",
        b"\x01",
        b"\x1b",
        b"\x7f",
        b"%",
        b"%p",
        b"'",
        b"\"",
        b"{\"execute\": \"query-version\", \"id\": 1}",
        b"{'execute': 'nosuch', 'id': [1, {'a': null}]}",
        b"{\"execute\": \"query-version\", \"id\": \"x\", \"id\": \"y\"}",
        b"{\"execute\": \"query-version\", \"arguments\": {\"z\": 0}}",
    ];
    let mut input = Vec::new();
    for _ in 0..rng.below(40) + 1 {
        input.extend_from_slice(PIECES[rng.below(PIECES.len())]);
    }
    input
}

#[test]
fn random_input_answers_as_qemu_does() {
    let Some(targets) = both() else {
        return;
    };
    let seed = 0x5EED_0FC0_10CA_1000;
    let mut rng = Rng(seed);
    for case in 0..200 {
        let input = random_input(&mut rng);
        let chunks: &[&[u8]] = &[NEGOTIATE, &input];
        let qemu = session(&targets[0], chunks);
        let ours = session(&targets[1], chunks);
        assert_eq!(
            ours,
            qemu,
            "seed {seed:#x}, case {case}, input {:?}: qmp_server (left) and QEMU (right) differ",
            String::from_utf8_lossy(&input)
        );
    }
}

/// A request with `count` arguments of random names, some of them ones the
/// command takes.
fn request_with_unexpected_arguments(rng: &mut Rng, count: usize) -> Vec<u8> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz_-0123456789";
    let capabilities = rng.below(2) == 0;
    let mut names: Vec<String> = Vec::new();
    if capabilities && rng.below(2) == 0 {
        names.push(String::from("enable"));
    }
    while names.len() < count {
        let len = rng.below(8) + 1;
        let mut name: String = (0..len)
            .map(|_| char::from(LETTERS[rng.below(LETTERS.len())]))
            .collect();
        if rng.below(20) == 0 {
            name.push('\u{e9}'); // bytes above 0x7F hash as signed chars
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let arguments: Vec<String> = names
        .iter()
        .map(|n| match n.as_str() {
            "enable" => String::from("\"enable\": []"),
            n => format!("\"{n}\": 1"),
        })
        .collect();
    let command = if capabilities {
        "qmp_capabilities"
    } else {
        "query-version"
    };
    format!(
        "{{\"execute\": \"{command}\", \"arguments\": {{{}}}}}",
        arguments.join(", ")
    )
    .into_bytes()
}

/// Which argument QEMU calls unexpected depends on the GLib hash table its
/// input visitor keeps the names in (filled, emptied as the command reads
/// its arguments, resized on the way): the same names, from 2 to 80 of
/// them, get the same name back.
#[test]
fn the_unexpected_argument_named_is_qemus() {
    let Some(targets) = both() else {
        return;
    };
    let seed = 0x6A5E_ED00_0000_0001;
    let mut rng = Rng(seed);
    let requests: Vec<Vec<u8>> = (0..400)
        .map(|_| {
            let count = [2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 25, 40, 80][rng.below(13)];
            request_with_unexpected_arguments(&mut rng, count)
        })
        .collect();
    let mut chunks: Vec<&[u8]> = vec![NEGOTIATE];
    chunks.extend(requests.iter().map(Vec::as_slice));
    compare(&targets, "unexpected arguments", &chunks);
}
