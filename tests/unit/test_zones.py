"""BLF_ZONES: parsing, formatting, and where the zones come from when it is unset."""

from __future__ import annotations

import json

import pytest

from statestore.zones import configured_zones, format_zones, parse_endpoints, parse_zones

THREE = "127.0.0.1:2379,127.0.0.1:2389,127.0.0.1:2399"


@pytest.mark.parametrize(
    ("text", "zones"),
    [
        ("z1=127.0.0.1:2379", {"z1": ["127.0.0.1:2379"]}),
        (f"z1={THREE};z2=127.0.0.1:2479", {"z1": THREE.split(","), "z2": ["127.0.0.1:2479"]}),
        (" z2 = 10.0.0.1:2379 , 10.0.0.2:2379 ; z1=h:1;", {"z2": ["10.0.0.1:2379", "10.0.0.2:2379"], "z1": ["h:1"]}),
    ],
)
def test_zones_are_parsed_in_the_order_given(text, zones):
    parsed = parse_zones(text)
    assert parsed == zones and list(parsed) == list(zones)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" ; ", "empty"),
        ("127.0.0.1:2379", "expected ZONE="),
        ("=127.0.0.1:2379", "zone name ''"),
        ("z 1=127.0.0.1:2379", "zone name"),
        ("z1=", "zone z1: endpoint list"),
        ("z1=127.0.0.1", "zone z1: endpoint '127.0.0.1'"),
        ("z1=127.0.0.1:0", "port from 1 to 65535"),
        ("z1=127.0.0.1:99999", "port from 1 to 65535"),
        ("z1=:2379", "endpoint ':2379'"),
        ("z1=h:1,,h:2", "no empty entry"),
        ("z1=h:1,h:1", "listed twice"),
        ("z1=h:1;z1=h:2", "zone z1 is given twice"),
        ("z1=h:1;z2=h:1", "h:1 is in zones z1 and z2"),
    ],
)
def test_bad_zones_are_refused_with_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_zones(text)


def test_format_is_the_inverse_of_parse():
    text = f"z1={THREE};z2=127.0.0.1:2479,127.0.0.1:2489"
    assert format_zones(parse_zones(text)) == text
    assert parse_zones(format_zones({"b": ["h:2"], "a": ["h:1"]})) == {"b": ["h:2"], "a": ["h:1"]}


def test_an_endpoint_list_is_one_zones_members():
    assert parse_endpoints(THREE) == THREE.split(",")
    with pytest.raises(ValueError):
        parse_endpoints("h")


def _lab_state(tmp_path, zones):
    path = tmp_path / "lab.json"
    members = {
        zone: {"members": {f"{zone}-etcd{i + 1}": {"client": client, "pid": 1} for i, client in enumerate(clients)}}
        for zone, clients in zones.items()
    }
    path.write_text(json.dumps({"zones": members, "instances": {}}))
    return path


def test_blf_zones_wins_over_the_lab_and_blf_etcd(tmp_path):
    state = _lab_state(tmp_path, {"z1": ["127.0.0.1:2379"]})
    environ = {"BLF_ZONES": "z1=10.0.0.1:2379;z2=10.0.0.2:2379", "BLF_ETCD": "10.0.0.9:2379"}
    assert configured_zones(environ, state) == {"z1": ["10.0.0.1:2379"], "z2": ["10.0.0.2:2379"]}


def test_without_blf_zones_a_lab_that_is_up_gives_its_zones(tmp_path):
    state = _lab_state(tmp_path, {"z1": THREE.split(","), "z2": ["127.0.0.1:2479"]})
    assert configured_zones({"BLF_ETCD": "10.0.0.9:2379"}, state) == {
        "z1": THREE.split(","), "z2": ["127.0.0.1:2479"],
    }


def test_without_blf_zones_nor_a_lab_blf_etcd_is_zone_z1(tmp_path):
    down = _lab_state(tmp_path, {})
    assert configured_zones({"BLF_ETCD": THREE}, down) == {"z1": THREE.split(",")}
    assert configured_zones({}, tmp_path / "missing.json") == {"z1": ["127.0.0.1:2379"]}
    assert configured_zones({"BLF_ZONES": "  "}, None) == {"z1": ["127.0.0.1:2379"]}


def test_a_bad_blf_zones_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(ValueError, match="expected ZONE="):
        configured_zones({"BLF_ZONES": "127.0.0.1:2379"}, None)
