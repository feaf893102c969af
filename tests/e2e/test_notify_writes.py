"""NOTIFYs write nothing to the store (issue 6, finding 1), counted by etcd itself.

A call watched by many watchers costs the store the same writes as one watched by one:
NOTIFYs are numbered in the notifier's memory from an ownership epoch, not by a
compare-and-swap of each subscription (which cost one write per watcher per change).
"""

from __future__ import annotations

import re
import time
import urllib.request

from tests.e2e.conftest import free_port, phone, register_contact, watcher

METRICS = "http://127.0.0.1:2381/metrics"
WRITES = re.compile(r"^etcd_mvcc_(put|delete)_total (\S+)$", re.MULTILINE)
WATCHERS = 8


def etcd_writes() -> int:
    """Keys put or deleted by etcd so far (in transactions too)."""
    with urllib.request.urlopen(METRICS, timeout=5) as response:  # noqa: S310 - the lab's loopback
        text = response.read().decode()
    return sum(int(float(value)) for _, value in WRITES.findall(text))


def writes_of_one_call(phones, sipp, caller, callee, lamps) -> int:
    """etcd writes from the call's start until every watcher saw it ring and end."""
    port = free_port()
    register_contact(phone(phones, callee, "ks2"), port)
    time.sleep(0.5)  # let the registration's NOTIFY-free writes settle
    seen = [len(sub.notifies) for _, sub in lamps]
    before = etcd_writes()
    sipp.callee(port, ring_ms=300, busy=True)
    sipp.call("ks1", caller, callee[0])
    for (cat, sub), count in zip(lamps, seen, strict=True):
        cat.wait(sub, lambda s, n=count: len(s.notifies) >= n + 2 and s.lamp == "idle", 10)
    return etcd_writes() - before


def test_notifies_write_nothing_to_the_store_whatever_the_number_of_watchers(account, phones, sipp):
    alice, boris, carol = account("alice"), account("boris"), account("carol")
    one = watcher(phones, account("w0"), "ks1")
    alone = [(one, one.subscribe(boris[0]))]
    many = []
    for n in range(WATCHERS):
        cat = watcher(phones, account(f"w{n + 1}"), "ks1" if n % 2 else "ks2")
        many.append((cat, cat.subscribe(carol[0])))
    with_one = writes_of_one_call(phones, sipp, alice, boris, alone)
    with_many = writes_of_one_call(phones, sipp, alice, carol, many)
    # Before: 4 + 4W writes (a compare-and-swap per NOTIFY): 36 more for 8 more watchers.
    assert with_many - with_one <= 2, (with_one, with_many)
    print(f"etcd writes per call: {with_one} with 1 watcher, {with_many} with {WATCHERS}")
    for _, sub in many:
        assert sub.lamps[-3:] == ["idle", "early", "idle"], sub.lamps
