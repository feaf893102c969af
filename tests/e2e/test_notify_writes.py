"""NOTIFYs write nothing to the store (issue 6, finding 1), counted by etcd itself.

A call watched by many watchers costs the store the same writes as one watched by one:
NOTIFYs are numbered in the notifier's memory from an ownership epoch, not by a
compare-and-swap of each subscription (which cost one write per watcher per change).
"""

from __future__ import annotations

from tests.e2e.conftest import (
    DOMAIN,
    etcdctl,
    free_port,
    phone,
    register_contact,
    store_revision,
    store_writes_since,
    watcher,
)

WATCHERS = 8


def writes_of_one_call(phones, sipp, caller, callee, lamps) -> list[str]:
    """The keys etcd wrote (put or deleted) from the call's start until every watcher saw
    it ring and end, each once per write, read back from etcd's own history."""
    port = free_port()
    register_contact(phone(phones, callee, "ks2"), port)  # its writes are done before its 200
    seen = [len(sub.notifies) for _, sub in lamps]
    before = store_revision()
    sipp.callee(port, ring_ms=300, busy=True)
    sipp.call("ks1", caller, callee[0])
    for (cat, sub), count in zip(lamps, seen, strict=True):
        cat.wait(sub, lambda s, n=count: len(s.notifies) >= n + 2 and s.lamp == "idle", 10)
    return [key for _, key in store_writes_since(before, until=store_revision())]


def of_the_call(keys: list[str], *accounts: str) -> list[str]:
    """The writes that belong to the call: its legs, and the subscriptions to or by its
    accounts with their index keys (the rest of the lab, other tests' subscriptions
    expiring for instance, writes too, unrelated)."""
    subs = {
        key.rpartition("/")[2]
        for aor in accounts
        for key in etcdctl("get", "--prefix", "--keys-only", f"/blf/watched/{aor}/").stdout.split()
    }
    mine = tuple(f"/blf/{kind}/{aor}/" for kind in ("legs", "watchers", "watched") for aor in accounts)
    return [
        key for key in keys
        if key.startswith(mine) or (key.startswith("/blf/subs/") and key.rpartition("/")[2] in subs)
    ]


def test_notifies_write_nothing_to_the_store_whatever_the_number_of_watchers(account, phones, sipp):
    # Two callers: the first call's terminated legs expire (a delete each) 3 s later, maybe
    # inside the second call's window.
    alice, boris, carol, dave = account("alice"), account("boris"), account("carol"), account("dave")
    one = watcher(phones, account("w0"), "ks1")
    alone = [(one, one.subscribe(boris[0]))]
    many = []
    for n in range(WATCHERS):
        cat = watcher(phones, account(f"w{n + 1}"), "ks1" if n % 2 else "ks2")
        many.append((cat, cat.subscribe(carol[0])))
    everything_one = writes_of_one_call(phones, sipp, alice, boris, alone)
    everything_many = writes_of_one_call(phones, sipp, dave, carol, many)
    with_one = of_the_call(everything_one, *(f"{user}@{DOMAIN}" for user, _ in (alice, boris)))
    with_many = of_the_call(everything_many, *(f"{user}@{DOMAIN}" for user, _ in (dave, carol)))
    # Before: a compare-and-swap of the subscription per NOTIFY (4 + 4W writes).
    assert not [key for key in with_one + with_many if not key.startswith("/blf/legs/")], (with_one, with_many)
    assert with_one, everything_one  # the call's legs are written: the count can see writes
    assert len(with_many) <= len(with_one) + 2, (with_one, with_many)
    print(f"etcd writes per call: {len(with_one)} with 1 watcher, {len(with_many)} with {WATCHERS}")
    for _, sub in many:
        assert sub.lamps[-3:] == ["idle", "early", "idle"], sub.lamps
