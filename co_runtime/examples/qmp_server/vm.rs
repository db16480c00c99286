//! What both monitor protocols act on: the (pretend) VM's run state, the
//! server's version and name, events, timers, and stopping the server.
//! QMP and HMP commands call these; this module calls neither protocol.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::monitor::{with_world, CoYielder, Kind, Wait, OUT_HARD_LIMIT};
use crate::qobject::{encode_line, QObject};

/// The version this server reports (`query-version`, the greeting, HMP).
pub const VERSION: (u64, u64, u64) = (9, 2, 0);
/// The `package` of `query-version`.
pub const PACKAGE: &str = "co_local qmp_server";
/// The VM's name (`query-name`, HMP `info name`).
pub const NAME: &str = "co_local";

/// `query-version`'s value, members in QAPI's order.
pub fn version_info() -> Value {
    let (major, minor, micro) = VERSION;
    json!({
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": PACKAGE,
    })
}

/// Sends an event to every QMP monitor past capabilities negotiation
/// (QEMU sends none to a monitor still negotiating).
pub fn emit_event(name: &str, data: Option<Value>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut event = json!({
        "event": name,
        "timestamp": {"seconds": now.as_secs(), "microseconds": now.subsec_micros()},
    });
    if let Some(data) = data {
        event["data"] = data;
    }
    let line = encode_line(&QObject::from(event));
    with_world(|w| {
        let targets: Vec<_> = w
            .monitors
            .iter()
            .filter(|(_, m)| m.kind == Kind::Qmp && m.negotiated && !m.hung_up)
            .map(|(id, m)| (*id, m.out.len()))
            .collect();
        for (id, backlog) in targets {
            if backlog > OUT_HARD_LIMIT {
                w.stats.events_dropped += 1;
            } else {
                w.output(id, &line);
            }
        }
    });
}

/// Whether the VM runs.
pub fn running() -> bool {
    with_world(|w| w.vm_running)
}

/// Stops or continues the VM; emits STOP or RESUME if the state changes.
pub fn set_running(running: bool) {
    let changed = with_world(|w| std::mem::replace(&mut w.vm_running, running) != running);
    if changed {
        emit_event(if running { "RESUME" } else { "STOP" }, None);
    }
}

/// Asks the server to stop, for `reason` (`SHUTDOWN`'s): the main loop
/// sends `SHUTDOWN` to every monitor once the current command has replied.
pub fn request_quit(reason: &'static str) {
    with_world(|w| {
        w.quit.get_or_insert(reason);
    });
}

/// Sleeps on a main-loop timer: always suspends at least once, like a timer
/// callback that fires on a later main-loop turn.
pub fn sleep(y: &CoYielder, duration: Duration) {
    let deadline = Instant::now() + duration;
    loop {
        y.suspend(Wait::Until(deadline));
        if Instant::now() >= deadline {
            return;
        }
    }
}
