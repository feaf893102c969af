"""Call legs through the INVITE transaction (RFC 4235 §3.7.1): creation, responses, ids."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain.legs import CallParties, advance, initial_legs, leg_id, sip_uri, state_for_response
from statestore.domain.model import Direction, Leg, LegState, Party

PARTIES = CallParties(
    call_id="call-1@10.0.0.1",
    from_tag="ftag",
    caller="alice@example.com",
    callee="bob@example.com",
    caller_display="Alice",
    callee_display="Bob",
    caller_target="sip:alice@10.0.0.1:5060",
)
OUT_ID = leg_id("call-1@10.0.0.1", "ftag", Direction.INITIATOR)
IN_ID = leg_id("call-1@10.0.0.1", "ftag", Direction.RECIPIENT)
ALICE = Party("sip:alice@example.com", "Alice", "sip:alice@10.0.0.1:5060")
BOB = Party("sip:bob@example.com", "Bob", "")
BOB_TARGET = "sip:bob@10.0.0.2:5060"
BOB_REACHED = Party("sip:bob@example.com", "Bob", BOB_TARGET)


def expected_leg(
    direction: Direction,
    state: LegState = LegState.TRYING,
    version: int = 7,
    callee_tag: str = "",
    callee: Party = BOB,
) -> Leg:
    if direction is Direction.INITIATOR:
        return Leg(
            account="alice@example.com", instance="node-a", leg_id=OUT_ID, version=version, state=state,
            direction=direction, call_id="call-1@10.0.0.1", local_tag="ftag", remote_tag=callee_tag,
            local=ALICE, remote=callee,
        )
    return Leg(
        account="bob@example.com", instance="node-a", leg_id=IN_ID, version=version, state=state,
        direction=direction, call_id="call-1@10.0.0.1", local_tag=callee_tag, remote_tag="ftag",
        local=callee, remote=ALICE,
    )


def legs_of(
    state: LegState = LegState.TRYING, version: int = 7, callee_tag: str = "", callee: Party = BOB
) -> tuple[Leg, Leg]:
    return (
        expected_leg(Direction.INITIATOR, state, version, callee_tag, callee),
        expected_leg(Direction.RECIPIENT, state, version, callee_tag, callee),
    )


# --- initial_legs -----------------------------------------------------------------------------


def test_initial_legs_are_both_sides_in_trying() -> None:
    assert initial_legs(PARTIES, "node-a", 7) == legs_of()


def test_initial_legs_tags_directions_and_identities() -> None:
    outgoing, incoming = initial_legs(PARTIES, "node-a", 7)
    assert (outgoing.direction, outgoing.local_tag, outgoing.remote_tag) == (Direction.INITIATOR, "ftag", "")
    assert (incoming.direction, incoming.local_tag, incoming.remote_tag) == (Direction.RECIPIENT, "", "ftag")
    assert (outgoing.local.identity, outgoing.remote.identity) == ("sip:alice@example.com", "sip:bob@example.com")
    assert (incoming.local, incoming.remote) == (outgoing.remote, outgoing.local)


def test_only_the_caller_target_is_known_at_the_invite() -> None:
    outgoing, incoming = initial_legs(PARTIES, "node-a", 7)
    assert (outgoing.local.target, outgoing.remote.target) == ("sip:alice@10.0.0.1:5060", "")
    assert (incoming.local.target, incoming.remote.target) == ("", "sip:alice@10.0.0.1:5060")


def test_sip_uri_of_an_account() -> None:
    assert sip_uri("alice@example.com") == "sip:alice@example.com"


# --- state_for_response -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "to_tag", "expected"),
    [
        (100, "", None),
        (100, "ttag", None),
        (180, "", LegState.PROCEEDING),
        (180, "ttag", LegState.EARLY),
        (181, "ttag", LegState.EARLY),
        (183, "", LegState.PROCEEDING),
        (183, "ttag", LegState.EARLY),
        (199, "ttag", LegState.EARLY),
        (200, "ttag", LegState.CONFIRMED),
        (202, "ttag", LegState.CONFIRMED),
        (302, "ttag", LegState.TERMINATED),
        (486, "ttag", LegState.TERMINATED),
        (487, "ttag", LegState.TERMINATED),
        (487, "", LegState.TERMINATED),
        (603, "ttag", LegState.TERMINATED),
    ],
)
def test_state_for_response(status: int, to_tag: str, expected: LegState | None) -> None:
    assert state_for_response(status, to_tag) is expected


# --- advance ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [LegState.PROCEEDING, LegState.EARLY, LegState.CONFIRMED])
def test_advance_fills_callee_tag_and_target(state: LegState) -> None:
    result = advance(legs_of(), state, 9, "ttag", BOB_TARGET)
    assert result == legs_of(state, version=9, callee_tag="ttag", callee=BOB_REACHED)


def test_advance_without_tag_or_target_keeps_the_known_ones() -> None:
    ringing = legs_of(LegState.EARLY, version=8, callee_tag="ttag", callee=BOB_REACHED)
    result = advance(ringing, LegState.TERMINATED, 9, "", "")
    assert result == legs_of(LegState.TERMINATED, version=9, callee_tag="ttag", callee=BOB_REACHED)


def test_advance_gives_both_legs_the_version_it_is_given() -> None:
    outgoing, incoming = advance(legs_of(version=7), LegState.EARLY, 7, "ttag", "")
    assert (outgoing.version, incoming.version) == (7, 7)
    outgoing, incoming = advance(legs_of(version=7), LegState.EARLY, 12, "ttag", "")
    assert (outgoing.version, incoming.version) == (12, 12)


def test_advance_on_a_fork_answer_moves_both_legs_to_the_answering_tag() -> None:
    # 180 from one contact of the callee, then 200 from another (RFC 3261 §13.2.2.4):
    # the confirmed dialog is the answering branch's, seen from either side.
    ringing = advance(legs_of(), LegState.EARLY, 8, "tag-a", "sip:bob@10.0.0.2")
    answered = advance(ringing, LegState.CONFIRMED, 9, "tag-b", BOB_TARGET)
    assert answered == legs_of(LegState.CONFIRMED, version=9, callee_tag="tag-b", callee=BOB_REACHED)


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(LegState),
            st.sampled_from(["", "tag-a", "tag-b"]),
            st.sampled_from(["", "sip:bob@10.0.0.2", "sip:bob@10.0.0.3"]),
        ),
        max_size=5,
    )
)
def test_both_legs_always_describe_the_same_dialog(steps: list[tuple[LegState, str, str]]) -> None:
    legs = legs_of()
    for version, (state, to_tag, target) in enumerate(steps, start=8):
        legs = advance(legs, state, version, to_tag, target)
    outgoing, incoming = legs
    assert outgoing.state is incoming.state
    assert outgoing.version == incoming.version
    assert (outgoing.local_tag, outgoing.remote_tag) == (incoming.remote_tag, incoming.local_tag)
    assert (outgoing.local, outgoing.remote) == (incoming.remote, incoming.local)


# --- leg_id -----------------------------------------------------------------------------------


def test_leg_id_is_stable() -> None:
    assert leg_id("call-1", "ftag", Direction.INITIATOR) == leg_id("call-1", "ftag", Direction.INITIATOR)
    assert initial_legs(PARTIES, "node-a", 1)[0].leg_id == initial_legs(PARTIES, "node-b", 2)[0].leg_id


def test_leg_id_differs_per_direction() -> None:
    assert leg_id("call-1", "ftag", Direction.INITIATOR) != leg_id("call-1", "ftag", Direction.RECIPIENT)


def test_leg_id_is_16_hex_digits() -> None:
    value = leg_id("call-1", "ftag", Direction.RECIPIENT)
    assert len(value) == 16
    assert set(value) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    ("other_call", "other_tag"),
    [("call-2", "ftag"), ("call-1", "ftag2"), ("call-1f", "tag")],
    ids=["call-id", "from-tag", "shifted-boundary"],
)
def test_leg_id_differs_per_dialog(other_call: str, other_tag: str) -> None:
    assert leg_id("call-1", "ftag", Direction.INITIATOR) != leg_id(other_call, other_tag, Direction.INITIATOR)
