"""Ask every member of every zone for its status, each on its own, all at once, with a
short deadline: what `blfctl store health` reports per zone and per member (issue 14).

The questions go to etcd's JSON gateway on the client URL (HTTP POST /v3/maintenance/status,
/v3/cluster/member/list, /v3/maintenance/alarm; etcd 3.4): one short request per member with
a socket timeout, answered or not within PROBE_TIMEOUT, so that a dead or frozen (SIGSTOPped)
member costs one timeout in parallel with the others instead of a gRPC channel that keeps
reconnecting; and it reads the raft fields (leader, index, term) the store adapter does not
expose. The verdicts are statestore.zone_health's.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from statestore.zone_health import MemberProbe

PROBE_TIMEOUT = 1.0


def _post(endpoint: str, path: str, body: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - http to an etcd member we were given
        f"http://{endpoint}{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        data: dict[str, Any] = json.loads(answer.read())
    return data


def _status(endpoint: str, timeout: float) -> dict[str, Any] | str:
    """The member's status response, or why it gave none."""
    try:
        return _post(endpoint, "/v3/maintenance/status", {}, timeout)
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _names(endpoints: Sequence[str], timeout: float) -> dict[str, tuple[str, int]]:
    """client endpoint -> (member name, member id), from the first member that lists its cluster."""
    for endpoint in endpoints:
        try:
            members = _post(endpoint, "/v3/cluster/member/list", {}, timeout).get("members", [])
        except (OSError, ValueError):
            continue
        return {url.split("://", 1)[-1]: (member.get("name") or url.split("://", 1)[-1], int(member.get("ID", 0)))
                for member in members for url in member.get("clientURLs", [])}
    return {}


def _alarms(endpoints: Sequence[str], timeout: float) -> dict[int, list[str]]:
    """member id -> the alarms raised on it (the cluster's list, from one member)."""
    for endpoint in endpoints:
        try:
            raised = _post(endpoint, "/v3/maintenance/alarm", {"action": "GET"}, timeout).get("alarms", [])
        except (OSError, ValueError):
            continue
        alarms: dict[int, list[str]] = {}
        for alarm in raised:
            alarms.setdefault(int(alarm.get("memberID", 0)), []).append(str(alarm.get("alarm", "NONE")))
        return alarms
    return {}


def _probe(
    known: tuple[str, int], endpoint: str, answer: dict[str, Any] | str, alarms: dict[int, list[str]]
) -> MemberProbe:
    """`known`: the member's name and id as its cluster lists it (the id 0 if unlisted)."""
    name = known[0]
    if isinstance(answer, str):
        return MemberProbe(name=name, endpoint=endpoint, reachable=False, member_id=known[1], error=answer)
    header = answer.get("header", {})
    member_id = int(header.get("member_id", 0))
    in_use = answer.get("dbSizeInUse")
    return MemberProbe(
        name=name, endpoint=endpoint, reachable=True, member_id=member_id,
        leader_id=int(answer.get("leader", 0)), raft_index=int(answer.get("raftIndex", 0)),
        raft_term=int(answer.get("raftTerm", 0)), db_size=int(answer.get("dbSize", 0)),
        db_size_in_use=None if in_use is None else int(in_use), revision=int(header.get("revision", 0)),
        alarms=alarms.get(member_id, []),
    )


def probe_zone(endpoints: Sequence[str], timeout: float = PROBE_TIMEOUT) -> list[MemberProbe]:
    """Every member of one zone: those given, and any other its member list names. The
    statuses first, all at once; then the names and alarms from a member that answered."""
    with ThreadPoolExecutor(max_workers=len(endpoints) + 2) as pool:
        answers = dict(zip(endpoints, pool.map(lambda endpoint: _status(endpoint, timeout), endpoints), strict=True))
        answered = [endpoint for endpoint, answer in answers.items() if not isinstance(answer, str)]
        names_asked = pool.submit(_names, answered, timeout)
        alarms_asked = pool.submit(_alarms, answered, timeout)
        names, alarms = names_asked.result(), alarms_asked.result()
        others = [endpoint for endpoint in names if endpoint not in answers]
        answers |= dict(zip(others, pool.map(lambda endpoint: _status(endpoint, timeout), others), strict=True))
    return [_probe(names.get(endpoint, (endpoint, 0)), endpoint, answer, alarms)
            for endpoint, answer in answers.items()]


def probe_zones(zones: Mapping[str, Sequence[str]], timeout: float = PROBE_TIMEOUT) -> dict[str, list[MemberProbe]]:
    """Every zone's members, the zones asked in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, len(zones))) as pool:
        probed = pool.map(lambda endpoints: probe_zone(endpoints, timeout), zones.values())
        return dict(zip(zones, probed, strict=True))
