"""Store values: JSON round trips, and leg values that etcd orders by version bytewise."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.codec import (
    VERSION_WIDTH,
    decode,
    decode_binding,
    decode_leg,
    decode_subscription,
    encode,
    encode_binding,
    encode_leg,
    encode_subscription,
)
from statestore.domain.model import Binding, Direction, Leg, LegState, Party, Subscription

MAX_VERSION = 10**VERSION_WIDTH - 1  # the widest version the fixed-width prefix holds

LEG = Leg(
    account="alice@example.com",
    instance="node-a",
    leg_id="0123456789abcdef",
    version=1_700_000_000_123_456_789,
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


def test_leg_value_starts_with_its_fixed_width_version() -> None:
    raw = encode_leg(replace(LEG, version=42))
    assert raw.startswith(b'{"v":"00000000000000000042",')
    assert json.loads(raw)["v"] == "0" * (VERSION_WIDTH - 2) + "42"
    assert json.loads(raw)["version"] == 42


def test_leg_value_is_plain_json_of_the_leg() -> None:
    data = json.loads(encode_leg(LEG))
    assert data.pop("v") == f"{LEG.version:0{VERSION_WIDTH}d}"
    assert data == LEG.to_dict()


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
)


@given(leg_strategy)
def test_any_leg_round_trips(leg: Leg) -> None:
    assert decode_leg(encode_leg(leg)) == leg


@given(
    leg=leg_strategy,
    versions=st.lists(st.integers(min_value=0, max_value=MAX_VERSION), min_size=2, max_size=2, unique=True),
    later_state=st.sampled_from(LegState),
    later_tag=st.text(max_size=6),
)
def test_a_newer_version_of_a_leg_sorts_higher_bytewise(
    leg: Leg, versions: list[int], later_state: LegState, later_tag: str
) -> None:
    # etcd's transaction compares the stored value with the new one as bytes (update_legs).
    older, newer = sorted(versions)
    old = replace(leg, version=older)
    new = replace(leg, version=newer, state=later_state, remote_tag=later_tag)
    assert encode_leg(old) < encode_leg(new)


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        (0, 1),
        (9, 10),
        (99, 100),
        (1_699_999_999_999_999_999, 1_700_000_000_000_000_000),
        (MAX_VERSION - 1, MAX_VERSION),
    ],
)
def test_version_ordering_across_digit_counts(older: int, newer: int) -> None:
    assert encode_leg(replace(LEG, version=older)) < encode_leg(replace(LEG, version=newer))


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
