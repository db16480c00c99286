//! The main loop: listening sockets, monitors, the dispatcher.
//!
//! One thread, one `mio::Poll` (epoll), QEMU's shape: each accepted
//! connection is a monitor; its requests are queued and run one at a time,
//! in order. A coroutine-incapable command runs right in the loop, outside
//! every coroutine, with `CUR_MON` set on the loop's own block (QEMU's
//! bottom half); a coroutine-capable one runs in a coroutine whose
//! `CUR_MON` the dispatcher seeds before the first resume, and which
//! suspends to the loop on timers and blocking descriptors. Commands of
//! different monitors interleave.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use co_runtime::{Coroutine, CoroutineResult};
use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::Value;

use crate::hmp::{self, LineBuffer};
use crate::monitor::{
    error_report, reset_world, with_world, CoYielder, CurMonGuard, Kind, MonId, Stats, Wait,
    CUR_MON, MAX_PENDING_FDS, OUT_SOFT_LIMIT,
};
use crate::qmp::{self, JsonStream, Prepared, QmpError};
use crate::sys;

/// Where to listen, and whether SIGINT/SIGTERM stop the server.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub qmp: Option<PathBuf>,
    pub hmp: Option<PathBuf>,
    /// Install handlers for SIGINT and SIGTERM (the command line only:
    /// signal dispositions belong to the whole process).
    pub signals: bool,
}

/// At most this many requests wait per monitor before its input is no
/// longer read (QEMU suspends a monitor likewise).
pub const MAX_QUEUE: usize = 8;
/// After `quit`, output is flushed for at most this long.
const QUIT_FLUSH: Duration = Duration::from_secs(1);

const QMP_LISTENER: Token = Token(0);
const HMP_LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
const WAKER: Token = Token(3);
const FIRST_CONN: usize = 16;

fn conn_token(id: MonId) -> Token {
    Token(FIRST_CONN + ((id.0 as usize) << 1))
}

fn fd_token(id: MonId) -> Token {
    Token(FIRST_CONN + ((id.0 as usize) << 1) + 1)
}

/// Stops a server running on another thread, as `quit` would.
#[derive(Clone, Debug)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// How a command ended.
enum Outcome {
    Qmp(Result<Value, QmpError>),
    Hmp,
}

/// A command running in a coroutine.
struct Job {
    co: Coroutine<(), Wait, Outcome>,
    name: String,
    qmp_id: Option<Value>,
    wait: Option<Wait>,
    ready: bool,
    registered: Option<RawFd>,
}

enum Request {
    Qmp(Result<Value, QmpError>),
    Hmp(Result<String, String>),
}

struct Conn {
    stream: UnixStream,
    kind: Kind,
    json: JsonStream,
    lines: LineBuffer,
    queue: VecDeque<Request>,
    job: Option<Job>,
    closing: bool,
    /// Input may be waiting in the socket (reading was paused).
    want_read: bool,
    /// Unsent output at the last flush.
    backlog: usize,
}

/// The server: bind it, then run it on the same thread.
pub struct Server {
    poll: Poll,
    qmp: Option<(UnixListener, PathBuf)>,
    hmp: Option<(UnixListener, PathBuf)>,
    signals: Option<File>,
    conns: BTreeMap<MonId, Conn>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    quit_deadline: Option<Instant>,
    rbuf: Vec<u8>,
    /// The socket files, removed when the server stops.
    paths: Vec<PathBuf>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("monitors", &self.conns.len())
            .finish_non_exhaustive()
    }
}

/// Binds a server on a new thread and runs it there; returns once it
/// listens. The thread returns the server's counters when it stops.
pub fn spawn(config: Config) -> io::Result<(StopHandle, thread::JoinHandle<Stats>)> {
    let (tx, rx) = mpsc::channel();
    let thread =
        thread::Builder::new()
            .name("qmp_server".into())
            .spawn(move || match Server::bind(&config) {
                Ok(server) => {
                    let _ = tx.send(Ok(server.stop_handle()));
                    server.run()
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    Stats::default()
                }
            })?;
    match rx.recv() {
        Ok(Ok(handle)) => Ok((handle, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other("the server thread died")),
    }
}

fn listen(poll: &Poll, path: &PathBuf, token: Token) -> io::Result<(UnixListener, PathBuf)> {
    let mut listener = UnixListener::bind(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", path.display()),
        )
    })?;
    poll.registry()
        .register(&mut listener, token, Interest::READABLE)?;
    Ok((listener, path.clone()))
}

impl Server {
    /// Listens on the sockets of `config`. The server's state lives in this
    /// thread: run it here.
    pub fn bind(config: &Config) -> io::Result<Server> {
        reset_world();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let qmp = match &config.qmp {
            Some(path) => Some(listen(&poll, path, QMP_LISTENER)?),
            None => None,
        };
        let hmp = match &config.hmp {
            Some(path) => match listen(&poll, path, HMP_LISTENER) {
                Ok(l) => Some(l),
                Err(e) => {
                    if let Some((_, p)) = &qmp {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e);
                }
            },
            None => None,
        };
        let signals = if config.signals {
            let file = File::from(sys::signal_pipe()?);
            poll.registry().register(
                &mut SourceFd(&file.as_raw_fd()),
                SIGNALS,
                Interest::READABLE,
            )?;
            Some(file)
        } else {
            None
        };
        let paths = [&qmp, &hmp]
            .into_iter()
            .flatten()
            .map(|(_, path)| path.clone())
            .collect();
        Ok(Server {
            poll,
            qmp,
            hmp,
            signals,
            conns: BTreeMap::new(),
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            quit_deadline: None,
            rbuf: vec![0; 64 << 10],
            paths,
        })
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Serves until `quit`, a signal or the stop handle; then closes every
    /// monitor, removes the socket files and returns the counters.
    pub fn run(mut self) -> Stats {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("qmp_server: poll failed: {e}");
                    break;
                }
            }
            for event in events.iter() {
                match event.token() {
                    QMP_LISTENER => self.accept(Kind::Qmp),
                    HMP_LISTENER => self.accept(Kind::Hmp),
                    SIGNALS => {
                        if let Some(file) = &mut self.signals {
                            let mut buf = [0; 64];
                            while matches!(file.read(&mut buf), Ok(n) if n > 0) {}
                        }
                        qmp::request_quit();
                    }
                    WAKER => {
                        if self.stop.load(Ordering::SeqCst) {
                            qmp::request_quit();
                        }
                    }
                    Token(t) if t >= FIRST_CONN => {
                        let id = MonId(((t - FIRST_CONN) >> 1) as u64);
                        let Some(conn) = self.conns.get_mut(&id) else {
                            continue;
                        };
                        if (t - FIRST_CONN) & 1 == 1 {
                            if let Some(job) = &mut conn.job {
                                job.ready = true;
                            }
                        } else if event.is_readable() || event.is_read_closed() || event.is_error()
                        {
                            conn.want_read = true;
                        }
                    }
                    Token(_) => {}
                }
            }
            self.fire_timers();
            self.step();
            if with_world(|w| w.quit) {
                let now = Instant::now();
                let deadline = *self.quit_deadline.get_or_insert_with(|| {
                    // Accept nobody else.
                    self.qmp.take();
                    self.hmp.take();
                    now + QUIT_FLUSH
                });
                let flushed = self.conns.values().all(|c| c.backlog == 0);
                if flushed || now >= deadline {
                    break;
                }
            }
        }
        self.shutdown()
    }

    fn shutdown(mut self) -> Stats {
        let ids: Vec<MonId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        self.qmp.take();
        self.hmp.take();
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
        with_world(|w| w.stats.clone())
    }

    fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut timeout: Option<Duration> = None;
        let mut at_most = |d: Duration| timeout = Some(timeout.map_or(d, |t| t.min(d)));
        for conn in self.conns.values() {
            let open = conn.backlog < OUT_SOFT_LIMIT && !conn.closing;
            match &conn.job {
                Some(job) if job.ready => return Some(Duration::ZERO),
                Some(job) => {
                    if let Some(Wait::Until(deadline)) = job.wait {
                        at_most(deadline.saturating_duration_since(now));
                    }
                }
                None if open && !conn.queue.is_empty() => return Some(Duration::ZERO),
                None => {}
            }
            if conn.closing || (open && conn.want_read && conn.queue.len() < MAX_QUEUE) {
                return Some(Duration::ZERO);
            }
        }
        if let Some(deadline) = self.quit_deadline {
            at_most(
                deadline
                    .saturating_duration_since(now)
                    .min(Duration::from_millis(10)),
            );
        }
        timeout
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for conn in self.conns.values_mut() {
            if let Some(job) = &mut conn.job {
                if matches!(job.wait, Some(Wait::Until(d)) if d <= now) {
                    job.ready = true;
                }
            }
        }
    }

    /// One turn over every monitor: resume what is ready, start queued
    /// commands, read paused input, write output, close what must close.
    fn step(&mut self) {
        let ids: Vec<MonId> = self.conns.keys().copied().collect();
        for id in ids {
            if self
                .conns
                .get(&id)
                .is_some_and(|c| c.job.as_ref().is_some_and(|j| j.ready))
            {
                self.resume(id);
            }
            // Start commands and read input while the monitor can take them.
            for _ in 0..4 {
                self.dispatch(id);
                let Some(conn) = self.conns.get(&id) else {
                    break;
                };
                if !conn.want_read || conn.closing {
                    break;
                }
                self.read(id);
            }
            self.flush(id);
            if self.conns.get(&id).is_some_and(|c| c.closing) {
                self.close(id);
            }
        }
    }

    fn accept(&mut self, kind: Kind) {
        loop {
            let listener = match kind {
                Kind::Qmp => self.qmp.as_ref(),
                _ => self.hmp.as_ref(),
            };
            let Some((listener, _)) = listener else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("qmp_server: accept failed: {e}");
                    return;
                }
            };
            let (id, hello) = with_world(|w| match kind {
                Kind::Qmp => (
                    w.add_monitor(Kind::Qmp, "qmp"),
                    qmp::encode(&qmp::greeting()),
                ),
                _ => (
                    w.add_monitor(Kind::Hmp, "hmp"),
                    format!("{}{}", hmp::BANNER, hmp::PROMPT).into_bytes(),
                ),
            });
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                conn_token(id),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                eprintln!("qmp_server: cannot watch a connection: {e}");
                with_world(|w| w.monitors.remove(&id));
                continue;
            }
            with_world(|w| {
                if let Some(m) = w.monitors.get_mut(&id) {
                    m.out.extend_from_slice(&hello);
                }
            });
            self.conns.insert(
                id,
                Conn {
                    stream,
                    kind,
                    json: JsonStream::default(),
                    lines: LineBuffer::default(),
                    queue: VecDeque::new(),
                    job: None,
                    closing: false,
                    want_read: true,
                    backlog: hello.len(),
                },
            );
        }
    }

    /// Reads what the monitor's client sent, while its queue has room.
    fn read(&mut self, id: MonId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        loop {
            if conn.queue.len() >= MAX_QUEUE || conn.backlog >= OUT_SOFT_LIMIT {
                return; // want_read stays set: read again once there is room
            }
            let mut fds = Vec::new();
            match sys::recv_with_fds(conn.stream.as_fd(), &mut self.rbuf, &mut fds) {
                Ok(0) => {
                    conn.want_read = false;
                    conn.closing = true;
                    return;
                }
                Ok(n) => {
                    if !fds.is_empty() {
                        with_world(|w| {
                            if let Some(m) = w.monitors.get_mut(&id) {
                                for fd in fds {
                                    if m.pending_fds.len() < MAX_PENDING_FDS {
                                        m.pending_fds.push_back(fd);
                                    } else {
                                        w.stats.fds_refused += 1; // closed here
                                    }
                                }
                            }
                        });
                    }
                    let bytes = &self.rbuf[..n];
                    match conn.kind {
                        Kind::Qmp => {
                            let mut values = VecDeque::new();
                            conn.json.feed(bytes, &mut values);
                            conn.queue.extend(values.into_iter().map(Request::Qmp));
                        }
                        _ => {
                            let mut lines = VecDeque::new();
                            conn.lines.feed(bytes, &mut lines);
                            conn.queue.extend(lines.into_iter().map(Request::Hmp));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.want_read = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.want_read = false;
                    conn.closing = true;
                    return;
                }
            }
        }
    }

    /// Starts the monitor's queued commands, one at a time, in order.
    fn dispatch(&mut self, id: MonId) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            if conn.job.is_some() || conn.closing || conn.backlog >= OUT_SOFT_LIMIT {
                return;
            }
            let Some(request) = conn.queue.pop_front() else {
                return;
            };
            match request {
                Request::Qmp(request) => self.start_qmp(id, request),
                Request::Hmp(line) => self.start_hmp(id, line),
            }
            self.update_backlog(id);
        }
    }

    fn update_backlog(&mut self, id: MonId) {
        let backlog = with_world(|w| w.monitors.get(&id).map_or(0, |m| m.out.len()));
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.backlog = backlog;
        }
    }

    fn start_qmp(&mut self, id: MonId, request: Result<Value, QmpError>) {
        let negotiated = with_world(|w| w.monitors.get(&id).is_some_and(|m| m.negotiated));
        match qmp::prepare(request, negotiated) {
            Prepared::Reply(reply) => output(id, &qmp::encode(&reply)),
            Prepared::Run {
                command,
                args,
                id: qmp_id,
            } => {
                with_world(|w| w.stats.commands += 1);
                match command.handler {
                    qmp::Handler::Bh(f) => {
                        let result = run_bh(id, command.name, || f(&args)).unwrap_or_else(|()| {
                            Err(QmpError::generic(format!(
                                "internal error: '{}' panicked",
                                command.name
                            )))
                        });
                        output(id, &qmp::encode(&qmp::response(result, qmp_id)));
                    }
                    qmp::Handler::Co(f) => {
                        let co = Coroutine::new(move |y: &CoYielder, ()| Outcome::Qmp(f(y, &args)));
                        self.launch(id, co, command.name.to_string(), qmp_id);
                    }
                }
            }
        }
    }

    fn start_hmp(&mut self, id: MonId, line: Result<String, String>) {
        let line = match line {
            Ok(line) => line,
            Err(msg) => {
                output(id, format!("{msg}{}", hmp::PROMPT).as_bytes());
                return;
            }
        };
        match hmp::lookup(&line) {
            None => output(id, hmp::PROMPT.as_bytes()),
            Some((hmp::Handler::Bh(f), rest)) => {
                with_world(|w| w.stats.commands += 1);
                if run_bh(id, &line, || f(&rest)).is_err() {
                    output(id, b"internal error\r\n");
                }
                output(id, hmp::PROMPT.as_bytes());
            }
            Some((hmp::Handler::Co(f), rest)) => {
                with_world(|w| w.stats.commands += 1);
                let co = Coroutine::new(move |y: &CoYielder, ()| {
                    f(y, &rest);
                    Outcome::Hmp
                });
                self.launch(id, co, line, None);
            }
        }
    }

    /// Seeds the coroutine's `CUR_MON` (QEMU's `monitor_set_cur()`) and
    /// runs it to its first suspension.
    fn launch(
        &mut self,
        id: MonId,
        mut co: Coroutine<(), Wait, Outcome>,
        name: String,
        qmp_id: Option<Value>,
    ) {
        co.with_locals(|| CUR_MON.set(Some(id)));
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.job = Some(Job {
            co,
            name,
            qmp_id,
            wait: None,
            ready: true,
            registered: None,
        });
        with_world(|w| {
            w.stats.in_flight += 1;
            w.stats.peak_in_flight = w.stats.peak_in_flight.max(w.stats.in_flight);
        });
        self.resume(id);
    }

    fn resume(&mut self, id: MonId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(job) = &mut conn.job else {
            return;
        };
        if let Some(fd) = job.registered.take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        job.ready = false;
        job.wait = None;
        with_world(|w| w.running = Some((id, job.name.clone())));
        let result = panic::catch_unwind(AssertUnwindSafe(|| job.co.resume(())));
        with_world(|w| w.running = None);
        check_main_loop_cur_mon("after resuming a command");
        match result {
            Ok(CoroutineResult::Yield(wait)) => {
                job.wait = Some(wait);
                if let Wait::Writable(fd) = wait {
                    let registered = self.poll.registry().register(
                        &mut SourceFd(&fd),
                        fd_token(id),
                        Interest::WRITABLE,
                    );
                    match registered {
                        Ok(()) => job.registered = Some(fd),
                        // Not pollable (a regular file): try again soon.
                        Err(_) => {
                            job.wait = Some(Wait::Until(Instant::now() + Duration::from_millis(5)))
                        }
                    }
                }
            }
            Ok(CoroutineResult::Return(outcome)) => {
                let job = conn.job.take();
                with_world(|w| w.stats.in_flight -= 1);
                match outcome {
                    Outcome::Qmp(result) => {
                        let qmp_id = job.and_then(|j| j.qmp_id);
                        output(id, &qmp::encode(&qmp::response(result, qmp_id)));
                    }
                    Outcome::Hmp => output(id, hmp::PROMPT.as_bytes()),
                }
            }
            Err(_) => {
                let job = conn.job.take();
                with_world(|w| {
                    w.stats.in_flight -= 1;
                    w.stats.panics += 1;
                });
                match conn.kind {
                    Kind::Qmp => {
                        let name = job.as_ref().map_or("?", |j| j.name.as_str());
                        let err = QmpError::generic(format!("internal error: '{name}' panicked"));
                        let qmp_id = job.and_then(|j| j.qmp_id);
                        output(id, &qmp::encode(&qmp::response(Err(err), qmp_id)));
                    }
                    _ => output(id, format!("internal error\r\n{}", hmp::PROMPT).as_bytes()),
                }
            }
        }
        self.update_backlog(id);
    }

    /// Writes the monitor's pending output, as much as the socket takes.
    fn flush(&mut self, id: MonId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let was_blocked = conn.backlog >= OUT_SOFT_LIMIT;
        let (backlog, broken) = with_world(|w| {
            let Some(m) = w.monitors.get_mut(&id) else {
                return (0, true);
            };
            let mut written = 0;
            let mut broken = false;
            while written < m.out.len() {
                match (&conn.stream).write(&m.out[written..]) {
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
            m.out.drain(..written);
            (m.out.len(), broken)
        });
        conn.backlog = backlog;
        if broken {
            conn.closing = true;
        }
        if was_blocked && backlog < OUT_SOFT_LIMIT {
            conn.want_read = true;
        }
    }

    /// Closes a monitor: its command, if one is in flight, is dropped (its
    /// stack unwinds, its temporary monitor goes), then its descriptors.
    fn close(&mut self, id: MonId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(job) = conn.job.take() {
            if let Some(fd) = job.registered {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            let name = job.name.clone();
            with_world(|w| {
                w.stats.in_flight -= 1;
                w.stats.cancelled += 1;
            });
            if panic::catch_unwind(AssertUnwindSafe(|| drop(job))).is_err() {
                with_world(|w| w.stats.panics += 1);
            }
            check_main_loop_cur_mon("after dropping a command");
            let who = with_world(|w| w.name(Some(id)));
            // Outside every command: this one goes to stderr.
            error_report(&format!(
                "{who}: client went away during '{name}'; command cancelled"
            ));
        }
        with_world(|w| w.monitors.remove(&id));
    }
}

/// Appends bytes to a monitor's output.
fn output(id: MonId, bytes: &[u8]) {
    with_world(|w| {
        if let Some(m) = w.monitors.get_mut(&id) {
            m.out.extend_from_slice(bytes);
        }
        w.note_out(id);
    });
}

/// Runs a coroutine-incapable command in the main loop, outside every
/// coroutine, with `CUR_MON` set on the loop's block for its duration.
fn run_bh<R>(id: MonId, name: &str, f: impl FnOnce() -> R) -> Result<R, ()> {
    with_world(|w| w.running = Some((id, name.to_string())));
    let result = {
        let _cur = CurMonGuard::set(Some(id));
        panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| ())
    };
    with_world(|w| w.running = None);
    result
}

/// Between commands, the main loop has no current monitor.
fn check_main_loop_cur_mon(place: &str) {
    if let Some(cur) = CUR_MON.get() {
        with_world(|w| {
            let v = format!("main loop saw CUR_MON {} {place}", w.name(Some(cur)));
            w.stats.violations.push(v);
        });
    }
}
