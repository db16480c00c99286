//! qmp_server's start and end, and its human monitor: `quit` replies
//! before `SHUTDOWN`, every monitor gets `SHUTDOWN` before its connection
//! closes (`host-signal` for a signal), a stale socket file is replaced, a
//! live one refused; HMP's `info version`, `help COMMAND`, `?` and the
//! usage of `report`; the command line's `--help`.

include!("qmp_common/example.rs");
mod qmp_common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use qmp_common::{Raw, Server, TempDir};

/// A `SHUTDOWN` event line's parts after its timestamp.
fn shutdown_tail(reason: &str) -> String {
    format!(
        "\"event\": \"SHUTDOWN\", \"data\": {{\"guest\": false, \"reason\": \"{reason}\"}}}}\r\n"
    )
}

fn assert_shutdown(line: &[u8], reason: &str) {
    let line = String::from_utf8_lossy(line);
    assert!(
        line.starts_with("{\"timestamp\": {\"seconds\": ")
            && line.ends_with(&shutdown_tail(reason)),
        "{line:?}"
    );
}

#[test]
fn quit_replies_first_then_every_monitor_gets_shutdown() {
    let mut server = Server::start();
    let mut early = Raw::negotiated(&server.qmp, false);
    let (mut negotiating, _) = Raw::connect(&server.qmp);
    let mut hmp = Raw::connect_quiet(&server.hmp);
    hmp.until(b"(qemu) ");
    let mut quitter = Raw::negotiated(&server.qmp, true);
    assert_eq!(
        quitter.ask(b"{\"execute\": \"quit\", \"id\": \"bye\"}"),
        b"{\"return\": {}, \"id\": \"bye\"}\r\n"
    );
    assert_shutdown(&quitter.line(), "host-qmp-quit");
    assert!(quitter.at_eof());
    // The monitor that connected first gets it too, before its end.
    assert_shutdown(&early.line(), "host-qmp-quit");
    assert!(early.at_eof());
    // No event for a monitor still negotiating, nor for HMP.
    assert!(negotiating.at_eof());
    assert!(hmp.at_eof());
    server.join(false);
}

#[test]
fn hmp_quit_and_the_stop_handle() {
    let mut server = Server::start();
    let mut watcher = Raw::negotiated(&server.qmp, false);
    let mut hmp = Raw::connect_quiet(&server.hmp);
    hmp.until(b"(qemu) ");
    hmp.send(b"quit\n");
    assert_shutdown(&watcher.line(), "host-qmp-quit");
    server.join(false);

    // The stop handle stands for a signal.
    let mut server = Server::start();
    let mut watcher = Raw::negotiated(&server.qmp, false);
    server.stop.stop();
    assert_shutdown(&watcher.line(), "host-signal");
    assert!(watcher.at_eof());
    server.join(false);
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("qmp.sock");
    // A server that crashed leaves its socket file behind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let config = server::Config {
        qmp: Some(path.clone()),
        quiet: true,
        ..server::Config::default()
    };
    let (stop, thread) = server::spawn(config.clone()).unwrap();
    let mut raw = Raw::negotiated(&path, false);
    // A second server on the same path while the first runs: refused.
    let err = server::spawn(config.clone()).unwrap_err();
    assert!(
        err.to_string().contains("a running server listens there"),
        "{err}"
    );
    assert_eq!(
        raw.ask(b"{\"execute\": \"query-name\"}"),
        b"{\"return\": {\"name\": \"co_local\"}}\r\n"
    );
    // Nor is a file that is not a socket replaced.
    let file = dir.0.join("plain");
    std::fs::write(&file, b"keep me").unwrap();
    let err = server::spawn(server::Config {
        qmp: Some(file.clone()),
        ..config
    })
    .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    stop.stop();
    thread.join().unwrap();
    assert!(!path.exists());
}

fn hmp_cmd(hmp: &mut Raw, line: &str) -> String {
    hmp.send(format!("{line}\n").as_bytes());
    let out = hmp.until(b"(qemu) ");
    String::from_utf8(out[..out.len() - 7].to_vec())
        .unwrap()
        .replace("\r\n", "\n")
}

#[test]
fn hmp_version_help_and_usage() {
    let server = Server::start();
    let mut hmp = Raw::connect_quiet(&server.hmp);
    assert_eq!(
        String::from_utf8(hmp.until(b"(qemu) ")).unwrap(),
        "QEMU 9.2.0 monitor - type 'help' for more information\r\n(qemu) "
    );
    assert_eq!(
        hmp_cmd(&mut hmp, "info version"),
        "9.2.0co_local qmp_server\n"
    );
    assert_eq!(hmp_cmd(&mut hmp, "info name"), "co_local\n");
    let report = "report MS TEXT -- wait MS milliseconds on a timer, then error_report(TEXT)\n";
    assert_eq!(hmp_cmd(&mut hmp, "help report"), report);
    assert_eq!(hmp_cmd(&mut hmp, "? report"), report);
    let all = hmp_cmd(&mut hmp, "help");
    assert_eq!(hmp_cmd(&mut hmp, "?"), all);
    assert!(all.starts_with("help|? [cmd] -- show the help\n"), "{all}");
    assert_eq!(all.lines().count(), hmp::COMMANDS.len());
    assert_eq!(
        hmp_cmd(&mut hmp, "help info"),
        "info name  -- show the current VM name\n\
         info status  -- show the current VM status (running|paused)\n\
         info version  -- show the version of the server\n"
    );
    assert_eq!(hmp_cmd(&mut hmp, "info"), hmp_cmd(&mut hmp, "help info"));
    assert_eq!(
        hmp_cmd(&mut hmp, "help info version"),
        "info version  -- show the version of the server\n"
    );
    assert_eq!(
        hmp_cmd(&mut hmp, "help nosuch"),
        "unknown command: 'nosuch'\n"
    );
    assert_eq!(
        hmp_cmd(&mut hmp, "info nosuch"),
        "unknown command: 'info nosuch'\n"
    );
    // report needs a TEXT.
    for line in ["report 10", "report 10   ", "report", "report x y"] {
        assert_eq!(
            hmp_cmd(&mut hmp, line),
            "report: usage: report MS TEXT\n",
            "{line}"
        );
    }
    assert_eq!(
        hmp_cmd(&mut hmp, "report-now"),
        "report-now: usage: report-now TEXT\n"
    );
    assert_eq!(hmp_cmd(&mut hmp, "report 0 fine"), "fine\n");
}

/// The example's binary, which `cargo test` builds beside the tests.
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("examples").join("qmp_server");
    bin.exists().then_some(bin)
}

#[test]
fn the_command_line() {
    let Some(bin) = example_binary() else {
        println!(
            "skipped: the qmp_server example is not built (cargo test -p co_runtime builds it)"
        );
        return;
    };
    let out = Command::new(&bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let usage = String::from_utf8(out.stdout).unwrap();
    assert!(
        usage.starts_with("usage: qmp_server --qmp PATH [--hmp PATH]"),
        "{usage}"
    );
    let out = Command::new(&bin).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--bogus") && err.contains("usage:"), "{err}");
    let out = Command::new(&bin).arg("--qmp").output().unwrap();
    assert_eq!(out.status.code(), Some(2));

    // SIGTERM: SHUTDOWN with reason host-signal, then the end; the process
    // exits cleanly and removes its socket.
    let dir = TempDir::new("cli");
    let path = dir.0.join("qmp.sock");
    let child = Command::new(&bin)
        .arg("--qmp")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + qmp_common::TIMEOUT;
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut raw = Raw::negotiated(&path, false);
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_shutdown(&raw.line(), "host-signal");
    assert!(raw.at_eof());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invariant held"), "{err}");
    assert!(!path.exists());
}
