"""Registrations on etcd: each binding key under a lease of its own expiry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]

from statestore import codec, keys
from statestore.domain.model import Binding
from statestore.etcd.kv import MAX_TXN_OPS, EtcdKv, _range
from statestore.store import StoredBindings
from statestore.stored import REGISTRATION_GRACE_SECONDS


class EtcdBindings(EtcdKv):
    """Bindings (registrations)."""

    def bindings_of(self, aor: str) -> list[Binding]:
        return self.read_bindings(aor).bindings

    def read_bindings(self, aor: str) -> StoredBindings:
        """The account's bindings, the lease of each key, and the revision of the read."""
        with self._guard():
            response = self.client.get_prefix_response(keys.regs_of(aor))
        bindings, leases = [], {}
        for kv in response.kvs:
            bindings.append(codec.decode_binding(kv.value))
            if kv.lease:
                leases[kv.key.decode().rpartition("/")[2]] = int(kv.lease)
        return StoredBindings(bindings, int(response.header.revision), leases)

    def apply_bindings(
        self,
        upserts: Sequence[tuple[str, Binding, int]],
        removals: Sequence[str],
        aor: str,
        read: StoredBindings | None = None,
    ) -> bool:
        """Write (binding_id, binding, seconds) under a lease of that many seconds (plus a
        grace); delete ids. With `read`, only if no binding key of the account changed
        since that read (one transaction: the Call-ID/CSeq check the registrar made on it
        and the write are one atomic step); False when one did, and nothing is written.

        Each binding key has a lease of its own. A refresh keeps its key's lease: a
        keep-alive resets it to its granted TTL, which is the new expiry when the phone
        refreshes with the same Expires (phones do). Only a binding that is new, or whose
        expiry changes, gets a lease granted; the lease a rewritten or deleted key had
        is then revoked (found by prev_kv, without a read).
        """
        guarded = read is not None
        current = read if read is not None else self.read_bindings(aor)
        tx = self.client.transactions
        with self._guard():
            leases = {
                binding_id: self._binding_lease(current.leases.get(binding_id), seconds + REGISTRATION_GRACE_SECONDS)
                for binding_id, _, seconds in upserts
            }
            fresh = {lease for lease, granted in leases.values() if granted}
            ops = [
                tx.put(
                    keys.reg(aor, binding_id), codec.encode_binding(binding), lease=leases[binding_id][0], prev_kv=True
                )
                for binding_id, binding, _ in upserts
            ]
            ops += [tx.delete(keys.reg(aor, binding_id), prev_kv=True) for binding_id in removals]
            compare = [_range(tx.mod, keys.regs_of(aor)) < current.revision + 1] if guarded else []
            replaced: set[int] = set()
            for start in range(0, len(ops), MAX_TXN_OPS):
                ok, responses = self.client.transaction(
                    compare=compare if start == 0 else [], success=ops[start : start + MAX_TXN_OPS], failure=[]
                )
                if not ok:
                    for lease_id in fresh:
                        self._revoke_if_granted(lease_id)
                    return False
                replaced |= _previous_leases(responses)
            for lease_id in replaced - {lease for lease, _ in leases.values()}:
                self._revoke_if_granted(lease_id)
        return True

    def _binding_lease(self, previous: int | None, ttl: int) -> tuple[int, bool]:
        """The lease for a binding key: its previous one, kept alive, when that one was
        granted `ttl`; else a new one. (lease id, whether it was granted now)."""
        if previous:
            responses = list(self.client.refresh_lease(previous))
            if responses and int(responses[0].TTL) == ttl:
                return previous, False
        return int(self.client.lease(ttl).id), True

    def _revoke_if_granted(self, lease_id: int) -> None:
        """Revoke a lease; one that has just expired (or another instance revoked) is fine."""
        try:
            self.client.revoke_lease(lease_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise


def _previous_leases(responses: Sequence[Any]) -> set[int]:
    """Lease ids the keys had before the puts and deletes of a transaction (prev_kv)."""
    leases: set[int] = set()
    for response in responses:
        if response.HasField("response_put"):
            previous = [response.response_put.prev_kv] if response.response_put.HasField("prev_kv") else []
        else:
            previous = list(response.response_delete_range.prev_kvs)
        leases |= {int(kv.lease) for kv in previous if kv.lease}
    return leases
