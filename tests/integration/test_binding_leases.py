"""Registration leases against a real etcd: one lease per live binding, however often it is
refreshed (issue 5: one account held 747 bindings and 782 leases)."""

from __future__ import annotations

import time
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
