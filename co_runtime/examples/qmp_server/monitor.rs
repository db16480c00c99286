//! Monitors, `CUR_MON`, `error_report()` and the seed's invariant.
//!
//! Like QEMU, the server keeps one table of monitors (its `mon_list`) and
//! one "current monitor" per coroutine: `CUR_MON`, a `co_local!`. The code
//! that reports errors or looks up a file descriptor by name asks `CUR_MON`;
//! nothing hands it a monitor. The dispatcher, which knows which monitor's
//! command it is running, records that in `World::running`, and every
//! report is checked against it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use co_local::co_local;
use co_runtime::Yielder;

/// A monitor's identity: never reused while the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonId(pub u64);

co_local! {
    /// The monitor whose command is running on this coroutine (or, outside
    /// every coroutine, in the main loop's bottom half), if any.
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
    /// Descriptors received with `SCM_RIGHTS`, oldest first, for `getfd`.
    pub pending_fds: VecDeque<OwnedFd>,
    /// Descriptors named with `getfd`.
    pub named_fds: BTreeMap<String, OwnedFd>,
}

/// Counters, for the demo's figures and the tests.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub commands: u64,
    pub reports: u64,
    pub stderr_reports: u64,
    pub violations: Vec<String>,
    pub in_flight: usize,
    pub peak_in_flight: usize,
    pub peak_out: usize,
    pub fds_refused: u64,
    pub events_dropped: u64,
    pub cancelled: u64,
    pub panics: u64,
}

/// The server's global state, one per server thread.
#[derive(Debug, Default)]
pub struct World {
    pub monitors: BTreeMap<MonId, Monitor>,
    next_id: u64,
    /// Which monitor's command the dispatcher is running right now, and
    /// which command: the truth `CUR_MON` is checked against.
    pub running: Option<(MonId, String)>,
    pub vm_running: bool,
    pub quit: bool,
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
                pending_fds: VecDeque::new(),
                named_fds: BTreeMap::new(),
            },
        );
        id
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

    pub fn note_out(&mut self, id: MonId) {
        if let Some(m) = self.monitors.get(&id) {
            self.stats.peak_out = self.stats.peak_out.max(m.out.len());
        }
    }
}

std::thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World::new());
}

/// Runs `f` on this thread's world. Not reentrant: `f` must not call
/// `error_report`, `monitor_printf` or `with_world`.
pub fn with_world<R>(f: impl FnOnce(&mut World) -> R) -> R {
    WORLD.with_borrow_mut(f)
}

/// Starts this thread's world afresh (a new server on the thread).
pub fn reset_world() {
    WORLD.with_borrow_mut(|w| *w = World::new());
}

/// Where a report went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Monitor(MonId),
    Stderr,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Monitor(id) => write!(f, "monitor #{}", id.0),
            Destination::Stderr => f.write_str("stderr"),
        }
    }
}

/// QEMU's `error_report()`: prints `msg` to the current monitor if it is an
/// HMP one, to stderr otherwise. Knows nothing of commands or coroutines:
/// only `CUR_MON`. Checks the seed's invariant on every call: the report is
/// at the monitor whose command the dispatcher is running (through a
/// temporary HMP monitor of that command), or at stderr outside commands.
pub fn error_report(msg: &str) -> Destination {
    let cur = CUR_MON.get();
    let (dest, to_stderr) = with_world(|w| {
        w.stats.reports += 1;
        let landed = cur.map(|id| w.root(id));
        let running = w.running.as_ref().map(|(id, _)| *id);
        if landed != running {
            let what = match &w.running {
                Some((id, cmd)) => format!("{}'s command '{cmd}'", w.name(Some(*id))),
                None => "no command (main loop)".into(),
            };
            let v = format!(
                "report {msg:?} landed at {} while the dispatcher ran {what}",
                w.name(cur)
            );
            w.stats.violations.push(v);
        }
        match cur.and_then(|id| w.monitors.get_mut(&id).map(|m| (id, m))) {
            Some((id, m)) if m.kind.is_hmp() => {
                m.out.extend_from_slice(msg.as_bytes());
                m.out.extend_from_slice(b"\r\n");
                w.note_out(id);
                (Destination::Monitor(id), false)
            }
            _ => {
                w.stats.stderr_reports += 1;
                (Destination::Stderr, true)
            }
        }
    });
    if to_stderr {
        eprintln!("qmp_server: {msg}");
    }
    dest
}

/// QEMU's `monitor_printf()` to the current monitor, for HMP commands'
/// output: appends `text` to `CUR_MON`'s output if it is an HMP monitor.
pub fn monitor_printf(text: &str) {
    let cur = CUR_MON.get();
    with_world(|w| {
        if let Some(id) = cur {
            if let Some(m) = w.monitors.get_mut(&id) {
                if m.kind.is_hmp() {
                    m.out
                        .extend_from_slice(text.replace('\n', "\r\n").as_bytes());
                    w.note_out(id);
                }
            }
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
}

impl CaptureMonitor {
    /// Makes the temporary HMP monitor, child of the current one.
    pub fn new() -> CaptureMonitor {
        let parent = CUR_MON.get();
        let id = with_world(|w| w.add_monitor(Kind::HmpCapture { parent }, "hmp-capture"));
        CaptureMonitor { id }
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
        with_world(|w| {
            w.monitors
                .get_mut(&self.id)
                .map(|m| std::mem::take(&mut m.out))
                .unwrap_or_default()
        })
    }
}

impl Drop for CaptureMonitor {
    fn drop(&mut self) {
        // Never panic here: this runs while a dropped coroutine unwinds.
        let _ = WORLD.try_with(|w| {
            if let Ok(mut w) = w.try_borrow_mut() {
                w.monitors.remove(&self.id);
            }
        });
    }
}

/// Sets `CUR_MON` on the current block (the main loop's, for a bottom
/// half) until dropped, then puts the previous value back.
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
