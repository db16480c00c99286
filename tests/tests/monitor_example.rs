//! Runs the logic of `cargo run --example monitor` (the seed's scenario), so
//! the example cannot rot: every report must reach the monitor running its
//! command, and every command must finish with its transcript.

#[allow(dead_code)]
#[path = "../../co_runtime/examples/monitor.rs"]
mod monitor;

use monitor::{run, script};

#[test]
fn the_seed_scenario_keeps_its_invariant() {
    let (output, checks) = run(&["hmp0", "qmp0", "qmp1"], script());
    assert!(checks.violations.is_empty(), "{:#?}", checks.violations);
    assert!(
        checks.reports >= 6,
        "too few reports checked: {}",
        checks.reports
    );

    let transcript = |name: &str| {
        output
            .monitors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, lines)| lines.join("\n"))
            .unwrap()
    };
    let hmp = transcript("hmp0");
    let qmp0 = transcript("qmp0");
    let qmp1 = transcript("qmp1");
    // Each error went to the monitor whose command raised it...
    assert!(
        qmp0.contains("error: cannot flush read-only device 'cdrom-ro'"),
        "{qmp0}"
    );
    assert!(
        qmp0.contains("error: savevm needs a snapshot name"),
        "{qmp0}"
    );
    assert!(qmp1.contains("error: device 'floppy0' not found"), "{qmp1}");
    assert!(
        hmp.contains("error: cannot flush read-only device 'usb-ro'"),
        "{hmp}"
    );
    // ...and to no other monitor.
    assert!(!hmp.contains("cdrom-ro") && !qmp1.contains("cdrom-ro"));
    assert!(!qmp0.contains("floppy0") && !hmp.contains("floppy0"));
    // Every command finished.
    assert!(hmp.contains("snapshot 'before-upgrade' saved"), "{hmp}");
    assert!(qmp1.contains("flushed virtio0"), "{qmp1}");
    assert!(qmp1.contains("deleted nvme1"), "{qmp1}");
    // The main loop's own reports went to stderr.
    assert!(!output.stderr.is_empty());
    assert!(output.stderr.iter().all(|l| l.contains("main loop")));
}
