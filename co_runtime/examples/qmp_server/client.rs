//! Small blocking clients, for the demo and the tests: QMP and HMP over a
//! Unix socket, with read timeouts so nothing waits forever.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::sys;

/// How long a client waits for the server before giving up.
pub const TIMEOUT: Duration = Duration::from_secs(20);

fn connect(path: &Path) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

/// A QMP client.
#[derive(Debug)]
pub struct QmpClient {
    pub stream: UnixStream,
    buf: Vec<u8>,
    /// Events received while waiting for replies, oldest first.
    pub events: Vec<Value>,
    next_id: u64,
}

impl QmpClient {
    /// Connects and reads the greeting.
    pub fn connect(path: &Path) -> io::Result<(QmpClient, Value)> {
        let mut client = QmpClient {
            stream: connect(path)?,
            buf: Vec::new(),
            events: Vec::new(),
            next_id: 0,
        };
        let greeting = client.recv()?;
        Ok((client, greeting))
    }

    /// Connects and negotiates capabilities.
    pub fn connect_negotiated(path: &Path) -> io::Result<QmpClient> {
        QmpClient::connect_with(path, json!({}))
    }

    /// Connects and negotiates capabilities, the `oob` one enabled.
    pub fn connect_oob(path: &Path) -> io::Result<QmpClient> {
        QmpClient::connect_with(path, json!({"enable": ["oob"]}))
    }

    fn connect_with(path: &Path, args: Value) -> io::Result<QmpClient> {
        let (mut client, _) = QmpClient::connect(path)?;
        client
            .execute("qmp_capabilities", args)?
            .map_err(|(class, desc)| io::Error::other(format!("{class}: {desc}")))?;
        Ok(client)
    }

    /// Sends one request (a JSON value) and a newline, without waiting.
    pub fn send(&mut self, request: &Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.send_raw(&line)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a descriptor with a single space, as `qemu.qmp` does.
    pub fn send_fd(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        sys::send_with_fd(self.stream.as_fd(), b" ", fd)
    }

    /// The next message, event or not.
    pub fn recv(&mut self) -> io::Result<Value> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return serde_json::from_slice(&line).map_err(io::Error::other);
            }
            let mut chunk = [0; 16 << 10];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next reply (not an event); events are kept in `events`.
    pub fn reply(&mut self) -> io::Result<Value> {
        loop {
            let msg = self.recv()?;
            if msg.get("event").is_some() {
                self.events.push(msg);
            } else {
                return Ok(msg);
            }
        }
    }

    /// Runs a command: its `return`, or its error's class and description.
    pub fn execute(
        &mut self,
        name: &str,
        args: Value,
    ) -> io::Result<Result<Value, (String, String)>> {
        self.next_id += 1;
        let id = self.next_id;
        let mut line = serde_json::to_vec(&json!({"execute": name, "arguments": args, "id": id}))?;
        line.push(b'\n');
        self.send_raw(&line)?;
        let reply = self.reply()?;
        if reply.get("id") != Some(&json!(id)) {
            return Err(io::Error::other(format!("reply for another id: {reply}")));
        }
        Ok(parse_reply(&reply))
    }
}

/// A reply's `return`, or its error's class and description.
pub fn parse_reply(reply: &Value) -> Result<Value, (String, String)> {
    if let Some(v) = reply.get("return") {
        return Ok(v.clone());
    }
    let class = reply["error"]["class"].as_str().unwrap_or("?").to_string();
    let desc = reply["error"]["desc"].as_str().unwrap_or("?").to_string();
    Err((class, desc))
}

/// An HMP client.
#[derive(Debug)]
pub struct HmpClient {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl HmpClient {
    /// Connects and reads the banner up to the first prompt.
    pub fn connect(path: &Path) -> io::Result<(HmpClient, String)> {
        let mut client = HmpClient {
            stream: connect(path)?,
            buf: Vec::new(),
        };
        let banner = client.until_prompt()?;
        Ok((client, banner))
    }

    fn until_prompt(&mut self) -> io::Result<String> {
        let prompt = crate::hmp::PROMPT.as_bytes();
        loop {
            if let Some(at) = self.buf.windows(prompt.len()).position(|w| w == prompt) {
                let text: Vec<u8> = self.buf.drain(..at + prompt.len()).take(at).collect();
                return Ok(String::from_utf8_lossy(&text).replace("\r\n", "\n"));
            }
            let mut chunk = [0; 16 << 10];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends a line; returns the output up to the next prompt.
    pub fn cmd(&mut self, line: &str) -> io::Result<String> {
        self.cmd_bytes(format!("{line}\n").as_bytes())
    }

    /// Sends raw bytes (a line, not necessarily UTF-8); returns the output
    /// up to the next prompt.
    pub fn cmd_bytes(&mut self, bytes: &[u8]) -> io::Result<String> {
        self.stream.write_all(bytes)?;
        self.until_prompt()
    }

    /// Sends a line without waiting for its output.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())
    }
}
