"""statestore.orphans: what nothing live owns, from keys, values and leases (no etcd)."""

from __future__ import annotations

import json

import pytest

from statestore import keys
from statestore.orphans import LIVE_STATE_KINDS, Orphan, Snapshot, StoredKey, StoredLease, find_leftovers, find_orphans

NOW = 1_000_000.0
KS1_LEASE, KS2_LEASE, ENDED_LEASE, REG_LEASE = 0x11, 0x22, 0x33, 0x44
ALICE, BOB = "alice@example.com", "bob@example.com"


def value(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def subscription(sub_id: str, watcher: str = ALICE, presentity: str = BOB, expires_in: float = 60.0
                 ) -> dict[str, StoredKey]:
    record = value(sub_id=sub_id, watcher=watcher, presentity=presentity, expires_at=NOW + expires_in)
    return {
        keys.sub(sub_id): StoredKey(record),
        keys.watcher_sub(watcher, sub_id): StoredKey(value(sub_id=sub_id, presentity=presentity)),
        keys.presentity_sub(presentity, sub_id): StoredKey(b""),
    }


def live_store() -> dict[str, StoredKey]:
    """Two instances, a live call on ks1, one that just ended on ks2, a binding, a subscription."""
    stored = {
        keys.domain("example.com"): StoredKey(value(domain="example.com")),
        keys.account(ALICE): StoredKey(value(user="alice")),
        keys.alias("example.com", "100"): StoredKey(ALICE.encode()),
        keys.EPOCH: StoredKey(b"7"),
        keys.MAINTENANCE: StoredKey(value(last_compaction=NOW - 60)),
        keys.instance("ks1"): StoredKey(value(sip="127.0.0.1:5071"), KS1_LEASE),
        keys.instance("ks2"): StoredKey(value(sip="127.0.0.1:5072"), KS2_LEASE),
        keys.leg(BOB, "ks1", "a1"): StoredKey(value(state="confirmed"), KS1_LEASE),
        keys.leg(BOB, "ks2", "b1"): StoredKey(value(state="terminated"), ENDED_LEASE),
        keys.reg(BOB, "c1"): StoredKey(value(expires_at=NOW + 50), REG_LEASE),
    }
    stored.update(subscription("s1"))
    return stored


def live_leases() -> dict[int, StoredLease]:
    return {
        KS1_LEASE: StoredLease(6, 5, (keys.instance("ks1"), keys.leg(BOB, "ks1", "a1"))),
        KS2_LEASE: StoredLease(6, 4, (keys.instance("ks2"),)),
        ENDED_LEASE: StoredLease(3, 2, (keys.leg(BOB, "ks2", "b1"),)),
        REG_LEASE: StoredLease(62, 52, (keys.reg(BOB, "c1"),)),
    }


def orphans_after(change: dict[str, StoredKey | None], leases: dict[int, StoredLease | None] | None = None
                  ) -> list[Orphan]:
    stored = live_store()
    for key, entry in change.items():
        if entry is None:
            del stored[key]
        else:
            stored[key] = entry
    held = live_leases()
    for lease_id, lease in (leases or {}).items():
        if lease is None:
            del held[lease_id]
        else:
            held[lease_id] = lease
    return find_orphans(Snapshot(stored, held), NOW)


def test_a_consistent_live_store_has_no_orphans() -> None:
    assert find_orphans(Snapshot(live_store(), live_leases()), NOW) == []


@pytest.mark.parametrize(("change", "leases", "key", "reason"), [
    ({keys.leg(BOB, "ks1", "a2"): StoredKey(value(state="early"))}, {},
     keys.leg(BOB, "ks1", "a2"), "leg on no lease"),
    ({keys.leg(BOB, "ks3", "z"): StoredKey(value(state="early"), KS1_LEASE)}, {},
     keys.leg(BOB, "ks3", "z"), "leg of instance ks3, which is not alive"),
    ({keys.leg(BOB, "ks1", "a2"): StoredKey(value(state="early"), REG_LEASE)}, {},
     keys.leg(BOB, "ks1", "a2"), "leg on lease 44, neither ks1's nor a short one"),
    ({keys.leg(BOB, "ks1", "a2"): StoredKey(value(state="early"), 0x99)}, {},
     keys.leg(BOB, "ks1", "a2"), "leg on lease 99 that etcd no longer holds"),
    ({keys.instance("ks2"): StoredKey(value(sip="x"))}, {},
     keys.instance("ks2"), "instance key on no lease"),
    ({keys.reg(BOB, "c1"): StoredKey(value(expires_at=NOW + 50))}, {},
     keys.reg(BOB, "c1"), "binding on no lease"),
    ({keys.reg(BOB, "c1"): StoredKey(value(expires_at=NOW - 30), REG_LEASE)}, {},
     keys.reg(BOB, "c1"), "binding 30s past its expiry"),
    ({}, {REG_LEASE: StoredLease(3600, 3500, (keys.reg(BOB, "c1"),))},
     keys.reg(BOB, "c1"), "binding's lease outlives it: 3500s left, the binding expires in 50s"),
    ({keys.reg(BOB, "c1"): StoredKey(b"{}", REG_LEASE)}, {},
     keys.reg(BOB, "c1"), "binding without an expiry"),
    ({**subscription("s1", expires_in=-20)}, {},
     keys.sub("s1"), "subscription 20s past its expiry"),
    ({keys.presentity_sub(BOB, "s1"): None}, {},
     keys.sub("s1"), f"subscription without its index entry {keys.presentity_sub(BOB, 's1')}"),
    ({keys.sub("s1"): None}, {},
     keys.watcher_sub(ALICE, "s1"), "index entry without its subscription"),
    ({keys.presentity_sub("carol@example.com", "s1"): StoredKey(b"")}, {},
     keys.presentity_sub("carol@example.com", "s1"),
     f"index entry of carol@example.com, but the subscription's presentity is {BOB}"),
    ({"/blf/things/x": StoredKey(b"1")}, {}, "/blf/things/x", "not a key of the layout (statestore/keys.py)"),
    ({}, {0x55: StoredLease(3602, 3000)}, "lease 55", "holds no key, 3000s left of 3602s"),
])
def test_each_kind_of_orphan_is_found_with_its_reason(
        change: dict[str, StoredKey | None], leases: dict[int, StoredLease | None], key: str, reason: str) -> None:
    assert Orphan(key, reason) in orphans_after(change, leases)


def test_the_legs_of_a_dead_instance_are_orphans_until_its_lease_expires() -> None:
    # ks1's lease is gone (it died) but its leg is still read: a leg on a lease etcd no longer holds.
    found = orphans_after({}, {KS1_LEASE: None})
    assert {orphan.what for orphan in found} == {keys.instance("ks1"), keys.leg(BOB, "ks1", "a1")}


def test_a_short_keyless_lease_is_the_ended_calls_lease_about_to_expire_not_an_orphan() -> None:
    assert orphans_after({}, {0x66: StoredLease(3, 1)}) == []


def test_after_the_run_only_provisioning_and_running_instances_remain() -> None:
    stored = {key: entry for key, entry in live_store().items()
              if (parsed := keys.parse(key)) is None or parsed.kind not in LIVE_STATE_KINDS}
    leases = {KS1_LEASE: StoredLease(6, 5, (keys.instance("ks1"),)),
              KS2_LEASE: StoredLease(6, 4, (keys.instance("ks2"),))}
    assert find_leftovers(Snapshot(stored, leases), {"ks1", "ks2"}) == []


def test_leftovers_name_every_live_state_key_and_every_lease_not_an_instance_s() -> None:
    found = find_leftovers(Snapshot(live_store(), live_leases()), {"ks1"})
    whats = {orphan.what for orphan in found}
    assert whats == {
        keys.leg(BOB, "ks1", "a1"), keys.leg(BOB, "ks2", "b1"), keys.reg(BOB, "c1"),
        keys.sub("s1"), keys.watcher_sub(ALICE, "s1"), keys.presentity_sub(BOB, "s1"),
        keys.instance("ks2"),  # not running
        "lease 22", "lease 33", "lease 44",
    }
