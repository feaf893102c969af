"""`make bench`: our lab and Kamailio's native presence, side by side, same load client.

Runs where it is started: `bench/in_netns.sh` puts it in a network namespace of its own
(the lab takes its usual ports there: 5071/5072, etcd 2379/2381, memcached 11211; the
native Kamailio takes 5080). For every repetition, workload and system (alternating which
system goes first), it starts the system fresh, provisions the same accounts, registers the
callees, subscribes W watchers to each of P presentities (timed: initial SUBSCRIBE rate;
PSS before/after: memory per 10,000 subscriptions), then places calls at rising rates,
each for --duration seconds, until a rate is not held (a missed NOTIFY or p99 >= 1 s).
Per rate: NOTIFY latency p50/p99, missed NOTIFYs, CPU seconds per answered call of every
process of the system under test (from /proc/PID/stat; ours: both instances, etcd and
memcached), and for ours etcd's write counters per answered call.

    python -m bench.run [--quick] [--reps 3] [--workloads 50x2,200x25,1000x100] [--duration 10]
    python -m bench.run --workloads presence-200x25,presence-1000x25   # PUBLISH/s instead of calls/s
    python -m bench.run --systems ours --zones 2 --workloads 200x25   # the accounts split over 2 zones
    python -m bench.run --systems ours --zones 1,2 --workloads 200x25 # both, alternating per repetition

With --zones N (ours, call workloads), the lab runs zones z1..zN and the accounts are split
evenly: the Kth part of the presentities and of the callers in a domain of zone zK (z1 keeps
bench.example), each part with its own W watchers of that domain. Every presentity still has
W watchers and every call a caller of its callee's domain: the same total work as one zone.
Several counts (--zones 1,2) are run as systems of their own, "ours" (one zone) and
"ours-2zones", alternating in each repetition as the systems do.
Per rate, ours also reports the CPU of each instance's notifier process (the rtimer
`blf_notifier`, from core.psx) and of all Kamailio processes, per answered call.

The presence workloads (bench/presence.py) publish PIDF documents (PUBLISH, Event: presence)
at rising rates to W presence watchers of each of P presentities; they are not in the default
plan (name them in --workloads).

Results: bench/results/bench-<UTC stamp>.json (+ latest.json, latest-presence.json when only presence
workloads ran, or quick.json), and with
matplotlib a PNG of p99 against call rate (bench/results/p99-<stamp>.png).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import Call, Client, Phone, summarize

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOMAIN = "bench.example"
NATIVE = ("127.0.0.1", 5080)
KS1, KS2 = ("127.0.0.1", 5071), ("127.0.0.1", 5072)
METRICS = "http://127.0.0.1:2381/metrics"
HELD_P99_MS = 1000.0
PRESENTITIES_PER_WATCHER = 250  # under the lab's cap of 300 subscriptions per watcher
NOTIFIER_ROLE = "timer=blf_notifier"  # core.psx: "RTIMER EXEC child=0 timer=blf_notifier"
CALLERS = 20
SUBSCRIBE_WINDOW = 100  # initial SUBSCRIBEs in flight at once
SUBSCRIBE_BUDGET_S = 600.0  # subscriptions not sent by then are reported as not accepted
WORKLOADS: dict[str, list[float]] = {
    "50x2": [5, 10, 20, 30, 40, 60, 80, 120, 160],
    "200x25": [2, 5, 10, 20, 40, 60, 80],
    "1000x100": [1, 2, 5],
}
QUICK = {"10x2": [2.0, 5.0]}
# Shared memory of both systems' Kamailios, MB (`kamailio -m`): 128 ran the native tm out of
# memory at about 80 calls/s, and 64 ran ours out at about 1,500 NOTIFYs/s.
NATIVE_SHM_MB = "1024"


def password(user: str) -> str:
    return f"{user}-pw"


def zone_domain(index: int) -> str:
    """The domain of zone z<index + 1> with --zones (z1: DOMAIN, as with one zone)."""
    return DOMAIN if index == 0 else f"bench-z{index + 1}.example"


def ha1(user: str) -> str:
    return hashlib.md5(f"{user}:{DOMAIN}:{password(user)}".encode()).hexdigest()  # noqa: S324 - digest HA1


# --- processes of a system under test --------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_processes(leaders: list[int]) -> dict[int, tuple[str, float]]:
    """pid -> (program, CPU seconds) of every process in the process groups led by `leaders`."""
    wanted = set(leaders)
    found: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        name = text[text.index("(") + 1: text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) in wanted:  # pgrp
            found[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return found


def cpu_by_program(leaders: list[int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, seconds in group_processes(leaders).values():
        totals[name] = totals.get(name, 0.0) + seconds
    return totals


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all processes), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def pss_kb(leaders: list[int]) -> int:
    """Proportional set size of the groups: shared memory (Kamailio's shm) counted once."""
    total = 0
    for pid in group_processes(leaders):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                match = re.search(r"^Pss:\s+(\d+) kB", rollup.read(), re.M)
        except OSError:
            continue
        total += int(match.group(1)) if match else 0
    return total


def describe(sockets: dict[str, Path]) -> dict[int, str]:
    """pid -> "instance: role" of Kamailio processes, from the RPC core.psx of each control socket."""
    roles: dict[int, str] = {}
    for name, path in sockets.items():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run(["kamcmd", "-s", f"unix:{path}", "core.psx"], capture_output=True, text=True,
                                  timeout=5).stdout
            for pid, role in re.findall(r"PID: (\d+)\s+DSC: ([^\n]+)", text):
                roles[int(pid)] = f"{name}: {role.strip()}"
    return roles


def etcd_counters(urls: list[str] | None = None) -> dict[str, float]:
    """etcd's own write counters: mvcc puts/deletes/txns and gRPC requests per method, summed
    over the metrics `urls` (default: the lab's z1; one member per zone, see Ours.metrics_urls)."""
    counters: dict[str, float] = {}
    for url in urls if urls is not None else [METRICS]:
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - loopback
        except OSError:
            continue
        for name in ("etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_debugging_mvcc_txn_total"):
            match = re.search(rf"^{name} (\S+)$", text, re.M)
            if match:
                counters[name] = counters.get(name, 0.0) + float(match.group(1))
        for method, value in re.findall(
                r'^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} (\S+)$', text, re.M):
            counters[f"grpc_{method}"] = counters.get(f"grpc_{method}", 0.0) + float(value)
    return counters


def wait_udp(address: tuple[str, int], timeout: float = 20.0) -> None:
    from statestore.lab import sip_options

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sip_options(*address) == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers OPTIONS at {address}")


# --- the two systems -------------------------------------------------------------------------


class Native:
    name = "native"

    def __init__(self, var: Path) -> None:
        self.dir = var / "native"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, users: list[str], domain_of: dict[str, str] | None = None) -> None:
        # One domain only (--zones is for ours): `domain_of` is not used.
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        shutil.copy(ROOT / "bench" / "native" / "kamailio.cfg", self.dir / "kamailio.cfg")
        lines = ["event_route[htable:mod-init] {"]
        lines += [f'\t$sht(acc=>{user}) = "{ha1(user)}";' for user in users]
        (self.dir / "accounts.cfg").write_text("\n".join([*lines, "}", ""]))
        tables = self.dir / "db"
        tables.mkdir()
        for table in ("version", "pua"):
            shutil.copy(Path("/usr/share/kamailio/dbtext/kamailio") / table, tables / table)
        kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
        with open(self.dir / "kamailio.log", "ab") as log:
            self.process = subprocess.Popen(
                [kamailio, "-f", str(self.dir / "kamailio.cfg"), "-Y", str(self.dir), "-m", NATIVE_SHM_MB, "-DD", "-E",
                 "-A", f'PUA_DB_URL="text://{tables}"'],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=str(self.dir),
            )
        wait_udp(NATIVE)

    def leaders(self) -> list[int]:
        return [self.process.pid] if self.process else []

    def ctl_sockets(self) -> dict[str, Path]:
        return {"native": self.dir / "kamailio_ctl"}

    def metrics_urls(self) -> list[str]:
        return []

    def proxies(self) -> dict[str, tuple[str, int]]:
        return {"caller": NATIVE, "callee": NATIVE, "watcher0": NATIVE, "watcher1": NATIVE}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.process = None


class Ours:
    """The lab (`blfctl lab up`, two instances, `zones` zones) with its own BLF_VAR."""

    name = "ours"

    def __init__(self, var: Path, zones: int = 1) -> None:
        self.zones = zones
        if zones != 1:
            self.name = f"ours-{zones}zones"
        self.var = var / "lab"
        self.env = os.environ.copy()
        self.env["BLF_VAR"] = str(self.var)
        # Every phone of the bench sends from 127.0.0.1: the per-address flood limit (pike)
        # would block the load itself. The native stack has no such limit.
        self.env["BLF_PIKE_DENSITY"] = "10000000"
        # The same shared memory as the native Kamailio's (-m 1024): NOTIFY transactions live in it.
        self.env["BLF_SHM_MB"] = NATIVE_SHM_MB

    def blfctl(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "statestore.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            raise RuntimeError(f"blfctl {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self, users: list[str], domain_of: dict[str, str] | None = None) -> None:
        """A fresh lab; domain zone_domain(K) placed in zone z<K + 1> (as `blfctl domain add D
        --zone zK` does) with the accounts `domain_of` puts in it (default: DOMAIN)."""
        from statestore.cli_directory import new_account
        from statestore.etcd_store import EtcdStore

        self.stop()
        shutil.rmtree(self.var, ignore_errors=True)
        # --direct-store: the instances reach etcd without the lab's store link (no extra hop measured).
        self.blfctl("lab", "up", "--instances", "2", "--direct-store", "--zones", str(self.zones))
        members = self.zone_members()
        for index in range(self.zones):
            domain = zone_domain(index)
            store = EtcdStore(",".join(m["client"] for m in members[f"z{index + 1}"]), timeout=5.0)
            try:
                store.add_domain(domain)
                for user in users:
                    if (domain_of or {}).get(user, DOMAIN) == domain:
                        store.put_account(new_account(user, domain, password(user)))
            finally:
                store.close()

    def zone_members(self) -> dict[str, list[dict[str, Any]]]:
        """zone -> its etcd members as lab.json has them (client, metrics, pid...)."""
        state = json.loads((self.var / "lab.json").read_text())
        return {zone: list(entry["members"].values()) for zone, entry in state["zones"].items()}

    def leaders(self) -> list[int]:
        state = json.loads((self.var / "lab.json").read_text())
        pids = [entry["pid"] for entry in state["instances"].values()]
        pids += [state[part]["pid"] for part in ("etcd", "memcached") if state[part].get("pid")]
        pids += [m["pid"] for zone in self.zone_members().values() for m in zone if m.get("pid")]
        return sorted(set(pids))

    def metrics_urls(self) -> list[str]:
        """The first member of each zone: mvcc counters count every write once per cluster
        (each member applies it), and the bench's lab has one member per zone, which serves
        every gRPC request of its zone."""
        return [f"http://{zone[0]['metrics']}/metrics" for zone in self.zone_members().values() if zone]

    def ctl_sockets(self) -> dict[str, Path]:
        return {name: self.var / name / "run" / "kamailio_ctl" for name in ("ks1", "ks2")}

    def proxies(self) -> dict[str, tuple[str, int]]:
        # Calls cross instances (caller on ks1, callee on ks2); watchers on both.
        return {"caller": KS1, "callee": KS2, "watcher0": KS1, "watcher1": KS2}

    def restart(self, name: str) -> float:
        """SIGKILL one instance (its whole process group) and start it again: seconds until it
        answers SIP and has announced itself."""
        started = time.monotonic()
        self.blfctl("lab", "kill", name)
        self.blfctl("lab", "start", name)
        return time.monotonic() - started

    def stop(self) -> None:
        if (self.var / "lab.json").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.blfctl("lab", "down")


# --- one workload against one system ------------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    """The users of a call workload and the domain of each."""

    callees: list[str]
    watcher_groups: list[tuple[list[str], list[str]]]  # (watchers, the presentities each of them watches)
    callers: list[str]
    domain_of: dict[str, str]

    @property
    def users(self) -> list[str]:
        return self.callees + [user for users, _ in self.watcher_groups for user in users] + self.callers


def accounts(presentities: int, watchers: int, zones: int = 1) -> Accounts:
    """P callees, 20 callers, W watchers per group of at most PRESENTITIES_PER_WATCHER
    presentities. With several zones, the callees and callers are split into contiguous
    parts, the Kth in zone_domain(K), and each part's presentities have their own groups of
    W watchers in that domain (one zone: the accounts of before zones, all in DOMAIN)."""
    callees = [f"p{index:05d}" for index in range(presentities)]
    callers = [f"caller{index:02d}" for index in range(CALLERS)]
    groups: list[tuple[list[str], list[str]]] = []
    domain_of: dict[str, str] = {}
    for zone in range(zones):
        mine = callees[presentities * zone // zones:presentities * (zone + 1) // zones]
        users = mine + callers[CALLERS * zone // zones:CALLERS * (zone + 1) // zones]
        for start in range(0, len(mine), PRESENTITIES_PER_WATCHER):
            group = [f"w{len(groups):02d}x{index:04d}" for index in range(watchers)]
            groups.append((group, mine[start:start + PRESENTITIES_PER_WATCHER]))
            users += group
        domain_of.update(dict.fromkeys(users, zone_domain(zone)))
    return Accounts(callees, groups, callers, domain_of)


async def gather_limited(coroutines: list[Any], limit: int, deadline: float = math.inf) -> list[Any]:
    """Run at most `limit` at once; those not started by `deadline` (monotonic) give False."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> Any:
        async with semaphore:
            if time.monotonic() > deadline:
                coroutine.close()
                return False
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))


async def drive(system: Native | Ours, presentities: int, watchers: int, rates: list[float],
                duration: float, log: Any, subscribe_budget: float = SUBSCRIBE_BUDGET_S,
                restart_rate: float = 0.0, subscribe_window: int = SUBSCRIBE_WINDOW) -> dict[str, Any]:
    zones = system.zones if isinstance(system, Ours) else 1
    users = accounts(presentities, watchers, zones)
    callees, callers = users.callees, users.callers
    proxies = system.proxies()
    client = Client(DOMAIN, password, users.domain_of)
    result: dict[str, Any] = {"system": system.name, "presentities": presentities, "watchers": watchers,
                              "zones": zones, "rates": []}
    try:
        leaders = system.leaders()
        pss_before = pss_kb(leaders)
        callee_phones = [await client.phone(user, proxies["callee"]) for user in callees]
        for phone in callee_phones:
            phone.on_request = client.callee_request
        caller_phones = [await client.phone(user, proxies["caller"]) for user in callers]
        for phone in caller_phones:
            phone.on_request = lambda p, m: p.send(p.response(m, 200, "OK"), m.source)
        registered = await gather_limited([client.register(p) for p in callee_phones], 50)
        result["registered"] = sum(registered)
        subscriptions: list[Any] = []
        watcher_id = 0
        for group, group_presentities in users.watcher_groups:
            for index, user in enumerate(group):
                phone = await client.phone(user, proxies[f"watcher{index % 2}"])
                phone.on_request = client.watcher_request(watcher_id)
                for presentity in group_presentities:
                    subscriptions.append((phone, watcher_id, presentity))
                watcher_id += 1
        # Interleave watchers so that no phone has a long queue of its own requests.
        position = {user: index for index, user in enumerate(callees)}
        subscriptions.sort(key=lambda item: (position[item[2]], item[1]))
        started = time.monotonic()
        done = await gather_limited([client.subscribe(p, w, s) for p, w, s in subscriptions], subscribe_window,
                                    started + subscribe_budget)
        elapsed = time.monotonic() - started
        await asyncio.sleep(min(5.0, 1.0 + len(subscriptions) / 5000))  # initial NOTIFYs
        result["subscriptions"] = {"wanted": len(subscriptions), "accepted": sum(done),
                                   "seconds": round(elapsed, 2),
                                   "per_second": round(sum(done) / elapsed, 1) if elapsed else None,
                                   "initial_notifies": client.initial_notifies,
                                   "retransmissions": client.stats.retransmissions,
                                   "errors": dict(client.stats.errors)}
        pss_after = pss_kb(leaders)
        result["pss_kb"] = {"before": pss_before, "after": pss_after}
        result["pss_mb_per_10k_subs"] = (round((pss_after - pss_before) / 1024 / sum(done) * 10000, 2)
                                         if sum(done) else None)
        print(f"  {system.name} {presentities}x{watchers}: {sum(done)}/{len(subscriptions)} subscriptions in "
              f"{elapsed:.1f}s, PSS +{(pss_after - pss_before) / 1024:.1f} MB", file=log, flush=True)
        for rate in rates:
            figures = await calls_at(client, system, caller_phones, callees, rate, duration)
            result["rates"].append(figures)
            print(f"  {system.name} {presentities}x{watchers} {rate}/s: p50 {figures['p50_ms']} ms, p99 "
                  f"{figures['p99_ms']} ms, missed {figures['missed']}, failed {figures['failed_calls']}, "
                  f"CPU {figures['cpu_ms_per_call']} ms/call (notifiers "
                  f"{figures.get('notifier_cpu_ms_per_call')}), held={figures['held']}", file=log, flush=True)
            if not figures["held"]:
                break
        if restart_rate and isinstance(system, Ours):
            # An instance killed and restarted with every subscription in place: how long until
            # it answers, then calls at a low rate right away (missed NOTIFYs = not resynced).
            seconds = await asyncio.to_thread(system.restart, "ks2")
            figures = await calls_at(client, system, caller_phones, callees, restart_rate, duration)
            result["restart"] = {"instance": "ks2", "seconds_to_answer": round(seconds, 2), "calls": figures}
            print(f"  ours restart of ks2: answering after {seconds:.1f}s; then {restart_rate}/s: p99 "
                  f"{figures['p99_ms']} ms, missed {figures['missed']}", file=log, flush=True)
        held = [entry["rate"] for entry in result["rates"] if entry["held"]]
        result["held_rate"] = max(held) if held else 0
        result["client_errors"] = client.stats.errors
    finally:
        client.close()
    return result


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds used over a step: per program of the system under test, their total,
    the load client's own, the busiest processes in cores, and each instance's notifier
    process (ours: instance -> CPU seconds of its rtimer blf_notifier; native: none)."""

    by_program: dict[str, float]
    total: float
    client: float
    busiest: list[dict[str, Any]]
    notifiers: dict[str, float]


def cpu_used(
    procs_before: dict[int, tuple[str, float]], procs_after: dict[int, tuple[str, float]], roles: dict[int, str],
    client_before: resource.struct_rusage, client_after: resource.struct_rusage, wall: float,
) -> CpuUse:
    by_program: dict[str, float] = {}
    notifiers: dict[str, float] = {}
    per_process: list[tuple[float, str]] = []
    for pid, (program, seconds) in procs_after.items():
        used = seconds - procs_before.get(pid, (program, 0.0))[1]
        by_program[program] = round(by_program.get(program, 0.0) + used, 3)
        role = roles.get(pid, f"{program} {pid}")
        per_process.append((used, role))
        if role.endswith(NOTIFIER_ROLE):
            instance = role.split(":", 1)[0]
            notifiers[instance] = round(notifiers.get(instance, 0.0) + used, 3)
    per_process.sort(reverse=True)
    client = client_after.ru_utime + client_after.ru_stime - client_before.ru_utime - client_before.ru_stime
    busiest = [{"process": role, "cores": round(used / wall, 2)} for used, role in per_process[:12]]
    return CpuUse(by_program, sum(by_program.values()), client, busiest, notifiers)


async def calls_at(client: Client, system: Native | Ours, callers: list[Phone], callees: list[str],
                   rate: float, duration: float) -> dict[str, Any]:
    leaders = system.leaders()
    roles = describe(system.ctl_sockets())
    metrics = system.metrics_urls()
    procs_before, etcd_before = group_processes(leaders), etcd_counters(metrics)
    busy_before = machine_busy_seconds()
    client_cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    # Each call has a caller of its callee's domain (--zones: each zone's callers call its callees).
    pools: dict[str, list[Phone]] = {}
    for phone in callers:
        pools.setdefault(phone.domain, []).append(phone)
    calls: list[Call] = []
    tasks: list[asyncio.Task[None]] = []
    count = int(rate * duration)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for number in range(count):
        delay = start + number / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        # Round robin over the callees: at high rates a callee has overlapping calls (its lamp
        # shows several dialogs); each change is matched to its call by Call-ID.
        call = Call(number, callees[number % len(callees)])
        calls.append(call)
        pool = pools[client.domain_for(call.presentity)]
        tasks.append(loop.create_task(client.call(pool[number % len(pool)], call)))
    placing = loop.time() - start
    await asyncio.gather(*tasks)
    # Until every watcher saw every change, or MISS_AFTER after the last change.
    last = max((max(c.t.values()) for c in calls if c.t), default=time.monotonic())
    while time.monotonic() < last + 5.0:
        if all(_complete(call, client) for call in calls if call.answered):
            break
        await asyncio.sleep(0.1)
    procs_after, etcd_after = group_processes(leaders), etcd_counters(metrics)
    busy_after = machine_busy_seconds()
    wall = loop.time() - start
    client_cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for call in calls:
        call.done = True
    answered = sum(1 for call in calls if call.answered)
    figures = summarize(calls, client.watchers_of)
    usage = cpu_used(procs_before, procs_after, roles, client_cpu_before, client_cpu_after, wall)
    cpu, total_cpu, client_cpu = usage.by_program, usage.total, usage.client
    entry: dict[str, Any] = {
        "rate": rate, "placed": len(calls), "answered": answered,
        "achieved_rate": round((len(calls) - 1) / placing, 1) if placing > 0 else None,
        "failed_calls": len(calls) - answered, "placing_seconds": round(placing, 2), **figures,
        "cpu_seconds": cpu,
        # The busiest processes, in cores (CPU seconds / wall seconds of this step): one near 1.0
        # is a serial bottleneck.
        "busiest_processes": usage.busiest,
        "cpu_ms_per_call": round(total_cpu / answered * 1000, 2) if answered else None,
        # The Kamailio processes alone (ours: both instances, without etcd and memcached).
        "instances_cpu_ms_per_call": round(cpu.get("kamailio", 0.0) / answered * 1000, 2) if answered else None,
        "client_cpu_seconds": round(client_cpu, 2),
        # Noise: cores used meanwhile by everything else on the machine (other sessions' tests).
        "others_cores": round(max(0.0, busy_after - busy_before - total_cpu - client_cpu) / wall, 2),
        "seconds": round(wall, 1),
    }
    if usage.notifiers:
        entry["notifier_cpu_seconds"] = usage.notifiers
        entry["notifier_cpu_ms_per_call"] = (round(sum(usage.notifiers.values()) / answered * 1000, 2)
                                             if answered else None)
    if isinstance(system, Ours) and etcd_before and answered:
        entry["etcd_per_answered_call"] = {
            name: round((etcd_after.get(name, 0.0) - etcd_before.get(name, 0.0)) / answered, 2)
            for name in sorted(etcd_after) if etcd_after.get(name, 0.0) != etcd_before.get(name, 0.0)
        }
        writes = sum(etcd_after.get(f"grpc_{m}", 0.0) - etcd_before.get(f"grpc_{m}", 0.0)
                     for m in ("Put", "DeleteRange", "Txn"))
        entry["etcd_write_requests_per_call"] = round(writes / answered, 2)
    entry["held"] = bool(answered) and figures["missed"] == 0 and entry["failed_calls"] == 0 \
        and figures["p99_ms"] < HELD_P99_MS
    # Forget these calls: later NOTIFYs are not matched against them any more.
    for call in calls:
        client.call_by_id.pop(call.call_id, None)
    for presentity in client.calls_of:
        client.calls_of[presentity] = []
    return entry


def _complete(call: Call, client: Client) -> bool:
    watchers = client.watchers_of.get(call.presentity, set())
    return all(len(call.seen.get(kind, {})) >= len(watchers) for kind in call.t)


# --- the run -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = match.group(1) if match else ""
    mem = ""
    with contextlib.suppress(OSError):
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = f"{int(match.group(1)) // 1024} MB" if match else ""
    kamailio = subprocess.run(["kamailio", "-v"], capture_output=True, text=True).stdout.splitlines()
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {"host": socket.gethostname(), "cpu": model, "cpus": os.cpu_count(), "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "kamailio": kamailio[0] if kamailio else "", "etcd": etcd[0] if etcd else "",
            "commit": commit, "tree_dirty": bool(dirty)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over repetitions, with min/max as the noise seen, per workload, system and rate."""
    out: dict[str, Any] = {}
    for run in runs:
        key = run.get("workload") or f"{run['presentities']}x{run['watchers']}"
        out.setdefault(key, {}).setdefault(run["system"], []).append(run)
    summary: dict[str, Any] = {}
    for workload, systems in out.items():
        summary[workload] = {}
        for name, reps in systems.items():
            per_rate: dict[float, dict[str, list[float]]] = {}
            for rep in reps:
                for entry in rep["rates"]:
                    slot = per_rate.setdefault(entry["rate"], {})
                    for field in ("p50_ms", "p99_ms", "missed", "cpu_ms_per_call", "instances_cpu_ms_per_call",
                                  "notifier_cpu_ms_per_call", "etcd_write_requests_per_call",
                                  "others_cores", "cpu_ms_per_publish", "publish_answered_per_s",
                                  "etcd_write_requests_per_publish", "failed_publishes"):
                        value = entry.get(field)
                        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                            slot.setdefault(field, []).append(float(value))
            summary[workload][name] = {
                "reps": len(reps),
                "held_rate": _spread([rep.get("held_rate", 0) for rep in reps]),
                "subscribe_per_second": _spread([(rep.get("subscriptions") or {}).get("per_second") or 0
                                                 for rep in reps]),
                "pss_mb_per_10k_subs": _spread([rep["pss_mb_per_10k_subs"] or 0 for rep in reps]),
                "rates": {str(rate): {field: _spread(values) for field, values in fields.items()}
                          for rate, fields in sorted(per_rate.items())},
            }
    return summary


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "n": len(values)}


def plot(summary: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = list(summary)
    figure, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4), squeeze=False)
    for axis, workload in zip(axes[0], workloads, strict=False):
        for number, name in enumerate(summary[workload]):
            style = "o-" if name == "native" else "sD^v"[number % 4] + "-"
            rates = summary[workload][name].get("rates", {})
            points = [(float(rate), fields["p99_ms"]) for rate, fields in rates.items() if fields.get("p99_ms")]
            if not points:
                continue
            xs = [x for x, _ in points]
            below = [p["median"] - p["min"] for _, p in points]
            above = [p["max"] - p["median"] for _, p in points]
            axis.errorbar(xs, [p["median"] for _, p in points], yerr=[below, above], fmt=style, capsize=3,
                          label=name)
        axis.axhline(HELD_P99_MS, color="grey", linestyle=":", linewidth=1)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(f"{workload} (presentities x watchers)")
        axis.set_xlabel("PUBLISH/s" if workload.startswith("presence-") else "calls/s")
        axis.set_ylabel("NOTIFY latency p99 (ms)")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a few seconds against a small workload")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--workloads", default=None, help="e.g. 50x2,200x25 (default: all three)")
    parser.add_argument("--rates", default=None, help="override the rates, e.g. 5,10,20")
    parser.add_argument("--duration", type=float, default=None, help="seconds of calls per rate")
    parser.add_argument("--systems", default="native,ours")
    parser.add_argument("--zones", default="1",
                        help="ours, call workloads: the lab's zones, the accounts split evenly over one domain "
                             "per zone (same total load); a list (1,2) runs each, alternating")
    parser.add_argument("--var", default=None, help="runtime files (default var/bench-PID)")
    parser.add_argument("--out", default=None, help="JSON result path")
    parser.add_argument("--subscribe-window", type=int, default=SUBSCRIBE_WINDOW,
                        help="initial SUBSCRIBEs in flight at once (answers slower than T1 = 500 ms are retransmitted)")
    parser.add_argument("--restart-rate", type=float, default=None,
                        help="ours: after the rates, kill and restart ks2, then calls at this rate "
                             "(default 2, 0 with --quick: none)")
    parser.add_argument("--subscribe-budget", type=float, default=SUBSCRIBE_BUDGET_S,
                        help="seconds for the initial SUBSCRIBEs of one workload; later ones are not sent")
    args = parser.parse_args(argv)
    zone_counts = [int(count) for count in args.zones.split(",")]
    if zone_counts != [1] and ("native" in args.systems.split(",") or not all(1 <= n <= 9 for n in zone_counts)):
        parser.error("--zones 2..9 is for --systems ours")
    # A stopped bench stops what it started (the finally clauses below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    from bench import presence

    plan = {**QUICK, **presence.QUICK} if args.quick else dict(WORKLOADS)
    if args.workloads:
        known = {**WORKLOADS, **presence.WORKLOADS, **presence.QUICK}
        plan = {name: plan.get(name, known.get(name, [2.0, 5.0])) for name in args.workloads.split(",")}
    if args.rates:
        plan = {name: [float(r) for r in args.rates.split(",")] for name in plan}
    if zone_counts != [1] and any(presence.is_presence(workload) for workload in plan):
        parser.error("--zones is for the call workloads")
    reps = args.reps or (1 if args.quick else 3)
    if args.restart_rate is None:
        args.restart_rate = 0.0 if args.quick else 2.0
    duration = args.duration or (2.0 if args.quick else 10.0)
    var = Path(args.var or ROOT / "var" / f"bench-{os.getpid()}")
    var.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / ("quick.json" if args.quick else f"bench-{stamp}.json")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report: dict[str, Any] = {
        "started": stamp, "machine": machine(), "quick": args.quick, "duration_per_rate_s": duration,
        "reps": reps, "plan": plan, "netns": _netns(), "subscribe_window": args.subscribe_window,
        "restart_rate": args.restart_rate, "zones": zone_counts, "runs": [],
    }
    ours = [Ours(var, count) for count in zone_counts]
    systems: dict[str, Native | Ours] = {"native": Native(var), **{system.name: system for system in ours}}
    order = [name for choice in args.systems.split(",")
             for name in ([system.name for system in ours] if choice == "ours" else [choice]) if name in systems]
    began = time.monotonic()
    try:
        for rep in range(reps):
            for workload, rates in plan.items():
                presentities, watchers = presence.shape(workload)
                names = order if rep % 2 == 0 else order[::-1]
                for name in names:
                    system = systems[name]
                    if presence.is_presence(workload):
                        publishers, groups = presence.accounts(presentities, watchers)
                        users = publishers + [u for g in groups for u in g]
                        domain_of: dict[str, str] = {}
                    else:
                        zones = system.zones if isinstance(system, Ours) else 1
                        workload_accounts = accounts(presentities, watchers, zones)
                        users, domain_of = workload_accounts.users, workload_accounts.domain_of
                    print(f"rep {rep + 1}/{reps} {workload} {name}: starting", flush=True)
                    try:
                        system.start(users, domain_of)
                        if presence.is_presence(workload):
                            run = asyncio.run(presence.drive(system, presentities, watchers, rates, duration,
                                                             sys.stdout, args.subscribe_budget,
                                                             args.subscribe_window))
                        else:
                            run = asyncio.run(drive(system, presentities, watchers, rates, duration, sys.stdout,
                                                    args.subscribe_budget, args.restart_rate,
                                                    args.subscribe_window))
                    except Exception as exc:  # noqa: BLE001 - one failed run is reported, not fatal
                        run = {"system": name, "workload": workload, "presentities": presentities,
                               "watchers": watchers, "rates": [],
                               "error": f"{type(exc).__name__}: {exc}", "held_rate": 0,
                               "subscriptions": {"per_second": None}, "pss_mb_per_10k_subs": None}
                        print(f"  {name} {workload} failed: {run['error']}", flush=True)
                    finally:
                        system.stop()
                    run["rep"] = rep
                    report["runs"].append(run)
                    report["summary"] = aggregate(report["runs"])
                    report["elapsed_s"] = round(time.monotonic() - began, 1)
                    out.write_text(json.dumps(report, indent=2))
    finally:
        for system in systems.values():
            system.stop()
        if not args.var:
            shutil.rmtree(var, ignore_errors=True)
    report["summary"] = aggregate(report["runs"])
    png = out.with_suffix(".png")
    report["plot"] = png.name if plot(report["summary"], png) else None
    out.write_text(json.dumps(report, indent=2))
    if not args.quick and not args.out:
        # A run of presence workloads only does not replace the call workloads' latest.json.
        only_presence = all(presence.is_presence(workload) for workload in plan)
        shutil.copy(out, RESULTS / ("latest-presence.json" if only_presence else "latest.json"))
    print(json.dumps(report["summary"], indent=1))
    print(f"results: {out}")
    return 0


def _netns() -> str:
    try:
        return os.path.basename(os.readlink("/proc/self/ns/net"))
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
