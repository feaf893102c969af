"""Call legs on etcd: one transaction per call, guarded by the stored value's order
(codec's rank prefix), under the lease of the instance serving the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]

from statestore import codec, keys
from statestore.domain.errors import LeaseGone
from statestore.domain.legbook import WriteOutcome
from statestore.domain.model import Leg
from statestore.etcd.kv import EtcdKv

# Calls written in one request by write_calls (each a nested transaction of a few operations).
CALLS_PER_REQUEST = 64


class EtcdLegs(EtcdKv):
    """Call legs."""

    def write_legs(self, legs: Sequence[Leg], lease_id: int, create: bool) -> WriteOutcome:
        """Write the legs of one call in one transaction: one write request.

        `create` writes them only if none exists; otherwise each is written only if the
        stored value sorts lower (a later state, or a later write of the same state:
        codec, legs.order_of), and never created. Legs go under `lease_id`: the instance
        lease while the call lives, a short-lived shared lease once it ended, so that
        the terminated legs leave the store without another request.
        """
        return self.write_calls([(legs, lease_id, create)])[0]

    def write_calls(self, writes: Sequence[tuple[Sequence[Leg], int, bool]]) -> list[WriteOutcome]:
        """write_legs for several calls in one request: each call is a transaction of its
        own, with its own guards, nested in one unconditional transaction (etcd >= 3.3),
        so a flush of many calls is one round trip and one raft entry. At most
        CALLS_PER_REQUEST calls per request; the outcomes in the order of `writes`."""
        outcomes: list[WriteOutcome] = []
        for start in range(0, len(writes), CALLS_PER_REQUEST):
            outcomes += self._write_calls(writes[start : start + CALLS_PER_REQUEST])
        return outcomes

    def _write_calls(self, writes: Sequence[tuple[Sequence[Leg], int, bool]]) -> list[WriteOutcome]:
        tx = self.client.transactions
        nested = []
        for legs, lease_id, create in writes:
            key_of = [keys.leg(leg.account, leg.instance, leg.leg_id) for leg in legs]
            values = [codec.encode_leg(leg) for leg in legs]
            if create:
                compare = [tx.version(key) == 0 for key in key_of]
                failure: list[Any] = []
            else:
                compare = [tx.value(key) < value for key, value in zip(key_of, values, strict=True)]
                failure = [tx.get(key) for key in key_of]
            success = [tx.put(key, value, lease=lease_id) for key, value in zip(key_of, values, strict=True)]
            nested.append(etcd3.transactions.Txn(compare, success, failure))
        try:
            with self._guard():
                _, responses = self.client.transaction(compare=[], success=nested, failure=[])
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and "lease not found" in str(exc.details()):
                raise LeaseGone(str(exc.details())) from exc
            raise
        outcomes = []
        for (_, _, create), response in zip(writes, responses, strict=True):
            inner = response.response_txn
            if inner.succeeded:
                outcomes.append(WriteOutcome.WRITTEN)
            elif create:
                outcomes.append(WriteOutcome.EXISTS)
            else:
                # The failure branch read the keys: a missing one was never created or has
                # gone with its lease; otherwise the store holds a later state already.
                missing = any(not read.response_range.kvs for read in inner.responses)
                outcomes.append(WriteOutcome.MISSING if missing else WriteOutcome.STALE)
        return outcomes

    def legs_on(self, lease_id: int) -> dict[str, str]:
        """The legs attached to a lease, leg id -> key: an instance's own legs, without
        reading any other's (etcd's LeaseTimeToLive with keys; no values are read)."""
        with self._guard():
            response = self.client.get_lease_info(lease_id)
        found = {}
        for raw in response.keys:
            key = raw.decode()
            parsed = keys.parse(key)
            if parsed is not None and parsed.kind == "legs":
                found[key.rpartition("/")[2]] = key
        return found

    def delete_legs(self, leg_keys: Sequence[str]) -> None:
        self._delete_in_batches(leg_keys)

    def legs_of(self, aor: str) -> list[Leg]:
        return [codec.decode_leg(kv.value) for kv in self.range(keys.legs_of(aor))]
