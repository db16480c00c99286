//! The monitor I/O thread (QEMU's `mon_iothread`): it accepts connections,
//! reads every monitor's socket, parses requests, runs out-of-band ones at
//! once (outside every coroutine, `CUR_MON` set on this thread's own
//! block), queues in-band ones for the main loop, and writes every
//! monitor's output.
//!
//! Flow control as QEMU's: a monitor with the `oob` capability has at most
//! `MAX_QUEUE` in-band requests waiting; one without it has its next
//! request read only once the previous one is done. Past that the thread
//! stops reading the monitor's socket (bytes already read wait, unparsed),
//! so an out-of-band request behind a full queue waits too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};

use crate::hmp::{self, LineBuffer};
use crate::json::{JsonStream, Message};
use crate::monitor::{enter_server, Kind, MonId, Request, Role, Shared, World, MAX_PENDING_FDS};
use crate::qmp;
use crate::qobject::encode_line;
use crate::sys;

pub const QMP_LISTENER: Token = Token(0);
pub const HMP_LISTENER: Token = Token(1);
pub const WAKER: Token = Token(2);
const FIRST_CONN: usize = 16;
/// After `SHUTDOWN`, output is flushed for at most this long.
const QUIT_FLUSH: Duration = Duration::from_secs(1);

/// A listening socket and its path.
pub type Listener = (UnixListener, PathBuf);

struct Conn {
    stream: UnixStream,
    kind: Kind,
    json: JsonStream,
    lines: LineBuffer,
    /// Bytes read and not parsed yet (the queue was full), from `at`.
    input: Vec<u8>,
    at: usize,
    /// The socket may have more to read.
    readable: bool,
    /// The peer closed its end: once its input cannot be read (the monitor
    /// has no room), the connection closes anyway, as QEMU notices a hang-up
    /// while it does not read.
    hup: bool,
}

struct IoThread {
    shared: Arc<Shared>,
    poll: Poll,
    qmp: Option<Listener>,
    hmp: Option<Listener>,
    conns: BTreeMap<MonId, Conn>,
    rbuf: Vec<u8>,
    /// Requests were queued or a monitor closed: the main loop has work.
    wake_main: bool,
}

/// Starts the I/O thread with its poll (the I/O waker and the listeners
/// registered on it).
pub fn spawn(
    shared: Arc<Shared>,
    poll: Poll,
    qmp: Option<Listener>,
    hmp: Option<Listener>,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("mon_iothread".into())
        .spawn(move || {
            enter_server(shared.clone(), Role::Io);
            IoThread {
                shared,
                poll,
                qmp,
                hmp,
                conns: BTreeMap::new(),
                rbuf: vec![0; 64 << 10],
                wake_main: false,
            }
            .run();
        })
}

fn conn_token(id: MonId) -> Token {
    Token(FIRST_CONN + id.0 as usize)
}

impl IoThread {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut deadline = None;
        let mut again = false;
        loop {
            let timeout = if again {
                Some(Duration::ZERO)
            } else {
                deadline.map(|_| Duration::from_millis(10))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("qmp_server: I/O thread poll failed: {e}");
                    break;
                }
            }
            // The monitors to look at: those with socket events, new ones,
            // and those the main loop gave output or room.
            let mut todo = BTreeSet::new();
            for event in events.iter() {
                match event.token() {
                    QMP_LISTENER => todo.extend(self.accept(Kind::Qmp)),
                    HMP_LISTENER => todo.extend(self.accept(Kind::Hmp)),
                    WAKER => {}
                    Token(t) => {
                        let id = MonId((t - FIRST_CONN) as u64);
                        if let Some(c) = self.conns.get_mut(&id) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                c.readable = true;
                            }
                            if event.is_read_closed() || event.is_error() {
                                c.hup = true;
                            }
                            todo.insert(id);
                        }
                    }
                }
            }
            let stopping = {
                let mut w = self.shared.lock();
                w.io_kick = false;
                todo.append(&mut w.io_dirty);
                w.stopping
            };
            if stopping && deadline.is_none() {
                // Accept nobody else, read nothing more: flush and go.
                self.qmp.take();
                self.hmp.take();
                deadline = Some(Instant::now() + QUIT_FLUSH);
            }
            if stopping {
                todo.extend(self.conns.keys().copied());
            }
            for id in todo {
                if !self.conns.contains_key(&id) {
                    continue;
                }
                if !stopping {
                    self.read(id);
                }
                self.flush(id);
            }
            // Work this turn made for this thread (a yanked connection to
            // read to its end) is done on the next, at once.
            again = {
                let w = self.shared.lock();
                w.io_dirty
                    .iter()
                    .any(|id| self.conns.get(id).is_some_and(|c| c.readable))
            };
            if std::mem::take(&mut self.wake_main) {
                let _ = self.shared.main_waker.wake();
            }
            if let Some(deadline) = deadline {
                let flushed = {
                    let w = self.shared.lock();
                    self.conns
                        .keys()
                        .all(|id| w.monitors.get(id).is_none_or(|m| m.out.is_empty()))
                };
                if flushed || Instant::now() >= deadline {
                    break;
                }
            }
        }
        // Dropping the sockets closes every connection.
        let ids: Vec<MonId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Accepts every waiting connection; their monitors.
    fn accept(&mut self, kind: Kind) -> Vec<MonId> {
        let mut accepted = Vec::new();
        loop {
            let listener = match kind {
                Kind::Qmp => self.qmp.as_ref(),
                _ => self.hmp.as_ref(),
            };
            let Some((listener, _)) = listener else {
                return accepted;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return accepted,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("qmp_server: accept failed: {e}");
                    return accepted;
                }
            };
            let id = {
                let mut w = self.shared.lock();
                match kind {
                    Kind::Qmp => {
                        let id = w.add_monitor(Kind::Qmp, "qmp");
                        w.output(id, &encode_line(&qmp::greeting()));
                        id
                    }
                    _ => {
                        let id = w.add_monitor(Kind::Hmp, "hmp");
                        w.output(id, format!("{}{}", hmp::banner(), hmp::PROMPT).as_bytes());
                        id
                    }
                }
            };
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                conn_token(id),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                eprintln!("qmp_server: cannot watch a connection: {e}");
                self.shared.lock().monitors.remove(&id);
                continue;
            }
            self.conns.insert(
                id,
                Conn {
                    stream,
                    kind,
                    json: JsonStream::default(),
                    lines: LineBuffer::default(),
                    input: Vec::new(),
                    at: 0,
                    readable: true,
                    hup: false,
                },
            );
            accepted.push(id);
        }
    }

    /// Parses what was read and reads more, while the monitor has room.
    fn read(&mut self, id: MonId) {
        loop {
            if !self.parse(id) {
                // No room: the rest waits for the main loop, unless the
                // client is gone.
                if self.conns.get(&id).is_some_and(|c| c.hup) {
                    self.close(id);
                }
                return;
            }
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if !conn.readable {
                return;
            }
            let mut fds = Vec::new();
            match sys::recv_with_fds(conn.stream.as_fd(), &mut self.rbuf, &mut fds) {
                Ok(0) => return self.close(id),
                Ok(n) => {
                    conn.input.clear();
                    conn.input.extend_from_slice(&self.rbuf[..n]);
                    conn.at = 0;
                    if !fds.is_empty() {
                        let mut w = self.shared.lock();
                        let World {
                            monitors, stats, ..
                        } = &mut *w;
                        if let Some(m) = monitors.get_mut(&id) {
                            for fd in fds {
                                if m.pending_fds.len() < MAX_PENDING_FDS {
                                    m.pending_fds.push_back(fd);
                                } else {
                                    stats.fds_refused += 1; // closed here
                                }
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(id),
            }
        }
    }

    /// Parses buffered input, request by request, while the monitor has
    /// room; whether all of it was parsed.
    fn parse(&mut self, id: MonId) -> bool {
        let mut msgs: Vec<Message> = Vec::new();
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return false;
            };
            if conn.at >= conn.input.len() {
                return true;
            }
            let room = self
                .shared
                .lock()
                .monitors
                .get(&id)
                .is_some_and(|m| m.has_room());
            if !room {
                return false;
            }
            match conn.kind {
                Kind::Qmp => {
                    while conn.at < conn.input.len() && msgs.is_empty() {
                        conn.json.feed_byte(conn.input[conn.at], &mut msgs);
                        conn.at += 1;
                    }
                    let held = conn.json.buffered();
                    if conn.at == conn.input.len() && held > 0 {
                        let mut w = self.shared.lock();
                        w.stats.peak_parser_bytes = w.stats.peak_parser_bytes.max(held);
                    }
                    for msg in msgs.drain(..) {
                        self.request(id, msg);
                    }
                }
                _ => {
                    let (used, line) = conn.lines.feed(&conn.input[conn.at..]);
                    conn.at += used;
                    if let Some(line) = line {
                        self.queue(id, Request::Hmp(line));
                    }
                }
            }
        }
    }

    /// One QMP request: out-of-band ones run now, the others are queued.
    fn request(&mut self, id: MonId, msg: Message) {
        match msg {
            Ok(req) if qmp::is_oob(&req) => {
                let (negotiated, oob) = self.shared.lock().negotiated(id);
                let reply = qmp::dispatch_oob(id, req, negotiated, oob);
                let yanked = {
                    let mut w = self.shared.lock();
                    w.output(id, &encode_line(&reply));
                    let yanked = std::mem::take(&mut w.yanked);
                    w.io_dirty.extend(yanked.iter().copied());
                    yanked
                };
                for victim in yanked {
                    if let Some(c) = self.conns.get_mut(&victim) {
                        let _ = c.stream.shutdown(std::net::Shutdown::Both);
                        c.readable = true;
                    }
                }
            }
            msg => self.queue(id, Request::Qmp(msg)),
        }
    }

    fn queue(&mut self, id: MonId, request: Request) {
        let mut w = self.shared.lock();
        let World {
            monitors, stats, ..
        } = &mut *w;
        if let Some(m) = monitors.get_mut(&id) {
            m.queue.push_back(request);
            stats.peak_queue = stats.peak_queue.max(m.queue.len());
            self.wake_main = true;
        }
    }

    /// Writes the monitor's pending output, as much as the socket takes.
    fn flush(&mut self, id: MonId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let out = {
            let mut w = self.shared.lock();
            match w.monitors.get_mut(&id) {
                Some(m) if !m.out.is_empty() => std::mem::take(&mut m.out),
                _ => return,
            }
        };
        let mut written = 0;
        let mut broken = false;
        while written < out.len() {
            match (&conn.stream).write(&out[written..]) {
                Ok(0) => {
                    broken = true;
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    broken = true;
                    break;
                }
            }
        }
        {
            let mut w = self.shared.lock();
            if let Some(m) = w.monitors.get_mut(&id) {
                let newer = std::mem::take(&mut m.out);
                m.out = out;
                m.out.drain(..written);
                m.out.extend_from_slice(&newer);
            }
        }
        if broken {
            self.close(id);
        }
    }

    /// The client is gone: the socket closes; the main loop drops the
    /// monitor (and cancels its command).
    fn close(&mut self, id: MonId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        if let Some(m) = self.shared.lock().monitors.get_mut(&id) {
            m.hung_up = true;
            m.queue.clear();
        }
        self.wake_main = true;
    }
}
