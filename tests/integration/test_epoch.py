"""Ownership epochs on a real etcd (issue 6, finding 1): each notifier start or takeover
takes a new one by compare-and-swap; concurrent notifiers never get the same one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from statestore import keys
from statestore.etcd_store import EtcdStore


def test_the_first_epoch_is_1_and_each_next_one_is_above_the_last(store: EtcdStore) -> None:
    assert store.client.get(keys.EPOCH)[0] is None
    assert [store.next_epoch() for _ in range(3)] == [1, 2, 3]
    value, _ = store.client.get(keys.EPOCH)
    assert value == b"3"


def test_concurrent_notifiers_get_distinct_epochs(store: EtcdStore) -> None:
    stores = [EtcdStore(store.endpoint, timeout=5.0) for _ in range(6)]
    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            taken = list(pool.map(lambda s: [s.next_epoch() for _ in range(5)], stores))
    finally:
        for other in stores:
            other.close()
    every = sorted(epoch for epochs in taken for epoch in epochs)
    assert every == list(range(1, 31))
    assert all(epochs == sorted(epochs) for epochs in taken)
