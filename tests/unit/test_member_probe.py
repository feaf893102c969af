"""Each member asked on its own with a deadline: one that answers (a fake of etcd's JSON
gateway), one frozen (it accepts and never answers), one dead (refused)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from statestore.member_probe import probe_zone, probe_zones

LEADER, FROZEN = 4003684003199145809, 13872015651562860033


def _members(live: str, frozen: str, dead: str) -> dict[str, object]:
    return {"members": [
        {"ID": str(LEADER), "name": "z1-etcd1", "clientURLs": [f"http://{live}"]},
        {"ID": str(FROZEN), "name": "z1-etcd2", "clientURLs": [f"http://{frozen}"]},
        {"ID": "42", "name": "z1-etcd3", "clientURLs": [f"http://{dead}"]},
    ]}


@pytest.fixture
def zone() -> Iterator[tuple[str, str, str]]:
    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(8)  # the kernel completes the handshake; nobody ever reads
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, not listening: refused
    endpoints: dict[str, str] = {}

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answers = {
                "/v3/maintenance/status": {
                    "header": {"member_id": str(LEADER), "revision": "7"}, "leader": str(LEADER),
                    "raftIndex": "59", "raftTerm": "2", "dbSize": "20480", "dbSizeInUse": "16384",
                },
                "/v3/cluster/member/list": _members(endpoints["live"], endpoints["frozen"], endpoints["dead"]),
                "/v3/maintenance/alarm": {"alarms": [{"memberID": str(LEADER), "alarm": "NOSPACE"}]},
            }
            body = json.dumps(answers[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoints.update(live=f"127.0.0.1:{server.server_address[1]}", frozen=f"127.0.0.1:{frozen.getsockname()[1]}",
                     dead=f"127.0.0.1:{dead.getsockname()[1]}")
    try:
        yield endpoints["live"], endpoints["frozen"], endpoints["dead"]
    finally:
        server.shutdown()
        frozen.close()
        dead.close()


def test_a_frozen_member_costs_one_deadline_and_every_member_is_named(zone: tuple[str, str, str]) -> None:
    live, frozen, dead = zone
    started = time.monotonic()
    probes = probe_zone([live, frozen], timeout=0.5)  # the dead one is found in the member list
    assert time.monotonic() - started < 1.5, "the members are asked at once, each with its deadline"
    by_name = {probe.name: probe for probe in probes}
    assert set(by_name) == {"z1-etcd1", "z1-etcd2", "z1-etcd3"}
    leader = by_name["z1-etcd1"]
    assert (leader.reachable, leader.member_id, leader.leader_id, leader.raft_index, leader.raft_term) == (
        True, LEADER, LEADER, 59, 2,
    )
    assert (leader.db_size, leader.db_size_in_use, leader.revision, leader.alarms) == (20480, 16384, 7, ["NOSPACE"])
    assert not by_name["z1-etcd2"].reachable and "timed out" in str(by_name["z1-etcd2"].error)
    assert by_name["z1-etcd2"].member_id == FROZEN, "an unreachable member keeps the id its cluster lists"
    assert not by_name["z1-etcd3"].reachable and "refused" in str(by_name["z1-etcd3"].error).lower()


def test_a_zone_none_of_whose_members_answers_is_listed_by_endpoint(zone: tuple[str, str, str]) -> None:
    _, frozen, dead = zone
    probes = probe_zones({"z1": [frozen, dead]}, timeout=0.3)["z1"]
    assert [(probe.name, probe.reachable) for probe in probes] == [(frozen, False), (dead, False)]
