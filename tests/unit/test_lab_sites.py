"""The lab's sites (statestore.lab_sites, statestore.lab_wan): the address and delay plan,
the `ip` commands that build and remove them, and the WAN emulator's delay and cut on
socket pairs standing for its TUN devices."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import pytest

from statestore import lab_etcd, lab_sites, lab_wan
from statestore.lab import Lab, Paths
from statestore.lab_process import LabError


def test_site_i_runs_at_its_address_in_its_namespace_with_its_egress_delay():
    sites = lab_sites.plan(3, "blf")
    assert [(s.name, s.netns, s.address, s.delay_ms, s.instance) for s in sites] == [
        ("s1", "blf-s1", "198.18.77.1", 10, "ks1"),
        ("s2", "blf-s2", "198.18.77.2", 15, "ks2"),
        ("s3", "blf-s3", "198.18.77.3", 20, "ks3"),
    ]
    assert lab_sites.HOST_ADDRESS == "198.18.77.254" and lab_sites.bridge("blf") == "blf-br"


def test_every_round_trip_between_two_sites_is_20_to_50_ms():
    sites = lab_sites.plan(lab_sites.MAX_SITES)
    trips = [lab_sites.round_trip_ms(a, b) for a in sites for b in sites if a != b]
    assert min(trips) >= 20 and max(trips) <= 50
    assert [lab_sites.round_trip_ms(*pair) for pair in ((sites[0], sites[1]), (sites[0], sites[2]),
                                                         (sites[1], sites[2]))] == [25, 30, 35]


@pytest.mark.parametrize("count", [0, lab_sites.MAX_SITES + 1])
def test_a_site_count_out_of_range_is_refused(count):
    with pytest.raises(LabError, match="--sites"):
        lab_sites.plan(count)


@pytest.mark.parametrize(("value", "ok"), [("blf", True), ("h3-t", True), ("", False), ("a" * 11, False),
                                          ("a b", False), ("x/y", False)])
def test_the_namespace_prefix_fits_interface_names(value, ok):
    if ok:
        assert lab_sites.prefix_of({lab_sites.PREFIX_VARIABLE: value}) == value
        assert len(lab_sites.Site(9, value).host_link) <= 15
    else:
        with pytest.raises(LabError):
            lab_sites.prefix_of({lab_sites.PREFIX_VARIABLE: value})


def test_the_network_puts_each_site_on_the_bridge_with_a_route_to_the_host_only():
    sites = lab_sites.plan(2, "t")
    commands = [" ".join(command) for command in lab_sites.network_commands(sites)]
    assert commands[:3] == [
        "ip link add t-br type bridge", "ip addr add 198.18.77.254/24 dev t-br", "ip link set t-br up",
    ]
    assert "ip link add t-s1 type veth peer name eth0 netns t-s1" in commands
    assert "ip link set t-s2 master t-br up" in commands
    assert "ip -n t-s2 addr add 198.18.77.2/32 dev eth0" in commands
    routes = [command for command in commands if " route " in command]
    # Only the host is reached over the bridge: another site only through wan0 (delayed).
    assert routes == [f"ip -n t-s{i} route add 198.18.77.254/32 dev eth0 src 198.18.77.{i}" for i in (1, 2)]


def test_every_other_site_is_routed_through_the_site_wan_device():
    commands = [" ".join(command) for command in lab_sites.wan_commands(lab_sites.plan(3, "t"))]
    assert "ip -n t-s1 route add 198.18.77.2/32 dev wan0 src 198.18.77.1" in commands
    assert "ip -n t-s3 route add 198.18.77.1/32 dev wan0 src 198.18.77.3" in commands
    assert not any("t-s2 route add 198.18.77.2/32" in command for command in commands)
    assert len([c for c in commands if " route " in c]) == 6 and len([c for c in commands if "up" in c]) == 3


def test_down_removes_links_and_bridge_before_the_namespaces():
    commands = [" ".join(command) for command in lab_sites.teardown_commands(lab_sites.plan(2, "t"))]
    assert commands == ["ip link del t-s1", "ip link del t-s2", "ip link del t-br",
                        "ip netns del t-s1", "ip netns del t-s2"]


def test_members_of_a_lab_with_sites_listen_on_their_site_address():
    hosts = [site.address for site in lab_sites.plan(3)]
    zones = lab_etcd.layout(2, 3, hosts)
    assert [member.client for member in zones["z2"]] == ["198.18.77.1:2479", "198.18.77.2:2489", "198.18.77.3:2499"]
    assert zones["z1"][0].peer == "198.18.77.1:2380"
    with pytest.raises(LabError, match="--sites is the number of members"):
        lab_etcd.layout(1, 3, hosts[:2])


def test_a_lab_with_sites_names_its_members_on_their_sites(tmp_path):
    lab = Lab(Paths(tmp_path))
    lab.state["layout"] = {"zones": 1, "etcd_members": 3, "sites": 3}
    lab.state["sites"]["prefix"] = "t"
    assert [site.netns for site in lab.sites()] == ["t-s1", "t-s2", "t-s3"]
    assert lab.zones() == {"z1": ["198.18.77.1:2379", "198.18.77.2:2389", "198.18.77.3:2399"]}
    assert lab._lab_member(lab_etcd.Member(1, 2)).client == "198.18.77.2:2389"
    with pytest.raises(LabError, match="3 sites: no ks4"):
        lab.start("ks4")
    with pytest.raises(LabError, match="links between sites are not up"):
        lab.cut("s2")


def test_status_says_what_runs_at_each_site_and_its_round_trips():
    sites = lab_sites.plan(2, "t")
    shown = lab_sites.status(sites, ["s2"], {"s1": ["ks1", "z1-etcd1"]})
    assert shown["s1"] == {"namespace": "t-s1", "address": "198.18.77.1", "delay_ms": 10, "cut": False,
                           "runs": ["ks1", "z1-etcd1"], "round_trip_ms": {"s2": 25}}
    assert shown["s2"]["cut"] and shown["s2"]["runs"] == []


def _packet(source: str, target: str, payload: bytes = b"x") -> bytes:
    """A minimal IPv4 header (only version and addresses are read) and a payload."""
    return bytes([0x45]) + bytes(11) + socket.inet_aton(source) + socket.inet_aton(target) + payload


def test_the_wan_reads_an_ipv4_destination_and_ignores_anything_else():
    assert lab_wan.destination(_packet("198.18.77.1", "198.18.77.2")) == "198.18.77.2"
    assert lab_wan.destination(bytes([0x60]) + bytes(39)) is None  # IPv6
    assert lab_wan.destination(b"\x45") is None


def _wan(tmp_path: Path, cut: list[str]) -> tuple[lab_wan.Wan, dict[str, socket.socket]]:
    """A WAN of three sites whose TUN devices are socket pairs: the test holds the far ends."""
    sites = lab_sites.plan(3, "t")
    config = tmp_path / "wan.json"
    config.write_text(json.dumps(lab_sites.wan_config(sites, cut)))
    wan = lab_wan.Wan(config, lab_wan.links_of(json.loads(config.read_text())))
    wan.load_cut()
    far = {}
    for link in wan.links:
        near, far[link.name] = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        near.setblocking(False)
        far[link.name].setblocking(False)
        wan.fds[link.name] = near.detach()
    return wan, far


def _exchange(wan: lab_wan.Wan, far: dict[str, socket.socket], sends: list[tuple[str, bytes]],
              seconds: float) -> dict[str, list[tuple[bytes, float]]]:
    """Send each (site, packet) into the WAN from that site; what each site got, and when."""
    got: dict[str, list[tuple[bytes, float]]] = {name: [] for name in far}

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for link in wan.links:
            loop.add_reader(wan.fds[link.name], wan.received, loop, link)
            loop.add_reader(far[link.name].fileno(),
                            lambda name=link.name: got[name].append((far[name].recv(65535), time.monotonic())))
        for name, packet in sends:
            far[name].send(packet)
        await asyncio.sleep(seconds)

    started = time.monotonic()
    asyncio.run(run())
    return {name: [(packet, at - started) for packet, at in packets] for name, packets in got.items()}


def test_the_wan_delays_a_packet_by_its_source_site_egress_delay_and_keeps_order(tmp_path):
    wan, far = _wan(tmp_path, [])
    sends = [("s1", _packet("198.18.77.1", "198.18.77.2", b"a")), ("s1", _packet("198.18.77.1", "198.18.77.2", b"b")),
             ("s3", _packet("198.18.77.3", "198.18.77.1", b"c")), ("s2", _packet("198.18.77.2", "198.18.77.254"))]
    got = _exchange(wan, far, sends, 0.1)
    assert [packet[-1:] for packet, _ in got["s2"]] == [b"a", b"b"]
    assert all(0.010 <= at < 0.05 for _, at in got["s2"])  # s1's 10 ms
    assert [packet[-1:] for packet, _ in got["s1"]] == [b"c"] and got["s1"][0][1] >= 0.020  # s3's 20 ms
    assert got["s3"] == []  # the host is not behind the WAN: nothing goes there


def test_a_cut_site_exchanges_nothing_with_the_others_which_still_talk(tmp_path):
    wan, far = _wan(tmp_path, ["s3"])
    sends = [("s1", _packet("198.18.77.1", "198.18.77.3")), ("s3", _packet("198.18.77.3", "198.18.77.2")),
             ("s2", _packet("198.18.77.2", "198.18.77.1", b"z"))]
    got = _exchange(wan, far, sends, 0.06)
    assert got["s3"] == [] and got["s2"] == []
    assert [packet[-1:] for packet, _ in got["s1"]] == [b"z"]


def test_a_site_is_entered_through_a_process_of_its_own_when_its_name_is_not_mounted_here(tmp_path, monkeypatch):
    monkeypatch.setattr(lab_sites, "NETNS_DIR", tmp_path)
    site = lab_sites.Site(1, "t")
    (tmp_path / "t-s1").write_text("")  # what another mount namespace's `ip netns add` leaves here
    assert lab_sites.netns_path(site, None) == str(tmp_path / "t-s1")
    assert lab_sites.netns_path(site, os.getpid()) == f"/proc/{os.getpid()}/ns/net"
