"""The lab of issue 14: `lab up --etcd-members 3 --zones 2`, its status, kill/start and
stop/cont of members and instances, cut/heal of an instance, store health per zone and
per member, domains placed in zones.

This module runs a lab of its own (tests/e2e/cluster_lab.py: the session lab of conftest,
if up, is brought down before and up again after).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from statestore.lab import sip_options
from statestore.lab_process import alive
from tests.e2e import cluster_lab
from tests.e2e.cluster_lab import CLUSTER_VAR, Z1, Z2, etcdctl, status
from tests.e2e.conftest import (
    DOMAIN,
    blfctl,
    free_port,
    log_sizes,
    phone,
    register_contact,
    wait_logged,
)
from tests.sipua import UserAgent

# `store health` must answer this fast with a member dead or frozen.
HEALTH_SECONDS = 5.0
# From a cut (or heal) to the instance's lease keeper saying so: a few probes and timeouts.
DETECTION_SECONDS = 20.0
# How long `lab down` waits for a process to obey SIGTERM before it SIGKILLs it.
STOP_TIMEOUT = 10.0

# The module's lab (tests/e2e/cluster_lab.py): the fixtures, used by name.
cluster = cluster_lab.cluster
creds = cluster_lab.creds


def health() -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    done = blfctl("store", "health", "--json", check=False)
    return done.returncode, json.loads(done.stdout), time.monotonic() - started


def register_when_back(ua: UserAgent, timeout: float) -> int:
    """REGISTER until it is not refused 503, honouring each 503's Retry-After as a phone does
    (RFC 3261 §21.5.4; what the instance's processes still retry has no event to wait on);
    the last status."""
    deadline = time.monotonic() + timeout
    while True:
        answer = ua.register(300)
        if answer.status != 503 or time.monotonic() > deadline:
            return answer.status
        time.sleep(min(float((answer.header("retry-after") or "1").split()[0].split(";")[0]), 1.0))


def test_status_lists_every_member_of_every_zone_on_its_ports(cluster: None) -> None:
    shown = status()
    assert shown["etcd"]["client"] == "127.0.0.1:2379" and shown["etcd"]["alive"]  # z1's first, as before
    assert list(shown["zones"]) == ["z1", "z2"]
    for zone, clients in (("z1", Z1), ("z2", Z2)):
        members = shown["zones"][zone]["members"]
        assert list(members) == [f"{zone}-etcd{index}" for index in (1, 2, 3)]
        assert [member["client"] for member in members.values()] == clients
        assert all(member["alive"] and member["pid"] > 0 for member in members.values())
    assert shown["zones"]["z1"]["members"]["z1-etcd1"]["pid"] == shown["etcd"]["pid"]
    assert {name: (entry["sip"], entry["alive"], entry["store"]) for name, entry in shown["instances"].items()} == {
        "ks1": ("127.0.0.1:5071", True, "relayed"), "ks2": ("127.0.0.1:5072", True, "relayed"),
    }
    text = blfctl("lab", "status").stdout
    assert "z2-etcd3   127.0.0.1:2499" in text and "(etcd, zone z2)" in text
    for clients in (Z1, Z2):  # each zone is its own cluster of three
        listed = etcdctl(clients[:1], "member", "list", "-w", "json")
        assert sorted(m["clientURLs"][0] for m in json.loads(listed.stdout)["members"]) == [
            f"http://{client}" for client in clients
        ]


def test_store_health_reports_each_zone_and_member(cluster: None) -> None:
    code, report, _ = health()
    assert code == 0, report
    assert {"db_size", "revision", "alarms", "keys", "keys_by_kind", "leases", "members"} <= set(report)
    for zone in ("z1", "z2"):
        members = report["zones"][zone]["members"]
        assert list(members) == [f"{zone}-etcd{index}" for index in (1, 2, 3)]
        leaders = [name for name, member in members.items() if member["leader"]]
        assert leaders == [report["zones"][zone]["leader"]]
        assert all(member["reachable"] and member["raft_index"] > 0 and member["raft_term"] > 0
                   and member["db_size"] > 0 and member["alarms"] == [] for member in members.values())
    text = blfctl("store", "health").stdout
    assert "zone z2  leader z2-etcd" in text and "z1-etcd2   127.0.0.1:2389" in text


def test_a_killed_member_restarts_and_rejoins_its_cluster_with_its_data(cluster: None) -> None:
    # A follower: its cluster keeps its leader, so the write below commits at once (a
    # killed leader is the failover tests' matter, not the lab's).
    code, report, _ = health()
    assert code == 0, report
    name = next(name for name, member in report["zones"]["z1"]["members"].items() if not member["leader"])
    index = int(name[-1]) - 1
    others = [endpoint for position, endpoint in enumerate(Z1) if position != index]
    blfctl("lab", "kill", name)
    try:
        assert not status()["zones"]["z1"]["members"][name]["alive"]
        key = f"/lab-test/while-down-{uuid.uuid4().hex[:6]}"
        put = etcdctl(others, "put", key, "written")
        assert put.returncode == 0, put.stderr
        code, report, seconds = health()
        assert code == 4 and seconds < HEALTH_SECONDS
        assert not report["zones"]["z1"]["members"][name]["reachable"]
        assert report["zones"]["z1"]["leader"] not in (None, name)
    finally:
        blfctl("lab", "start", name)
    assert status()["zones"]["z1"]["members"][name]["alive"]
    # A linearizable read from the restarted member alone: it answers once it has applied
    # what its cluster committed, the write made while it was down included.
    assert etcdctl([Z1[index]], "get", key, "--print-value-only").stdout.strip() == "written"
    rejoined = json.loads(etcdctl([Z1[index]], "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    other = json.loads(etcdctl(others[:1], "endpoint", "status", "-w", "json").stdout)[0]["Status"]
    assert rejoined["header"]["cluster_id"] == other["header"]["cluster_id"], "the same cluster, not a new one"
    assert rejoined["leader"] == other["leader"] != 0
    assert health()[0] == 0
    etcdctl(Z1, "del", key)


def test_stop_and_cont_freeze_and_thaw_a_member_and_an_instance(cluster: None) -> None:
    blfctl("lab", "stop", "z1-etcd1")
    try:
        member = status()["zones"]["z1"]["members"]["z1-etcd1"]
        assert member["alive"] and member["stopped"]
        code, report, seconds = health()
        assert code == 4 and seconds < HEALTH_SECONDS, "a frozen member costs one short deadline"
        assert not report["zones"]["z1"]["members"]["z1-etcd1"]["reachable"]
        assert report["zones"]["z2"]["leader"] is not None
    finally:
        blfctl("lab", "cont", "z1-etcd1")
    assert not status()["zones"]["z1"]["members"]["z1-etcd1"]["stopped"]
    assert etcdctl(Z1[:1], "get", "/blf/domains/", "--prefix", "--keys-only").returncode == 0  # it answers again
    blfctl("lab", "stop", "ks2")
    try:
        assert status()["instances"]["ks2"]["stopped"]
        assert sip_options("127.0.0.1", 5072) == 0, "a stopped instance answers nothing"
    finally:
        blfctl("lab", "cont", "ks2")
    assert not status()["instances"]["ks2"]["stopped"]
    assert sip_options("127.0.0.1", 5072, timeout=2.0) == 200


def test_an_instance_cut_off_from_the_store_answers_503_routes_calls_and_recovers_when_healed(
    cluster: None, creds: Any, sipp: Any
) -> None:
    phones: list[UserAgent] = []
    alice, boris = creds("alice"), creds("boris")
    port = free_port()
    try:
        register_contact(phone(phones, boris, "ks1"), port)
        alice_phone = phone(phones, alice, "ks1")
        assert alice_phone.register(300).status == 200
        sizes = log_sizes("ks1")
        blfctl("lab", "cut", "ks1")
        try:
            assert status()["instances"]["ks1"]["store"] == "cut"
            # Its watches break at once (the link resets them) and cannot resync: whichever
            # of its processes notices first says so.
            wait_logged(sizes, r"store unavailable", DETECTION_SECONDS)
            registered = alice_phone.register(300)
            assert registered.status == 503 and registered.header("retry-after"), registered.first_line
            subscribed = alice_phone.request("SUBSCRIBE", f"sip:{boris[0]}@{DOMAIN}",
                                             {"Event": "dialog", "Expires": "60"})
            assert subscribed.status == 503 and subscribed.header("retry-after"), subscribed.first_line
            # ks2 is not cut: it still serves REGISTER.
            assert phone(phones, alice, "ks2").register(300).status == 200
            sipp.callee(port, ring_ms=200)
            call = sipp.call("ks1", alice, boris[0], hold_ms=300)
            assert call.wait(timeout=30) == 0, "the call is routed by the instance cut off from its store"
            sizes = log_sizes("ks1")
        finally:
            blfctl("lab", "heal", "ks1")
        assert status()["instances"]["ks1"]["store"] == "relayed"
        wait_logged(sizes, r"blf lease: etcd reachable again", DETECTION_SECONDS)
        assert register_when_back(alice_phone, DETECTION_SECONDS) == 200
    finally:
        for ua in phones:
            ua.close()


def test_a_domain_lives_in_the_zone_it_is_added_to(cluster: None) -> None:
    domain = f"z2-{uuid.uuid4().hex[:6]}.example"
    added = blfctl("domain", "add", domain, "--zone", "z2")
    assert added.returncode == 0 and "zone z2" in added.stdout
    key = f"/blf/domains/{domain}"
    assert etcdctl(Z2, "get", key, "--keys-only").stdout.strip() == key
    assert etcdctl(Z1, "get", key, "--keys-only").stdout.strip() == ""
    shown = json.loads(blfctl("domain", "show", domain).stdout)
    assert shown["zone"] == "z2" and shown["domain"] == domain
    refused = blfctl("domain", "add", domain, check=False)  # the default zone, z1
    assert refused.returncode == 1 and f"domain {domain} is in zone z2" in refused.stderr
    blfctl("account", "add", f"bob@{domain}", "--password", "bob-secret-1")
    assert etcdctl(Z2, "get", f"/blf/accounts/bob@{domain}", "--keys-only").stdout.strip()
    assert not etcdctl(Z1, "get", f"/blf/accounts/bob@{domain}", "--keys-only").stdout.strip()
    assert json.loads(blfctl("show", f"bob@{domain}", "--json").stdout)["account"] == f"bob@{domain}"
    # The instances were given every zone (BLF_ZONES): bob's registration lands in z2.
    bob = UserAgent("bob", domain, "bob-secret-1", ("127.0.0.1", 5071))
    try:
        assert bob.register(60).status == 200
    finally:
        bob.close()
    assert f"bob@{domain}" in etcdctl(Z2, "get", "/blf/regs/", "--prefix", "--keys-only").stdout
    assert f"bob@{domain}" not in etcdctl(Z1, "get", "/blf/regs/", "--prefix", "--keys-only").stdout
    assert blfctl("domain", "add", DOMAIN, "--zone", "z2", check=False).returncode == 1


def test_down_stops_everything_it_started_stopped_processes_and_store_links_included(cluster: None) -> None:
    """Last in this module: it takes the module's lab down."""
    blfctl("lab", "stop", "z2-etcd2")
    blfctl("lab", "stop", "ks2")
    state = json.loads((CLUSTER_VAR / "lab.json").read_text())
    pids = [entry["pid"] for entry in state["instances"].values()]
    pids += [entry["pid"] for entry in state["relays"].values()]
    pids += [member["pid"] for zone in state["zones"].values() for member in zone["members"].values()]
    pids.append(state["memcached"]["pid"])
    assert len(pids) == 2 + 2 + 6 + 1
    started = time.monotonic()
    blfctl("lab", "down")
    # Under STOP_TIMEOUT: the stopped ones were continued and obeyed SIGTERM, not SIGKILLed
    # after waiting for it in vain.
    assert time.monotonic() - started < STOP_TIMEOUT
    assert [pid for pid in pids if alive(pid)] == []  # gone, or a zombie this machine's init leaves
    shown = status()
    assert shown["instances"] == {} and not shown["etcd"]["alive"]
    assert not any(member["alive"] for zone in shown["zones"].values() for member in zone["members"].values())
