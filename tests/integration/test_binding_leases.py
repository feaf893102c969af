"""Registration leases against a real etcd: one lease per live binding, however often it is
refreshed (issue 5: one account held 747 bindings and 782 leases)."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid

import pytest
from etcd3 import etcdrpc  # type: ignore[import-untyped]

from statestore import keys
from statestore.domain.model import Binding
from statestore.etcd_store import EtcdStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        r"ignore:Exception in thread etcd3_watch_[\s\S]*Cannot invoke RPC. Channel closed"
        r":pytest.PytestUnhandledThreadExceptionWarning"
    ),
]

BOB = "bob@example.com"
REFRESHES = 20


def leases(store: EtcdStore) -> set[int]:
    """Every lease etcd holds (LeaseLeases RPC, etcd >= 3.3)."""
    response = store.client.leasestub.LeaseLeases(etcdrpc.LeaseLeasesRequest(), store.timeout)
    return {int(lease.ID) for lease in response.leases}


def binding(contact: str, cseq: int, call_id: str = "reg-1@itest") -> Binding:
    return Binding(BOB, contact, time.time() + 600, call_id, cseq, instance="ks1")


def lease_of(store: EtcdStore, binding_id: str) -> int:
    _, meta = store.client.get(keys.reg(BOB, binding_id))
    assert meta is not None, f"{binding_id} is not stored"
    return int(meta.lease_id)


def test_refreshing_a_binding_keeps_one_lease(store: EtcdStore) -> None:
    before = leases(store)
    for cseq in range(1, REFRESHES + 1):
        store.apply_bindings([("b1", binding("sip:bob@10.0.0.1", cseq), 600)], [], BOB)
    added = leases(store) - before
    assert added == {lease_of(store, "b1")}, f"{len(added)} leases for one binding after {REFRESHES} refreshes"
    assert [b.cseq for b in store.bindings_of(BOB)] == [REFRESHES]


def test_removed_and_replaced_bindings_give_their_lease_back(store: EtcdStore) -> None:
    before = leases(store)
    store.apply_bindings(
        [(f"b{index}", binding(f"sip:bob@10.0.0.{index}", 1), 600) for index in range(3)], [], BOB
    )
    assert len(leases(store) - before) == 3
    # One removed, one rewritten under its key (a device's new contact), one untouched.
    store.apply_bindings([("b1", binding("sip:bob-reboot@10.0.0.1", 1, "reg-2@itest"), 600)], ["b0"], BOB)
    assert leases(store) - before == {lease_of(store, "b1"), lease_of(store, "b2")}
    assert sorted(b.contact for b in store.bindings_of(BOB)) == ["sip:bob-reboot@10.0.0.1", "sip:bob@10.0.0.2"]
    store.apply_bindings([], ["b1", "b2", "never-there"], BOB)
    assert leases(store) - before == set()
    assert store.bindings_of(BOB) == []


def test_a_lease_already_gone_is_no_error(store: EtcdStore) -> None:
    store.apply_bindings([("b1", binding("sip:bob@10.0.0.1", 1), 600)], [], BOB)
    store.revoke_lease(lease_of(store, "b1"))  # as if it had expired: the key went with it
    store.apply_bindings([("b1", binding("sip:bob@10.0.0.1", 2), 600)], [], BOB)
    assert [b.cseq for b in store.bindings_of(BOB)] == [2]
    # A previous lease that expires between the write and its revocation.
    gone = store.grant_lease(60)
    store.revoke_lease(gone)
    store._revoke_if_granted(gone)


def test_many_removals_span_several_transactions(store: EtcdStore) -> None:
    before = leases(store)
    many = [(f"b{index}", binding(f"sip:bob@h{index}", 1, uuid.uuid4().hex), 600) for index in range(150)]
    store.apply_bindings(many, [], BOB)
    assert len(store.bindings_of(BOB)) == 150
    store.apply_bindings([], [binding_id for binding_id, _, _ in many], BOB)
    assert store.bindings_of(BOB) == []
    assert leases(store) - before == set()


# --- issue 6: no lease grant per refresh; the Call-ID/CSeq check and the write are atomic -------


def lease_counters(store: EtcdStore) -> dict[str, float]:
    """etcd's own lease counters (granted, revoked, renewed), from /metrics on its client URL."""
    with urllib.request.urlopen(f"http://{store.endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.findall(r"^etcd_debugging_lease_(granted|revoked|renewed)_total (\S+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in found}


def refresh(store: EtcdStore, contact: str, cseq: int, seconds: int = 600) -> bool:
    read = store.read_bindings(BOB)
    return store.apply_bindings([("b1", binding(contact, cseq), seconds)], [], BOB, read)


def test_a_hundred_refreshes_with_the_same_expiry_grant_no_lease(store: EtcdStore) -> None:
    assert refresh(store, "sip:bob@10.0.0.1", 1)
    first = lease_of(store, "b1")
    before, held = lease_counters(store), leases(store)
    for cseq in range(2, 102):
        assert refresh(store, "sip:bob@10.0.0.1", cseq)
    after = lease_counters(store)
    grants = after["granted"] - before["granted"]
    assert (grants, after["revoked"] - before["revoked"]) == (0, 0), f"{grants} leases granted for 100 refreshes"
    assert after["renewed"] - before["renewed"] == 100  # one keep-alive per refresh
    assert lease_of(store, "b1") == first and leases(store) == held
    assert [b.cseq for b in store.bindings_of(BOB)] == [101]


def test_a_refresh_keeps_the_binding_alive_past_its_first_lease(store: EtcdStore) -> None:
    # 1 s + 2 s grace: without the keep-alive, the key would be gone after 3 s.
    assert refresh(store, "sip:bob@10.0.0.1", 1, seconds=1)
    deadline = time.monotonic() + 4.5
    cseq = 1
    while time.monotonic() < deadline:
        cseq += 1
        assert refresh(store, "sip:bob@10.0.0.1", cseq, seconds=1)
        time.sleep(0.5)
    assert [b.cseq for b in store.bindings_of(BOB)] == [cseq]


def test_a_changed_expiry_grants_one_lease_and_revokes_the_old(store: EtcdStore) -> None:
    assert refresh(store, "sip:bob@10.0.0.1", 1, seconds=600)
    old = lease_of(store, "b1")
    before = lease_counters(store)
    assert refresh(store, "sip:bob@10.0.0.1", 2, seconds=300)
    after = lease_counters(store)
    assert (after["granted"] - before["granted"], after["revoked"] - before["revoked"]) == (1, 1)
    new = lease_of(store, "b1")
    assert new != old and old not in leases(store)
    info = store.client.get_lease_info(new)
    assert int(info.grantedTTL) == 300 + 2


def test_two_writes_from_the_same_read_cannot_both_pass(store: EtcdStore) -> None:
    """Two REGISTERs racing on two instances: each checked Call-ID/CSeq on the same read."""
    assert refresh(store, "sip:bob@10.0.0.1", 1)
    read = store.read_bindings(BOB)
    before = leases(store)
    assert store.apply_bindings([("b1", binding("sip:bob@10.0.0.1", 2), 600)], [], BOB, read)
    assert not store.apply_bindings([("b2", binding("sip:bob@10.0.0.9", 2), 600)], [], BOB, read)
    assert [b.contact for b in store.bindings_of(BOB)] == ["sip:bob@10.0.0.1"]
    assert leases(store) == before  # the loser's new lease was given back
    # A key created since the read counts as a change too.
    stale = store.read_bindings(BOB)
    assert store.apply_bindings([("b3", binding("sip:bob@10.0.0.3", 1, "other"), 600)], [], BOB)
    assert not store.apply_bindings([], ["b1"], BOB, stale)
