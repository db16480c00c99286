// The example's modules, declared at the root of each qmp_* test crate
// that runs a whole server (they name each other through `crate::`).
// Included with `include!` so the list is written once.

#[allow(dead_code)]
#[path = "../../examples/qmp_server/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/hmp.rs"]
mod hmp;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/iothread.rs"]
mod iothread;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/json.rs"]
mod json;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/monitor.rs"]
mod monitor;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/qmp.rs"]
mod qmp;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/qobject.rs"]
mod qobject;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/sys.rs"]
mod sys;
#[allow(dead_code)]
#[path = "../../examples/qmp_server/vm.rs"]
mod vm;
