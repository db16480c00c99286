//! What the qmp_* tests share: a server of the example on a thread of the
//! test process, and a client that speaks raw bytes and reads raw lines.
//! The including test crate declares the example's modules at its root.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::monitor::Stats;
use crate::server;

/// How long a client waits for a reply before the test fails: a guard
/// against hangs, never a measure.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "qmp-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server of the example on its own thread; stopped when dropped.
pub struct Server {
    pub dir: TempDir,
    pub qmp: PathBuf,
    pub hmp: PathBuf,
    pub stop: server::StopHandle,
    pub thread: Option<thread::JoinHandle<Stats>>,
}

impl Server {
    /// A server that keeps reports outside commands to itself.
    pub fn start() -> Server {
        Server::start_with(true)
    }

    /// A server that prints reports outside commands to stderr unless
    /// `quiet`, as the binary does.
    pub fn start_with(quiet: bool) -> Server {
        let dir = TempDir::new("server");
        let qmp = dir.0.join("qmp.sock");
        let hmp = dir.0.join("hmp.sock");
        let (stop, thread) = server::spawn(server::Config {
            qmp: Some(qmp.clone()),
            hmp: Some(hmp.clone()),
            signals: false,
            quiet,
        })
        .unwrap();
        Server {
            dir,
            qmp,
            hmp,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the server to stop (a `quit`, or the stop handle if
    /// `stop`); no report may have broken the invariant.
    pub fn join(&mut self, stop: bool) -> Stats {
        if stop {
            self.stop.stop();
        }
        let stats = self.thread.take().unwrap().join().unwrap();
        assert!(stats.violations.is_empty(), "{:#?}", stats.violations);
        assert_eq!(stats.panics, 0);
        assert!(
            !self.qmp.exists() && !self.hmp.exists(),
            "socket files left"
        );
        stats
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The line QEMU writes for a `GenericError` with `desc`, without an id.
pub fn generic(desc: &str) -> Vec<u8> {
    generic_with_id(desc, None)
}

/// The line QEMU writes for a `GenericError` with `desc`, and the request's
/// string id if it had one (written first, as QEMU orders the members).
pub fn generic_with_id(desc: &str, id: Option<&str>) -> Vec<u8> {
    let error = format!("\"error\": {{\"class\": \"GenericError\", \"desc\": \"{desc}\"}}");
    match id {
        Some(id) => format!("{{\"id\": \"{id}\", {error}}}\r\n"),
        None => format!("{{{error}}}\r\n"),
    }
    .into_bytes()
}

/// A client that sends bytes and reads lines as bytes.
pub struct Raw {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Raw {
    /// Connects; the first line (a QMP greeting) is returned.
    pub fn connect(path: &Path) -> (Raw, Vec<u8>) {
        let mut raw = Raw::connect_quiet(path);
        let greeting = raw.line();
        (raw, greeting)
    }

    /// Connects without reading anything.
    pub fn connect_quiet(path: &Path) -> Raw {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and negotiates, with `{"enable": ["oob"]}` if `oob`.
    pub fn negotiated(path: &Path, oob: bool) -> Raw {
        let (mut raw, _) = Raw::connect(path);
        let request: &[u8] = if oob {
            b"{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}"
        } else {
            b"{\"execute\": \"qmp_capabilities\"}"
        };
        assert_eq!(raw.ask(request), b"{\"return\": {}}\r\n");
        raw
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends `bytes` and returns the next line.
    pub fn ask(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.send(bytes);
        self.line()
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0; 64 << 10];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!("no line within {TIMEOUT:?}: {e}; have {:?}", self.text()),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// The next line, CRLF included.
    pub fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                return self.buf.drain(..=nl).collect();
            }
            assert!(self.fill(), "the server closed; have {:?}", self.text());
        }
    }

    /// The next line as text (it is ASCII).
    pub fn line_str(&mut self) -> String {
        String::from_utf8(self.line()).unwrap()
    }

    /// Output up to `marker` (included), for HMP.
    pub fn until(&mut self, marker: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(marker.len()).position(|w| w == marker) {
                return self.buf.drain(..at + marker.len()).collect();
            }
            assert!(self.fill(), "the server closed; have {:?}", self.text());
        }
    }

    /// Whether the server closed the connection with nothing more sent.
    pub fn at_eof(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }

    /// Whether a line arrives within `wait`: for checks that something
    /// does not happen (a correct server never sends it, so a slow machine
    /// cannot make the test fail).
    pub fn line_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let got = loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                break Some(self.buf.drain(..=nl).collect());
            }
            if Instant::now() >= deadline {
                break None;
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        };
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        got
    }
}

/// The `id` member's text in a reply line, for matching (a test sends ids
/// of the form `"word"`).
pub fn id_of(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    match text.split_once("\"id\": \"") {
        Some((_, rest)) => rest.split('"').next().unwrap_or_default().to_string(),
        None => String::new(),
    }
}

/// How much the blocking command writes: more than a socket pair holds.
pub const BLOCKER_BYTES: usize = 1 << 20;

/// A command of our server that blocks until released: `x-write-fd` of
/// 1 MiB to a socket nobody reads; reading `release`'s peer lets it finish.
pub struct Blocker {
    pub peer: Option<UnixStream>,
}

impl Blocker {
    /// Passes one end of a socket pair to `raw`'s monitor, names it `fdname`.
    pub fn new(raw: &mut Raw, fdname: &str) -> Blocker {
        let (mine, theirs) = UnixStream::pair().unwrap();
        crate::sys::send_with_fd(
            std::os::fd::AsFd::as_fd(&raw.stream),
            b" ",
            std::os::fd::AsFd::as_fd(&theirs),
        )
        .unwrap();
        drop(theirs);
        let reply = raw.ask(
            format!("{{\"execute\": \"getfd\", \"arguments\": {{\"fdname\": \"{fdname}\"}}}}")
                .as_bytes(),
        );
        assert_eq!(reply, b"{\"return\": {}}\r\n");
        Blocker { peer: Some(mine) }
    }

    /// The request that blocks, with `id`.
    pub fn request(fdname: &str, id: &str) -> Vec<u8> {
        let data = "b".repeat(BLOCKER_BYTES);
        format!(
            "{{\"execute\": \"x-write-fd\", \"id\": \"{id}\", \"arguments\": {{\"fdname\": \"{fdname}\", \"data\": \"{data}\"}}}}"
        )
        .into_bytes()
    }

    /// Reads everything the command writes, on a thread.
    pub fn release(&mut self) -> thread::JoinHandle<usize> {
        let peer = self.peer.take().unwrap();
        thread::spawn(move || {
            peer.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut buf = vec![0; 64 << 10];
            let mut total = 0;
            while total < BLOCKER_BYTES {
                match (&peer).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        })
    }
}
