"""Routing decisions: NAT detection, route tokens, flow routes, how a phone is reached."""

from __future__ import annotations

import pytest

from statestore.domain.routing import (
    DIALOG_LIFETIME,
    Address,
    behind_nat,
    contact_address,
    flow_gone,
    flow_of,
    flow_route,
    parse_route,
    proven_instance,
    reach,
    record_route_params,
    sent_by_its_party,
    tracks_dialog,
    valid_dialog_route,
    valid_flow_route,
)

SECRET = "s3cret"
INSTANCES = {"ks1": "10.0.0.1:5060", "ks2": "10.0.0.2:5060"}


NOW = 1_700_000_000.0
STARTED = int(NOW) - 60


def our_route(
    call_id: str = "c1", ftag: str = "ft", tf: str = "udp:1.2.3.4:5060", cf: str = "tcp:5.6.7.8:40000",
    me: str = "10.0.0.1:5060", boot: str = "", before: str = ";lr", after: str = ";did=1a.2b",
    transports: tuple[str, ...] = ("udp",),
) -> str:
    """Our entry as Kamailio writes it: rr's lr and ftag before our parameters, did after."""
    params = record_route_params(SECRET, me, call_id, ftag, tf, cf, STARTED, boot, transports)
    return f"<sip:{me}{before};ftag={ftag}{params}{after}>"


def valid(text: str, from_tag: str = "ft", to_tag: str = "tt", now: float = NOW) -> bool:
    entry = parse_route(text)
    return entry is not None and valid_dialog_route(entry, SECRET, "c1", from_tag, to_tag, now)


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
    assert valid_dialog_route(entry, SECRET, "c1", "ft", "tt", NOW)
    assert valid_dialog_route(entry, SECRET, "c1", "tt", "ft", NOW), "requests from the callee swap the tags"
    assert not valid_dialog_route(entry, SECRET, "c2", "ft", "tt", NOW), "another Call-ID"
    assert not valid_dialog_route(entry, SECRET, "c1", "xx", "yy", NOW), "tags of another dialog"
    assert not valid_dialog_route(entry, "other", "c1", "ft", "tt", NOW), "another cluster's secret"


REWRITES = [
    ("another flow", "tf=udp:1.2.3.4:5060", "tf=udp:6.6.6.6:5060"),
    ("another host", "sip:10.0.0.1:5060", "sip:6.6.6.6:5060"),
    ("another port", "sip:10.0.0.1:5060", "sip:10.0.0.1:5099"),
    ("the port left out", "sip:10.0.0.1:5060", "sip:10.0.0.1"),  # 5060 all the same: still ours
    ("a host name", "sip:10.0.0.1:5060", "sip:victim.example:5060"),
    ("maddr added", ";did=1a.2b", ";did=1a.2b;maddr=6.6.6.6"),
    ("a parameter of its own", ";did=1a.2b", ";did=1a.2b;x=1"),
    ("a bad transport", ";lr", ";lr;transport=udp6"),
    ("a did that is not one", ";did=1a.2b", ";did=6.6.6.6:5060"),
    ("the start moved", f";st={STARTED}", f";st={STARTED + 1}"),
    ("the start dropped", f";st={STARTED}", ""),
    ("a boot added", f";st={STARTED}", f";st={STARTED};bt=1"),
    ("the token cut", ";blf=", ";blf=0"),
    ("another transport", ";lr", ";lr;transport=tcp"),  # the call's sides are both UDP
    ("the transports widened", ";tp=udp", ";tp=tcp.udp"),
]


@pytest.mark.parametrize(("name", "old", "new"), REWRITES, ids=[name for name, _, _ in REWRITES])
def test_an_entry_rewritten_in_any_part_is_not_ours(name: str, old: str, new: str) -> None:
    text = our_route()
    assert old in text and valid(text)
    assert valid(text.replace(old, new)) is (name == "the port left out"), name


def test_what_kamailio_adds_keeps_an_entry_valid():
    """rr's double Record-Route (transport=, r2=on) when the sides' transports differ, lr=on,
    no did (not the tracking instance)."""
    both = ("TCP", "udp")
    assert valid(our_route(before=";transport=tcp;r2=on;lr", transports=both))
    assert valid(our_route(before=";r2=on;lr=on", after="", transports=both))
    assert not valid(our_route(before=";transport=tls;r2=on;lr", transports=both)), "not a transport of the call"
    assert valid(our_route(boot="1700000000000"))


def test_a_route_set_dies_with_the_longest_dialog():
    text = our_route()
    assert valid(text, now=STARTED + DIALOG_LIFETIME - 1)
    assert not valid(text, now=STARTED + DIALOG_LIFETIME)


def test_only_the_entry_of_this_boot_of_the_tracking_instance_requires_a_live_dialog():
    tracking, relaying = parse_route(our_route(boot="42")), parse_route(our_route())
    assert tracking is not None and relaying is not None
    assert tracks_dialog(tracking, "42")
    assert not tracks_dialog(tracking, "43"), "a restarted instance routes the older boot's dialogs"
    assert not tracks_dialog(relaying, "42")


@pytest.mark.parametrize(
    ("me", "expected"),
    [("10.0.0.2:5060", True), ("10.0.0.2", True), ("10.0.0.9:5060", False), ("10.0.0.2:5061", False)],
)
def test_the_next_hop_is_ours_only_when_a_live_instance_has_its_address(me: str, expected: bool) -> None:
    entry = parse_route(our_route(me=me))
    assert entry is not None and proven_instance(entry, INSTANCES) is expected


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
        ("ft", "tcp:5.6.7.8:40123", False),  # another connection from the caller's host (its NAT)
        ("ft", "udp:5.6.7.8:40000", False),  # the caller's address and port, but over UDP
        ("tt", "tcp:1.2.3.4:5060", False),  # the callee's address and port, but over TCP
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


@pytest.mark.parametrize(
    ("received", "registered_at", "holder_boot", "gone"),
    [
        ("tcp:1.2.3.4:40000", 100.0, 200.0, True),  # registered before its holder restarted
        ("tcp:1.2.3.4:40000", 300.0, 200.0, False),  # registered on the holder's current run
        ("tls:1.2.3.4:40000", 100.0, 200.0, True),
        ("udp:1.2.3.4:40000", 100.0, 200.0, False),  # a NAT pinhole outlives an instance
        ("tcp:1.2.3.4:40000", 0.0, 200.0, False),  # written before the time was recorded
        ("tcp:1.2.3.4:40000", 100.0, None, False),  # holder's start unknown (reach decides)
        ("", 100.0, 200.0, False),
    ],
)
def test_a_connection_registered_before_its_holder_started_is_gone(
    received: str, registered_at: float, holder_boot: float | None, gone: bool
) -> None:
    assert flow_gone(received, registered_at, holder_boot) is gone
