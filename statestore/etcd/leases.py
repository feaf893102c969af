"""Instance leases and the instances announced under them, on etcd.
"""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped]

from statestore import codec, keys
from statestore.etcd.kv import EtcdKv


class EtcdLeases(EtcdKv):
    """Leases and instances."""

    def grant_lease(self, ttl: int) -> int:
        with self._guard():
            return int(self.client.lease(ttl).id)

    def refresh_lease(self, lease_id: int) -> bool:
        """Keep a lease alive; False when etcd no longer knows it (it expired)."""
        with self._guard():
            responses = list(self.client.refresh_lease(lease_id))
        return bool(responses) and int(responses[0].TTL) > 0

    def revoke_lease(self, lease_id: int) -> None:
        try:
            with self._guard():
                self.client.revoke_lease(lease_id)
        except grpc.RpcError as exc:
            # Gone already: expired, or revoked by an attempt whose answer was lost before
            # the revocation was tried on another member (etcd_failover).
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise

    def announce_instance(self, name: str, info: dict[str, Any], lease_id: int) -> None:
        with self._guard():
            self.client.put(keys.instance(name), codec.encode(info), lease=lease_id)

    def instances(self) -> dict[str, dict[str, Any]]:
        return {kv.key[len(keys.INSTANCES):]: codec.decode(kv.value) for kv in self.range(keys.INSTANCES)}
