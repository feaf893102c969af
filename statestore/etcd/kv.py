"""Requests every record kind makes: reads of several keys and prefixes in one
transaction (one round trip, one revision), paged snapshots, batched deletes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import etcd3  # type: ignore[import-untyped]

from statestore import codec, keys
from statestore.etcd.client import EtcdClient
from statestore.store import KeyValue

# Keys per response of a snapshot: 1,000 subscriptions are about 0.6 MB.
SNAPSHOT_PAGE = 1000
# etcd's default --max-txn-ops: operations in one transaction.
MAX_TXN_OPS = 128


class EtcdKv(EtcdClient):
    """Reads and deletes shared by the record kinds."""

    def _read(self, reads: Sequence[Any], serializable: bool = False) -> tuple[int, list[Any]]:
        """Range requests in one transaction without compares: one round trip, every
        answer at the same store revision. etcd3 0.12 cannot put count_only or limit in
        a transaction's reads, so the request is built here (as for _range_page). etcd
        serves the transaction without a linearizable wait only if every read in it is
        `serializable`."""
        for read in reads:
            read.serializable = serializable
        request = etcd3.etcdrpc.TxnRequest(
            compare=[], success=[etcd3.etcdrpc.RequestOp(request_range=read) for read in reads], failure=[]
        )
        client = self.client
        with self._guard():
            response = client.kvstub.Txn(
                request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
            )
        return int(response.header.revision), [answer.response_range for answer in response.responses]

    def range(self, prefix: str) -> list[KeyValue]:
        return self.snapshot(prefix)[1]

    def snapshot(
        self, prefix: str | Sequence[str] = keys.ROOT, page: int = SNAPSHOT_PAGE
    ) -> tuple[int, list[KeyValue]]:
        """All keys under the prefix (or prefixes) and the one store revision they were read
        at, read `page` keys per response: no response grows with the cluster (gRPC refuses
        answers over 4 MB). The pages after the first are read at the first one's revision;
        if it is compacted meanwhile, that is StoreUnavailable and the caller reads again."""
        prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
        revision = 0
        items: list[KeyValue] = []
        with self._guard():
            for name in prefixes:
                start, end = name.encode(), etcd3.utils.increment_last_byte(name.encode())
                while True:
                    response = self._range_page(start, end, page, revision)
                    revision = revision or int(response.header.revision)
                    items += [KeyValue(kv.key.decode(), kv.value, int(kv.mod_revision)) for kv in response.kvs]
                    if not response.more or not response.kvs:
                        break
                    start = response.kvs[-1].key + b"\0"  # the next key after the last one read
        return revision, items

    def _range_page(self, start: bytes, end: bytes, limit: int, revision: int, keys_only: bool = False) -> Any:
        # etcd3 0.12 has no paged range; the request is built here (as for _read).
        request = etcd3.etcdrpc.RangeRequest(
            key=start, range_end=end, limit=limit, revision=revision, keys_only=keys_only
        )
        client = self.client
        return client.kvstub.Range(request, self.timeout, credentials=client.call_credentials, metadata=client.metadata)

    def _delete_in_batches(self, key_list: Sequence[str]) -> None:
        tx = self.client.transactions
        with self._guard():
            for start in range(0, len(key_list), MAX_TXN_OPS):
                batch = key_list[start : start + MAX_TXN_OPS]
                self.client.transaction(compare=[], success=[tx.delete(key) for key in batch], failure=[])


def _key_read(key: str) -> Any:
    return etcd3.etcdrpc.RangeRequest(key=key.encode())


def _prefix_read(prefix: str, limit: int = 0, count_only: bool = False, keys_only: bool = False) -> Any:
    key = prefix.encode()
    return etcd3.etcdrpc.RangeRequest(
        key=key, range_end=etcd3.utils.increment_last_byte(key), limit=limit, count_only=count_only,
        keys_only=keys_only,
    )


def _prefix_delete(tx: Any, prefix: str) -> Any:
    return tx.delete(prefix, range_end=etcd3.utils.increment_last_byte(prefix.encode()))


def _range(target: Any, prefix: str) -> Any:
    """A transaction compare over every key under `prefix` (it holds for an empty range)."""
    return target(prefix, etcd3.utils.increment_last_byte(prefix.encode()))


def _object(answer: Any) -> dict[str, Any] | None:
    """The JSON object a single-key read found; None when absent or unreadable."""
    if not answer.kvs:
        return None
    try:
        return codec.decode(answer.kvs[0].value)
    except ValueError:
        return None
