"""End-to-end fixtures: a real lab (etcd, memcached, two Kamailio instances) and phones.

The lab is started once per session through `blfctl lab up` under var/test-lab, with a
short subscription minimum so that expiry can be seen within a test.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.blf_watch import Subscription, Watcher
from tests.sipua import UserAgent

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
DOMAIN = "example.com"
KS = {"ks1": ("127.0.0.1", 5071), "ks2": ("127.0.0.1", 5072)}
LEASE_TTL = 4
# What the lab's instances run (`blfctl lab up --config`): "full" (our routing) or "dropin"
# (Debian's stock kamailio.cfg with the additions of docs/dropin.md). Unset: "dropin" when
# only tests/e2e/test_dropin.py runs, else "full".
CONFIG_VARIABLE = "BLF_TEST_CONFIG"
DROPIN_TESTS = "test_dropin.py"


def lab_config(session: pytest.Session) -> str:
    chosen = os.environ.get(CONFIG_VARIABLE)
    if chosen:
        return chosen
    files = {Path(str(item.fspath)).name for item in session.items}
    return "dropin" if files == {DROPIN_TESTS} else "full"
SUB_MIN_EXPIRES = 2
# PUBLISH's minimum lowered from 60 (BLF_PUB_MIN_EXPIRES) so that a publication expires
# within a test.
PUB_MIN_EXPIRES = 2
RECONCILE_SECONDS = 2
# Lowered from 300 so that a test reaches it in a dozen SUBSCRIBEs; the other caps keep
# their defaults (4 per watcher and presentity, 500 per presentity).
MAX_SUBS_PER_WATCHER = 10

pytestmark = pytest.mark.e2e


def blfctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statestore.cli", *args], cwd=ROOT, env=os.environ.copy(),
        capture_output=True, text=True, check=check, timeout=120,
    )


# Below Linux's default ephemeral range (32768-60999), above the lab's fixed ports.
LISTEN_PORTS = (20000, 32000)


def free_port(tcp: bool = False) -> int:
    """A loopback port free for UDP; with `tcp`, free for UDP and TCP and outside the
    kernel's ephemeral range, for a program that listens on both (baresip's SIP port and
    its ctrl_tcp): a port the kernel had given out was once taken, between the choice and
    baresip's bind, by an outgoing TCP connection, and baresip ran without its control socket."""
    if not tcp:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    while True:
        port = random.randrange(*LISTEN_PORTS)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as one, socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM
            ) as other:
                one.bind(("127.0.0.1", port))
                other.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[dict[str, tuple[str, int]]]:
    for tool in ("kamailio", "etcd", "sipp", "memcached"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            pytest.fail(f"{tool} is not installed: run `make setup`")
    # BLF_TEST_VAR: a second lab beside this one (in its own network namespace) needs its own files.
    var = Path(os.environ.get("BLF_TEST_VAR", str(ROOT / "var" / "test-lab")))
    shutil.rmtree(var, ignore_errors=True)
    os.environ["BLF_VAR"] = str(var)
    os.environ["BLF_SUB_MIN_EXPIRES"] = str(SUB_MIN_EXPIRES)
    os.environ["BLF_PUB_MIN_EXPIRES"] = str(PUB_MIN_EXPIRES)
    os.environ["BLF_RECONCILE_SECONDS"] = str(RECONCILE_SECONDS)
    os.environ["BLF_MAX_SUBS_PER_WATCHER"] = str(MAX_SUBS_PER_WATCHER)
    up = blfctl("lab", "up", "--instances", "2", "--lease-ttl", str(LEASE_TTL), "--config", lab_config(request.session),
                check=False)
    if up.returncode != 0:
        pytest.fail(f"lab up failed: {up.stdout}\n{up.stderr}")
    blfctl("domain", "add", DOMAIN)
    try:
        yield KS
    finally:
        blfctl("lab", "down", check=False)


@pytest.fixture
def account(lab: dict[str, tuple[str, int]]) -> Iterator[object]:
    """Provision fresh accounts: account("alice") -> ("alice-1a2b@example.com", password)."""

    def make(name: str) -> tuple[str, str]:
        user = f"{name}-{uuid.uuid4().hex[:6]}"
        password = f"{user}-pw"
        blfctl("account", "add", f"{user}@{DOMAIN}", "--password", password)
        return user, password

    yield make


@pytest.fixture
def phones() -> Iterator[list[UserAgent]]:
    made: list[UserAgent] = []
    yield made
    for phone in made:
        phone.close()


def phone(phones: list[UserAgent], creds: tuple[str, str], instance: str, domain: str = DOMAIN) -> UserAgent:
    ua = UserAgent(creds[0], domain, creds[1], KS[instance])
    phones.append(ua)
    return ua


def watcher(phones: list[UserAgent], creds: tuple[str, str], instance: str, domain: str = DOMAIN) -> Watcher:
    return Watcher(phone(phones, creds, instance, domain))


class Sipp:
    """sipp user agents started for a test; all are stopped when it ends."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes: list[subprocess.Popen[bytes]] = []

    def _start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.out", "wb")  # noqa: SIM115 - sipp writes to it until it exits
        process = subprocess.Popen(
            ["timeout", "60", "sipp", *args, "-nostdin", "-trace_err", "-trace_msg"],
            cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.processes.append(process)
        return process

    def callee(
        self, port: int, ring_ms: int = 1000, busy: bool = False, transport: str = "u1"
    ) -> subprocess.Popen[bytes]:
        scenario = SCENARIOS / ("callee_busy.xml" if busy else "callee.xml")
        return self._start(
            ["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-d", str(ring_ms),
             "-t", transport],
            f"callee-{port}",
        )

    def call(
        self, via: str, caller: tuple[str, str], callee_user: str, hold_ms: int = 1000, transport: str = "u1",
        scenario: str = "caller.xml",
    ) -> subprocess.Popen[bytes]:
        # -auth_uri: sipp's digest-uri is remote_ip:port by default; the server checks that it
        # names the Request-URI (RFC 7616 §3.4.6), which is what real phones put there.
        host, port = KS[via]
        local = free_port()
        return self._start(
            [f"{host}:{port}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(local),
             "-m", "1", "-s", callee_user, "-key", "domain", DOMAIN, "-key", "caller", caller[0],
             "-au", caller[0], "-ap", caller[1], "-auth_uri", f"{callee_user}@{DOMAIN}",
             "-d", str(hold_ms), "-t", transport],
            f"caller-{local}",
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                # The whole group: killing `timeout` alone would leave sipp running.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    runner = Sipp(tmp_path)
    yield runner
    runner.stop()


def register_contact(ua: UserAgent, port: int, expires: int = 300, transport: str = "udp") -> None:
    """REGISTER, through `ua`'s instance, a contact on `port` where a sipp callee listens."""
    param = "" if transport == "udp" else f";transport={transport}"
    response = ua.register(expires, contact=f"<sip:{ua.user}@127.0.0.1:{port}{param}>")
    assert response.status == 200, response.first_line


def watched_callee(
    phones: list[UserAgent], callee: tuple[str, str], watcher_creds: tuple[str, str],
    callee_at: str = "ks2", watcher_at: str = "ks1",
) -> tuple[int, Watcher, Subscription]:
    """`callee` registered (through `callee_at`) on a free port for a sipp callee, and a watcher
    (through `watcher_at`) subscribed to it: the port, the watcher, its subscription."""
    port = free_port()
    register_contact(phone(phones, callee, callee_at), port)
    cat = watcher(phones, watcher_creds, watcher_at)
    return port, cat, cat.subscribe(callee[0])


def play_answered_call(sipp: Sipp, via: str, caller: tuple[str, str], callee_user: str, port: int,
                       cat: Watcher, caller_lamp: Subscription, callee_lamp: Subscription) -> None:
    """`caller` calls `callee_user` (a sipp callee on `port`, ringing 1.5 s) through `via` and
    hangs up after 1.5 s; `cat` sees the callee's lamp flash, go red, go dark, and the
    caller's go red and dark, in that order and nothing else."""
    callee = sipp.callee(port, ring_ms=1500)
    call = sipp.call(via, caller, callee_user, hold_ms=1500)
    cat.wait_lamp(callee_lamp, "early", 5)
    assert caller_lamp.lamp == "busy" or cat.wait_lamp(caller_lamp, "busy", 2) is None
    cat.wait_lamp(callee_lamp, "busy", 5)
    cat.wait_lamp(callee_lamp, "idle", 8)
    cat.wait_lamp(caller_lamp, "idle", 3)
    assert call.wait(timeout=30) == 0 and callee.wait(timeout=30) == 0
    assert callee_lamp.lamps == ["idle", "early", "busy", "idle"]
    assert caller_lamp.lamps == ["idle", "busy", "idle"]


def lamps_cleared_after_kill(instance: str, cat: Watcher, lamps: list[Subscription]) -> float:
    """SIGKILL `instance` (`blfctl lab kill`, as a crash would) and wait until every lamp is
    idle again (within the lease TTL and a margin); the seconds from the kill. The caller
    starts the instance again."""
    blfctl("lab", "kill", instance)
    killed = time.monotonic()
    for lamp in lamps:
        cat.wait_lamp(lamp, "idle", max(0.1, killed + LEASE_TTL + 4 - time.monotonic()))
    return time.monotonic() - killed


def ring_after_takeover(sipp: Sipp, port: int, caller: tuple[str, str], callee_user: str, via: str,
                        cat: Watcher, lamp: Subscription) -> subprocess.Popen[bytes]:
    """With the instance holding `cat`'s subscription dead, call `callee_user` (its sipp callee
    on `port`) through `via`, ringing past the lease TTL, and wait for the lamp to flash from
    a NOTIFY that `via` sent: it took the subscription over. The caller's sipp process."""
    sipp.callee(port, ring_ms=LEASE_TTL * 1000 + 2000)
    call = sipp.call(via, caller, callee_user, hold_ms=500)
    cat.wait_lamp(lamp, "early", LEASE_TTL + 6)
    sender = lamp.notifies[-1].message.header("contact") or ""
    assert str(KS[via][1]) in sender, f"{via} took over sending the NOTIFYs (Contact {sender})"
    return call


def etcd_pid() -> int:
    state = json.loads((Path(os.environ["BLF_VAR"]) / "lab.json").read_text())
    return int(state["etcd"]["pid"])


def kamcmd(instance: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A Kamailio RPC on a running lab instance, through its control socket."""
    control = Path(os.environ["BLF_VAR"]) / instance / "run" / "kamailio_ctl"
    binary = shutil.which("kamcmd") or "/usr/sbin/kamcmd"
    return subprocess.run(
        [binary, "-s", f"unix:{control}", *command], capture_output=True, text=True, check=check, timeout=10
    )


def etcdctl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """etcdctl (v3 API) against the lab's etcd."""
    return subprocess.run(
        ["etcdctl", "--endpoints=127.0.0.1:2379", *args], env={**os.environ, "ETCDCTL_API": "3"},
        capture_output=True, text=True, check=False, timeout=timeout,
    )


def store_revision() -> int:
    """etcd's current revision (every write transaction raises it by one)."""
    done = etcdctl("get", "/blf/epoch", "-w", "json")
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["header"]["revision"])


def store_writes_since(revision: int, until: int, timeout: float = 10) -> list[tuple[str, str]]:
    """Every write etcd made under /blf/ after `revision` up to `until` included, as
    (PUT or DELETE, key), replayed from etcd's history by a watch that starts in the past.
    (etcd never splits one revision's events over two watch responses.)"""
    writes: list[tuple[str, str]] = []
    if until <= revision:
        return writes
    lines: queue.Queue[str | None] = queue.Queue()
    watch = subprocess.Popen(
        ["etcdctl", "--endpoints=127.0.0.1:2379", "watch", "--prefix", "/blf/", f"--rev={revision + 1}",
         "-w", "json"],
        env={**os.environ, "ETCDCTL_API": "3"}, stdout=subprocess.PIPE, text=True,
    )

    def pump() -> None:
        assert watch.stdout is not None
        for line in watch.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    newest = revision
    try:
        while newest < until:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, "etcdctl watch ended early"
            for event in json.loads(line).get("Events") or []:
                kv = event["kv"]
                newest = max(newest, int(kv.get("mod_revision", 0)))
                if newest <= until:
                    writes.append(("DELETE" if event.get("type") == 1 else "PUT", base64.b64decode(kv["key"]).decode()))
    except queue.Empty:
        # `until` itself may be a write outside /blf/: everything up to it has been seen.
        pass
    finally:
        watch.kill()
        watch.wait()
    return writes


# How long a test waits for a NOTIFY that must not come.
QUIET_SECONDS = 1.0


def no_notify(ua: UserAgent, seconds: float = QUIET_SECONDS) -> bool:
    """True when no NOTIFY reaches `ua` within `seconds` (a NOTIFY that must not come)."""
    try:
        ua.wait_request("NOTIFY", seconds)
    except TimeoutError:
        return True
    return False


def wait_store(done: Callable[[], bool], timeout: float, prefix: str = "/blf/") -> bool:
    """Whether `done` holds within `timeout`, checked again each time etcd changes a key
    under `prefix` (an `etcdctl watch` started before the first check, so no change is
    missed): the wait wakes on the store's events, not on a clock."""
    watch = subprocess.Popen(
        ["etcdctl", "--endpoints=127.0.0.1:2379", "watch", "--prefix", prefix],
        env={**os.environ, "ETCDCTL_API": "3"}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert watch.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([watch.stdout], [], [], remaining)
            if readable and not os.read(watch.stdout.fileno(), 65536):
                return done()  # the watch ended (etcd gone): one last look
        return True
    finally:
        watch.kill()
        watch.wait()


def log_sizes(instances: str = "ks*") -> dict[Path, int]:
    """The instances' logs (kamailio.log under $BLF_VAR/<instance>/) and how long each is now."""
    var = Path(os.environ["BLF_VAR"])
    return {log: log.stat().st_size for log in var.glob(f"{instances}/kamailio.log")}


def logged_since(sizes: dict[Path, int]) -> str:
    """What the logs of `sizes` got since then."""
    text = ""
    for log, size in sizes.items():
        with open(log, "rb") as handle:
            handle.seek(size)
            text += handle.read().decode(errors="replace")
    return text


def wait_logged(sizes: dict[Path, int], pattern: str, timeout: float) -> re.Match[str]:
    """Wait until a line matching `pattern` is logged past `sizes`; the first match.
    AssertionError after `timeout` seconds. The logs are followed (`tail -F`), so each wait
    wakes when an instance writes, not on a clock."""
    found = re.search(pattern, logged_since(sizes))
    if found is not None:
        return found
    tails = {
        subprocess.Popen(["tail", "-c", f"+{size + 1}", "-F", str(log)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL): log
        for log, size in sizes.items()
    }
    text = {log: b"" for log in sizes}
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"nothing matching {pattern!r} logged within {timeout}s"
            open_pipes = [tail.stdout for tail in tails if tail.returncode is None and tail.poll() is None]
            assert open_pipes, "every tail of the logs ended"
            readable, _, _ = select.select(open_pipes, [], [], remaining)
            for tail, log in tails.items():
                if tail.stdout in readable:
                    text[log] += os.read(tail.stdout.fileno(), 65536)  # type: ignore[union-attr]
            joined = "".join(chunk.decode(errors="replace") for chunk in text.values())
            if (found := re.search(pattern, joined)) is not None:
                return found
    finally:
        for tail in tails:
            tail.kill()
            tail.wait()
