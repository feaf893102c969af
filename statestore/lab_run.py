"""`blfctl run` (`make run`): the demo lab in the foreground, as an operator's cluster behaves.

- An instance that dies (`blfctl lab kill ks2`, as a crash would) does not stop the lab: the
  others keep serving, which is the failover the demo is there to show. `blfctl run` says so
  and says when it is back (`blfctl lab start ks2`, from another terminal).
- Only Ctrl-C, SIGTERM or SIGHUP (its terminal closed) stop it, and then everything of the lab.
- It reaps its children (a killed instance is not left a zombie holding its PID).
- One `blfctl run` per var directory (var/run.pid); a lab left behind by a previous run
  that died without stopping it (SIGKILL, a crash) is stopped before the new one starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from statestore.lab_process import LabError

RUN_PID = "run.pid"
# How often the foreground lab looks at its instances.
POLL_SECONDS = 0.5
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def instance_changes(before: Mapping[str, bool], after: Mapping[str, bool]) -> list[str]:
    """What `blfctl run` prints when instances die or come back, from two looks at which
    instance is alive (name -> alive). An instance seen for the first time is not news."""
    lines = []
    for name in sorted(after):
        was = before.get(name, after[name])
        if was and not after[name]:
            lines.append(f"{name} died; the other instances keep serving. "
                         f"`blfctl lab start {name}` brings it back.")
        elif after[name] and not was:
            lines.append(f"{name} is back.")
    return lines


def alive_instances(status: Mapping[str, Any]) -> dict[str, bool]:
    """name -> alive, from `Lab.status()` (a SIGSTOPped instance counts as alive)."""
    return {name: bool(entry["alive"]) for name, entry in status["instances"].items()}


def running_pids(status: Mapping[str, Any]) -> list[int]:
    """The PIDs of the lab's processes that still run, from `Lab.status()`."""
    entries = [*status["instances"].values(), status["memcached"]]
    entries += [member for zone in status["zones"].values() for member in zone["members"].values()]
    return [int(entry["pid"]) for entry in entries if entry.get("alive")]


def is_blfctl_run(pid: int) -> bool:
    """Whether process `pid` is a `blfctl run` (a PID in run.pid may have been reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:
        return False
    names = [os.path.basename(argument) for argument in arguments]
    started_as = "blfctl" in names or "statestore.cli" in arguments
    return started_as and "run" in arguments


@contextlib.contextmanager
def run_lock(var: Path) -> Iterator[None]:
    """This process is the one `blfctl run` of `var` while the block runs (var/run.pid)."""
    path = var / RUN_PID
    with contextlib.suppress(OSError, ValueError):
        holder = int(path.read_text().strip())
        if holder != os.getpid() and is_blfctl_run(holder):
            raise LabError(f"a lab already runs from {var} (`blfctl run`, pid {holder}): stop it first "
                           "(Ctrl-C there, or kill -TERM it)")
    var.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def reap_children() -> None:
    """Collect every child that has exited (an instance killed by `blfctl lab kill`), so
    none stays a zombie under this process."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C, SIGTERM or SIGHUP (replacing their handlers in this process)."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)
    return stopping


def supervise(status: Callable[[], Mapping[str, Any]], stopping: threading.Event,
              say: Callable[[str], None], poll: float = POLL_SECONDS) -> None:
    """Until `stopping` is set: reap exited children, and say which instance died or came back."""
    seen = alive_instances(status())
    while not stopping.wait(poll):
        reap_children()
        now = alive_instances(status())
        for line in instance_changes(seen, now):
            say(line)
        seen = now
