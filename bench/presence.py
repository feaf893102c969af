"""The presence workloads of `make bench` (`--workloads presence-PxW`): PUBLISH and
SUBSCRIBE with Event: presence (RFC 3856, RFC 3903), application/pidf+xml.

Every presentity account publishes its own presence (the account itself is the publisher):
an initial PUBLISH (no SIP-If-Match) before the watchers subscribe, then, at rising rates,
modifications with SIP-If-Match (the SIP-ETag of the last 200; a 412 is answered with a new
initial PUBLISH). Each document is a minimal PIDF: one tuple whose <basic> alternates
open/closed and whose <note> carries a sequence number `bench-N`, unique over the run.

W watchers subscribe (Event: presence, Accept: application/pidf+xml) to each presentity. A
publication's NOTIFY latency, per watcher, runs from the PUBLISH sent (its first
transmission with credentials) to the first NOTIFY of that watcher whose body shows that
sequence number or a later one of the same presentity (our server keeps each published tuple
as is, with its <note>; Kamailio's presence_xml passes a single publication through).
No such NOTIFY within 5 s (loadgen.MISS_AFTER) is a missed NOTIFY.

Fairness: our presence package sends at most one NOTIFY per subscription every 5 s (RFC 3856
§6.10's rate limit); Kamailio's native presence does not. PUBLISHes go round robin over the
presentities, so a presentity is published every P / rate seconds; the plan keeps that at
6 s or more (MIN_GAP_S), and every step records the smallest gap it saw (`min_gap_s`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import MISS_AFTER, Client, Msg, Phone, percentile
from bench.run import (
    DOMAIN,
    HELD_P99_MS,
    PRESENTITIES_PER_WATCHER,
    SUBSCRIBE_BUDGET_S,
    SUBSCRIBE_WINDOW,
    cpu_used,
    describe,
    etcd_counters,
    gather_limited,
    group_processes,
    machine_busy_seconds,
    password,
    pss_kb,
)

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
# Our rate limit is one NOTIFY per subscription per 5 s: a presentity is published at most
# once per MIN_GAP_S, and the first PUBLISH of a step comes that long after the subscriptions.
MIN_GAP_S = 6.0
PUBLISH_EXPIRES = 3600
# Rates per workload: the highest keeps a presentity's PUBLISHes MIN_GAP_S apart or more.
WORKLOADS: dict[str, list[float]] = {
    "presence-200x25": [5, 10, 20, 33],
    "presence-1000x25": [5, 10, 20, 40, 80, 160],
}
QUICK = {"presence-10x2": [1.0]}
_NOTE = re.compile(rb"<(?:[\w.-]+:)?note[^>]*>\s*bench-(\d+)\s*<")


def is_presence(workload: str) -> bool:
    return workload.startswith("presence-")


def shape(workload: str) -> tuple[int, int]:
    """presentities, watchers of "presence-PxW" (or "PxW")."""
    presentities, watchers = (int(n) for n in workload.removeprefix("presence-").split("x"))
    return presentities, watchers


def accounts(presentities: int, watchers: int) -> tuple[list[str], list[list[str]]]:
    """Presentity users; watcher users per group of at most PRESENTITIES_PER_WATCHER presentities."""
    users = [f"p{index:05d}" for index in range(presentities)]
    groups = math.ceil(presentities / PRESENTITIES_PER_WATCHER)
    return users, [[f"w{group:02d}x{index:04d}" for index in range(watchers)] for group in range(groups)]


def pidf(user: str, number: int, basic: str) -> bytes:
    """A minimal valid PIDF (RFC 3863): one tuple, its basic status and a note with the number."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="{PIDF_NS}" entity="sip:{user}@{DOMAIN}">\n'
        f'  <tuple id="t-{user}">\n'
        f"    <status><basic>{basic}</basic></status>\n"
        f"    <note>bench-{number}</note>\n"
        "  </tuple>\n"
        "</presence>\n"
    ).encode()


def numbers_shown(body: bytes) -> list[int]:
    return [int(n) for n in _NOTE.findall(body)]


@dataclass
class Publication:
    number: int
    presentity: str
    sent: float = 0.0  # monotonic time the PUBLISH went out
    answered_at: float = 0.0  # monotonic time of its 2xx
    seen: dict[int, float] = field(default_factory=dict)  # watcher -> latency (s)
    answered: bool = False
    failed: str = ""
    done: bool = False


class PresenceClient(Client):
    """Publishers and presence watchers on top of the load client's phones and digest."""

    def __init__(self, domain: str) -> None:
        super().__init__(domain, password)
        self.numbers = itertools.count(1)
        self.etags: dict[str, str] = {}
        self.publications_of: dict[str, list[Publication]] = {}
        self.last_sent: dict[str, float] = {}
        self.conditional_failures = 0

    async def subscribe(self, phone: Phone, watcher_id: int, presentity: str, expires: int = 3600) -> bool:
        uri = f"sip:{presentity}@{self.domain}"
        answer, *_ = await phone.request("SUBSCRIBE", uri, uri, [
            "Event: presence", "Accept: application/pidf+xml", f"Expires: {expires}"])
        if answer is None or answer.status not in (200, 202):
            self.stats.error(f"SUBSCRIBE {answer.status if answer else 'timeout'}")
            return False
        self.watchers_of.setdefault(presentity, set()).add(watcher_id)
        return True

    async def publish(self, phone: Phone, publication: Publication) -> None:
        """PUBLISH one document: a modification (SIP-If-Match) when the presentity has an
        entity tag, else an initial one; a 412 (the tag unknown there) starts over once."""
        user = phone.user
        uri = f"sip:{user}@{self.domain}"
        body = pidf(user, publication.number, "open" if publication.number % 2 else "closed")
        self.publications_of.setdefault(user, []).append(publication)
        for _ in range(2):
            etag = self.etags.get(user)
            headers = ["Event: presence", "Content-Type: application/pidf+xml", f"Expires: {PUBLISH_EXPIRES}"]
            if etag:
                headers.append(f"SIP-If-Match: {etag}")
            publication.sent = time.monotonic()
            self.last_sent[user] = publication.sent
            answer, *_ = await phone.request("PUBLISH", uri, uri, headers, body=body)
            if answer is not None and answer.status == 412 and etag:
                self.conditional_failures += 1
                self.etags.pop(user, None)
                continue
            break
        if answer is None or not 200 <= answer.status < 300:
            publication.failed = f"PUBLISH {answer.status if answer else 'timeout'}"
            self.stats.error(publication.failed)
            return
        tag = answer.h("sip-etag")
        if tag:
            self.etags[user] = tag
        else:
            self.stats.error("PUBLISH 2xx without SIP-ETag")
        publication.answered = True
        publication.answered_at = answer.at

    def on_notify(self, watcher_id: int, presentity: str, msg: Msg) -> None:
        pending = self.publications_of.get(presentity)
        if not pending:
            self.initial_notifies += 1
            return
        numbers = numbers_shown(msg.body)
        if not numbers:
            return
        latest = max(numbers)
        for publication in pending:
            if publication.done or publication.number > latest or msg.at < publication.sent:
                continue
            publication.seen.setdefault(watcher_id, msg.at - publication.sent)


def summarize(publications: list[Publication], watchers_of: dict[str, set[int]]) -> dict[str, Any]:
    latencies: list[float] = []
    missed = 0
    for publication in publications:
        if not publication.answered:
            continue
        for watcher in watchers_of.get(publication.presentity, ()):
            latency = publication.seen.get(watcher)
            if latency is None or latency > MISS_AFTER:
                missed += 1
            else:
                latencies.append(latency * 1000)
    return {
        "samples": len(latencies),
        "missed": missed,
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
    }


def _answered_rate(publications: list[Publication]) -> float | None:
    answered = [p for p in publications if p.answered]
    if len(answered) < 2:
        return None
    span = max(p.answered_at for p in answered) - min(p.sent for p in publications)
    return round((len(answered) - 1) / span, 1) if span > 0 else None


def _complete(publication: Publication, client: PresenceClient) -> bool:
    return len(publication.seen) >= len(client.watchers_of.get(publication.presentity, ()))


async def publishes_at(client: PresenceClient, system: Any, publishers: list[Phone], start_index: int,
                       rate: float, duration: float) -> dict[str, Any]:
    """PUBLISH at `rate`/s for `duration` s, round robin over the publishers from
    `start_index`; then wait until every watcher saw every publication, or MISS_AFTER."""
    leaders = system.leaders()
    roles = describe(system.ctl_sockets())
    procs_before, etcd_before = group_processes(leaders), etcd_counters()
    busy_before = machine_busy_seconds()
    client_cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    publications: list[Publication] = []
    tasks: list[asyncio.Task[None]] = []
    gaps: list[float] = []
    count = int(rate * duration)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in range(count):
        delay = start + step / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        phone = publishers[(start_index + step) % len(publishers)]
        previous = client.last_sent.get(phone.user)
        if previous is not None:
            gaps.append(time.monotonic() - previous)
        publication = Publication(next(client.numbers), phone.user)
        publications.append(publication)
        tasks.append(loop.create_task(client.publish(phone, publication)))
    placing = loop.time() - start
    await asyncio.gather(*tasks)
    last = max((p.sent for p in publications), default=time.monotonic())
    while time.monotonic() < last + MISS_AFTER:
        if all(_complete(p, client) for p in publications if p.answered):
            break
        await asyncio.sleep(0.1)
    procs_after, etcd_after = group_processes(leaders), etcd_counters()
    busy_after = machine_busy_seconds()
    wall = loop.time() - start
    client_cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for publication in publications:
        publication.done = True
    answered = sum(1 for p in publications if p.answered)
    figures = summarize(publications, client.watchers_of)
    usage = cpu_used(procs_before, procs_after, roles, client_cpu_before, client_cpu_after, wall)
    cpu, total_cpu, client_cpu = usage.by_program, usage.total, usage.client
    entry: dict[str, Any] = {
        "rate": rate, "published": len(publications), "answered": answered,
        "failed_publishes": len(publications) - answered,
        "achieved_rate": round((len(publications) - 1) / placing, 1) if placing > 0 else None,
        # PUBLISHes answered 2xx per second: between the first PUBLISH sent and the last 2xx.
        "publish_answered_per_s": _answered_rate(publications),
        "placing_seconds": round(placing, 2),
        "min_gap_s": round(min(gaps), 2) if gaps else None,
        **figures,
        "cpu_seconds": cpu,
        "busiest_processes": usage.busiest,
        "cpu_ms_per_publish": round(total_cpu / answered * 1000, 2) if answered else None,
        "client_cpu_seconds": round(client_cpu, 2),
        "others_cores": round(max(0.0, busy_after - busy_before - total_cpu - client_cpu) / wall, 2),
        "seconds": round(wall, 1),
    }
    if system.name == "ours" and etcd_before and answered:
        writes = sum(etcd_after.get(f"grpc_{m}", 0.0) - etcd_before.get(f"grpc_{m}", 0.0)
                     for m in ("Put", "DeleteRange", "Txn"))
        entry["etcd_write_requests_per_publish"] = round(writes / answered, 2)
        entry["etcd_per_answered_publish"] = {
            name: round((etcd_after.get(name, 0.0) - etcd_before.get(name, 0.0)) / answered, 2)
            for name in sorted(etcd_after) if etcd_after.get(name, 0.0) != etcd_before.get(name, 0.0)
        }
    entry["held"] = bool(answered) and figures["missed"] == 0 and entry["failed_publishes"] == 0 \
        and figures["p99_ms"] < HELD_P99_MS
    for presentity in client.publications_of:
        client.publications_of[presentity] = []
    return entry


async def drive(system: Any, presentities: int, watchers: int, rates: list[float], duration: float, log: Any,
                subscribe_budget: float = SUBSCRIBE_BUDGET_S,
                subscribe_window: int = SUBSCRIBE_WINDOW) -> dict[str, Any]:
    users, watcher_groups = accounts(presentities, watchers)
    proxies = system.proxies()
    client = PresenceClient(DOMAIN)
    workload = f"presence-{presentities}x{watchers}"
    result: dict[str, Any] = {"system": system.name, "workload": workload, "presentities": presentities,
                              "watchers": watchers, "rates": []}
    try:
        leaders = system.leaders()
        pss_before = pss_kb(leaders)
        # Publishers where the BLF bench has its callees (ours: ks2), watchers on both instances.
        publishers = [await client.phone(user, proxies["callee"]) for user in users]
        for phone in publishers:
            phone.on_request = lambda p, m: p.send(p.response(m, 200, "OK"), m.source)
        initial = [Publication(next(client.numbers), phone.user) for phone in publishers]
        started = time.monotonic()
        await gather_limited([client.publish(phone, pub) for phone, pub in zip(publishers, initial, strict=True)],
                             50)
        result["initial_publishes"] = {"answered": sum(p.answered for p in initial), "wanted": len(initial),
                                       "seconds": round(time.monotonic() - started, 2)}
        client.publications_of.clear()
        subscriptions: list[tuple[Phone, int, str]] = []
        watcher_id = 0
        for group, names in enumerate(watcher_groups):
            group_users = users[group * PRESENTITIES_PER_WATCHER:(group + 1) * PRESENTITIES_PER_WATCHER]
            for index, user in enumerate(names):
                phone = await client.phone(user, proxies[f"watcher{index % 2}"])
                phone.on_request = client.watcher_request(watcher_id)
                subscriptions += [(phone, watcher_id, presentity) for presentity in group_users]
                watcher_id += 1
        position = {user: index for index, user in enumerate(users)}
        subscriptions.sort(key=lambda item: (position[item[2]], item[1]))
        started = time.monotonic()
        done = await gather_limited([client.subscribe(p, w, s) for p, w, s in subscriptions], subscribe_window,
                                    started + subscribe_budget)
        elapsed = time.monotonic() - started
        # The initial NOTIFYs, and our 5 s rate limit since them, before the first step.
        await asyncio.sleep(MIN_GAP_S)
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
        print(f"  {system.name} {workload}: {result['initial_publishes']['answered']}/{len(users)} initial "
              f"PUBLISH, {sum(done)}/{len(subscriptions)} subscriptions in {elapsed:.1f}s, "
              f"{client.initial_notifies} initial NOTIFYs", file=log, flush=True)
        index = 0
        for rate in rates:
            if presentities / rate < MIN_GAP_S and rate * duration > presentities:
                print(f"  {workload} {rate}/s: a presentity would be published every "
                      f"{presentities / rate:.1f} s (< {MIN_GAP_S} s): not fair to ours' rate limit",
                      file=log, flush=True)
            figures = await publishes_at(client, system, publishers, index, rate, duration)
            index += figures["published"]
            result["rates"].append(figures)
            print(f"  {system.name} {workload} {rate} PUBLISH/s: answered {figures['publish_answered_per_s']}/s, "
                  f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, missed {figures['missed']}, "
                  f"failed {figures['failed_publishes']}, CPU {figures['cpu_ms_per_publish']} ms/PUBLISH, "
                  f"min gap {figures['min_gap_s']} s, held={figures['held']}", file=log, flush=True)
            if not figures["held"]:
                break
        held = [entry["rate"] for entry in result["rates"] if entry["held"]]
        result["held_rate"] = max(held) if held else 0
        result["conditional_failures"] = client.conditional_failures
        result["client_errors"] = client.stats.errors
    finally:
        client.close()
    return result
