"""`store health` per zone: who leads, what is degraded, and the exit code it makes."""

from __future__ import annotations

import pytest

from statestore import maintenance
from statestore.maintenance import MaintenanceRecord, MemberStatus
from statestore.zone_health import MemberProbe, degraded, describe_zones, zone_leader, zone_report, zones_report

A, B, C = 0xA1, 0xB2, 0xC3


def up(name: str, member_id: int, leader_id: int, term: int = 2, alarms: list[str] | None = None) -> MemberProbe:
    return MemberProbe(name=name, endpoint=f"127.0.0.1:{2379 + member_id}", reachable=True, member_id=member_id,
                       leader_id=leader_id, raft_index=40, raft_term=term, db_size=20480, alarms=alarms or [])


def down(name: str, member_id: int = 0) -> MemberProbe:
    return MemberProbe(name=name, endpoint="127.0.0.1:1", reachable=False, member_id=member_id, error="refused")


@pytest.mark.parametrize(
    ("probes", "leader"),
    [
        ([up("e1", A, C), up("e2", B, C), up("e3", C, C)], C),
        # followers still name a leader that just died: not believed
        ([up("e1", A, C), up("e2", B, C), down("e3", C)], 0),
        ([up("e1", A, 0), up("e2", B, 0)], 0),
        # an old leader that has not heard of the new term yet: the higher term wins
        ([up("e1", A, A, term=2), up("e2", B, B, term=3), up("e3", C, B, term=3)], B),
        ([], 0),
    ],
)
def test_the_leader_is_the_member_that_answers_as_leader(probes, leader):
    assert zone_leader(probes) == leader


def test_a_zone_report_names_each_member_its_role_and_its_raft_position():
    report = zone_report([up("z1-etcd1", A, C), up("z1-etcd2", B, C, alarms=["NOSPACE"]), up("z1-etcd3", C, C)])
    assert report["leader"] == "z1-etcd3" and report["leader_id"] == "c3"
    assert report["members"]["z1-etcd1"] == {
        "endpoint": "127.0.0.1:2540", "reachable": True, "id": "a1", "leader": False, "leader_id": "c3",
        "raft_index": 40, "raft_term": 2, "db_size": 20480, "alarms": [], "error": None,
    }
    assert report["members"]["z1-etcd3"]["leader"] is True
    assert report["members"]["z1-etcd2"]["alarms"] == ["NOSPACE"]


def test_an_unreachable_member_and_a_zone_without_leader_are_degraded():
    healthy = zones_report({"z1": [up("z1-etcd1", A, A)], "z2": [up("z2-etcd1", B, B), up("z2-etcd2", C, B)]})
    assert degraded(healthy) == []
    zones = zones_report({"z1": [up("z1-etcd1", A, A), down("z1-etcd2", B)], "z2": [up("z2-etcd1", C, 0)]})
    assert degraded(zones) == [
        "z1-etcd2 (127.0.0.1:1) of zone z1 is unreachable", "zone z2 has no leader",
    ]
    text = "\n".join(describe_zones(zones))
    assert "zone z2  leader NONE" in text and "z1-etcd2   127.0.0.1:1" in text and "UNREACHABLE (refused)" in text


def _health(zones):
    member = MemberStatus("127.0.0.1:2379", A, 20480, 16384, 5)
    return maintenance.health([member], 2**30, 0, MaintenanceRecord(), [], {}, 0, 0, zones)


def test_store_health_exits_4_when_degraded_1_when_alarmed_0_otherwise():
    assert _health({}).exit_code() == maintenance.HEALTHY
    assert _health(zones_report({"z1": [up("z1-etcd1", A, A)]})).exit_code() == maintenance.HEALTHY
    degraded_zones = zones_report({"z1": [up("z1-etcd1", A, A), down("z1-etcd2", B)]})
    report = _health(degraded_zones)
    assert report.exit_code() == maintenance.DEGRADED == 4
    assert report.to_dict()["zones"]["z1"]["members"]["z1-etcd2"]["reachable"] is False
    assert any(line.startswith("DEGRADED   z1-etcd2") for line in maintenance.describe_health(report))
    alarmed = maintenance.health([MemberStatus("e", A, 1, 1, 1)], None, 0, MaintenanceRecord(), ["NOSPACE member a1"],
                                 {}, 0, 0, degraded_zones)
    assert alarmed.exit_code() == maintenance.ALARMED
