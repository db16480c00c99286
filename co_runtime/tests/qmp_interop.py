"""Drives the qmp_server example with QEMU's own Python client, qemu.qmp.

Usage: python qmp_interop.py QMP_SOCKET_PATH

Run by co_runtime/tests/qmp_server.rs (test `python_qemu_qmp_client`) with
the interpreter named by QMP_PYTHON, against a server it started. Exits 0
and prints "qmp_interop: ok, N checks" when every check holds.
"""

import asyncio
import os
import sys

from qemu.qmp import EventListener, ExecuteError, QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

CHECKS = 0
TIMEOUT = 20.0


def check(cond, what):
    global CHECKS
    if not cond:
        raise AssertionError(what)
    CHECKS += 1


async def connect(path, name):
    client = QMPClient(name)
    await asyncio.wait_for(client.connect(path), TIMEOUT)
    return client


async def expect_error(client, cmd, args, klass, desc, oob=False):
    try:
        await client.execute(cmd, args, oob=oob)
    except ExecuteError as err:
        check(err.error_class == klass, f"{cmd}: class {err.error_class!r}, expected {klass!r}")
        check(str(err) == desc, f"{cmd}: desc {str(err)!r}, expected {desc!r}")
        return
    raise AssertionError(f"{cmd} {args} succeeded, expected {klass}: {desc}")


async def negotiation(path):
    client = await connect(path, "negotiation")
    greeting = client.greeting
    check(greeting is not None, "no greeting")
    version = greeting.QMP.version["qemu"]
    check(set(version) == {"major", "minor", "micro"}, f"version {version}")
    check(greeting.QMP.capabilities == ["oob"], "capabilities")
    status = await client.execute("query-status")
    check(status == {"running": True, "status": "running"}, f"query-status {status}")
    names = {c["name"] for c in await client.execute("query-commands")}
    for name in ["qmp_capabilities", "human-monitor-command", "getfd", "closefd",
                 "x-write-fd", "stop", "cont", "query-status", "query-version",
                 "query-name", "yank", "quit"]:
        check(name in names, f"query-commands lacks {name}")
    version = await client.execute("query-version")
    check(version["qemu"] == greeting.QMP.version["qemu"], f"query-version {version}")
    check(await client.execute("query-name") == {"name": "co_local"}, "query-name")
    await client.disconnect()


async def out_of_band(path):
    # qemu.qmp enables the oob capability the greeting offers.
    client = await connect(path, "oob")
    check(await client.execute("yank", {"instances": []}, oob=True) == {}, "yank out-of-band")
    await expect_error(client, "query-name", None, "GenericError",
                       "The command query-name does not support OOB", oob=True)
    slow = asyncio.ensure_future(client.execute(
        "human-monitor-command", {"command-line": "report 2000 slow in-band"}))
    await asyncio.sleep(0.05)
    fast = await client.execute("yank", {"instances": []}, oob=True)
    check(fast == {} and not slow.done(), "the out-of-band yank overtook the in-band command")
    check(await slow == "slow in-band\r\n", "the in-band command after it")
    await client.disconnect()


async def one_reporter(path, n, rounds):
    client = await connect(path, f"reporter-{n}")
    for i in range(rounds):
        tag = f"python client {n} round {i}"
        ms = (n * 7 + i * 3) % 20
        out = await client.execute("human-monitor-command",
                                   {"command-line": f"report {ms} {tag}"})
        check(out == tag + "\r\n", f"client {n} got {out!r} for {tag!r}")
    await client.disconnect()


async def concurrent_reports(path):
    await asyncio.wait_for(
        asyncio.gather(*(one_reporter(path, n, 10) for n in range(16))), 60)


async def fd_passing(path):
    owner = await connect(path, "fd-owner")
    other = await connect(path, "fd-other")
    r, w = os.pipe()
    try:
        owner.send_fd_scm(w)
        await owner.execute("getfd", {"fdname": "pipe"})
        await owner.execute("x-write-fd", {"fdname": "pipe", "data": "bytes via SCM_RIGHTS"})
        data = os.read(r, 100)
        check(data == b"bytes via SCM_RIGHTS", f"the pipe read {data!r}")
        await expect_error(other, "x-write-fd", {"fdname": "pipe", "data": "x"},
                           "GenericError", "File descriptor named 'pipe' not found")
        await expect_error(other, "closefd", {"fdname": "pipe"},
                           "GenericError", "File descriptor named 'pipe' not found")
        await expect_error(owner, "getfd", {"fdname": "second"},
                           "GenericError", "No file descriptor supplied via SCM_RIGHTS")
        await owner.execute("closefd", {"fdname": "pipe"})
        await expect_error(owner, "closefd", {"fdname": "pipe"},
                           "GenericError", "File descriptor named 'pipe' not found")
    finally:
        os.close(r)
        os.close(w)
    await owner.disconnect()
    await other.disconnect()


async def events(path):
    clients = [await connect(path, f"events-{n}") for n in range(3)]
    listeners = [EventListener(("STOP", "RESUME")) for _ in clients]
    for client, listener in zip(clients, listeners):
        client.register_listener(listener)
    await clients[0].execute("stop")
    check(await clients[1].execute("query-status") == {"running": False, "status": "paused"},
          "paused after stop")
    await clients[0].execute("cont")
    for n, listener in enumerate(listeners):
        got = []
        for _ in range(2):
            event = await asyncio.wait_for(listener.get(), TIMEOUT)
            check("timestamp" in event and set(event["timestamp"]) == {"seconds", "microseconds"},
                  f"timestamp of {event}")
            got.append(event["event"])
        check(got == ["STOP", "RESUME"], f"client {n} got {got}")
    for client, listener in zip(clients, listeners):
        client.remove_listener(listener)
        await client.disconnect()


async def errors(path):
    client = await connect(path, "errors")
    await expect_error(client, "no-such-command", None, "CommandNotFound",
                       "The command no-such-command has not been found")
    await expect_error(client, "getfd", None, "GenericError", "Parameter 'fdname' is missing")
    await expect_error(client, "human-monitor-command", {"command-line": 1}, "GenericError",
                       "Invalid parameter type for 'command-line', expected: string")
    await expect_error(client, "human-monitor-command", {"command-line": "", "cpu-index": "0"},
                       "GenericError", "Invalid parameter type for 'cpu-index', expected: integer")
    await expect_error(client, "query-status", {"bogus": 1}, "GenericError",
                       "Parameter 'bogus' is unexpected")
    out = await client.execute("human-monitor-command", {"command-line": "no-such-hmp"})
    check(out == "unknown command: 'no-such-hmp'\r\n", f"unknown HMP command: {out!r}")
    await client.disconnect()


def legacy_api(path):
    qmp = QEMUMonitorProtocol(path)
    greeting = qmp.connect(negotiate=True)
    check("QMP" in greeting, "legacy greeting")
    check(qmp.cmd("query-status")["running"] in (True, False), "legacy query-status")
    out = qmp.cmd("human-monitor-command", **{"command-line": "report-now legacy"})
    check(out == "legacy\r\n", f"legacy report {out!r}")
    qmp.close()


async def main(path):
    await negotiation(path)
    await out_of_band(path)
    await concurrent_reports(path)
    await fd_passing(path)
    await events(path)
    await errors(path)


if __name__ == "__main__":
    sock = sys.argv[1]
    asyncio.run(main(sock))
    legacy_api(sock)
    print(f"qmp_interop: ok, {CHECKS} checks")
