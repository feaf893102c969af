"""`blfctl run`'s supervision (statestore.lab_run): what it says when instances die and come
back, which processes count as left behind, one run per var directory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from statestore.lab_process import LabError
from statestore.lab_run import RUN_PID, instance_changes, run_lock, running_pids, supervise

BACK = "ks2 is back."
DIED = "ks2 died; the other instances keep serving. `blfctl lab start ks2` brings it back."


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        ({"ks1": True, "ks2": True}, {"ks1": True, "ks2": True}, []),
        ({"ks1": True, "ks2": True}, {"ks1": True, "ks2": False}, [DIED]),
        ({"ks1": True, "ks2": False}, {"ks1": True, "ks2": False}, []),
        ({"ks1": True, "ks2": False}, {"ks1": True, "ks2": True}, [BACK]),
        ({}, {"ks2": False}, []),  # first seen dead: not news
        ({"ks1": True}, {"ks1": True, "ks2": True}, []),
        ({"ks1": True, "ks2": True}, {"ks1": False, "ks2": False},
         [DIED.replace("ks2", "ks1"), DIED]),
    ],
)
def test_instance_changes(before, after, said):
    assert instance_changes(before, after) == said


def _status(instances: dict[str, bool], memcached: bool, members: dict[str, bool]) -> dict[str, object]:
    return {
        "instances": {name: {"pid": 100 + index, "alive": up} for index, (name, up) in enumerate(instances.items())},
        "memcached": {"pid": 200 if memcached else None, "alive": memcached},
        "zones": {"z1": {"members": {name: {"pid": 300 + index, "alive": up}
                                     for index, (name, up) in enumerate(members.items())}}},
    }


@pytest.mark.parametrize(
    ("instances", "memcached", "members", "pids"),
    [
        ({}, False, {}, []),
        ({"ks1": True, "ks2": False}, True, {"z1-etcd1": True}, [100, 200, 300]),
        ({"ks1": False}, False, {"z1-etcd1": False, "z1-etcd2": True}, [301]),
    ],
)
def test_running_pids_are_the_live_processes_of_the_lab(instances, memcached, members, pids):
    assert running_pids(_status(instances, memcached, members)) == pids


def test_run_lock_writes_its_pid_and_removes_it(tmp_path: Path):
    with run_lock(tmp_path):
        assert (tmp_path / RUN_PID).read_text().strip() == str(os.getpid())
    assert not (tmp_path / RUN_PID).exists()


def test_run_lock_refuses_while_another_blfctl_run_holds_it(tmp_path: Path):
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()", "blfctl", "run"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None
        # Its command line is "blfctl run" only once it has exec'd: it says so.
        assert other.stdout.readline() == b"up\n"
        (tmp_path / RUN_PID).write_text(f"{other.pid}\n")
        with pytest.raises(LabError, match=f"pid {other.pid}"), run_lock(tmp_path):
            pass
    finally:
        other.communicate(b"")


def test_run_lock_takes_over_a_pid_file_of_a_process_that_is_not_a_run(tmp_path: Path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / RUN_PID).write_text(f"{gone.pid}\n")
    with run_lock(tmp_path):
        assert (tmp_path / RUN_PID).read_text().strip() == str(os.getpid())


def test_supervise_reaps_a_dead_child_and_says_so():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    said: list[str] = []
    stopping = threading.Event()

    def running() -> bool:  # a zombie counts as dead, as statestore.lab_process.alive has it
        try:
            return Path(f"/proc/{child.pid}/stat").read_text().rsplit(") ", 1)[1][:1] != "Z"
        except OSError:
            return False

    def status() -> dict[str, object]:
        return {"instances": {"ks2": {"alive": running()}}}

    def say(line: str) -> None:
        said.append(line)
        stopping.set()

    worker = threading.Thread(target=supervise, args=(status, stopping, say, 0.01))
    worker.start()
    assert child.stdin is not None
    child.stdin.close()
    worker.join(timeout=10)
    assert said == [DIED]
    assert not os.path.exists(f"/proc/{child.pid}")  # reaped by supervise, not left a zombie
