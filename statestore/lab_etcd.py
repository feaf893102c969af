"""The lab's etcd members: names, ports, command lines and readiness (issue 14).

Each zone `zK` (K = 1..9) is its own etcd cluster of 1 or 3 members named `zK-etcdM`
(unique across zones). Ports of member M of zone K, all on 127.0.0.1:

    client  2379 + 100*(K-1) + 10*(M-1)      z1-etcd1 2379, z1-etcd2 2389, z1-etcd3 2399,
    peer    client + 1                       z2-etcd1 2479, z2-etcd2 2489, ...
    metrics client + 2

so z1's first member keeps the ports of the single-member lab (2379/2380/2381) and every
tool that knows only those keeps working. Each member has its own directory var/zK-etcdM/
(data dir `data`, log `etcd.log`). A member whose data dir exists is started with
`--initial-cluster-state existing`: it rejoins its cluster with its data, never
bootstraps a second one.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from statestore.lab_process import LabError

HOST = "127.0.0.1"
CLIENT_BASE = 2379
ZONE_STRIDE = 100
MEMBER_STRIDE = 10
MEMBER_COUNTS = (1, 3)
MAX_ZONES = 9
MEMBER_NAME = re.compile(r"z([1-9])-etcd([1-9])\Z")
# etcd keeps its history bounded by itself (docs/operations.md "Operating the store"): every minute it
# compacts away what is older than a minute; nothing of ours reads that far back. The quota
# is explicit: NOSPACE at 1 GiB, far above what compacted traffic leaves (tens of MB).
# BLF_ETCD_COMPACTION_RETENTION overrides the retention ("0" turns compaction off: only to
# measure what the history costs without it, as docs/soak.md does).
ETCD_QUOTA_BYTES = 1024 * 1024 * 1024
# etcd 3.4 keeps its raft log in memory until a snapshot, by default every 100,000 entries:
# about 3.4 KiB of heap per write, 340 MiB at a time (the soak saw its RSS climb without
# end). 10,000 bounds that near 34 MiB, for a snapshot every few minutes under load.
ETCD_SNAPSHOT_COUNT = 10_000


@dataclass(frozen=True)
class Member:
    zone: int
    index: int
    host: str = HOST  # a site's address when the lab runs sites (statestore.lab_sites)

    @property
    def name(self) -> str:
        return f"z{self.zone}-etcd{self.index}"

    @property
    def zone_name(self) -> str:
        return f"z{self.zone}"

    @property
    def client_port(self) -> int:
        return CLIENT_BASE + ZONE_STRIDE * (self.zone - 1) + MEMBER_STRIDE * (self.index - 1)

    @property
    def client(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def peer(self) -> str:
        return f"{self.host}:{self.client_port + 1}"

    @property
    def metrics(self) -> str:
        return f"{self.host}:{self.client_port + 2}"


def layout(zones: int, members: int, hosts: list[str] | None = None) -> dict[str, list[Member]]:
    """Every zone's members, zones z1..zN in order; member M on hosts[M-1] if given (sites)."""
    if members not in MEMBER_COUNTS:
        raise LabError(f"--etcd-members is 1 or 3, not {members}")
    if not 1 <= zones <= MAX_ZONES:
        raise LabError(f"--zones is 1 to {MAX_ZONES}, not {zones}")
    if hosts is not None and len(hosts) != members:
        raise LabError(f"--sites is the number of members per zone ({members}), not {len(hosts)}")
    return {
        f"z{zone}": [Member(zone, index, hosts[index - 1] if hosts else HOST) for index in range(1, members + 1)]
        for zone in range(1, zones + 1)
    }


def member_named(name: str) -> Member | None:
    """The member a name such as z1-etcd2 stands for; None for any other name."""
    found = MEMBER_NAME.match(name)
    return Member(int(found.group(1)), int(found.group(2))) if found else None


def command(etcd: str, member: Member, cluster: list[Member], data: Path) -> list[str]:
    """etcd's command line for `member` of the cluster `cluster` (its zone's members)."""
    existing = (data / "member").is_dir()
    return [
        etcd, "--name", member.name, "--data-dir", str(data),
        "--listen-client-urls", f"http://{member.client}", "--advertise-client-urls", f"http://{member.client}",
        "--listen-peer-urls", f"http://{member.peer}", "--initial-advertise-peer-urls", f"http://{member.peer}",
        "--initial-cluster", ",".join(f"{other.name}=http://{other.peer}" for other in cluster),
        "--initial-cluster-token", f"blf-{member.zone_name}",
        "--initial-cluster-state", "existing" if existing else "new",
        "--listen-metrics-urls", f"http://{member.metrics}",
        "--auto-compaction-mode", "periodic",
        "--auto-compaction-retention", os.environ.get("BLF_ETCD_COMPACTION_RETENTION", "1m"),
        "--quota-backend-bytes", str(ETCD_QUOTA_BYTES), "--snapshot-count", str(ETCD_SNAPSHOT_COUNT),
    ]


def healthy(member: Member, timeout: float = 1.0) -> bool:
    """etcd's own /health on the metrics URL: true once the member sees a leader (no alarm)."""
    try:
        with urllib.request.urlopen(f"http://{member.metrics}/health", timeout=timeout) as answer:  # noqa: S310
            return bool(json.loads(answer.read()).get("health") == "true")
    except (OSError, ValueError):
        return False
