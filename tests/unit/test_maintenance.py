"""The store's maintenance decisions (statestore/maintenance.py) and the lease keeper's
alarm log (kemi/blf_lease.py): when to defragment, what `store health` says and exits
with, and a raised alarm logged at once, then once a minute, never per tick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from statestore import maintenance
from statestore.domain.errors import StoreUnavailable
from statestore.maintenance import (
    AlarmLog,
    MaintenanceRecord,
    MemberStatus,
    defrag_reason,
    health,
    metric,
    status_field,
)
from statestore.memory import MemoryStore
from tests.fakeksr import FakeContext, FakeKSR, install

MIB = 1024 * 1024
GIB = 1024 * MIB


def member(db_size: int, in_use: int | None) -> MemberStatus:
    return MemberStatus("127.0.0.1:2379", 0x8E9E05C52164694D, db_size, in_use, 100)


@pytest.mark.parametrize(
    ("db_size", "in_use", "quota", "alarmed", "needed"),
    [
        (10 * MIB, 9 * MIB, GIB, False, None),  # small and dense: nothing to gain
        (40 * MIB, 1 * MIB, GIB, False, None),  # mostly free, but under DEFRAG_MIN_FREE
        (200 * MIB, 20 * MIB, GIB, False, "90% of its file is free pages (180 MiB)"),
        (200 * MIB, 150 * MIB, GIB, False, None),  # 50 MiB free: under the minimum
        (700 * MIB, 650 * MIB, GIB, False, "its file is 68% of the quota"),
        (10 * MIB, 9 * MIB, GIB, True, "an alarm is raised"),
        (200 * MIB, None, None, False, None),  # in-use unknown (etcd < 3.4), quota unknown
    ],
)
def test_a_member_is_defragmented_when_mostly_free_near_the_quota_or_alarmed(
    db_size: int, in_use: int | None, quota: int | None, alarmed: bool, needed: str | None
) -> None:
    assert defrag_reason(member(db_size, in_use), quota, alarmed) == needed


def test_health_reports_the_largest_member_and_exits_1_on_an_alarm() -> None:
    members = [member(20 * MIB, 5 * MIB), MemberStatus("127.0.0.2:2379", 2, 30 * MIB, 6 * MIB, 101)]
    record = MaintenanceRecord(last_compaction=1000.0, compacted_to=90, last_defrag=1001.0)
    report = health(members, GIB, 90, record, [], {"legs": 3, "subs": 2}, 9, 2)
    assert (report.db_size, report.db_size_in_use, report.revision) == (30 * MIB, 6 * MIB, 101)
    assert report.keys_by_kind == {kind: {"legs": 3, "subs": 2}.get(kind, 0) for kind in maintenance.KINDS}
    assert (report.last_compaction, report.last_defrag, report.keys, report.leases) == (1000.0, 1001.0, 9, 2)
    assert report.exit_code() == maintenance.HEALTHY
    alarmed = health(members, GIB, 90, record, ["NOSPACE member 2"], {}, 0, 0)
    assert alarmed.exit_code() == maintenance.ALARMED
    text = "\n".join(maintenance.describe_health(alarmed))
    assert "30.0 MiB (3%) of quota 1024 MiB" in text and "NOSPACE member 2" in text


def test_the_health_json_keeps_the_field_names_the_soak_harness_samples() -> None:
    report = health([member(1, 1)], None, 0, MaintenanceRecord(), [], {}, 0, 0)
    assert set(report.to_dict()) >= {
        "db_size", "db_size_in_use", "quota", "revision", "compact_revision", "last_compaction", "last_defrag",
        "alarms", "keys", "keys_by_kind", "leases",
    }
    assert report.to_dict()["last_compaction"] is None


def test_the_maintenance_record_round_trips_and_an_absent_one_is_never() -> None:
    record = MaintenanceRecord(1.5, 42, 2.5, {"127.0.0.1:2379": 0.25})
    assert MaintenanceRecord.decode(record.encode()) == record
    assert MaintenanceRecord.decode(None) == MaintenanceRecord()


def test_db_size_in_use_is_read_from_the_status_answers_unknown_field_9() -> None:
    # header (1, bytes), version (2, bytes), dbSize (3) = 300, raftTerm (6), dbSizeInUse (9) = 70000
    raw = b"\x0a\x02\x08\x01" + b"\x12\x063.4.23" + b"\x18\xac\x02" + b"\x30\x05" + b"\x48\xf0\xa2\x04"
    assert status_field(raw, 3) == 300
    assert status_field(raw, 9) == 70000
    assert status_field(raw[:-4], 9) is None


def test_the_quota_is_read_from_etcds_metrics() -> None:
    text = "# HELP etcd_server_quota_backend_bytes x\netcd_server_quota_backend_bytes 1.073741824e+09\n"
    assert metric(text, "etcd_server_quota_backend_bytes") == GIB
    assert metric(text, "etcd_mvcc_db_total_size_in_bytes") is None


def test_an_alarm_is_logged_when_raised_then_once_a_minute_and_once_cleared() -> None:
    log = AlarmLog(every=60)
    assert log.observe([], 0) is None
    assert log.observe(["NOSPACE member 1"], 1) == "raised"
    assert [log.observe(["NOSPACE member 1"], t) for t in (1.5, 30, 60.9)] == [None, None, None]
    assert log.observe(["NOSPACE member 1"], 61) == "raised"
    assert log.observe(["NOSPACE member 1", "NOSPACE member 2"], 62) == "raised"  # another member: at once
    assert log.observe([], 63) == "cleared"
    assert log.observe([], 64) is None


# --- the lease keeper sees the alarm -------------------------------------------------------


class Store(MemoryStore):
    """The shared in-memory store, counting alarm reads and refusing leases when told."""

    def __init__(self) -> None:
        super().__init__()
        self.grant_error: Exception | None = None
        self.alarm_calls = 0

    def grant_lease(self, ttl: int) -> int:
        if self.grant_error is not None:
            raise self.grant_error
        return super().grant_lease(ttl)

    def alarms(self) -> list[str]:
        self.alarm_calls += 1
        return super().alarms()


@pytest.fixture
def ksr(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKSR]:
    fake = install()
    import blf_lease

    monkeypatch.setattr(blf_lease, "share_instances", lambda instances: None)
    yield fake


def keeper(store: Store, clock: list[float]) -> Any:
    import blf_lease

    return blf_lease.LeaseKeeper(FakeContext(store), clock=lambda: clock[0])  # type: ignore[arg-type]


def test_the_lease_keeper_logs_nospace_critically_once_a_minute_not_every_tick(ksr: FakeKSR) -> None:
    store, clock = Store(), [100.0]
    lease = keeper(store, clock)
    lease.tick()
    assert ksr.logged("crit") == ""
    store.raised = ["NOSPACE member 8e9e05c52164694d"]
    for _ in range(60):  # two minutes of 0.5 s ticks, a refresh every 2 s
        clock[0] += 2.0
        lease.tick()
    crit = ksr.logged("crit")
    assert crit.count("etcd alarm raised: NOSPACE member 8e9e05c52164694d") == 2
    assert "blfctl store maintain" in crit
    store.raised = []
    clock[0] += 2.0
    lease.tick()
    assert "alarms cleared" in ksr.logged("notice")


def test_a_lease_refused_under_nospace_still_shows_the_alarm(ksr: FakeKSR) -> None:
    store, clock = Store(), [100.0]
    store.raised = ["NOSPACE member 1"]
    store.grant_error = StoreUnavailable("etcd at x: RpcError: etcdserver: mvcc: database space exceeded")
    lease = keeper(store, clock)
    lease.tick()
    assert "NOSPACE member 1" in ksr.logged("crit")
    store.grant_error = StoreUnavailable("etcd at x: ConnectionFailedError")
    calls = store.alarm_calls
    clock[0] += 0.5
    lease.tick()
    assert store.alarm_calls == calls  # unreachable: no alarm read to wait on as well


def test_nospace_is_an_outage_of_the_store_but_a_response_over_4_mb_stays_a_bug() -> None:
    import grpc  # type: ignore[import-untyped]

    from statestore.etcd_store import unavailability
    from tests.unit.test_store_errors import FakeRpcError

    assert unavailability(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded"))
    assert not unavailability(
        FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5000000 vs. 4194304)")
    )


def test_the_lab_starts_etcd_compacting_every_minute_under_an_explicit_quota(tmp_path: Any) -> None:
    from statestore import lab_etcd

    (member,) = lab_etcd.layout(1, 1)["z1"]
    command = lab_etcd.command("etcd", member, [member], tmp_path / "data")
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    assert flags["--auto-compaction-mode"] == "periodic"
    assert flags["--auto-compaction-retention"] == "1m"
    assert flags["--quota-backend-bytes"] == str(GIB)
    assert flags["--snapshot-count"] == "10000"  # bounds the raft log etcd keeps in memory
