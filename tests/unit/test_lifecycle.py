"""The subscription lifecycle table (RFC 6665 §4.1.3, RFC 3857 §3.2.4): every row, and
that nothing outside it moves a subscription."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statestore.domain.lifecycle import TRANSITIONS, Event, NoSuchMove, State, state_of, step
from statestore.domain.subscription import final_reason, subscription_state
from tests.unit.test_subscription import NOW, subscription


def in_state(state: State):  # type: ignore[no-untyped-def]
    base = subscription()
    if state is State.PENDING:
        return replace(base, status="pending")
    if state is State.TERMINATED:
        return replace(base, expires_at=NOW - 1)
    return base


@pytest.mark.parametrize(("before", "event"), list(TRANSITIONS))
def test_every_row_of_the_table(before: State, event: Event) -> None:
    after = step(in_state(before), event, NOW)
    assert state_of(after, NOW) is TRANSITIONS[(before, event)]
    assert after.status_event == event.value


@pytest.mark.parametrize("event", list(Event))
def test_a_terminated_subscription_never_moves(event: Event) -> None:
    with pytest.raises(NoSuchMove):
        step(in_state(State.TERMINATED), event, NOW)


def test_approval_makes_a_pending_subscription_active_and_its_notifies_carry_state() -> None:
    pending = in_state(State.PENDING)
    assert subscription_state(pending, NOW).startswith("pending;expires=")
    active = step(pending, Event.APPROVED, NOW)
    assert subscription_state(active, NOW).startswith("active;expires=")


@pytest.mark.parametrize(("event", "reason"), [(Event.REJECTED, "rejected"), (Event.TIMEOUT, "timeout"),
                                               (Event.NORESOURCE, "noresource"), (Event.GIVEUP, "giveup")])
def test_an_ending_says_why_in_the_final_notify(event: Event, reason: str) -> None:
    ended = step(in_state(State.PENDING), event, NOW)
    assert subscription_state(ended, NOW, final_reason(ended)) == f"terminated;reason={reason}"


def test_probation_ends_only_an_active_subscription() -> None:
    with pytest.raises(NoSuchMove):
        step(in_state(State.PENDING), Event.PROBATION, NOW)
    assert state_of(step(in_state(State.ACTIVE), Event.PROBATION, NOW), NOW) is State.TERMINATED
