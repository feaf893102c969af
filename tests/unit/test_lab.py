"""The lab's guards: instance names, busy ports, PIDs that are no longer the lab's; its etcd
members' names, ports, command lines and layout."""

from __future__ import annotations

import os
import socket

import pytest

from statestore import lab_etcd
from statestore.lab import Lab, LabError, Paths, instance_port
from statestore.lab_etcd import Member, member_named
from statestore.lab_kamailio import FULL_CONFIG, kamailio_command, kamailio_environment
from statestore.lab_process import alive
from statestore.lab_process import require_free as _require_free


@pytest.mark.parametrize(("name", "port"), [("ks1", 5071), ("ks2", 5072), ("ks12", 5082)])
def test_instance_n_listens_on_5070_plus_n(name, port):
    assert instance_port(name) == port


@pytest.mark.parametrize("name", ["ks0", "ks", "node1", "ksx"])
def test_other_instance_names_are_refused(name):
    with pytest.raises(LabError):
        instance_port(name)


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_a_port_someone_holds_is_refused_with_a_clear_error(kind):
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(LabError, match=f"127.0.0.1:{port} is in use"):
            _require_free("etcd", f"127.0.0.1:{port}", kind)


def test_a_pid_that_is_not_a_lab_program_is_not_alive():
    assert not alive(os.getpid())  # this is python, not kamailio/etcd/memcached
    assert not alive(None) and not alive(0)


def test_instances_find_debian_python_first_whoever_starts_them():
    """A caller under pyenv or conda puts its Python's bin/ first and may set PYTHONHOME
    (issue 6, finding 7): the embedded interpreter would take that prefix for its own."""
    caller = {"PATH": "/root/.pyenv/versions/3.11.7/bin:/usr/local/bin:/usr/bin:/bin", "PYTHONHOME": "/opt/conda",
              "BLF_ETCD": "127.0.0.1:2379"}
    env = kamailio_environment(caller)
    assert env["PATH"] == "/usr/bin:/bin:/root/.pyenv/versions/3.11.7/bin:/usr/local/bin"
    assert "PYTHONHOME" not in env and env["BLF_ETCD"] == "127.0.0.1:2379"
    assert kamailio_environment({})["PATH"] == "/usr/bin:/bin"


# --- zones of etcd members (issue 14) ---------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "client", "peer", "metrics"),
    [
        ("z1-etcd1", 2379, 2380, 2381),  # the single-member lab's ports, unchanged
        ("z1-etcd2", 2389, 2390, 2391),
        ("z1-etcd3", 2399, 2400, 2401),
        ("z2-etcd1", 2479, 2480, 2481),
        ("z3-etcd3", 2599, 2600, 2601),
    ],
)
def test_member_m_of_zone_k_listens_on_2379_plus_100k_plus_10m(name, client, peer, metrics):
    member = member_named(name)
    assert member is not None and member.name == name
    assert (member.client, member.peer, member.metrics) == (
        f"127.0.0.1:{client}", f"127.0.0.1:{peer}", f"127.0.0.1:{metrics}",
    )


def test_no_two_members_of_the_largest_lab_share_a_port():
    members = [member for members in lab_etcd.layout(lab_etcd.MAX_ZONES, 3).values() for member in members]
    ports = [member.client_port + offset for member in members for offset in (0, 1, 2)]
    assert len(ports) == len(set(ports)) and 11211 not in ports and max(ports) < 5071


@pytest.mark.parametrize("name", ["ks1", "z0-etcd1", "z1-etcd0", "z1-etcd", "etcd", "z1-etcd1x", "z10-etcd1"])
def test_other_names_are_not_members(name):
    assert member_named(name) is None


def test_layout_is_zones_of_one_or_three_members_named_uniquely():
    assert {zone: [m.name for m in members] for zone, members in lab_etcd.layout(2, 3).items()} == {
        "z1": ["z1-etcd1", "z1-etcd2", "z1-etcd3"], "z2": ["z2-etcd1", "z2-etcd2", "z2-etcd3"],
    }
    for zones, members in ((1, 2), (0, 1), (lab_etcd.MAX_ZONES + 1, 1), (1, 5)):
        with pytest.raises(LabError):
            lab_etcd.layout(zones, members)


def test_a_member_bootstraps_its_zone_once_then_rejoins_with_its_data(tmp_path):
    cluster = lab_etcd.layout(2, 3)["z2"]
    data = tmp_path / "data"
    command = lab_etcd.command("etcd", cluster[1], cluster, data)
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    assert flags["--name"] == "z2-etcd2" and flags["--data-dir"] == str(data)
    assert flags["--initial-cluster"] == (
        "z2-etcd1=http://127.0.0.1:2480,z2-etcd2=http://127.0.0.1:2490,z2-etcd3=http://127.0.0.1:2500"
    )
    assert flags["--initial-cluster-token"] == "blf-z2"  # a zone's members never join another zone's
    assert flags["--initial-cluster-state"] == "new"
    (data / "member").mkdir(parents=True)
    rejoin = lab_etcd.command("etcd", cluster[1], cluster, data)
    assert dict(zip(rejoin[1::2], rejoin[2::2], strict=False))["--initial-cluster-state"] == "existing"


def test_a_lab_keeps_its_layout_while_its_members_have_data(tmp_path):
    lab = Lab(Paths(tmp_path))
    lab._set_layout(2, 3)  # a new lab takes any layout
    assert lab.state["layout"] == {"zones": 2, "etcd_members": 3, "sites": 0}
    lab._set_layout(None, None)  # no flags: the lab's own
    assert list(lab.zones()) == ["z1", "z2"] and lab.zones()["z1"][1] == "127.0.0.1:2389"
    (tmp_path / "z1-etcd1" / "data").mkdir(parents=True)
    with pytest.raises(LabError, match="holds a store of 2 zone"):
        lab._set_layout(1, 1)


def test_commands_name_instances_or_members_of_the_lab(tmp_path):
    lab = Lab(Paths(tmp_path))
    with pytest.raises(LabError, match="z1-etcd1 is not running"):
        lab.kill("z1-etcd1")
    with pytest.raises(LabError, match="no member z1-etcd3 in this lab"):
        lab.pause("z1-etcd3")
    with pytest.raises(LabError, match="instance names are ks1"):
        lab.resume("etcd")
    with pytest.raises(LabError, match="ks1 has no store link"):
        lab.cut("ks1")
    assert Member(1, 1) in lab.layout()["z1"]


def test_an_instance_runs_the_full_or_the_dropin_configuration(tmp_path):
    lab = Lab(Paths(tmp_path))
    assert lab._config_file("ks1", "full") == FULL_CONFIG
    built = lab._config_file("ks2", "dropin")
    assert built == tmp_path / "ks2" / "config" / "kamailio.cfg"
    for name in ("blf.cfg", "blf-core.cfg", "blf-metrics.cfg"):
        assert (built.parent / name).read_text() == (FULL_CONFIG.parent / name).read_text()
    assert 'include_file "blf.cfg"' in built.read_text().splitlines()
    assert kamailio_command(tmp_path, "127.0.0.1", 5072, built)[1:3] == ["-f", str(built)]
    with pytest.raises(LabError, match="no configuration 'native'"):
        lab.up(config="native")
