"""`blfctl run` (`make run`), the demo lab, survives an instance kill (issue 15 part 6).

`blfctl run` runs as a subprocess in a var directory of its own (the session lab, if up, is
set aside: the same ports). ks2 is killed "as a crash would" (`blfctl lab kill ks2`): the run
goes on, ks1 still registers a phone, `blfctl lab start ks2` brings ks2 back. SIGTERM stops
every process of the lab, and the next `blfctl run` starts; after a run killed with SIGKILL
(nothing could stop its lab) the next one stops the lab left behind and starts.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statestore.lab import sip_options
from statestore.lab_process import alive
from tests.e2e.cluster_lab import session_lab_set_aside
from tests.e2e.conftest import KS, ROOT, blfctl
from tests.sipua import UserAgent

DEMO_VAR = Path(os.environ.get("BLF_TEST_DEMO_VAR", str(ROOT / "var" / "test-demo-lab")))
WELCOME = "Ctrl-C stops everything."
START_SECONDS = 90.0
STOP_SECONDS = 60.0
# `blfctl run` looks at its instances every 0.5 s (statestore.lab_run.POLL_SECONDS).
NOTICE_SECONDS = 10.0


class Run:
    """One `blfctl run` with its output read line by line."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "statestore.cli", "run"], cwd=ROOT, env=os.environ.copy(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"`blfctl run` did not say {text!r} within {timeout:.0f}s; it said:\n"
                             + "\n".join(self.seen))

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=STOP_SECONDS)


def lab_pids() -> list[int]:
    """Every process of the lab: instances, etcd members, memcached, store links."""
    state = json.loads((DEMO_VAR / "lab.json").read_text())
    pids = [entry.get("pid") for part in ("instances", "relays") for entry in state[part].values()]
    pids += [state["memcached"].get("pid")]
    pids += [member.get("pid") for zone in state["zones"].values() for member in zone["members"].values()]
    return [int(pid) for pid in pids if pid]


@pytest.fixture
def demo_var() -> Iterator[Path]:
    with session_lab_set_aside(DEMO_VAR):
        try:
            yield DEMO_VAR
        finally:
            blfctl("lab", "down", check=False)


def registers(instance: str) -> int:
    alice = UserAgent("alice", "example.com", "alice-secret", KS[instance])
    try:
        return alice.register(expires=60).status
    finally:
        alice.close()


def test_the_demo_lab_survives_a_killed_instance_and_stops_whole(demo_var):
    run = Run()
    try:
        run.wait_line(WELCOME, START_SECONDS)
        assert blfctl("lab", "kill", "ks2").returncode == 0
        run.wait_line("ks2 died", NOTICE_SECONDS)
        assert run.process.poll() is None, "blfctl run stopped when ks2 died"
        assert sip_options(*KS["ks1"]) == 200
        assert registers("ks1") == 200

        assert blfctl("lab", "start", "ks2").returncode == 0
        run.wait_line("ks2 is back", NOTICE_SECONDS)
        assert sip_options(*KS["ks2"]) == 200 and registers("ks2") == 200

        pids = lab_pids()
        assert len(pids) >= 6  # 2 instances, their 2 store links, memcached, etcd
    finally:
        code = run.stop()
    assert code == 0, "\n".join(run.seen)
    assert [pid for pid in pids if alive(pid)] == []


def test_the_next_run_starts_after_a_run_killed_without_stopping_its_lab(demo_var):
    crashed = Run()
    crashed.wait_line(WELCOME, START_SECONDS)
    left = lab_pids()
    assert crashed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert all(alive(pid) for pid in left)  # nothing could stop them: the lab is left behind

    run = Run()
    try:
        run.wait_line("a previous run left behind", START_SECONDS)
        run.wait_line(WELCOME, START_SECONDS)
        assert [pid for pid in left if alive(pid)] == []
        assert sip_options(*KS["ks1"]) == 200
        pids = lab_pids()
    finally:
        code = run.stop()
    assert code == 0, "\n".join(run.seen)
    assert [pid for pid in pids if alive(pid)] == []

    again = Run()
    try:
        again.wait_line(WELCOME, START_SECONDS)
    finally:
        assert again.stop(signal.SIGINT) == 0
