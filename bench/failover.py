"""Surviving the loss of an etcd member (issue 14 point 1): failover in our client adapter
(statestore/etcd_failover.py) against a local `etcd grpc-proxy`, measured on a private
3-member etcd cluster on free loopback ports.

    .venv/bin/python -m bench.failover [--repeats 10] [--requests 2000] [--frozen-watch-repeats 1]

Run it in a network namespace of its own (`bench/in_netns.sh`, or `ip netns exec NS`), with
nothing else heavy on the machine. Two modes, interleaved repeat by repeat so that the
machine's noise falls on both:

- adapter: `EtcdStore("m0,m1,m2", timeout=0.5)`, failover between members in our client;
- proxy: `etcd grpc-proxy start --endpoints=m0,m1,m2` on a loopback port, and
  `EtcdStore("127.0.0.1:PROXY", timeout=0.5)`.

Each repeat, for each mode:

1. steady: `put_account` (a guarded transaction) and `get_account`, REQUESTS each, one
   client, sequential: latency in ms;
2. kill-in-use: SIGKILL the member in use (adapter: the first listed, a follower; the proxy
   sends each request to its members in turn: a follower), then `put_account` back to back:
   time from the kill to the first success, failures (StoreUnavailable) before it, and for
   WINDOW seconds after it, how many requests still failed;
3. kill-leader: the same with the leader (adapter: listed first, so also the member in use);
4. freeze-in-use: the same with SIGSTOP of the member of 2 (thawed after the window);
5. watch-kill: a watch from a revision on a prefix, 200 keys written at a steady pace (by
   another client), the member carrying the watch killed after the 50th (adapter: the member
   in use; proxy: the member whose connection from the proxy carries the watch's bytes).
   The watcher does what the notifier does (kemi/blf_notifier.py): on an error, close the
   store and watch again from the revision after the last event. Counted: keys never
   delivered, (key, revision) delivered twice, the longest delay of a key's first event;
6. lease (during 5): a lease of TTL 3 s refreshed every second, on its own client in the
   mode: refresh failures, and whether it is alive at the end (a refresh says so, and the
   key attached to it is still there).

Then, FROZEN_WATCH_REPEATS times per mode, the watch of 5 with the member frozen instead of
killed and held frozen for the whole write (15 s): does the watch notice, and when.

Killed members are restarted (and frozen ones thawed) and the cluster is healthy again before
the next measurement. The proxy's CPU (utime+stime) and RSS are read from /proc per phase.

Results: bench/results/failover-<UTC stamp>.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import etcd3  # type: ignore[import-untyped]

from bench.etcd_cluster import ETCD_BINARY, HOST, EtcdCluster, Member, clean_env
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Account
from statestore.etcd import EtcdStore
from statestore.store import WatchEvent

RESULTS = Path(__file__).resolve().parent / "results"
TIMEOUT = 0.5  # the instance's request deadline
DOMAIN = "failover.example"
WINDOW = 1.5  # seconds of requests after the first success, still counted
RECOVERY_LIMIT = 15.0  # no success this long after a fault: the measurement says so and stops
WATCH_KEYS = 200
WATCH_PACE = 0.01  # s between two writes of the watch scenario
WATCH_FAULT_AT = 50
FROZEN_WATCH_KEYS = 300
FROZEN_WATCH_PACE = 0.05
LEASE_TTL = 3
PROXY_RECONNECT_LIMIT = 30.0
HELD_DEADLINE = 1.5  # a held keep-alive through the proxy is answered in up to ~0.5 s
MODES = ("adapter", "proxy")
Events = queue.Queue[list[WatchEvent] | Exception]


class Cluster(EtcdCluster):
    """Three etcd members (heartbeat 100 ms, election 1 s, as the failover tests) and the proxy."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "blf-bench-failover", extra_ports=1)
        self.root = root
        self.proxy_endpoint = f"{HOST}:{self.spare_ports[0]}"
        self.proxy: subprocess.Popen[bytes] | None = None
        self.proxy_reconnects: list[float] = []  # s waited in whole() for the proxy's connections

    def member_env(self) -> dict[str, str]:
        return clean_env()

    def start_proxy(self) -> None:
        command = [
            ETCD_BINARY, "grpc-proxy", "start", f"--endpoints={self.endpoints}",
            f"--listen-addr={self.proxy_endpoint}", f"--advertise-client-url={self.proxy_endpoint}",
            f"--data-dir={self.root / 'proxy'}",
        ]
        with (self.root / "proxy.log").open("ab") as log:
            self.proxy = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
        wait_until(lambda: _answers(self.proxy_endpoint), 30, "the proxy did not answer")

    def kill(self, member: Member) -> None:
        assert member.process is not None
        member.process.send_signal(signal.SIGKILL)
        member.process.wait(10)
        member.process = None

    def whole(self, proxy: bool = True) -> None:
        """Every member running and thawed, each answering a linearizable read with a leader;
        and, `proxy`, the proxy connected to each of them again."""
        self.revive()
        for member in self.members:
            wait_until(lambda member=member: _answers(member.client), 30, f"{member.name} did not come back")  # type: ignore[misc]
        if proxy and self.proxy is not None:
            # The proxy's connections to the members (grpc-go reconnects a lost one with back-off):
            # measured on the same terms only once it has one to each again.
            started = time.monotonic()
            while time.monotonic() - started < PROXY_RECONNECT_LIMIT:
                if len(proxy_bytes_by_member(self)) == len(self.members):
                    break
                time.sleep(0.1)
            self.proxy_reconnects.append(round(time.monotonic() - started, 2))

    def leader(self) -> Member:
        for _ in range(50):
            for member in self.members:
                with contextlib.suppress(Exception), _raw(member.client) as client:
                    response = client.maintenancestub.Status(etcd3.etcdrpc.StatusRequest(), 1.0)
                    if response.leader and response.leader == response.header.member_id:
                        return member
            time.sleep(0.1)
        raise SystemExit("no leader")

    def follower(self) -> Member:
        leader = self.leader()
        return next(member for member in self.members if member is not leader)

    def by_client(self, endpoint: str) -> Member:
        return next(member for member in self.members if member.client == endpoint)

    def ordered(self, first: Member) -> str:
        """The endpoints with `first` first (the member the adapter uses until it fails)."""
        return ",".join([first.client] + [m.client for m in self.members if m is not first])

    def stop_all(self) -> None:
        for process in [self.proxy] + [member.process for member in self.members]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


@contextlib.contextmanager
def _raw(endpoint: str) -> Iterator[Any]:
    host, _, port = endpoint.rpartition(":")
    client = etcd3.client(host=host, port=int(port), timeout=1.0)
    try:
        yield client
    finally:
        client.close()


def _answers(endpoint: str) -> bool:
    store = EtcdStore(endpoint, timeout=1.0)
    try:
        store.domains()
        return True
    except StoreUnavailable:
        return False
    finally:
        store.close()


def wait_until(done: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(failure)
        time.sleep(0.05)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def account(user: str) -> Account:
    return Account(user=user, domain=DOMAIN, ha1="0" * 32)


# The proxy process: CPU and memory from /proc.

def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kib(pid: int) -> dict[str, int]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return {name: int(status[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def proxy_bytes_by_member(cluster: Cluster) -> dict[str, int]:
    """Bytes the proxy received on its connection to each member (`ss -ti`)."""
    assert cluster.proxy is not None
    output = subprocess.run(["ss", "-tinpH", "state", "established"], capture_output=True, text=True,
                            check=False).stdout
    found: dict[str, int] = {}
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if f"pid={cluster.proxy.pid}," not in line:
            continue
        parts = line.split()
        peer = parts[3] if len(parts) > 3 else ""
        if peer not in {member.client for member in cluster.members}:
            continue
        details = lines[index + 1] if index + 1 < len(lines) else ""
        for item in details.split():
            if item.startswith("bytes_received:"):
                found[peer] = found.get(peer, 0) + int(item.split(":", 1)[1])
    return found


# The measurements.

def steady(store: EtcdStore, requests: int) -> dict[str, list[float]]:
    store.put_account(account("steady"))
    writes, reads = [], []
    for n in range(requests):
        started = time.perf_counter()
        store.put_account(account(f"s{n % 50}"))
        writes.append((time.perf_counter() - started) * 1000)
    for n in range(requests):
        started = time.perf_counter()
        store.get_account(f"s{n % 50}@{DOMAIN}")
        reads.append((time.perf_counter() - started) * 1000)
    return {"write_ms": writes, "read_ms": reads}


def through_fault(store: EtcdStore, fault: Callable[[], None]) -> dict[str, Any]:
    """Writes back to back from the fault on: until the first success, then WINDOW s more.
    A failure is StoreUnavailable or any other error (through the proxy, a deadline passed
    on its side comes back as UNKNOWN "context deadline exceeded": not StoreUnavailable)."""
    faulted = time.monotonic()
    fault()
    failed = 0
    first: float | None = None
    after_failed = after_total = 0
    slowest = 0.0
    errors: dict[str, int] = {}
    n = 0
    while True:
        now = time.monotonic()
        if first is None and now - faulted > RECOVERY_LIMIT:
            break
        if first is not None and now - first > WINDOW:
            break
        started = time.monotonic()
        try:
            store.put_account(account(f"f{n % 20}"))
            ok = True
        except Exception as exc:  # noqa: BLE001 - counted by kind
            ok = False
            errors[_error_name(exc)] = errors.get(_error_name(exc), 0) + 1
        ended = time.monotonic()
        n += 1
        slowest = max(slowest, ended - started)
        if first is None:
            if ok:
                first = ended
            else:
                failed += 1
        else:
            after_total += 1
            after_failed += 0 if ok else 1
    return {
        "recovered_s": None if first is None else round(first - faulted, 3),
        "failed_before": failed,
        "failed_after": after_failed,
        "requests_after": after_total,
        "slowest_request_s": round(slowest, 3),
        "errors": errors,
    }


class Watcher:
    """A watch on one prefix, resumed as the notifier resumes it (close, watch again from the
    revision after the last event); what it received, and when."""

    def __init__(self, make_store: Callable[[], EtcdStore], prefix: str, start_revision: int) -> None:
        self.make_store = make_store
        self.prefix = prefix
        self.reached = start_revision - 1
        self.store = make_store()
        self.events: Events = queue.Queue()
        self.received: list[tuple[str, int, float]] = []
        self.breaks: list[dict[str, Any]] = []
        self.running = True
        self.store.watch(start_revision, self.events.put, prefix)
        self.member = self.store.member_in_use()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            try:
                item = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            now = time.monotonic()
            if isinstance(item, Exception):
                self._resume(now, item)
                continue
            for event in item:
                self.received.append((event.key, event.revision, now))
                self.reached = max(self.reached, event.revision)

    def _resume(self, broken: float, error: Exception) -> None:
        self.store.close()
        self.events = queue.Queue()
        while self.running:
            try:
                self.store = self.make_store()
                self.store.watch(self.reached + 1, self.events.put, self.prefix)
                break
            except StoreUnavailable:
                self.store.close()
                time.sleep(0.1)
        self.breaks.append({"at": broken, "error": type(error).__name__, "resumed_after_s":
                            round(time.monotonic() - broken, 3)})

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.store.close()


class LeaseKeeper:
    """A lease of LEASE_TTL s refreshed every second, as the lease keeper does: with
    `store.refresh_lease` (etcd3's refresh_lease: one request on a keep-alive stream closed at
    once), or, `held`, on a stream kept open until its answer comes, with HELD_DEADLINE s
    (through the proxy, the only way a refresh is answered: see `proxy_refresh_check`)."""

    def __init__(self, store: EtcdStore, key: str, held: bool) -> None:
        self.store = store
        self.key = key
        self.held = held
        self.lease = store.grant_lease(LEASE_TTL)
        store.client.put(key, "alive", lease=self.lease)
        self.failures: dict[str, int] = {}
        self.refreshed = 0
        self.expired = False
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def refresh(self) -> bool:
        if not self.held:
            return self.store.refresh_lease(self.lease)
        return held_refresh(self.store, self.lease, HELD_DEADLINE)

    def run(self) -> None:
        while self.running:
            time.sleep(1.0)
            try:
                if self.refresh():
                    self.refreshed += 1
                else:
                    self.expired = True
            except Exception as exc:  # noqa: BLE001 - counted by kind
                name = _error_name(exc)
                self.failures[name] = self.failures.get(name, 0) + 1

    def stop(self) -> dict[str, Any]:
        self.running = False
        self.thread.join(5)
        alive = False
        for _ in range(5):
            try:
                alive = bool(self.store.client.get(self.key)[0]) and self.refresh()
                break
            except Exception:  # noqa: BLE001 - tried again
                time.sleep(0.2)
        with contextlib.suppress(Exception):
            self.store.revoke_lease(self.lease)
        return {"held_stream": self.held, "refreshed": self.refreshed, "refresh_failures": self.failures,
                "seen_expired": self.expired, "alive_at_end": alive}


def _error_name(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if callable(code):
        return f"{type(exc).__name__}:{code().name}"
    return type(exc).__name__


def held_refresh(store: EtcdStore, lease: int, deadline: float) -> bool:
    """One keep-alive on a LeaseKeepAlive stream whose request side stays open until the
    answer (or the deadline): grpc-proxy 3.4 cancels the stream when the client closes its
    side first, before it answers."""
    raw = store.client.pool.current.client
    answered = threading.Event()

    def requests() -> Iterator[Any]:
        yield etcd3.etcdrpc.LeaseKeepAliveRequest(ID=lease)
        answered.wait(deadline)

    stream = raw.leasestub.LeaseKeepAlive(requests(), deadline, metadata=raw.metadata)
    try:
        first = next(stream)
    finally:
        answered.set()
        stream.cancel()
    return int(first.TTL) > 0


def proxy_refresh_check(cluster: Cluster) -> dict[str, Any]:
    """store.refresh_lease and held_refresh through the proxy, nothing failing: 5 of each."""
    store = EtcdStore(cluster.proxy_endpoint, timeout=TIMEOUT)
    lease = store.grant_lease(LEASE_TTL)
    found: dict[str, Any] = {}
    ways: tuple[tuple[str, Callable[[], bool]], ...] = (
        ("refresh_lease", lambda: store.refresh_lease(lease)),
        ("held_0.5s", lambda: held_refresh(store, lease, TIMEOUT)),
        (f"held_{HELD_DEADLINE}s", lambda: held_refresh(store, lease, HELD_DEADLINE)),
    )
    for name, refresh in ways:
        outcomes: dict[str, int] = {}
        seconds: list[float] = []
        for _ in range(5):
            started = time.monotonic()
            try:
                outcome = "ok" if refresh() else "expired"
            except Exception as exc:  # noqa: BLE001 - counted by kind
                outcome = _error_name(exc)
            seconds.append(round(time.monotonic() - started, 3))
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            time.sleep(0.3)
        found[name] = {"outcomes": outcomes, "seconds": seconds}
    with contextlib.suppress(Exception):
        store.revoke_lease(lease)
    store.close()
    return found


def watch_through_fault(cluster: Cluster, mode: str, tag: str, frozen: bool) -> dict[str, Any]:
    keys_count, pace = (FROZEN_WATCH_KEYS, FROZEN_WATCH_PACE) if frozen else (WATCH_KEYS, WATCH_PACE)
    prefix = f"/bench/watch/{tag}/"
    first = cluster.follower()
    endpoints = cluster.ordered(first) if mode == "adapter" else cluster.proxy_endpoint
    writer = EtcdStore(cluster.endpoints, timeout=TIMEOUT)
    start_revision = writer.revision() + 1
    watcher = Watcher(lambda: EtcdStore(endpoints, timeout=TIMEOUT), prefix, start_revision)
    lease_store = EtcdStore(endpoints, timeout=TIMEOUT)
    keeper = LeaseKeeper(lease_store, f"/bench/lease/{tag}", held=mode == "proxy")
    result: dict[str, Any] = {}
    if mode == "adapter":
        victim = cluster.by_client(watcher.member)
    else:
        before = proxy_bytes_by_member(cluster)
        for _ in range(30):
            writer.client.put(f"{prefix}probe", "x" * 2000)
        after = proxy_bytes_by_member(cluster)
        growth = {peer: after.get(peer, 0) - before.get(peer, 0) for peer in after}
        result["proxy_bytes_growth_by_member"] = growth
        victim = cluster.by_client(max(growth, key=lambda peer: growth[peer])) if growth else cluster.leader()
    result["victim_was_leader"] = victim is cluster.leader()
    # The writer stands for the other instances: the victim last, so that its writes do not
    # wait on the fault and a key's delay is the watch's alone (from the write's success).
    writer.close()
    writer = EtcdStore(",".join([m.client for m in cluster.members if m is not victim] + [victim.client]),
                       timeout=TIMEOUT)
    writer.put_account(account("writer"))
    written: dict[str, float] = {}
    write_failures = 0
    fault_at = 0.0
    for n in range(keys_count):
        key = f"{prefix}{n:03d}"
        if n == WATCH_FAULT_AT:
            assert victim.process is not None
            fault_at = time.monotonic()
            if frozen:
                victim.process.send_signal(signal.SIGSTOP)
            else:
                cluster.kill(victim)
        next_at = time.monotonic() + pace
        while True:
            try:
                writer.client.put(key, str(n))
                written.setdefault(key, time.monotonic())
                break
            except Exception:  # noqa: BLE001 - the writer's outage is not what is measured
                write_failures += 1
                time.sleep(0.05)
        time.sleep(max(0.0, next_at - time.monotonic()))
    deadline = time.monotonic() + (15.0 if frozen else 10.0)
    while time.monotonic() < deadline:
        delivered = {key for key, _, _ in watcher.received}
        if all(key in delivered for key in written):
            break
        time.sleep(0.05)
    lease = keeper.stop()
    watcher.stop()
    writer.close()
    lease_store.close()
    first_seen: dict[str, float] = {}
    pairs: dict[tuple[str, int], int] = {}
    for key, revision, at in watcher.received:
        if key.endswith("probe"):
            continue
        first_seen.setdefault(key, at)
        pairs[(key, revision)] = pairs.get((key, revision), 0) + 1
    missing = [key for key in written if key not in first_seen]
    delays = [first_seen[key] - at for key, at in written.items() if key in first_seen]
    result.update({
        "victim": victim.name,
        "keys_written": len(written),
        "writer_failures": write_failures,
        "events": sum(pairs.values()),
        "missing": len(missing),
        "duplicates": sum(count - 1 for count in pairs.values()),
        "rewrites": len(pairs) - len(first_seen),
        "max_delay_s": round(max(delays), 3) if delays else None,
        "watch_breaks": [{**item, "at": round(item["at"] - fault_at, 3)} for item in watcher.breaks],
        "lease": lease,
    })
    return result


@dataclass
class Run:
    args: argparse.Namespace
    cluster: Cluster
    results: dict[str, Any] = field(default_factory=dict)
    pooled: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def store(self, mode: str, first: Member) -> EtcdStore:
        endpoints = self.cluster.ordered(first) if mode == "adapter" else self.cluster.proxy_endpoint
        store = EtcdStore(endpoints, timeout=TIMEOUT)
        for _ in range(5):  # connected, and the adapter on `first`
            store.put_account(account("warm"))
        return store

    def outage(self, mode: str, kind: str) -> dict[str, Any]:
        self.cluster.whole(proxy=mode == "proxy")
        victim = self.cluster.leader() if kind == "kill-leader" else self.cluster.follower()
        store = self.store(mode, victim)
        if mode == "adapter":
            assert store.member_in_use() == victim.client
        assert victim.process is not None
        process = victim.process
        if kind == "freeze-in-use":
            result = through_fault(store, lambda: process.send_signal(signal.SIGSTOP))
            process.send_signal(signal.SIGCONT)
        else:
            result = through_fault(store, lambda: self.cluster.kill(victim))
        result["victim"] = victim.name
        result["victim_was_leader"] = kind == "kill-leader"
        store.close()
        return result

    def proxy_usage(self) -> dict[str, float]:
        assert self.cluster.proxy is not None
        return {"cpu_s": proc_cpu_s(self.cluster.proxy.pid), **proc_rss_kib(self.cluster.proxy.pid)}

    def repeat(self, rep: int) -> None:
        for mode in MODES:
            row: dict[str, Any] = {"mode": mode, "repeat": rep}
            before = self.proxy_usage()
            self.cluster.whole(proxy=mode == "proxy")
            store = self.store(mode, self.cluster.follower())
            started = time.monotonic()
            samples = steady(store, self.args.requests)
            for name, values in samples.items():
                self.pooled.setdefault((mode, name), []).extend(values)
            row["steady"] = {name: {"p50": round(statistics.median(values), 3),
                                    "p99": round(percentile(values, .99), 3)} for name, values in samples.items()}
            row["steady_s"] = round(time.monotonic() - started, 3)
            store.close()
            row["proxy_cpu_steady_s"] = round(self.proxy_usage()["cpu_s"] - before["cpu_s"], 3)
            for kind in ("kill-in-use", "kill-leader", "freeze-in-use"):
                row[kind] = self.outage(mode, kind)
            self.cluster.whole(proxy=mode == "proxy")
            row["watch-kill"] = watch_through_fault(self.cluster, mode, f"{mode}-{rep}", frozen=False)
            after = self.proxy_usage()
            row["proxy_cpu_s"] = round(after["cpu_s"] - before["cpu_s"], 3)
            row["proxy_rss_kib"] = after["VmRSS"]
            self.results.setdefault("repeats", []).append(row)
            print(f"rep {rep + 1} {mode}: " + brief(row), flush=True)

    def frozen_watches(self) -> None:
        for rep in range(self.args.frozen_watch_repeats):
            for mode in MODES:
                self.cluster.whole(proxy=mode == "proxy")
                row = watch_through_fault(self.cluster, mode, f"frozen-{mode}-{rep}", frozen=True)
                row["mode"] = mode
                self.results.setdefault("frozen_watch", []).append(row)
                print(f"frozen watch {mode}: {json.dumps(row)}", flush=True)


def brief(row: dict[str, Any]) -> str:
    steady_row = row["steady"]
    parts = [
        f"write p50/p99 {steady_row['write_ms']['p50']}/{steady_row['write_ms']['p99']} ms",
        f"read {steady_row['read_ms']['p50']}/{steady_row['read_ms']['p99']} ms",
    ]
    for kind in ("kill-in-use", "kill-leader", "freeze-in-use"):
        parts.append(f"{kind} {row[kind]['recovered_s']}s/{row[kind]['failed_before']}+{row[kind]['failed_after']}")
    watch = row["watch-kill"]
    parts.append(f"watch missing {watch['missing']} dup {watch['duplicates']} delay {watch['max_delay_s']}s "
                 f"lease {'ok' if watch['lease']['alive_at_end'] else 'LOST'}")
    return ", ".join(parts)


def summary(results: dict[str, Any], pooled: dict[tuple[str, str], list[float]]) -> dict[str, Any]:
    """Per mode: pooled steady percentiles, and median / p99 over repeats of each figure."""
    out: dict[str, Any] = {}
    for mode in MODES:
        rows = [row for row in results.get("repeats", []) if row["mode"] == mode]
        if not rows:
            continue
        mode_out: dict[str, Any] = {}
        for name in ("write_ms", "read_ms"):
            values = pooled[(mode, name)]
            mode_out[name] = {"p50": round(statistics.median(values), 3), "p99": round(percentile(values, .99), 3),
                              "p99_median_over_repeats": round(statistics.median(
                                  [row["steady"][name]["p99"] for row in rows]), 3)}

        def spread(values: list[float | None]) -> dict[str, float | int | None]:
            known = [value for value in values if value is not None]
            return {"median": round(statistics.median(known), 3) if known else None,
                    "p99": round(percentile(known, .99), 3) if known else None,
                    "unrecovered": len(values) - len(known)}

        for kind in ("kill-in-use", "kill-leader", "freeze-in-use"):
            mode_out[kind] = {
                "recovered_s": spread([row[kind]["recovered_s"] for row in rows]),
                "failed_before": spread([row[kind]["failed_before"] for row in rows]),
                "failed_after": spread([row[kind]["failed_after"] for row in rows]),
                "requests_after": spread([row[kind]["requests_after"] for row in rows]),
                "errors_total": _sum_counts([row[kind]["errors"] for row in rows]),
            }
        watches = [row["watch-kill"] for row in rows]
        mode_out["watch-kill"] = {
            "missing_total": sum(w["missing"] for w in watches),
            "duplicates_total": sum(w["duplicates"] for w in watches),
            "max_delay_s": spread([w["max_delay_s"] for w in watches]),
            "breaks_total": sum(len(w["watch_breaks"]) for w in watches),
            "leases_lost": sum(0 if w["lease"]["alive_at_end"] else 1 for w in watches),
            "lease_refresh_failures_total": sum(sum(w["lease"]["refresh_failures"].values()) for w in watches),
        }
        if mode == "proxy":
            mode_out["proxy_cpu_s_per_repeat"] = spread([row["proxy_cpu_s"] for row in rows])
            mode_out["proxy_cpu_s_steady_4000_requests"] = spread([row["proxy_cpu_steady_s"] for row in rows])
            mode_out["proxy_rss_kib_max"] = max(row["proxy_rss_kib"] for row in rows)
        out[mode] = mode_out
    return out


def _sum_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for name, value in count.items():
            total[name] = total.get(name, 0) + value
    return total


def markdown(results: dict[str, Any]) -> str:
    summ = results["summary"]
    lines = [
        "| | adapter | proxy |",
        "|---|---|---|",
    ]

    def cell(mode: str, getter: Callable[[dict[str, Any]], str]) -> str:
        return getter(summ[mode]) if mode in summ else "-"

    def row(label: str, getter: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | {cell('adapter', getter)} | {cell('proxy', getter)} |")

    row("write p50 / p99 (ms)", lambda m: f"{m['write_ms']['p50']} / {m['write_ms']['p99']}")
    row("read p50 / p99 (ms)", lambda m: f"{m['read_ms']['p50']} / {m['read_ms']['p99']}")
    def recovered(kind: str) -> Callable[[dict[str, Any]], str]:
        def get(m: dict[str, Any]) -> str:
            spread = m[kind]["recovered_s"]
            never = f" ({spread['unrecovered']} never)" if spread["unrecovered"] else ""
            return f"{spread['median']} / {spread['p99']}{never}"
        return get

    def failed(kind: str, name: str) -> Callable[[dict[str, Any]], str]:
        def get(m: dict[str, Any]) -> str:
            of = f" (of {m[kind]['requests_after']['median']})" if name == "failed_after" else ""
            return f"{m[kind][name]['median']} / {m[kind][name]['p99']}{of}"
        return get

    for kind in ("kill-in-use", "kill-leader", "freeze-in-use"):
        row(f"{kind}: first write after (s), median / p99", recovered(kind))
        row(f"{kind}: failed before, median / p99", failed(kind, "failed_before"))
        row(f"{kind}: failed in the {WINDOW:g} s after, median / p99", failed(kind, "failed_after"))
        row(f"{kind}: errors (all repeats)", lambda m, k=kind: str(m[k]["errors_total"]) or "-")  # type: ignore[misc]
    row("watch across a kill: missing / duplicates (all repeats)",
        lambda m: f"{m['watch-kill']['missing_total']} / {m['watch-kill']['duplicates_total']}")
    row("watch across a kill: longest delay (s), median / p99",
        lambda m: f"{m['watch-kill']['max_delay_s']['median']} / {m['watch-kill']['max_delay_s']['p99']}")
    row("watch breaks seen by the watcher (all repeats)", lambda m: str(m["watch-kill"]["breaks_total"]))
    row("lease TTL 3 s across a kill: lost / refresh failures",
        lambda m: f"{m['watch-kill']['leases_lost']} / {m['watch-kill']['lease_refresh_failures_total']}")
    if "proxy" in summ:
        proxy = summ["proxy"]
        lines.append(f"\nproxy CPU per repeat: median {proxy['proxy_cpu_s_per_repeat']['median']} s; "
                     f"over 4,000 steady requests: {proxy['proxy_cpu_s_steady_4000_requests']['median']} s; "
                     f"RSS max {proxy['proxy_rss_kib_max'] / 1024:.1f} MiB")
    waits = results.get("proxy_reconnect_waits_s") or []
    if waits:
        lines.append(f"\nproxy back on every member after a restart: median {statistics.median(waits):.2f} s, "
                     f"max {max(waits)} s (limit {PROXY_RECONNECT_LIMIT:g} s)")
    lines.append(f"\nstore.refresh_lease and held keep-alives through the proxy: {results.get('proxy_lease_refresh')}")
    for frozen in results.get("frozen_watch", []):
        lines.append(f"\nfrozen watch, {frozen['mode']}: missing {frozen['missing']}, duplicates "
                     f"{frozen['duplicates']}, longest delay {frozen['max_delay_s']} s, breaks "
                     f"{frozen['watch_breaks']}, lease {frozen['lease']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--frozen-watch-repeats", type=int, default=1)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    results: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "commit": commit,
        "etcd": subprocess.run([ETCD_BINARY, "--version"], capture_output=True, text=True,
                               check=False).stdout.splitlines()[0],
        "settings": {"repeats": args.repeats, "requests": args.requests, "timeout_s": TIMEOUT, "window_s": WINDOW,
                     "watch_keys": WATCH_KEYS, "watch_pace_s": WATCH_PACE, "lease_ttl_s": LEASE_TTL,
                     "heartbeat_ms": 100, "election_ms": 1000},
    }
    results["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        cluster = Cluster(Path(tmp))
        run = Run(args, cluster, results)
        try:
            for member in cluster.members:
                cluster.start(member)
            cluster.whole()
            EtcdStore(cluster.endpoints, timeout=2.0).add_domain(DOMAIN)
            cluster.start_proxy()
            results["proxy_at_start"] = run.proxy_usage()
            results["proxy_lease_refresh"] = proxy_refresh_check(cluster)
            print(f"lease refresh through the proxy: {results['proxy_lease_refresh']}", flush=True)
            for rep in range(args.repeats):
                run.repeat(rep)
            run.frozen_watches()
            results["proxy_at_end"] = run.proxy_usage()
            results["proxy_reconnect_waits_s"] = cluster.proxy_reconnects
        finally:
            cluster.stop_all()
    results["seconds"] = round(time.monotonic() - began, 1)
    results["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]
    results["summary"] = summary(results, run.pooled)
    results["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS / f"failover-{stamp}.json"
    output.write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(markdown(results))
    print(f"\n{results['seconds']} s; load average {results['loadavg_at_start']} -> {results['loadavg_at_end']}")
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
