"""Maintenance of etcd (issue 8): statestore.maintenance decides, these only ask etcd
(status, alarms, compaction, defragmentation, counts, the quota from /metrics).
"""

from __future__ import annotations

import time
import urllib.request

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]

from statestore import keys
from statestore.domain.errors import StoreUnavailable
from statestore.etcd.kv import EtcdKv, _key_read, _prefix_read
from statestore.maintenance import KINDS, MaintenanceRecord, MemberStatus, status_field
from statestore.maintenance import metric as metric_sample

# A defragmentation blocks its member for as long as it rewrites the file: seconds per
# hundred MB (docs/operations.md "Operating the store"); its own deadline, not the store's.
DEFRAG_TIMEOUT = 300.0


class EtcdMaintenance(EtcdKv):
    """Maintenance requests."""

    def member_endpoints(self) -> list[str]:
        """host:port of each member's first client URL."""
        with self._guard():
            members = list(self.client.members)
        return [str(member.client_urls[0]).split("://", 1)[-1] for member in members if member.client_urls]

    def member_status(self, endpoint: str | None = None) -> MemberStatus:
        """One member's database size, in-use size and revision (this store's own by default)."""
        endpoint = endpoint or self.member_in_use()
        with self._member(endpoint, self.timeout) as client, self._guard():
            response = client.maintenancestub.Status(
                etcd3.etcdrpc.StatusRequest(), self.timeout, credentials=client.call_credentials,
                metadata=client.metadata,
            )
        return MemberStatus(
            endpoint=endpoint, member_id=int(response.header.member_id), db_size=int(response.dbSize),
            db_size_in_use=status_field(response.SerializeToString(), 9), revision=int(response.header.revision),
        )

    def alarms(self) -> list[str]:
        """The alarms raised in the cluster, as "NOSPACE member 8e9e05c52164694d"."""
        return [f"{name} member {member:x}" for member, name in self._alarms()]

    def _alarms(self) -> list[tuple[int, str]]:
        request = etcd3.etcdrpc.AlarmRequest(action=etcd3.etcdrpc.AlarmRequest.GET, memberID=0, alarm=0)
        client = self.client
        with self._guard():
            response = client.maintenancestub.Alarm(
                request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
            )
        return [(int(alarm.memberID), etcd3.etcdrpc.AlarmType.Name(alarm.alarm)) for alarm in response.alarms]

    def disarm_alarms(self) -> list[str]:
        """Disarm every raised alarm (after the space is back); the ones disarmed."""
        disarmed = []
        client = self.client
        for member, name in self._alarms():
            request = etcd3.etcdrpc.AlarmRequest(
                action=etcd3.etcdrpc.AlarmRequest.DEACTIVATE, memberID=member,
                alarm=etcd3.etcdrpc.AlarmType.Value(name),
            )
            with self._guard():
                client.maintenancestub.Alarm(
                    request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
                )
            disarmed.append(f"{name} member {member:x}")
        return disarmed

    def compact_revision(self) -> int:
        """The revision etcd compacted its history to (0 if never): the oldest revision a
        read still gets, found by bisection with count-only reads of one key (etcd tells it
        only to a watch that starts below it)."""
        low, high = 0, self.revision()  # `high` is readable; `low` is not (or 0)
        if self._readable_at(1):
            return 0
        low = 1
        while high - low > 1:
            middle = (low + high) // 2
            if self._readable_at(middle):
                high = middle
            else:
                low = middle
        return high

    def revision(self) -> int:
        revision, _ = self._read([_key_read(keys.MAINTENANCE)])
        return revision

    def _readable_at(self, revision: int) -> bool:
        request = etcd3.etcdrpc.RangeRequest(key=keys.MAINTENANCE.encode(), revision=revision, count_only=True)
        client = self.client
        try:
            with self._guard():
                client.kvstub.Range(
                    request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
                )
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, grpc.RpcError) and exc.__cause__.code() == grpc.StatusCode.OUT_OF_RANGE:
                return False
            raise
        return True

    def compact(self, revision: int) -> bool:
        """Compact the history to `revision` and wait until the backend has dropped it
        (physical); False if it already was compacted that far (by etcd itself)."""
        try:
            with self._guard():
                self.client.compact(revision, physical=True)
        except StoreUnavailable as exc:
            if "compacted" in str(exc).lower():
                return False
            raise
        return True

    def defragment(self, endpoint: str, timeout: float = DEFRAG_TIMEOUT) -> float:
        """Defragment one member's database file; the seconds it blocked that member."""
        with self._member(endpoint, timeout) as client, self._guard():
            started = time.monotonic()
            client.maintenancestub.Defragment(
                etcd3.etcdrpc.DefragmentRequest(), timeout, credentials=client.call_credentials,
                metadata=client.metadata,
            )
        return time.monotonic() - started

    def key_counts(self) -> tuple[int, dict[str, int]]:
        """How many keys there are under keys.ROOT, and per kind (count-only: no value read)."""
        prefixes = [keys.ROOT, *(f"{keys.ROOT}{kind}/" for kind in KINDS)]
        _, responses = self._read([_prefix_read(prefix, count_only=True) for prefix in prefixes])
        counts = [int(response.count) for response in responses]
        return counts[0], dict(zip(KINDS, counts[1:], strict=True))

    def lease_count(self) -> int:
        client = self.client
        with self._guard():
            response = client.leasestub.LeaseLeases(
                etcd3.etcdrpc.LeaseLeasesRequest(), self.timeout, credentials=client.call_credentials,
                metadata=client.metadata,
            )
        return len(response.leases)

    def quota(self) -> int | None:
        """The member's --quota-backend-bytes, from its /metrics (etcd serves them on the
        client URL too); None if it cannot be read (TLS, a proxy in between)."""
        try:
            with urllib.request.urlopen(f"http://{self.member_in_use()}/metrics", timeout=self.timeout) as answer:  # noqa: S310
                text = answer.read().decode(errors="replace")
        except OSError:
            return None
        value = metric_sample(text, "etcd_server_quota_backend_bytes")
        return None if value is None else int(value)

    def maintenance_record(self) -> MaintenanceRecord:
        with self._guard():
            value, _ = self.client.get(keys.MAINTENANCE)
        return MaintenanceRecord.decode(None if value is None else bytes(value))

    def record_maintenance(self, record: MaintenanceRecord) -> None:
        with self._guard():
            self.client.put(keys.MAINTENANCE, record.encode())
