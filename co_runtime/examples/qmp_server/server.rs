//! The main loop: the dispatcher of in-band requests, coroutines, timers,
//! signals.
//!
//! QEMU's shape: the monitor I/O thread (`iothread.rs`) reads every
//! monitor and queues its in-band requests; this loop (one thread, one
//! `mio::Poll`) runs each monitor's requests one at a time, in order. A
//! coroutine-incapable command runs right in the loop, outside every
//! coroutine, with `CUR_MON` set on the loop's own block (QEMU's bottom
//! half); a coroutine-capable one runs in a coroutine whose `CUR_MON` the
//! dispatcher seeds before the first resume, and which suspends to the
//! loop on timers and blocking descriptors, so commands of different
//! monitors interleave.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::FileTypeExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use co_runtime::{Coroutine, CoroutineResult};
use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{json, Value};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::hmp;
use crate::iothread::{self, Listener, HMP_LISTENER, QMP_LISTENER};
use crate::monitor::{
    check_idle_cur_mon, enter_server, error_report, run_outside_coroutines, set_running,
    with_world, CoYielder, Kind, MonId, Request, Role, Shared, Stats, Wait, CUR_MON,
    OUT_SOFT_LIMIT,
};
use crate::qmp::{self, Prepared, QmpError};
use crate::qobject::{encode_line, QObject};
use crate::vm;

/// Where to listen, and whether SIGINT/SIGTERM stop the server.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub qmp: Option<PathBuf>,
    pub hmp: Option<PathBuf>,
    /// Take SIGINT and SIGTERM (the command line only: signal dispositions
    /// belong to the whole process).
    pub signals: bool,
    /// Count reports that go to stderr without printing them (the demo's
    /// and the load's many clients).
    pub quiet: bool,
}

const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
const FIRST_FD: usize = 16;

/// Stops a server running on another thread, as a signal would.
#[derive(Clone, Debug)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    shared: Arc<Shared>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = self.shared.main_waker.wake();
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
    qmp_id: Option<QObject>,
    kind: Kind,
    wait: Option<Wait>,
    ready: bool,
    registered: Option<RawFd>,
}

/// The server: bind it, then run it on the same thread.
pub struct Server {
    shared: Arc<Shared>,
    poll: Poll,
    io_poll: Option<Poll>,
    qmp: Option<Listener>,
    hmp: Option<Listener>,
    signals: Option<Signals>,
    stop: Arc<AtomicBool>,
    jobs: BTreeMap<MonId, Job>,
    /// The socket files, removed when the server stops.
    paths: Vec<PathBuf>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("paths", &self.paths)
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

/// Listens on `path`. A socket file left by a server that is gone (nobody
/// accepts on it) is replaced, as QEMU does; a live one or another kind of
/// file is left alone and refused.
fn listen(poll: &Poll, path: &Path, token: Token) -> io::Result<Listener> {
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", path.display()),
        )
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(fail(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the file exists and is not a socket",
            )));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(fail(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a running server listens there",
                )))
            }
            Err(_) => std::fs::remove_file(path).map_err(fail)?,
        }
    }
    let mut listener = UnixListener::bind(path).map_err(fail)?;
    poll.registry()
        .register(&mut listener, token, Interest::READABLE)?;
    Ok((listener, path.to_path_buf()))
}

impl Server {
    /// Listens on the sockets of `config`. Run it on this thread.
    pub fn bind(config: &Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let io_poll = Poll::new()?;
        let main_waker = Waker::new(poll.registry(), WAKER)?;
        let io_waker = Waker::new(io_poll.registry(), iothread::WAKER)?;
        let shared = Shared::new(main_waker, io_waker);
        shared.lock().quiet = config.quiet;
        let qmp = match &config.qmp {
            Some(path) => Some(listen(&io_poll, path, QMP_LISTENER)?),
            None => None,
        };
        let hmp = match &config.hmp {
            Some(path) => match listen(&io_poll, path, HMP_LISTENER) {
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
            let mut signals = Signals::new([SIGINT, SIGTERM])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let paths = [&qmp, &hmp]
            .into_iter()
            .flatten()
            .map(|(_, path)| path.clone())
            .collect();
        Ok(Server {
            shared,
            poll,
            io_poll: Some(io_poll),
            qmp,
            hmp,
            signals,
            stop: Arc::new(AtomicBool::new(false)),
            jobs: BTreeMap::new(),
            paths,
        })
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: self.stop.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Serves until `quit`, a signal or the stop handle; then sends
    /// `SHUTDOWN`, lets the I/O thread flush and close every monitor,
    /// removes the socket files and returns the counters.
    pub fn run(mut self) -> Stats {
        enter_server(self.shared.clone(), Role::Main);
        let io = match self.io_poll.take() {
            Some(io_poll) => iothread::spawn(
                self.shared.clone(),
                io_poll,
                self.qmp.take(),
                self.hmp.take(),
            ),
            None => Err(io::Error::other("run twice")),
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                eprintln!("qmp_server: cannot start the I/O thread: {e}");
                return self.shutdown();
            }
        };
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("qmp_server: poll failed: {e}");
                    vm::request_quit("host-error");
                }
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => {
                        let signalled = self
                            .signals
                            .as_mut()
                            .is_some_and(|s| s.pending().next().is_some());
                        if signalled {
                            vm::request_quit("host-signal");
                        }
                    }
                    WAKER => {}
                    Token(t) if t >= FIRST_FD => {
                        if let Some(job) = self.jobs.get_mut(&MonId((t - FIRST_FD) as u64)) {
                            job.ready = true;
                        }
                    }
                    Token(_) => {}
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                vm::request_quit("host-signal");
            }
            self.fire_timers();
            self.resume_ready();
            while self.dispatch() {}
            self.reap();
            let quit = with_world(|w| w.quit);
            if let Some(reason) = quit {
                // Every monitor's last word, after the reply of the command
                // that asked to quit.
                vm::emit_event("SHUTDOWN", Some(json!({"guest": false, "reason": reason})));
                with_world(|w| w.stopping = true);
                let _ = self.shared.io_waker.wake();
                break;
            }
            if with_world(|w| std::mem::take(&mut w.io_kick)) {
                let _ = self.shared.io_waker.wake();
            }
        }
        if io.join().is_err() {
            with_world(|w| w.stats.panics += 1);
        }
        self.shutdown()
    }

    fn shutdown(mut self) -> Stats {
        let ids: Vec<MonId> = with_world(|w| w.monitors.keys().copied().collect());
        for id in ids {
            self.close(id, "the server stopped");
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
        for job in self.jobs.values() {
            if job.ready {
                return Some(Duration::ZERO);
            }
            if let Some(Wait::Until(deadline)) = job.wait {
                let d = deadline.saturating_duration_since(now);
                timeout = Some(timeout.map_or(d, |t| t.min(d)));
            }
        }
        timeout
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for job in self.jobs.values_mut() {
            if matches!(job.wait, Some(Wait::Until(d)) if d <= now) {
                job.ready = true;
            }
        }
    }

    fn resume_ready(&mut self) {
        let ready: Vec<MonId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.ready)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.resume(id);
        }
    }

    /// Starts one queued request of each monitor that may run one;
    /// whether any started.
    fn dispatch(&mut self) -> bool {
        let jobs = &self.jobs;
        let ready: Vec<(MonId, Request)> = with_world(|w| {
            let mut ready = Vec::new();
            for (id, m) in w.monitors.iter_mut() {
                if m.busy || m.hung_up || m.out.len() >= OUT_SOFT_LIMIT || jobs.contains_key(id) {
                    continue;
                }
                if let Some(request) = m.queue.pop_front() {
                    m.busy = true;
                    ready.push((*id, request));
                }
            }
            // Room again: the I/O thread may read on.
            for (id, _) in &ready {
                w.io_dirty.insert(*id);
                w.io_kick = true;
            }
            ready
        });
        let started = !ready.is_empty();
        for (id, request) in ready {
            match request {
                Request::Qmp(msg) => self.start_qmp(id, msg),
                Request::Hmp(line) => self.start_hmp(id, line),
            }
        }
        started
    }

    fn start_qmp(&mut self, id: MonId, msg: Result<QObject, String>) {
        let request = match msg {
            Ok(request) => request,
            Err(desc) => {
                let reply = qmp::response(Err(QmpError::generic(desc)), None);
                return finish(id, &encode_line(&reply));
            }
        };
        let (negotiated, oob) = with_world(|w| w.negotiated(id));
        match qmp::prepare(request, negotiated, oob) {
            Prepared::Reply(reply) => finish(id, &encode_line(&reply)),
            Prepared::Run {
                command,
                args,
                id: qmp_id,
            } => {
                with_world(|w| w.stats.commands += 1);
                match command.handler {
                    qmp::Handler::Bh(f) => {
                        let reply = qmp::run_bh(id, command.name, f, &args, qmp_id);
                        finish(id, &encode_line(&reply));
                    }
                    qmp::Handler::Co(f) => {
                        let co = Coroutine::new(move |y: &CoYielder, ()| Outcome::Qmp(f(y, &args)));
                        self.launch(id, co, command.name.to_string(), qmp_id, Kind::Qmp);
                    }
                }
            }
        }
    }

    fn start_hmp(&mut self, id: MonId, line: Result<String, String>) {
        let line = match line {
            Ok(line) => line,
            Err(msg) => return finish(id, format!("{msg}{}", hmp::PROMPT).as_bytes()),
        };
        match hmp::lookup(&line) {
            None => finish(id, hmp::PROMPT.as_bytes()),
            Some((hmp::Handler::Bh(f), rest)) => {
                with_world(|w| w.stats.commands += 1);
                if run_outside_coroutines(id, &line, || f(&rest)).is_err() {
                    output(id, b"internal error\r\n");
                }
                finish(id, hmp::PROMPT.as_bytes());
            }
            Some((hmp::Handler::Co(f), rest)) => {
                with_world(|w| w.stats.commands += 1);
                let co = Coroutine::new(move |y: &CoYielder, ()| {
                    f(y, &rest);
                    Outcome::Hmp
                });
                self.launch(id, co, line, None, Kind::Hmp);
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
        qmp_id: Option<QObject>,
        kind: Kind,
    ) {
        co.with_locals(|| CUR_MON.set(Some(id)));
        self.jobs.insert(
            id,
            Job {
                co,
                name,
                qmp_id,
                kind,
                wait: None,
                ready: true,
                registered: None,
            },
        );
        with_world(|w| {
            w.stats.in_flight += 1;
            w.stats.peak_in_flight = w.stats.peak_in_flight.max(w.stats.in_flight);
        });
        self.resume(id);
    }

    fn resume(&mut self, id: MonId) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some(fd) = job.registered.take() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        job.ready = false;
        job.wait = None;
        set_running(Some((id, job.name.clone())));
        let result = panic::catch_unwind(AssertUnwindSafe(|| job.co.resume(())));
        set_running(None);
        check_idle_cur_mon("after resuming a command");
        match result {
            Ok(CoroutineResult::Yield(wait)) => {
                job.wait = Some(wait);
                if let Wait::Writable(fd) = wait {
                    let token = Token(FIRST_FD + id.0 as usize);
                    match self.poll.registry().register(
                        &mut SourceFd(&fd),
                        token,
                        Interest::WRITABLE,
                    ) {
                        Ok(()) => job.registered = Some(fd),
                        // Not pollable (a regular file): try again soon.
                        Err(_) => {
                            job.wait = Some(Wait::Until(Instant::now() + Duration::from_millis(5)))
                        }
                    }
                }
            }
            Ok(CoroutineResult::Return(outcome)) => {
                let job = self.jobs.remove(&id);
                with_world(|w| w.stats.in_flight -= 1);
                match outcome {
                    Outcome::Qmp(result) => {
                        let qmp_id = job.and_then(|j| j.qmp_id);
                        let reply = qmp::response(result.map(QObject::from), qmp_id);
                        finish(id, &encode_line(&reply));
                    }
                    Outcome::Hmp => finish(id, hmp::PROMPT.as_bytes()),
                }
            }
            Err(_) => {
                let job = self.jobs.remove(&id);
                with_world(|w| {
                    w.stats.in_flight -= 1;
                    w.stats.panics += 1;
                });
                match job {
                    Some(job) if job.kind == Kind::Qmp => {
                        let reply = qmp::response(Err(qmp::panicked(&job.name)), job.qmp_id);
                        finish(id, &encode_line(&reply));
                    }
                    _ => finish(id, format!("internal error\r\n{}", hmp::PROMPT).as_bytes()),
                }
            }
        }
    }

    /// Drops the monitors whose clients are gone.
    fn reap(&mut self) {
        let gone: Vec<MonId> = with_world(|w| {
            w.monitors
                .iter()
                .filter(|(_, m)| m.hung_up)
                .map(|(id, _)| *id)
                .collect()
        });
        for id in gone {
            self.close(id, "client went away");
        }
    }

    /// Closes a monitor: its command, if one is in flight, is dropped (its
    /// stack unwinds, its temporary monitor goes), then its descriptors.
    fn close(&mut self, id: MonId, why: &str) {
        if let Some(job) = self.jobs.remove(&id) {
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
            check_idle_cur_mon("after dropping a command");
            let who = with_world(|w| w.name(Some(id)));
            // Outside every command: this one goes to stderr.
            error_report(&format!("{who}: {why} during '{name}'; command cancelled"));
        }
        with_world(|w| w.monitors.remove(&id));
    }
}

/// Appends bytes to a monitor's output.
fn output(id: MonId, bytes: &[u8]) {
    with_world(|w| w.output(id, bytes));
}

/// Appends the last output of a request and lets the monitor run its next.
fn finish(id: MonId, bytes: &[u8]) {
    with_world(|w| {
        w.output(id, bytes);
        if let Some(m) = w.monitors.get_mut(&id) {
            m.busy = false;
        }
        w.io_dirty.insert(id);
        w.io_kick = true;
    });
}
