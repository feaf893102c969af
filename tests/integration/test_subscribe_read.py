"""The one read of an initial SUBSCRIBE on a real etcd: accounts, the presentity's state and
the census in one transaction (one round trip, one revision), and caps still guarded."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from statestore import keys
from statestore.domain.errors import SipError
from statestore.domain.legs import CallParties, initial_legs
from statestore.domain.model import Account, Binding, WatcherEntry
from statestore.domain.subscription import TOO_MANY_FOR_WATCHER, SubscriptionPolicy, admit
from statestore.etcd_store import EtcdStore
from tests.factories import subscription

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        r"ignore:Exception in thread etcd3_watch_[\s\S]*Cannot invoke RPC. Channel closed"
        r":pytest.PytestUnhandledThreadExceptionWarning"
    ),
]

WATCHER = "bob@example.com"
PRESENTITY = "alice@example.com"
OTHER = "carol@example.com"


def account(aor: str) -> Account:
    user, _, domain = aor.partition("@")
    return Account(user=user, domain=domain, ha1="0" * 32)


def ringing_call(store: EtcdStore, callee: str = PRESENTITY) -> None:
    parties = CallParties(
        call_id=f"{uuid.uuid4().hex}@itest", from_tag="ft", caller=OTHER, callee=callee,
        caller_display="", callee_display="", caller_target=f"sip:{OTHER}",
    )
    store.write_legs(initial_legs(parties, "ks1", version=1), store.grant_lease(60), create=True)


class CountingStub:
    """The etcd KV stub, counting the RPCs made through it (each is one round trip)."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return method(*args, **kwargs)

        return counted


def test_one_round_trip_brings_accounts_state_and_census_at_one_revision(store: EtcdStore) -> None:
    for aor in (WATCHER, PRESENTITY):
        store.put_account(account(aor))
    ringing_call(store)
    store.apply_bindings([("b1", Binding(PRESENTITY, "sip:alice@10.0.0.1", time.time() + 60, "r@itest", 1), 60)],
                         [], PRESENTITY)
    mine = subscription()
    theirs = subscription(watcher=OTHER)
    store.create_subscription(mine)
    last = store.create_subscription(theirs)
    stub = CountingStub(store.client.kvstub)
    store.client.kvstub = stub

    read = store.initial_subscribe_read(WATCHER, PRESENTITY, inputs={"legs", "regs"})

    assert stub.calls == ["Txn"]
    assert read.watcher_account == account(WATCHER)
    assert read.presentity_account == account(PRESENTITY)
    assert [leg.account for leg in read.legs] == [PRESENTITY]
    assert [b.contact for b in read.bindings] == ["sip:alice@10.0.0.1"]
    assert read.census.entries == [WatcherEntry.of(mine)]
    assert read.census.presentity_count == 2
    assert read.census.watcher_revision == read.census.presentity_revision >= (last or 0)


def test_bindings_are_read_only_for_a_package_that_shows_them(store: EtcdStore) -> None:
    store.apply_bindings([("b1", Binding(PRESENTITY, "sip:alice@10.0.0.1", time.time() + 60, "r@itest", 1), 60)],
                         [], PRESENTITY)
    read = store.initial_subscribe_read(WATCHER, PRESENTITY, inputs={"legs"})
    assert read.bindings == []
    assert read.watcher_account is None and read.presentity_account is None


def test_census_is_one_round_trip_and_decodes_only_the_presentitys_entries(store: EtcdStore) -> None:
    same = subscription()
    elsewhere = [subscription(presentity=f"p{index}@example.com") for index in range(3)]
    for sub in (same, *elsewhere):
        store.create_subscription(sub)
    stub = CountingStub(store.client.kvstub)
    store.client.kvstub = stub

    census = store.census(WATCHER, PRESENTITY)

    assert stub.calls == ["Txn"]
    by_id = {entry.sub_id: entry for entry in census.entries}
    assert by_id[same.sub_id] == WatcherEntry.of(same)
    assert {by_id[sub.sub_id] for sub in elsewhere} == {WatcherEntry(sub.sub_id, "", "", "") for sub in elsewhere}
    policy = SubscriptionPolicy(max_subs_per_watcher=4)
    with pytest.raises(SipError) as refused:
        admit(subscription(), census.entries, census.presentity_count, policy)  # the others still count
    assert refused.value.reason == TOO_MANY_FOR_WATCHER


def test_a_device_subscribing_again_is_recognised_from_the_read(store: EtcdStore) -> None:
    old = subscription()
    store.create_subscription(old)
    again = subscription(watcher_contact=old.watcher_contact)
    census = store.initial_subscribe_read(WATCHER, PRESENTITY, inputs={"legs"}).census
    assert admit(again, census.entries, census.presentity_count, SubscriptionPolicy()).replaced == (
        WatcherEntry.of(old),
    )


def test_a_create_guarded_by_the_read_fails_after_a_concurrent_create_of_the_watcher(store: EtcdStore) -> None:
    census = store.initial_subscribe_read(WATCHER, PRESENTITY, inputs={"legs"}).census
    assert store.create_subscription(subscription(presentity=OTHER), counted=None) is not None  # the other worker
    assert store.create_subscription(subscription(), (), census) is None
    assert store.range(keys.subs_of_presentity(PRESENTITY)) == []
    recount = store.census(WATCHER, PRESENTITY)
    assert store.create_subscription(subscription(), (), recount) is not None


def test_a_create_guarded_on_the_presentity_fails_after_another_watchers_create(store: EtcdStore) -> None:
    census = store.initial_subscribe_read(WATCHER, PRESENTITY, inputs={"legs"}).census
    assert store.create_subscription(subscription(watcher=OTHER)) is not None
    assert store.create_subscription(subscription(), (), census, guard_presentity=True) is None
    assert store.create_subscription(subscription(), (), census, guard_presentity=False) is not None
