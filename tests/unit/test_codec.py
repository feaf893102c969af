"""Store values: JSON round trips, and leg values that etcd orders by version bytewise."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.codec import (
    decode,
    decode_binding,
    decode_change,
    decode_leg,
    decode_subscription,
    encode,
    encode_binding,
    encode_change,
    encode_leg,
    encode_subscription,
)
from statestore.domain.legs import RANK, SEQUENCE_WIDTH, CallParties, Ending, LegChange, order_of
from statestore.domain.model import Binding, Direction, Leg, LegState, Party, Subscription, TerminationEvent

MAX_VERSION = 10**SEQUENCE_WIDTH - 1  # the widest write counter the fixed-width prefix holds

LEG = Leg(
    account="alice@example.com",
    instance="node-a",
    leg_id="0123456789abcdef",
    version=3,
    state=LegState.EARLY,
    direction=Direction.RECIPIENT,
    call_id="call-1@10.0.0.1",
    local_tag="ltag",
    remote_tag="rtag",
    local=Party("sip:alice@example.com", "Alice", "sip:alice@10.0.0.1"),
    remote=Party("sip:bob@example.com", "Bob \u00e9", ""),
)
BINDING = Binding(
    account="alice@example.com",
    contact="sip:alice@10.0.0.1:5060;transport=tcp",
    expires_at=1_000_300.5,
    call_id="reg-1",
    cseq=12,
    q=0.5,
    instance="node-a",
    received="10.0.0.1:5060",
)
SUBSCRIPTION = Subscription(
    sub_id="sub-1",
    event="dialog",
    presentity="alice@example.com",
    entity="sip:alice@example.com",
    watcher="bob@example.com",
    watcher_contact="sip:bob@10.0.0.2",
    call_id="sub-call",
    local_tag="ltag",
    remote_tag="rtag",
    local_uri="sip:alice@example.com",
    remote_uri="sip:bob@example.com",
    route_set=("<sip:p1;lr>", "<sip:p2;lr>"),
    expires_at=1_000_300.0,
    owner="node-a",
    cseq=3,
    version=2,
    last_digest="abcd",
    notify_timeouts=1,
    accept=("application/dialog-info+xml",),
)


# --- generic values ---------------------------------------------------------------------------


def test_encode_is_compact_and_sorted() -> None:
    assert encode({"b": 1, "a": [1, "x"]}) == b'{"a":[1,"x"],"b":1}'


@pytest.mark.parametrize("raw", [b'{"a":1}', '{"a":1}'])
def test_decode_takes_bytes_or_text(raw: bytes | str) -> None:
    assert decode(raw) == {"a": 1}


@pytest.mark.parametrize("raw", [b"[1]", b"1", b'"x"', b"null"])
def test_decode_refuses_anything_but_an_object(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not an object"):
        decode(raw)


# --- legs -------------------------------------------------------------------------------------


def test_leg_round_trip() -> None:
    assert decode_leg(encode_leg(LEG)) == LEG


def test_leg_value_starts_with_its_state_rank_and_write_counter() -> None:
    raw = encode_leg(replace(LEG, version=42))
    assert raw.startswith(b'{"v":"2.0000000042",')
    assert json.loads(raw)["version"] == 42


def test_leg_value_is_plain_json_of_the_leg() -> None:
    data = json.loads(encode_leg(LEG))
    assert data.pop("v") == order_of(LEG)
    assert data == LEG.to_dict()


def test_terminated_leg_round_trips_with_its_event_and_code() -> None:
    ended = replace(LEG, state=LegState.TERMINATED, event=TerminationEvent.REJECTED, code=486)
    assert decode_leg(encode_leg(ended)) == ended
    assert json.loads(encode_leg(ended))["event"] == "rejected"


def test_leg_from_a_newer_version_with_unknown_fields_and_event_is_read() -> None:
    data = json.loads(encode_leg(LEG))
    data.update(flavour="new", event="transferred", local={**data["local"], "extra": 1})
    assert decode_leg(json.dumps(data)) == LEG


party_strategy = st.builds(Party, st.text(max_size=8), st.text(max_size=8), st.text(max_size=8))
leg_strategy = st.builds(
    Leg,
    account=st.text(max_size=12),
    instance=st.text(max_size=6),
    leg_id=st.text(max_size=16),
    version=st.integers(min_value=0, max_value=MAX_VERSION),
    state=st.sampled_from(LegState),
    direction=st.sampled_from(Direction),
    call_id=st.text(max_size=12),
    local_tag=st.text(max_size=6),
    remote_tag=st.text(max_size=6),
    local=party_strategy,
    remote=party_strategy,
    event=st.none() | st.sampled_from(TerminationEvent),
    code=st.integers(min_value=0, max_value=699),
)


@given(leg_strategy)
def test_any_leg_round_trips(leg: Leg) -> None:
    assert decode_leg(encode_leg(leg)) == leg


@given(
    leg=leg_strategy,
    versions=st.lists(st.integers(min_value=0, max_value=MAX_VERSION), min_size=2, max_size=2),
    states=st.lists(st.sampled_from(LegState), min_size=2, max_size=2),
    later_tag=st.text(max_size=6),
)
def test_a_later_state_or_write_of_a_leg_sorts_higher_bytewise(
    leg: Leg, versions: list[int], states: list[LegState], later_tag: str
) -> None:
    # etcd's transaction compares the stored value with the new one as bytes (write_legs):
    # the state's rank decides, whatever the counters; the counter breaks ties.
    old = replace(leg, version=versions[0], state=states[0])
    new = replace(leg, version=versions[1], state=states[1], remote_tag=later_tag)
    if (RANK[states[0]], versions[0]) < (RANK[states[1]], versions[1]):
        assert encode_leg(old) < encode_leg(new)
    elif (RANK[states[0]], versions[0]) > (RANK[states[1]], versions[1]):
        assert encode_leg(old) > encode_leg(new)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        (replace(LEG, version=9), replace(LEG, version=10)),
        (replace(LEG, version=MAX_VERSION - 1), replace(LEG, version=MAX_VERSION)),
        (replace(LEG, version=99, state=LegState.EARLY), replace(LEG, version=0, state=LegState.CONFIRMED)),
        (replace(LEG, version=9, state=LegState.CONFIRMED), replace(LEG, version=1, state=LegState.TERMINATED)),
    ],
    ids=["counter-digits", "widest-counter", "confirmed-beats-early", "terminated-beats-all"],
)
def test_leg_ordering(older: Leg, newer: Leg) -> None:
    assert encode_leg(older) < encode_leg(newer)


# --- bindings and subscriptions ---------------------------------------------------------------


def test_binding_round_trip() -> None:
    assert decode_binding(encode_binding(BINDING)) == BINDING


def test_binding_with_defaults_round_trips() -> None:
    binding = Binding("alice@example.com", "sip:alice@h", 1.0, "c", 1)
    assert decode_binding(encode_binding(binding)) == binding


def test_subscription_round_trip() -> None:
    assert decode_subscription(encode_subscription(SUBSCRIPTION)) == SUBSCRIPTION


def test_subscription_round_trip_keeps_tuples() -> None:
    decoded = decode_subscription(encode_subscription(SUBSCRIPTION))
    assert (decoded.route_set, decoded.accept) == (("<sip:p1;lr>", "<sip:p2;lr>"), ("application/dialog-info+xml",))


def test_subscription_with_defaults_round_trips() -> None:
    fresh = replace(SUBSCRIPTION, route_set=(), accept=(), cseq=0, version=-1, last_digest="", notify_timeouts=0)
    assert decode_subscription(encode_subscription(fresh)) == fresh


def test_a_subscription_keeps_its_termination_reason_and_older_records_read_without_one() -> None:
    removed = replace(SUBSCRIPTION, termination_reason="noresource")
    assert decode_subscription(encode_subscription(removed)) == removed
    older = {k: v for k, v in SUBSCRIPTION.to_dict().items() if k != "termination_reason"}
    assert decode_subscription(encode(older)).termination_reason == ""


@given(
    route_set=st.lists(st.text(max_size=10), max_size=3).map(tuple),
    expires_at=st.floats(allow_nan=False, allow_infinity=False),
    cseq=st.integers(min_value=0, max_value=2**31),
    version=st.integers(min_value=-1, max_value=2**31),
    last_digest=st.text(max_size=16),
)
def test_any_subscription_round_trips(
    route_set: tuple[str, ...], expires_at: float, cseq: int, version: int, last_digest: str
) -> None:
    sub = replace(
        SUBSCRIPTION, route_set=route_set, expires_at=expires_at, cseq=cseq, version=version, last_digest=last_digest
    )
    assert decode_subscription(encode_subscription(sub)) == sub


# --- changes handed to the leg writer ---------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        LegChange(LegState.TRYING),
        LegChange(LegState.EARLY, "tt", "sip:b@h"),
        LegChange(LegState.TERMINATED, ending=Ending(TerminationEvent.REJECTED, 486)),
        LegChange(LegState.TERMINATED, ending=Ending(None)),
    ],
)
def test_a_change_round_trips_as_ascii(change: LegChange) -> None:
    parties = CallParties("c@h", "ft", "alice@example.com", "bob@example.com", "Al\u00efce", "", "sip:a@h")
    raw = encode_change(parties, change)
    assert raw.isascii()
    assert decode_change(raw) == (parties, change)
