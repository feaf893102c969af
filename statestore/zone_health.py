"""`blfctl store health` per zone and per member (issue 14): the verdicts, without I/O.

statestore.member_probe asks each member on its own; this module says which member leads
each zone, whether a zone is degraded (a member unreachable, or no leader), and how it
reads. A zone's leader is a member that answers and names itself leader (the highest term
if two do, for the moment an old leader has not yet heard of the new term): a follower
keeps naming a leader that just died until the next election, so what followers name is
shown per member ("leader_id") but not believed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MemberProbe:
    """One member as it answered (or did not) its own status request."""

    name: str
    endpoint: str
    reachable: bool
    member_id: int = 0
    leader_id: int = 0
    raft_index: int = 0
    raft_term: int = 0
    db_size: int = 0
    db_size_in_use: int | None = None
    revision: int = 0
    alarms: list[str] = field(default_factory=list)
    error: str | None = None


def _hex(member_id: int) -> str | None:
    return f"{member_id:x}" if member_id else None


def zone_leader(probes: Sequence[MemberProbe]) -> int:
    """The id of the member that answers as the leader; 0 when none does."""
    leaders = [probe for probe in probes if probe.reachable and probe.member_id and probe.leader_id == probe.member_id]
    return max(leaders, key=lambda probe: probe.raft_term).member_id if leaders else 0


def zone_report(probes: Sequence[MemberProbe]) -> dict[str, Any]:
    """One zone as `store health --json` shows it under "zones"."""
    leader = zone_leader(probes)
    names = {probe.member_id: probe.name for probe in probes if probe.member_id}
    members = {}
    for probe in probes:
        members[probe.name] = {
            "endpoint": probe.endpoint, "reachable": probe.reachable, "id": _hex(probe.member_id),
            "leader": bool(leader) and probe.member_id == leader, "leader_id": _hex(probe.leader_id),
            "raft_index": probe.raft_index if probe.reachable else None,
            "raft_term": probe.raft_term if probe.reachable else None,
            "db_size": probe.db_size if probe.reachable else None, "alarms": list(probe.alarms),
            "error": probe.error,
        }
    return {"leader": names.get(leader, _hex(leader)) if leader else None, "leader_id": _hex(leader),
            "members": members}


def zones_report(probes: Mapping[str, Sequence[MemberProbe]]) -> dict[str, dict[str, Any]]:
    return {zone: zone_report(members) for zone, members in probes.items()}


def degraded(zones: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What is wrong in `zones` (a zones_report), one line each; empty when all is well."""
    problems = []
    for zone, report in zones.items():
        if report["leader"] is None:
            problems.append(f"zone {zone} has no leader")
        problems += [f"{name} ({member['endpoint']}) of zone {zone} is unreachable"
                     for name, member in report["members"].items() if not member["reachable"]]
    return problems


def describe_zones(zones: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The text form: one line per zone, one per member."""
    lines = []
    for zone, report in zones.items():
        lines.append(f"zone {zone}  leader {report['leader'] or 'NONE'}")
        for name, member in report["members"].items():
            if not member["reachable"]:
                lines.append(f"  {name:<10} {member['endpoint']:<16} UNREACHABLE ({member['error']})")
                continue
            role = "leader  " if member["leader"] else "follower"
            alarms = ", ".join(member["alarms"]) or "no alarm"
            lines.append(
                f"  {name:<10} {member['endpoint']:<16} {role} id {member['id']} raft index {member['raft_index']} "
                f"term {member['raft_term']} db {member['db_size'] / (1024 * 1024):.1f} MiB {alarms}"
            )
    return lines


def as_dict(probe: MemberProbe) -> dict[str, Any]:
    return asdict(probe)
