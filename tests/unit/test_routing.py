"""Routing decisions: NAT detection, route tokens, flow routes, how a phone is reached."""

from __future__ import annotations

import pytest

from statestore.domain.routing import (
    Address,
    behind_nat,
    contact_address,
    flow_of,
    flow_route,
    parse_route,
    reach,
    record_route_params,
    sent_by_its_party,
    valid_dialog_route,
    valid_flow_route,
)

SECRET = "s3cret"
INSTANCES = {"ks1": "10.0.0.1:5060", "ks2": "10.0.0.2:5060"}


def our_route(
    call_id: str = "c1", ftag: str = "ft", tf: str = "udp:1.2.3.4:5060", cf: str = "tcp:5.6.7.8:40000"
) -> str:
    params = record_route_params(SECRET, call_id, ftag, tf, cf)
    return f"<sip:10.0.0.1:5060;lr;ftag={ftag}{params};did=1a.2b>"


def test_address_round_trips_and_knows_connections():
    address = Address.parse("tcp:1.2.3.4:5555")
    assert address == Address("tcp", "1.2.3.4", 5555)
    assert str(address) == "tcp:1.2.3.4:5555" and address.connection_oriented
    assert address.sip_uri() == "sip:1.2.3.4:5555;transport=tcp"
    assert Address("udp", "1.2.3.4", 5).sip_uri() == "sip:1.2.3.4:5"
    assert Address.parse("garbage") is None and Address.parse("udp:host:port") is None


def test_contact_address_follows_rfc_3261_defaults():
    assert contact_address("sip:a@1.2.3.4") == Address("udp", "1.2.3.4", 5060)
    assert contact_address("sip:a@1.2.3.4:7;transport=TCP") == Address("tcp", "1.2.3.4", 7)
    assert contact_address("sips:a@host.example") == Address("tls", "host.example", 5061)
    assert contact_address("sip:a@[2001:db8::1]:5080") == Address("udp", "2001:db8::1", 5080)


def test_nat_is_seen_from_via_and_private_contacts():
    assert not behind_nat("sip:a@1.2.3.4:5060", "1.2.3.4", 5060, "1.2.3.4", 5060)
    assert not behind_nat("sip:a@1.2.3.4", "1.2.3.4", None, "1.2.3.4", 5060)
    assert behind_nat("sip:a@192.168.1.5:5060", "192.168.1.5", 5060, "1.2.3.4", 40000)
    assert behind_nat("sip:a@1.2.3.4:5060", "1.2.3.4", 5060, "1.2.3.4", 40000)
    assert behind_nat("sip:a@10.1.1.1:5060", "1.2.3.4", 5060, "1.2.3.4", 5060)
    assert behind_nat("sip:a@100.64.0.9", "1.2.3.4", 5060, "1.2.3.4", 5060)


def test_our_record_route_is_valid_for_its_dialog_only_in_either_direction():
    entry = parse_route(our_route())
    assert entry is not None and entry.loose
    assert valid_dialog_route(entry, SECRET, "c1", "ft", "tt")
    assert valid_dialog_route(entry, SECRET, "c1", "tt", "ft"), "requests from the callee swap the tags"
    assert not valid_dialog_route(entry, SECRET, "c2", "ft", "tt"), "another Call-ID"
    assert not valid_dialog_route(entry, SECRET, "c1", "xx", "yy"), "tags of another dialog"
    assert not valid_dialog_route(entry, "other", "c1", "ft", "tt"), "another cluster's secret"


def test_a_route_with_changed_flows_loses_its_validity():
    tampered = our_route().replace("tf=udp:1.2.3.4:5060", "tf=udp:6.6.6.6:5060")
    entry = parse_route(tampered)
    assert entry is not None and not valid_dialog_route(entry, SECRET, "c1", "ft", "tt")


def test_flow_of_goes_to_the_callee_from_the_caller_and_back():
    entry = parse_route(our_route())
    assert entry is not None
    assert flow_of(entry, "ft") == Address("udp", "1.2.3.4", 5060)
    assert flow_of(entry, "tt") == Address("tcp", "5.6.7.8", 40000)


@pytest.mark.parametrize(
    ("from_tag", "source", "expected"),
    [
        ("tt", "udp:1.2.3.4:5060", True),  # the callee, from its flow
        ("ft", "tcp:5.6.7.8:40000", True),  # the caller, on its connection
        ("ft", "tcp:5.6.7.8:40123", True),  # the caller on a new connection from the same host
        ("tt", "udp:1.2.3.4:5070", False),  # another port of the callee's host on UDP
        ("tt", "udp:6.6.6.6:5060", False),  # someone else holding the route set
        ("ft", "udp:1.2.3.4:5060", False),  # the callee's address, but the caller's tag
        ("ft", "tcp:6.6.6.6:40000", False),
    ],
)
def test_an_in_dialog_request_must_come_from_the_flow_of_its_sender(from_tag: str, source: str, expected: bool) -> None:
    entry = parse_route(our_route())
    sender = Address.parse(source)
    assert entry is not None and sender is not None
    assert sent_by_its_party(entry, from_tag, sender) is expected


def test_a_route_without_recorded_flows_is_not_checked_for_its_sender() -> None:
    entry = parse_route(our_route(tf="", cf=""))
    assert entry is not None and sent_by_its_party(entry, "tt", Address("udp", "6.6.6.6", 5060))


def test_flow_routes_are_signed_per_call():
    flow = Address("tcp", "1.2.3.4", 40000)
    entry = parse_route(flow_route(SECRET, "10.0.0.1:5060", flow, "c1"))
    assert entry is not None and (entry.host, entry.port) == ("10.0.0.1", 5060)
    assert valid_flow_route(entry, SECRET, "c1") == flow
    assert valid_flow_route(entry, SECRET, "c2") is None
    forged = parse_route("<sip:10.0.0.1:5060;lr;flow=udp:6.6.6.6:5060;fsig=00000000000000000000>")
    assert forged is not None and valid_flow_route(forged, SECRET, "c1") is None


def test_parse_route_refuses_what_is_not_a_uri():
    assert parse_route("<sip:10.0.0.1;lr") is None
    assert parse_route("nonsense") is None


def test_a_public_udp_phone_is_reached_at_its_contact():
    found = reach("sip:a@1.2.3.4:5070", "udp:1.2.3.4:5070", "ks2", False, "ks1", INSTANCES, SECRET, "c1")
    assert found is not None and found.dst == "" and found.route == "" and found.flow == "udp:1.2.3.4:5070"


def test_a_phone_on_our_connection_is_reached_over_it():
    found = reach("sip:a@192.168.0.9:5060;transport=tcp", "tcp:1.2.3.4:40000", "ks1", True, "ks1",
                  INSTANCES, SECRET, "c1")
    assert found is not None and found.dst == "sip:1.2.3.4:40000;transport=tcp" and found.route == ""


def test_a_phone_on_another_instances_flow_is_reached_through_it():
    found = reach("sip:a@192.168.0.9:5060", "udp:1.2.3.4:40000", "ks2", True, "ks1", INSTANCES, SECRET, "c1")
    assert found is not None and found.dst == "sip:10.0.0.2:5060"
    entry = parse_route(found.route)
    assert entry is not None and valid_flow_route(entry, SECRET, "c1") == Address("udp", "1.2.3.4", 40000)


def test_a_connection_whose_instance_is_gone_cannot_be_reached_but_a_pinhole_is_tried():
    assert reach("sip:a@h;transport=tcp", "tcp:1.2.3.4:40000", "ks9", True, "ks1", INSTANCES, SECRET, "c") is None
    found = reach("sip:a@192.168.0.9", "udp:1.2.3.4:40000", "ks9", True, "ks1", INSTANCES, SECRET, "c")
    assert found is not None and found.dst == "sip:1.2.3.4:40000"
