"""Microbenchmark of the notifier's per-event work (issue 6, finding 2).

    python -m tests.bench.mirror_events [presentities] [watchers]

A mirror of P x W subscriptions (default 1,000 x 100 = 100,000, half of them this
instance's), then: the time to take one leg change in and plan, number and render the
NOTIFYs of its watchers, and the time of a tick with nothing dirty. Pure: no etcd, no SIP.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from statestore import codec, keys
from statestore.domain.model import Direction, Leg, LegState, Party, Subscription
from statestore.mirror import Mirror

ROUNDS = 50


def subscriptions(presentities: int, watchers: int, now: float) -> list[tuple[str, bytes, int]]:
    items = [(keys.instance(name), codec.encode({"sip": name}), 1) for name in ("ks1", "ks2")]
    for p in range(presentities):
        for w in range(watchers):
            sub = Subscription(
                sub_id=f"s{p}-{w}", event="dialog", presentity=f"u{p}@example.com", entity=f"sip:u{p}@example.com",
                watcher=f"w{w}@example.com", watcher_contact=f"sip:w{w}@192.0.2.1", call_id=f"c{p}-{w}",
                local_tag="lt", remote_tag="rt", local_uri="sip:l", remote_uri="sip:r", route_set=(),
                expires_at=now + 3600, owner="ks1" if w % 2 else "ks2", cseq=1, version=0, epoch=1,
            )
            items.append((keys.sub(sub.sub_id), codec.encode_subscription(sub), len(items) + 1))
    return items


def main(presentities: int = 1000, watchers: int = 100) -> None:
    now = time.time()
    mirror = Mirror()
    mirror.epoch = 2
    items = subscriptions(presentities, watchers, now)
    started = time.perf_counter()
    mirror.load(items)
    print(f"load {len(items)} keys: {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    dues = mirror.due("ks1", set(mirror.by_presentity), now)
    for due in dues:
        mirror.numbered(due)
    print(f"after a restart, every subscription of ks1 planned and numbered: {len(dues)} in "
          f"{time.perf_counter() - started:.2f} s")
    leg = Leg(
        account="u7@example.com", instance="ks1", leg_id="leg", version=1, state=LegState.EARLY,
        direction=Direction.RECIPIENT, call_id="call", local_tag="", remote_tag="t",
        local=Party("sip:u7@example.com"), remote=Party("sip:caller@example.com"),
    )
    key = keys.leg(leg.account, leg.instance, leg.leg_id)
    started, sent = time.perf_counter(), 0
    for n in range(ROUNDS):
        state = LegState.CONFIRMED if n % 2 else LegState.EARLY
        dirty = mirror.apply(key, codec.encode_leg(replace(leg, version=n + 2, state=state)), len(items) + n + 1, now)
        for due in mirror.due("ks1", dirty, now):
            numbered = mirror.numbered(due)
            assert numbered is not None and due.body is not None
            due.body.fill(numbered.entity, numbered.version)
            sent += 1
    per_event = (time.perf_counter() - started) / ROUNDS
    print(f"one leg change, its {sent // ROUNDS} NOTIFYs planned, numbered and rendered: {per_event * 1000:.3f} ms")
    started = time.perf_counter()
    for _ in range(1000):
        mirror.due("ks1", set(), now)
    print(f"a tick with nothing dirty: {(time.perf_counter() - started) * 1000:.2f} us")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:3]))
