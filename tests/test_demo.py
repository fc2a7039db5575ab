"""The demo's clean-up of servers a killed demo left running (roomstate_dev/demo.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from roomstate_dev.demo import PIDS, port_is_free, stop_leftovers


def _server(*args: str) -> subprocess.Popen[bytes]:
    """A stand-in for a server: a process in a session of its own, as the demo starts them."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *args], start_new_session=True)


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait(10)


def test_a_killed_demo_s_servers_are_stopped_at_the_next_start(
    tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    ours = _server("-c", str(tmp_path / "synapse" / "homeserver.yaml"))
    other = _server("someone else's program")  # a PID in the file that now belongs to another program
    sibling = _server("-c", f"{tmp_path}2/homeserver.yaml")  # another demo's, in a directory named alike
    servers += [ours, other, sibling]
    (tmp_path / PIDS).write_text(f"{ours.pid}\n{other.pid}\n{sibling.pid}\n")

    assert stop_leftovers(tmp_path) == [ours.pid]

    assert ours.wait(10) == -15  # SIGTERM: a server shuts down cleanly
    assert other.poll() is None and sibling.poll() is None
    assert not (tmp_path / PIDS).exists()


def test_one_that_ignores_sigterm_is_killed(tmp_path: Path, servers: list[subprocess.Popen[bytes]]) -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True);"
            " time.sleep(120)",
            str(tmp_path / "bot" / "config.yaml"),
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    servers.append(stubborn)
    assert stubborn.stdout is not None
    stubborn.stdout.readline()  # its SIGTERM handler is in place
    (tmp_path / PIDS).write_text(f"{stubborn.pid}\n")

    assert stop_leftovers(tmp_path, patience=0.5) == [stubborn.pid]
    assert stubborn.wait(10) == -9


def test_nothing_to_stop(tmp_path: Path) -> None:
    assert stop_leftovers(tmp_path) == []  # no file
    (tmp_path / PIDS).write_text("not a pid\n")
    assert stop_leftovers(tmp_path) == []
    (tmp_path / PIDS).write_text("999999999\n")  # no such process
    assert stop_leftovers(tmp_path) == []


def test_a_port_is_free_despite_a_stopped_servers_connections_in_time_wait() -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (as servers bind)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert not port_is_free(port)  # listening
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server's side closes first: its port keeps a connection in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    assert port_is_free(port)
