"""Keeping the store bounded (issue 8): the decisions, without I/O.

etcd compacts its own history (`--auto-compaction-mode=periodic`, set by the lab and the
example configuration); what is left to us: knowing when a member's database file should
be defragmented, what `blfctl store health` reports and how it exits, the record of the
last maintenance kept under keys.MAINTENANCE, and logging a raised alarm loudly but once a
minute (the lease keeper sees it twice a second). The etcd calls are in etcd/maintenance.py; the
clock is passed in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from statestore import keys, records
from statestore.zone_health import degraded, describe_zones

# `store health` exit codes: healthy, an alarm raised, etcd unreachable (as every blfctl
# command), a zone degraded (a member unreachable, or a zone without a leader).
HEALTHY, ALARMED, UNREACHABLE, DEGRADED = 0, 1, 3, 4

# Key kinds counted by `store health`, each a prefix under keys.ROOT.
# Every kind of key, counted by `store health`: the record kinds (records.KINDS), the
# subscription indexes, the directory and the instances.
KINDS = (*records.KINDS, "watchers", "watched", "accounts", "aliases", "domains", "instances")

# A member is defragmented (`maintain --if-needed`) when at least this share of its file is
# free pages (compacted history etcd reuses but never gives back) and that is at least
# DEFRAG_MIN_FREE bytes: below that a defrag's pause buys nothing worth having.
DEFRAG_FREE_SHARE = 0.5
DEFRAG_MIN_FREE = 64 * 1024 * 1024
# ... or whatever the fragmentation, when the file uses this share of the quota.
DEFRAG_QUOTA_SHARE = 0.6

# A raised alarm is logged at most this often (seconds) by each instance.
ALARM_LOG_SECONDS = 60.0


@dataclass(frozen=True)
class MemberStatus:
    """One etcd member as its Status RPC reports it."""

    endpoint: str
    member_id: int
    db_size: int
    db_size_in_use: int | None
    revision: int


@dataclass(frozen=True)
class MaintenanceRecord:
    """What `blfctl store maintain` last did, kept at keys.MAINTENANCE (unix times)."""

    last_compaction: float | None = None
    compacted_to: int = 0
    last_defrag: float | None = None
    # Seconds each member's last defragmentation blocked it, by endpoint.
    defrag_seconds: dict[str, float] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> MaintenanceRecord:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(
            last_compaction=data.get("last_compaction"), compacted_to=int(data.get("compacted_to", 0)),
            last_defrag=data.get("last_defrag"),
            defrag_seconds={str(k): float(v) for k, v in dict(data.get("defrag_seconds", {})).items()},
        )


@dataclass(frozen=True)
class Health:
    """`blfctl store health --json`; the field names are an interface (the soak harness)."""

    db_size: int
    db_size_in_use: int | None
    quota: int | None
    revision: int
    compact_revision: int
    last_compaction: float | None
    last_defrag: float | None
    alarms: list[str]
    keys: int
    keys_by_kind: dict[str, int]
    leases: int
    members: list[dict[str, Any]] = field(default_factory=list)
    # Per zone and per member (statestore.zone_health.zones_report); empty if not asked.
    zones: dict[str, Any] = field(default_factory=dict)

    def exit_code(self) -> int:
        if self.alarms:
            return ALARMED
        return DEGRADED if degraded(self.zones) else HEALTHY

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def health(
    members: Sequence[MemberStatus],
    quota: int | None,
    compact_revision: int,
    record: MaintenanceRecord,
    alarms: Sequence[str],
    counts: Mapping[str, int],
    total_keys: int,
    leases: int,
    zones: Mapping[str, Any] | None = None,
) -> Health:
    """The store's health: sizes of the largest member (the one NOSPACE hits first)."""
    largest = max(members, key=lambda member: member.db_size)
    return Health(
        db_size=largest.db_size, db_size_in_use=largest.db_size_in_use, quota=quota,
        revision=max(member.revision for member in members), compact_revision=compact_revision,
        last_compaction=record.last_compaction, last_defrag=record.last_defrag, alarms=list(alarms),
        keys=total_keys, keys_by_kind={kind: int(counts.get(kind, 0)) for kind in KINDS}, leases=leases,
        members=[asdict(member) for member in members], zones=dict(zones or {}),
    )


def defrag_reason(member: MemberStatus, quota: int | None, alarmed: bool) -> str | None:
    """Why this member's file should be defragmented now, or None (`maintain --if-needed`)."""
    if alarmed:
        return "an alarm is raised"
    if quota and member.db_size >= DEFRAG_QUOTA_SHARE * quota:
        return f"its file is {member.db_size / quota:.0%} of the quota"
    if member.db_size_in_use is None:
        return None
    free = member.db_size - member.db_size_in_use
    if free >= DEFRAG_MIN_FREE and free >= DEFRAG_FREE_SHARE * member.db_size:
        return f"{free / member.db_size:.0%} of its file is free pages ({free // (1024 * 1024)} MiB)"
    return None


def describe_health(report: Health) -> list[str]:
    """`blfctl store health` without --json: one fact a line."""
    mib = 1024 * 1024
    in_use = "?" if report.db_size_in_use is None else f"{report.db_size_in_use / mib:.1f}"
    quota = "unknown" if not report.quota else f"{report.quota / mib:.0f} MiB"
    share = f" ({report.db_size / report.quota:.0%})" if report.quota else ""
    lines = [
        f"database   {report.db_size / mib:.1f} MiB{share} of quota {quota}, {in_use} MiB in use",
        f"revision   {report.revision}, compacted to {report.compact_revision}",
        f"compacted  {_when(report.last_compaction)} (by blfctl store maintain; etcd also compacts on its own)",
        f"defragged  {_when(report.last_defrag)}",
        f"alarms     {', '.join(report.alarms) or 'none'}",
        f"keys       {report.keys} under {keys.ROOT}: "
        + ", ".join(f"{kind} {count}" for kind, count in report.keys_by_kind.items()),
        f"leases     {report.leases}",
    ]
    return lines + describe_zones(report.zones) + [f"DEGRADED   {problem}" for problem in degraded(report.zones)]


def _when(moment: float | None) -> str:
    if moment is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


class AlarmLog:
    """Says when to log the store's alarms: at once when raised or changed, then once every
    ALARM_LOG_SECONDS while they stay, and once when they clear."""

    def __init__(self, every: float = ALARM_LOG_SECONDS) -> None:
        self.every = every
        self.raised: tuple[str, ...] = ()
        self.last_logged = 0.0

    def observe(self, alarms: Sequence[str], now: float) -> str | None:
        current = tuple(sorted(alarms))
        if not current:
            if not self.raised:
                return None
            self.raised = ()
            return "cleared"
        if current != self.raised or now - self.last_logged >= self.every:
            self.raised, self.last_logged = current, now
            return "raised"
        return None


def status_field(raw: bytes, number: int) -> int | None:
    """A varint field of a serialized protobuf message, or None if absent.

    etcd3 0.12's generated StatusResponse predates `dbSizeInUse` (field 9, etcd 3.4): the
    field arrives as an unknown field, kept when the message is serialized again."""
    position, found = 0, None
    while position < len(raw):
        tag, position = _varint(raw, position)
        wire = tag & 7
        if wire == 0:
            value, position = _varint(raw, position)
            if tag >> 3 == number:
                found = value
        elif wire == 2:
            length, position = _varint(raw, position)
            position += length
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        else:
            return found  # groups: not in etcd's messages
    return found


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def metric(text: str, name: str) -> float | None:
    """A sample of a Prometheus text exposition (etcd's /metrics), or None."""
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None
