"""Call legs through the INVITE transaction (RFC 4235 §3.7.1): creation, responses, ids."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain.legs import (
    ANONYMOUS,
    RANK,
    TRANSITIONS,
    CallParties,
    Ending,
    LegChange,
    advance,
    apply_change,
    can_move,
    ending_of_bye,
    ending_of_failure,
    initial_legs,
    leg_id,
    order_of,
    settle,
    sip_uri,
    state_for_response,
)
from statestore.domain.model import Direction, Leg, LegState, Party, TerminationEvent

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


def test_a_caller_that_withheld_its_identity_is_anonymous_on_the_callees_leg_only() -> None:
    outgoing, incoming = initial_legs(replace(PARTIES, caller_withheld=True), "node-a", 7)
    assert incoming.account == PARTIES.callee and outgoing.account == PARTIES.caller
    assert incoming.remote == ANONYMOUS
    assert outgoing.local.identity == "sip:alice@example.com"  # the caller's own watchers see the call as theirs


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


# --- the transition table (RFC 4235 §3.7.1, issue 6 finding 4) --------------------------------

T, P, E, C, X = (LegState.TRYING, LegState.PROCEEDING, LegState.EARLY, LegState.CONFIRMED, LegState.TERMINATED)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (T, P, True), (T, E, True), (T, C, True), (T, X, True), (T, T, False),
        (P, E, True), (P, C, True), (P, X, True), (P, T, False), (P, P, False),
        (E, C, True), (E, X, True), (E, P, False), (E, T, False), (E, E, False),
        (C, X, True), (C, E, False), (C, P, False), (C, T, False), (C, C, False),
        (X, T, False), (X, P, False), (X, E, False), (X, C, False), (X, X, False),
    ],
)
def test_transition_table(current: LegState, new: LegState, allowed: bool) -> None:
    assert can_move(current, new) is allowed
    assert (new in TRANSITIONS[current]) is allowed


def test_every_transition_goes_forward_in_the_stored_order() -> None:
    for current, targets in TRANSITIONS.items():
        assert all(RANK[target] > RANK[current] for target in targets)
    assert TRANSITIONS[LegState.TERMINATED] == frozenset()


RINGING_A = LegChange(E, "tag-a", "sip:bob@10.0.0.2")
RINGING_B = LegChange(E, "tag-b", "sip:bob@10.0.0.3")
ANSWERED_B = LegChange(C, "tag-b", BOB_TARGET)
HUNG_UP = LegChange(X, ending=ending_of_bye(sent_by_caller=True))


def test_a_180_processed_after_the_200_changes_nothing() -> None:
    answered = apply_change(legs_of(version=0), ANSWERED_B)
    assert answered is not None
    assert apply_change(answered, RINGING_A) is None
    assert settle(legs_of(version=0), [ANSWERED_B, RINGING_A]) == answered


def test_nothing_follows_the_end() -> None:
    ended = settle(legs_of(version=0), [RINGING_A, ANSWERED_B, HUNG_UP])
    for late in (RINGING_A, ANSWERED_B, LegChange(X, ending=Ending(TerminationEvent.ERROR))):
        assert apply_change(ended, late) is None


def test_each_write_counts_one_up() -> None:
    assert [leg.version for leg in settle(legs_of(version=0), [RINGING_A, ANSWERED_B, HUNG_UP])] == [3, 3]


def test_a_bye_is_local_for_the_side_that_sent_it_and_remote_for_the_other() -> None:
    by_caller = settle(legs_of(version=0), [ANSWERED_B, HUNG_UP])
    assert [(leg.event, leg.code) for leg in by_caller] == [
        (TerminationEvent.LOCAL_BYE, 0), (TerminationEvent.REMOTE_BYE, 0),
    ]
    by_callee = settle(legs_of(version=0), [ANSWERED_B, LegChange(X, ending=ending_of_bye(sent_by_caller=False))])
    assert [leg.event for leg in by_callee] == [TerminationEvent.REMOTE_BYE, TerminationEvent.LOCAL_BYE]


def test_a_rejected_call_carries_the_code_on_both_legs() -> None:
    busy = LegChange(X, "tag-a", ending=ending_of_failure(486, False, False))
    rejected = settle(legs_of(version=0), [RINGING_A, busy])
    assert [(leg.state, leg.event, leg.code) for leg in rejected] == [(X, TerminationEvent.REJECTED, 486)] * 2


@pytest.mark.parametrize(
    ("code", "cancelled", "timed_out", "expected"),
    [
        (486, False, False, Ending(TerminationEvent.REJECTED, 486)),
        (603, False, False, Ending(TerminationEvent.REJECTED, 603)),
        (404, False, False, Ending(TerminationEvent.REJECTED, 404)),
        (487, True, False, Ending(TerminationEvent.CANCELLED, 487)),
        (0, True, False, Ending(TerminationEvent.CANCELLED, 487)),
        (408, False, True, Ending(TerminationEvent.TIMEOUT, 408)),
        (0, False, True, Ending(TerminationEvent.TIMEOUT, 0)),
        (0, False, False, Ending(TerminationEvent.ERROR, 0)),
    ],
)
def test_ending_of_failure(code: int, cancelled: bool, timed_out: bool, expected: Ending) -> None:
    assert ending_of_failure(code, cancelled, timed_out) == expected


PROVISIONAL = [LegChange(P), RINGING_A, RINGING_B, LegChange(E, "tag-a")]
FINAL = [
    ANSWERED_B,
    LegChange(X, "tag-a", ending=ending_of_failure(486, False, False)),
    LegChange(X, ending=ending_of_failure(487, True, False)),
]


@given(
    provisional=st.lists(st.sampled_from(PROVISIONAL), max_size=4),
    final=st.sampled_from(FINAL),
    bye=st.booleans(),
    order=st.randoms(use_true_random=False),
)
def test_any_order_of_replies_ends_in_the_same_state(
    provisional: list[LegChange], final: LegChange, bye: bool, order: Any
) -> None:
    # Several 18x from forked branches and one final answer, processed in any order (two
    # workers, reordered UDP), maybe a BYE (which only ever follows the 200 it ends): the
    # legs end as if the replies came in order.
    replies = [*provisional, final]
    shuffled = list(replies)
    order.shuffle(shuffled)
    after = [HUNG_UP] if bye and final.state is C else []
    in_order, shuffled = [*replies, *after], [*shuffled, *after]
    expected = settle(legs_of(version=0), in_order)
    result = settle(legs_of(version=0), shuffled)
    assert [leg.state for leg in result] == [leg.state for leg in expected]
    assert [(leg.event, leg.code) for leg in result] == [(leg.event, leg.code) for leg in expected]
    if final.state is C:  # the answering branch is the dialog, whatever rang before
        tags = [(leg.local_tag, leg.remote_tag) for leg in expected]
        assert [(leg.local_tag, leg.remote_tag) for leg in result] == tags


@given(changes=st.lists(st.sampled_from([*PROVISIONAL, *FINAL, HUNG_UP]), max_size=8))
def test_a_state_never_goes_back(changes: list[LegChange]) -> None:
    legs = legs_of(version=0)
    for change in changes:
        moved = apply_change(legs, change)
        if moved is not None:
            assert RANK[moved[0].state] > RANK[legs[0].state]
            assert order_of(moved[0]) > order_of(legs[0]) and order_of(moved[1]) > order_of(legs[1])
            legs = moved
