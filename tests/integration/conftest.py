"""A private etcd for the integration tests, on free loopback ports in a pytest tmp dir.

It never uses the lab's ports (etcd 2379-2381): every port is picked by binding port 0.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import etcd3  # type: ignore[import-untyped]
import pytest

from bench.etcd_cluster import ETCD_BINARY, HOST, READY_MARKER, clean_env, free_ports
from statestore import keys
from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import EtcdStore, split_endpoint

START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0


def _answers(endpoint: str, timeout: float) -> bool:
    """One snapshot read; the gRPC call waits for the connection up to its deadline."""
    store = EtcdStore(endpoint, timeout=timeout)
    try:
        store.snapshot()
        return True
    except StoreUnavailable:
        return False
    finally:
        store.close()


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _EtcdOutput(threading.Thread):
    """Copies etcd's output from its pipe to the log file, reporting on `signals`:
    READY when etcd logs READY_MARKER, then ENDED when the output ends (etcd exited)."""

    READY, ENDED = "ready", "ended"

    def __init__(self, pipe: IO[bytes], log: Path) -> None:
        super().__init__(name="itest-etcd-output", daemon=True)
        self._pipe, self._log = pipe, log
        self.signals: queue.Queue[str] = queue.Queue()

    def run(self) -> None:
        try:
            with self._log.open("wb") as out:
                ready = False
                for line in iter(self._pipe.readline, b""):
                    out.write(line)
                    out.flush()
                    if not ready and READY_MARKER in line:
                        ready = True
                        self.signals.put(self.READY)
        finally:
            self.signals.put(self.ENDED)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the etcd we started (by its PID), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def running_etcd(base: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An etcd of our own in `base`, on free loopback ports, ready: its endpoint and process
    (stopped by its PID on exit)."""
    client_port, peer_port, metrics_port = free_ports(3)
    client, peer = f"http://{HOST}:{client_port}", f"http://{HOST}:{peer_port}"
    command = [
        ETCD_BINARY, "--name", "itest", "--data-dir", str(base / "data"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"itest={peer}", "--initial-cluster-state", "new",
        "--listen-metrics-urls", f"http://{HOST}:{metrics_port}",
    ]
    env = clean_env()  # the lab's ETCD_* settings (data dir, URLs) must not leak into our private etcd
    log = base / "etcd.log"
    endpoint = f"{HOST}:{client_port}"
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )
    assert process.stdout is not None
    output = _EtcdOutput(process.stdout, log)
    output.start()
    try:
        try:
            reported = output.signals.get(timeout=START_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"etcd was not ready on {endpoint} within {START_TIMEOUT}s:\n{_log_tail(log)}")
        if reported == _EtcdOutput.ENDED:
            try:
                returncode: int | str = process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                returncode = "its output closed"
            pytest.fail(f"etcd exited before it was ready ({returncode}):\n{_log_tail(log)}")
        if not _answers(endpoint, ANSWER_TIMEOUT):
            pytest.fail(f"etcd said it was ready but did not answer on {endpoint}:\n{_log_tail(log)}")
        yield endpoint, process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a test may have stopped it
        _stop(process)
        output.join(timeout=STOP_TIMEOUT)  # etcd gone, its pipe hits EOF
        process.stdout.close()


@pytest.fixture(scope="session")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not os.access(ETCD_BINARY, os.X_OK):
        pytest.skip(f"no etcd binary at {ETCD_BINARY}")
    with running_etcd(tmp_path_factory.mktemp("etcd")) as (endpoint, _):
        yield endpoint


def wipe(endpoint: str) -> None:
    host, port = split_endpoint(endpoint)
    client = etcd3.client(host=host, port=port, timeout=5)
    try:
        client.delete_prefix(keys.ROOT)
    finally:
        client.close()


@pytest.fixture
def store(etcd_endpoint: str) -> Iterator[EtcdStore]:
    wipe(etcd_endpoint)  # a test interrupted before its teardown must not leak into the next
    subject = EtcdStore(etcd_endpoint, timeout=2.0)
    try:
        yield subject
    finally:
        subject.close()
        wipe(etcd_endpoint)
