//! Monitors, `CUR_MON`, `error_report()` and the seed's invariant.
//!
//! Like QEMU, the server keeps one table of monitors (its `mon_list`) and
//! one "current monitor" per coroutine: `CUR_MON`, a `co_local!`. The code
//! that reports errors or looks up a file descriptor by name asks `CUR_MON`;
//! nothing hands it a monitor. Two threads share the table: the main loop
//! (in-band commands, in coroutines or outside them) and the monitor I/O
//! thread (sockets, and out-of-band commands, outside every coroutine with
//! `CUR_MON` set on the thread's own block). Each records which monitor's
//! command it is running, and every report is checked against the record
//! of the thread it is made on.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use co_local::co_local;
use co_runtime::Yielder;
use mio::Waker;

use crate::json::Message;

/// A monitor's identity: never reused while the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonId(pub u64);

co_local! {
    /// The monitor whose command is running on this coroutine (or, outside
    /// every coroutine, on this thread: the main loop's bottom half, or an
    /// out-of-band command on the I/O thread), if any.
    pub static CUR_MON: Cell<Option<MonId>> = const { Cell::new(None) };
}

/// What a suspended command waits for; the main loop resumes it then.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// A main-loop timer.
    Until(std::time::Instant),
    /// A descriptor (of the monitor's `getfd` table) becoming writable.
    Writable(std::os::fd::RawFd),
}

/// What a coroutine-capable command gets to suspend itself.
pub type CoYielder = Yielder<(), Wait>;

/// The kinds of monitors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A QMP connection.
    Qmp,
    /// An HMP connection.
    Hmp,
    /// The temporary HMP monitor of one `human-monitor-command`: its output
    /// becomes the command's return value.
    HmpCapture { parent: Option<MonId> },
}

impl Kind {
    pub fn is_hmp(self) -> bool {
        !matches!(self, Kind::Qmp)
    }
}

/// A request the I/O thread read, for the main loop.
#[derive(Debug)]
pub enum Request {
    Qmp(Message),
    Hmp(Result<String, String>),
}

/// At most this many descriptors received with `SCM_RIGHTS` wait for `getfd`
/// in one monitor; more are closed on arrival.
pub const MAX_PENDING_FDS: usize = 8;
/// At most this many named descriptors (`getfd`) per monitor.
pub const MAX_NAMED_FDS: usize = 32;
/// Above this many bytes of unsent output, a monitor's input is no longer
/// read nor its commands started, until its client reads.
pub const OUT_SOFT_LIMIT: usize = 1 << 20;
/// Above this many bytes of unsent output, events for the monitor are dropped.
pub const OUT_HARD_LIMIT: usize = 4 << 20;
/// With the `oob` capability, at most this many in-band requests wait per
/// monitor (QEMU's `QMP_REQ_QUEUE_LEN_MAX`); without it, one is read only
/// once the previous one is done.
pub const MAX_QUEUE: usize = 8;

/// One monitor of the table.
#[derive(Debug)]
pub struct Monitor {
    pub name: String,
    pub kind: Kind,
    /// Output not yet written to the client (connections) or captured so
    /// far (`HmpCapture`).
    pub out: Vec<u8>,
    /// QMP: `qmp_capabilities` has been accepted.
    pub negotiated: bool,
    /// QMP: the `oob` capability was enabled.
    pub oob: bool,
    /// Descriptors received with `SCM_RIGHTS`, oldest first, for `getfd`.
    pub pending_fds: VecDeque<OwnedFd>,
    /// Descriptors named with `getfd`.
    pub named_fds: BTreeMap<String, OwnedFd>,
    /// In-band requests read by the I/O thread, oldest first.
    pub queue: VecDeque<Request>,
    /// The main loop is running one of this monitor's requests.
    pub busy: bool,
    /// The client is gone (the I/O thread closed the socket).
    pub hung_up: bool,
}

impl Monitor {
    /// Whether the I/O thread may read another request for this monitor.
    pub fn has_room(&self) -> bool {
        if self.out.len() >= OUT_SOFT_LIMIT {
            return false;
        }
        if self.oob {
            self.queue.len() < MAX_QUEUE
        } else {
            self.queue.is_empty() && !self.busy
        }
    }
}

/// Counters, for the demo's figures and the tests.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub commands: u64,
    pub oob_commands: u64,
    pub reports: u64,
    pub oob_reports: u64,
    pub stderr_reports: u64,
    pub violations: Vec<String>,
    pub in_flight: usize,
    pub peak_in_flight: usize,
    pub peak_out: usize,
    pub peak_queue: usize,
    /// The most bytes one monitor's JSON reader held for an incomplete
    /// message.
    pub peak_parser_bytes: usize,
    pub fds_refused: u64,
    pub events_dropped: u64,
    pub cancelled: u64,
    pub panics: u64,
}

/// Which of the server's threads this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Main,
    Io,
}

/// The server's state, shared by its main loop and its I/O thread.
#[derive(Debug, Default)]
pub struct World {
    pub monitors: BTreeMap<MonId, Monitor>,
    next_id: u64,
    /// Which monitor's command the main loop runs right now, and which
    /// command: the truth `CUR_MON` is checked against on that thread.
    pub running_main: Option<(MonId, String)>,
    /// The same for the I/O thread's out-of-band command.
    pub running_io: Option<(MonId, String)>,
    pub vm_running: bool,
    /// Why the server stops (`SHUTDOWN`'s reason), once asked to.
    pub quit: Option<&'static str>,
    /// `SHUTDOWN` went out: the I/O thread flushes and stops.
    pub stopping: bool,
    /// Monitors an out-of-band `yank` shut down, for the I/O thread.
    pub yanked: Vec<MonId>,
    /// The I/O thread has output to write or room to read again: wake it.
    pub io_kick: bool,
    /// The monitors it has to look at again.
    pub io_dirty: BTreeSet<MonId>,
    /// Reports meant for stderr are counted, not printed.
    pub quiet: bool,
    pub stats: Stats,
}

impl World {
    fn new() -> World {
        World {
            next_id: 1,
            vm_running: true,
            ..World::default()
        }
    }

    pub fn add_monitor(&mut self, kind: Kind, prefix: &str) -> MonId {
        let id = MonId(self.next_id);
        self.next_id += 1;
        self.monitors.insert(
            id,
            Monitor {
                name: format!("{prefix}{}", id.0),
                kind,
                out: Vec::new(),
                negotiated: false,
                oob: false,
                pending_fds: VecDeque::new(),
                named_fds: BTreeMap::new(),
                queue: VecDeque::new(),
                busy: false,
                hung_up: false,
            },
        );
        id
    }

    /// Whether the QMP monitor `id` has negotiated capabilities, and
    /// whether it enabled `oob` (both false for a monitor that is gone).
    pub fn negotiated(&self, id: MonId) -> (bool, bool) {
        self.monitors
            .get(&id)
            .map_or((false, false), |m| (m.negotiated, m.oob))
    }

    /// The connection a monitor belongs to: itself, or for a temporary HMP
    /// monitor, the monitor running the `human-monitor-command`.
    pub fn root(&self, mut id: MonId) -> MonId {
        while let Some(Monitor {
            kind: Kind::HmpCapture { parent: Some(p) },
            ..
        }) = self.monitors.get(&id)
        {
            id = *p;
        }
        id
    }

    pub fn name(&self, id: Option<MonId>) -> String {
        match id {
            None => "stderr".into(),
            Some(id) => match self.monitors.get(&id) {
                Some(m) => m.name.clone(),
                None => format!("gone monitor #{}", id.0),
            },
        }
    }

    /// How many descriptors all monitors hold.
    pub fn open_fds(&self) -> usize {
        self.monitors
            .values()
            .map(|m| m.pending_fds.len() + m.named_fds.len())
            .sum()
    }

    /// Appends bytes to a monitor's output (for the I/O thread to write).
    pub fn output(&mut self, id: MonId, bytes: &[u8]) {
        if let Some(m) = self.monitors.get_mut(&id) {
            m.out.extend_from_slice(bytes);
            self.stats.peak_out = self.stats.peak_out.max(m.out.len());
            self.io_kick = true;
            self.io_dirty.insert(id);
        }
    }
}

/// One server's shared state and the wakers of its two threads.
#[derive(Debug)]
pub struct Shared {
    world: Mutex<World>,
    pub main_waker: Waker,
    pub io_waker: Waker,
}

impl Shared {
    pub fn new(main_waker: Waker, io_waker: Waker) -> Arc<Shared> {
        Arc::new(Shared {
            world: Mutex::new(World::new()),
            main_waker,
            io_waker,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

std::thread_local! {
    static SHARED: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
    static ROLE: Cell<Role> = const { Cell::new(Role::Main) };
}

/// Makes `shared` this thread's server, in `role`.
pub fn enter_server(shared: Arc<Shared>, role: Role) {
    SHARED.with_borrow_mut(|s| *s = Some(shared));
    ROLE.set(role);
}

/// This thread's server.
pub fn shared() -> Arc<Shared> {
    SHARED
        .with_borrow(|s| s.clone())
        .expect("no qmp_server on this thread")
}

/// Runs `f` on this thread's server state. Not reentrant: `f` must not call
/// `error_report`, `monitor_printf` or `with_world`.
pub fn with_world<R>(f: impl FnOnce(&mut World) -> R) -> R {
    let shared = shared();
    let mut world = shared.lock();
    f(&mut world)
}

/// QEMU's `error_report()`: prints `msg` to the current monitor if it is an
/// HMP one, to stderr otherwise. Knows nothing of commands, coroutines or
/// threads: only `CUR_MON`. Checks the seed's invariant on every call: the
/// report is at the monitor whose command this thread's dispatcher is
/// running (through a temporary HMP monitor of that command), or at stderr
/// outside commands.
pub fn error_report(msg: &str) {
    let cur = CUR_MON.get();
    let role = ROLE.get();
    let to_stderr = with_world(|w| {
        w.stats.reports += 1;
        if role == Role::Io {
            w.stats.oob_reports += 1;
        }
        let landed = cur.map(|id| w.root(id));
        let record = match role {
            Role::Main => &w.running_main,
            Role::Io => &w.running_io,
        };
        let running = record.as_ref().map(|(id, _)| *id);
        if landed != running {
            let what = match record {
                Some((id, cmd)) => format!("{}'s command '{cmd}'", w.name(Some(*id))),
                None => "no command".into(),
            };
            let v = format!(
                "report {msg:?} landed at {} while the {role:?} thread ran {what}",
                w.name(cur)
            );
            w.stats.violations.push(v);
        }
        match cur.filter(|id| w.monitors.get(id).is_some_and(|m| m.kind.is_hmp())) {
            Some(id) => {
                w.output(id, format!("{msg}\r\n").as_bytes());
                false
            }
            None => {
                w.stats.stderr_reports += 1;
                !w.quiet
            }
        }
    });
    if to_stderr {
        eprintln!("qmp_server: {msg}");
    }
}

/// QEMU's `monitor_printf()` to the current monitor, for HMP commands'
/// output: appends `text` to `CUR_MON`'s output if it is an HMP monitor.
pub fn monitor_printf(text: &str) {
    let Some(cur) = CUR_MON.get() else {
        return;
    };
    with_world(|w| {
        if w.monitors.get(&cur).is_some_and(|m| m.kind.is_hmp()) {
            w.output(cur, text.replace('\n', "\r\n").as_bytes());
        }
    });
}

/// Runs `f` with the current monitor's descriptor named `name`.
pub fn with_cur_fd<R>(name: &str, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
    let cur = CUR_MON.get()?;
    with_world(|w| {
        let fd = w.monitors.get(&cur)?.named_fds.get(name)?;
        Some(f(fd.as_fd()))
    })
}

/// A temporary HMP monitor whose output is captured, as QEMU makes for
/// `human-monitor-command`: [`CaptureMonitor::run`] makes it `CUR_MON` for
/// the command; the monitor is gone when this is dropped (also on panic and
/// when the coroutine running it is dropped while suspended).
#[derive(Debug)]
pub struct CaptureMonitor {
    id: MonId,
    shared: Arc<Shared>,
}

impl CaptureMonitor {
    /// Makes the temporary HMP monitor, child of the current one.
    pub fn new() -> CaptureMonitor {
        let parent = CUR_MON.get();
        let shared = shared();
        let id = shared
            .lock()
            .add_monitor(Kind::HmpCapture { parent }, "hmp-capture");
        CaptureMonitor { id, shared }
    }

    /// Runs `f` with this monitor as `CUR_MON` (`LocalKey::scope`: the
    /// override belongs to the running coroutine, also while it is
    /// suspended, and the previous monitor is back afterwards, also if `f`
    /// panics or the coroutine is dropped meanwhile).
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        CUR_MON.scope(Some(self.id), f)
    }

    /// The output captured so far, taken.
    pub fn take_output(&self) -> Vec<u8> {
        self.shared
            .lock()
            .monitors
            .get_mut(&self.id)
            .map(|m| std::mem::take(&mut m.out))
            .unwrap_or_default()
    }
}

impl Drop for CaptureMonitor {
    fn drop(&mut self) {
        // Never called with the lock held on this thread: the main loop drops
        // commands outside `with_world`.
        self.shared.lock().monitors.remove(&self.id);
    }
}

/// Sets `CUR_MON` on the current block (this thread's own, outside every
/// coroutine) until dropped, then puts the previous value back.
#[derive(Debug)]
pub struct CurMonGuard {
    previous: Option<MonId>,
}

impl CurMonGuard {
    pub fn set(id: Option<MonId>) -> CurMonGuard {
        CurMonGuard {
            previous: CUR_MON.replace(id),
        }
    }
}

impl Drop for CurMonGuard {
    fn drop(&mut self) {
        CUR_MON.set(self.previous);
    }
}

/// Between commands a thread has no current monitor: a violation otherwise.
pub fn check_idle_cur_mon(place: &str) {
    if let Some(cur) = CUR_MON.get() {
        let role = ROLE.get();
        with_world(|w| {
            let v = format!("{role:?} thread saw CUR_MON {} {place}", w.name(Some(cur)));
            w.stats.violations.push(v);
        });
    }
}

/// Records that this thread runs `name` for monitor `id` (`None`: nothing)
/// and returns what it ran before.
pub fn set_running(id: Option<(MonId, String)>) -> Option<(MonId, String)> {
    let role = ROLE.get();
    with_world(|w| match role {
        Role::Main => std::mem::replace(&mut w.running_main, id),
        Role::Io => std::mem::replace(&mut w.running_io, id),
    })
}

/// Runs a command outside every coroutine on this thread (the main loop's
/// bottom half, or an out-of-band command on the I/O thread), with
/// `CUR_MON` set on the thread's own block and the thread's record of what
/// it runs set, for the command's duration. `Err` if it panicked.
pub fn run_outside_coroutines<R>(id: MonId, name: &str, f: impl FnOnce() -> R) -> Result<R, ()> {
    let before = set_running(Some((id, name.to_string())));
    let result = {
        let _cur = CurMonGuard::set(Some(id));
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ())
    };
    set_running(before);
    if result.is_err() {
        with_world(|w| w.stats.panics += 1);
    }
    check_idle_cur_mon("after a command outside coroutines");
    result
}
