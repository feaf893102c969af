"""What `blfctl why|subs|legs|regs|reset` read and write, on etcd: one page of a prefix
(never the whole cluster), an instance's lease, the reset request (keys.RESET).
"""

from __future__ import annotations

import time

import etcd3  # type: ignore[import-untyped]

from statestore import codec, keys
from statestore.etcd.kv import EtcdKv
from statestore.store import KeyValue, LeaseInfo


class EtcdInspection(EtcdKv):
    """Paged reads, lease information and reset requests."""

    def page(self, prefix: str, after: str = "", limit: int = 50) -> tuple[list[KeyValue], bool]:
        """At most `limit` keys under `prefix` after the key `after` (from the first when
        empty), in key order, and whether more follow."""
        end = etcd3.utils.increment_last_byte(prefix.encode())
        start = (after.encode() + b"\0") if after else prefix.encode()
        with self._guard():
            response = self._range_page(start, end, limit, 0)
        items = [KeyValue(kv.key.decode(), kv.value, int(kv.mod_revision)) for kv in response.kvs]
        return items, bool(response.more)

    def instance_lease(self, name: str) -> LeaseInfo | None:
        """The lease of the live instance `name` (its key is held by it), None when the
        instance is not live."""
        with self._guard():
            _, meta = self.client.get(keys.instance(name))
            if meta is None or not meta.lease_id:
                return None
            info = self.client.get_lease_info(meta.lease_id)
        if int(info.TTL) < 0:
            return None  # lapsed between the two reads
        return LeaseInfo(int(meta.lease_id), int(info.grantedTTL), int(info.TTL))

    def request_reset(self, aor: str, ttl: int) -> None:
        """Put keys.reset(aor) under a lease of `ttl` seconds: each put is one watch event
        the notifiers answer; the lease only cleans up."""
        with self._guard():
            lease = self.client.lease(ttl)
            self.client.put(keys.reset(aor), codec.encode({"at": time.time()}), lease=lease.id)
