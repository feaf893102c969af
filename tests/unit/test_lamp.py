"""The lamp of an account: idle, early, busy or terminated from its legs and registrations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain.lamp import is_active, lamp_state
from statestore.domain.model import Binding, Direction, LampState, Leg, LegState, Party

NOW = 1_000_000.0
SETUP_STATES = [LegState.TRYING, LegState.PROCEEDING, LegState.EARLY]

OUT = Direction.INITIATOR  # the account placed the call
IN = Direction.RECIPIENT  # the call rings at the account


def leg(state: LegState, direction: Direction = IN, leg_id: str = "leg-1") -> Leg:
    return Leg(
        account="alice@example.com",
        instance="node-a",
        leg_id=leg_id,
        version=1,
        state=state,
        direction=direction,
        call_id=f"call-{leg_id}",
        local_tag="lt",
        remote_tag="rt",
        local=Party("sip:alice@example.com"),
        remote=Party("sip:bob@example.com"),
    )


def binding(expires_at: float, contact: str = "sip:alice@10.0.0.1") -> Binding:
    return Binding("alice@example.com", contact, expires_at, "reg-call", 1)


LIVE = binding(NOW + 300)
EXPIRED = binding(NOW - 1)
EXPIRING_NOW = binding(NOW)


@pytest.mark.parametrize(
    ("bindings", "expected"),
    [
        ([LIVE], LampState.IDLE),
        ([EXPIRED, LIVE], LampState.IDLE),
        ([EXPIRED], LampState.TERMINATED),
        ([EXPIRING_NOW], LampState.TERMINATED),
        ([], LampState.TERMINATED),
    ],
    ids=["live", "one-live-of-two", "expired", "expiring-now", "unregistered"],
)
def test_without_legs_the_registration_decides(bindings: list[Binding], expected: LampState) -> None:
    assert lamp_state([], bindings, NOW) is expected


@pytest.mark.parametrize("state", SETUP_STATES)
@pytest.mark.parametrize("bindings", [[LIVE], []], ids=["registered", "unregistered"])
def test_a_call_ringing_at_the_account_is_early(state: LegState, bindings: list[Binding]) -> None:
    assert lamp_state([leg(state, IN)], bindings, NOW) is LampState.EARLY


@pytest.mark.parametrize("state", SETUP_STATES)
@pytest.mark.parametrize("bindings", [[LIVE], []], ids=["registered", "unregistered"])
def test_a_call_the_account_places_is_busy_while_the_other_side_rings(
    state: LegState, bindings: list[Binding]
) -> None:
    assert lamp_state([leg(state, OUT)], bindings, NOW) is LampState.BUSY


@pytest.mark.parametrize("direction", [OUT, IN])
@pytest.mark.parametrize("bindings", [[LIVE], []], ids=["registered", "unregistered"])
def test_a_confirmed_call_is_busy_in_either_direction(direction: Direction, bindings: list[Binding]) -> None:
    assert lamp_state([leg(LegState.CONFIRMED, direction)], bindings, NOW) is LampState.BUSY


@pytest.mark.parametrize(
    ("legs", "expected"),
    [
        ([leg(LegState.CONFIRMED, IN, "a"), leg(LegState.EARLY, IN, "b")], LampState.BUSY),
        ([leg(LegState.EARLY, IN, "b"), leg(LegState.CONFIRMED, OUT, "a")], LampState.BUSY),
        ([leg(LegState.EARLY, IN, "a"), leg(LegState.TRYING, OUT, "b")], LampState.BUSY),
        ([leg(LegState.PROCEEDING, IN, "a"), leg(LegState.EARLY, IN, "b")], LampState.EARLY),
    ],
    ids=["confirmed+early", "early+confirmed", "ringing+placing", "two-ringing"],
)
def test_busy_wins_over_early(legs: list[Leg], expected: LampState) -> None:
    assert lamp_state(legs, [LIVE], NOW) is expected


@pytest.mark.parametrize(
    ("legs", "bindings", "expected"),
    [
        ([leg(LegState.TERMINATED, IN)], [LIVE], LampState.IDLE),
        ([leg(LegState.TERMINATED, OUT)], [LIVE], LampState.IDLE),
        ([leg(LegState.TERMINATED, OUT)], [], LampState.TERMINATED),
        ([leg(LegState.TERMINATED, OUT, "a"), leg(LegState.EARLY, IN, "b")], [LIVE], LampState.EARLY),
    ],
    ids=["recipient", "initiator", "initiator-unregistered", "next-to-a-ringing-call"],
)
def test_terminated_legs_are_ignored(legs: list[Leg], bindings: list[Binding], expected: LampState) -> None:
    assert lamp_state(legs, bindings, NOW) is expected


@pytest.mark.parametrize("state", list(LegState))
def test_is_active_is_every_state_but_terminated(state: LegState) -> None:
    assert is_active(leg(state)) is (state is not LegState.TERMINATED)


def test_one_shot_iterables_are_enough() -> None:
    legs = iter([leg(LegState.TERMINATED, IN, "a"), leg(LegState.EARLY, IN, "b")])
    assert lamp_state(legs, iter([EXPIRED]), NOW) is LampState.EARLY


# --- properties -----------------------------------------------------------------------------

legs_strategy = st.lists(
    st.builds(
        leg,
        state=st.sampled_from(LegState),
        direction=st.sampled_from(Direction),
        leg_id=st.text(alphabet="abcdef0123456789", min_size=1, max_size=4),
    ),
    max_size=6,
)
bindings_strategy = st.lists(
    st.builds(binding, expires_at=st.floats(NOW - 3600, NOW + 3600, allow_nan=False)),
    max_size=4,
)


@given(legs=legs_strategy, bindings=bindings_strategy, direction=st.sampled_from(Direction))
def test_adding_a_confirmed_leg_always_gives_busy(
    legs: list[Leg], bindings: list[Binding], direction: Direction
) -> None:
    confirmed = leg(LegState.CONFIRMED, direction, "confirmed")
    assert lamp_state([*legs, confirmed], bindings, NOW) is LampState.BUSY


@given(bindings=bindings_strategy)
def test_without_legs_only_bindings_decide(bindings: list[Binding]) -> None:
    registered = any(b.expires_at > NOW for b in bindings)
    expected = LampState.IDLE if registered else LampState.TERMINATED
    assert lamp_state([], bindings, NOW) is expected


@given(legs=legs_strategy, bindings=bindings_strategy)
def test_terminated_legs_change_nothing(legs: list[Leg], bindings: list[Binding]) -> None:
    active = [item for item in legs if item.state is not LegState.TERMINATED]
    assert lamp_state(legs, bindings, NOW) is lamp_state(active, bindings, NOW)


@given(data=st.data(), legs=legs_strategy, bindings=bindings_strategy)
def test_the_order_of_legs_and_bindings_does_not_matter(
    data: st.DataObject, legs: list[Leg], bindings: list[Binding]
) -> None:
    shuffled_legs = data.draw(st.permutations(legs))
    shuffled_bindings = data.draw(st.permutations(bindings))
    assert lamp_state(shuffled_legs, shuffled_bindings, NOW) is lamp_state(legs, bindings, NOW)
