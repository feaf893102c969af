"""`blfctl show` reads only the account it shows (issue 6, finding 3): its legs, its
bindings, and the subscriptions its index names, never every subscription."""

from __future__ import annotations

import time
from typing import Any

import pytest

from statestore import keys
from statestore.cli_show import show
from statestore.etcd_store import EtcdStore
from tests.integration.test_subscription_index import ALICE, BOB, CAROL, subscription

pytestmark = [pytest.mark.integration]

OTHERS = 60


class ReadCounter:
    """Every Range request the store sends (alone or inside a transaction): its key and
    range end, and the keys it returned."""

    def __init__(self, store: EtcdStore) -> None:
        self.ranges: list[tuple[bytes, bytes]] = []
        self.keys_read = 0
        stub = store.client.kvstub
        self._range, self._txn = stub.Range, stub.Txn
        stub.Range, stub.Txn = self.range, self.txn

    def range(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.ranges.append((request.key, request.range_end))
        response = self._range(request, *args, **kwargs)
        self.keys_read += len(response.kvs)
        return response

    def txn(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.ranges += [(op.request_range.key, op.request_range.range_end) for op in request.success
                        if op.WhichOneof("request") == "request_range"]
        response = self._txn(request, *args, **kwargs)
        self.keys_read += sum(len(r.response_range.kvs) for r in response.responses
                              if r.WhichOneof("response") == "response_range")
        return response


def test_show_reads_only_the_subscriptions_of_the_account(store: EtcdStore) -> None:
    mine = [subscription(BOB, ALICE), subscription(CAROL, ALICE)]
    for sub in [*mine, *(subscription(f"w{index}@example.com", CAROL) for index in range(OTHERS))]:
        assert store.create_subscription(sub) is not None
    counter = ReadCounter(store)
    view = show(store, ALICE, time.time())
    assert sorted(s["id"] for s in view["subscriptions"]) == sorted(s.sub_id for s in mine)
    subs_prefix = keys.SUBS.encode()
    whole = [(key, end) for key, end in counter.ranges if key == subs_prefix or (end and key <= subs_prefix < end)]
    assert whole == [], f"show read a range over every subscription: {whole}"
    # Its two index entries and the two subscriptions; no leg, no binding.
    assert counter.keys_read == 4, f"{counter.keys_read} keys read to show one account"


def test_a_subscription_gone_since_its_index_was_read_is_left_out(store: EtcdStore) -> None:
    kept, gone = subscription(BOB, ALICE), subscription(CAROL, ALICE)
    for sub in (kept, gone):
        store.create_subscription(sub)
    store.client.delete(keys.sub(gone.sub_id))  # as if deleted between the two reads
    assert [s.sub_id for s in store.subscriptions_to(ALICE)] == [kept.sub_id]
