"""The lab's processes: starting them in a session of their own, knowing whether one is
still the lab's, signalling its whole process group, stopping it, waiting for it to be ready."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
LAB_PROGRAMS = ("kamailio", "etcd", "memcached")
# The lab's store links and its sites' WAN emulator run as `python -m MODULE`: known by that argument.
LAB_MODULES = ("statestore.storelink", "statestore.lab_wan")


class LabError(Exception):
    pass


def alive(pid: int | None) -> bool:
    """A process the lab started is running (or stopped): not gone, not a zombie, and still
    one of the lab's programs (after a reboot the PID in var/lab.json may be someone else's)."""
    if not pid:
        return False
    try:
        if _state(pid) == "Z":
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = [part.decode(errors="replace") for part in cmdline.read().split(b"\0")]
    except OSError:
        return False
    # An empty command line is a process in the middle of exec (Popen returns before the
    # kernel has set up the new program's arguments): the one we have just started.
    program = os.path.basename(arguments[0])
    return program in LAB_PROGRAMS or program == "" or any(module in arguments for module in LAB_MODULES)


def stopped(pid: int | None) -> bool:
    """The process is stopped (SIGSTOP: `blfctl lab stop`)."""
    try:
        return bool(pid) and _state(pid or 0) in ("T", "t")
    except OSError:
        return False


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(") ", 1)[1][:1]


def require_free(what: str, address: str, kind: socket.SocketKind) -> None:
    """Refuse to start over a port someone else holds (another lab, a system service)."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            holder = port_holder(int(port), kind)
            held = f"by pid {holder[0]} ({holder[1]})" if holder else "by another process"
            raise LabError(f"cannot start {what}: {address} is in use {held} ({exc.strerror}); "
                           "a lab of another var directory, or a system service?") from exc


def port_holder(port: int, kind: socket.SocketKind) -> tuple[int, str] | None:
    """The (pid, program) of a process holding local `port` (TCP listening, or UDP bound),
    when /proc shows it to us; None otherwise."""
    table = "/proc/net/tcp" if kind == socket.SOCK_STREAM else "/proc/net/udp"
    try:
        with open(table) as sockets:
            rows = [line.split() for line in sockets.readlines()[1:]]
    except OSError:
        return None
    # Columns: sl, local address (hex ip:port), remote, state (0A: TCP LISTEN), ..., inode (10th).
    held = {f"socket:[{row[9]}]" for row in rows if int(row[1].rsplit(":", 1)[1], 16) == port
            and (kind != socket.SOCK_STREAM or row[3] == "0A")}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in held:
                    with open(f"/proc/{pid}/comm") as comm:
                        return int(pid), comm.read().strip()
    return None


def binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise LabError(f"{name} is not installed; run `make setup`")


def spawn(command: list[str], log: Path, env: dict[str, str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True, cwd=str(ROOT),
        )
    return process.pid


def wait_for(what: str, ready: Callable[[], bool], pid: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise LabError(f"{what} exited during start-up; see its log under var/")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001, S110 - not ready yet, whatever the probe raised; retry
            pass
        time.sleep(0.1)
    raise LabError(f"{what} did not become ready within {timeout:.0f}s")


def stop(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL after `timeout`. A stopped group is continued
    first: a SIGSTOPped process would hold SIGTERM until then."""
    if not alive(pid):
        return
    assert pid is not None
    signal_group(pid, signal.SIGCONT)
    signal_group(pid, signal.SIGTERM)
    if not reap(pid, timeout):
        signal_group(pid, signal.SIGKILL)
        reap(pid, 5.0)


def stop_all(pids: list[int | None], timeout: float = 10.0) -> None:
    """`stop` them all at once: every group continued and SIGTERMed, then each waited for
    within one shared `timeout`, the ones left SIGKILLed (a lab down takes as long as its
    slowest process, not the sum)."""
    running = [pid for pid in dict.fromkeys(pids) if pid is not None and alive(pid)]
    for pid in running:
        signal_group(pid, signal.SIGCONT)
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in running:
        if not reap(pid, max(0.0, deadline - time.monotonic())):
            signal_group(pid, signal.SIGKILL)
            reap(pid, 5.0)


def signal_group(pid: int, signum: int) -> None:
    """Signal the process group the lab started `pid` as the leader of (start_new_session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def reap(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return True
        except ChildProcessError:
            if not alive(pid):
                return True
        time.sleep(0.05)
    return not alive(pid)


def tcp_answers(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True
