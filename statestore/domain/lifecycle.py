"""The subscription lifecycle as one transition table (RFC 6665 §4.1.3, RFC 3857 §3.2.4).

A subscription is `pending` (its presentity has not authorized the watcher), `active`,
or `terminated`; the events are RFC 3857's. Every change of a subscription's state goes
through `step`: the table is the only place that says which moves exist. A terminated
subscription is one whose record has its expiry set to now and its reason filled in: its
notifier sends the final NOTIFY (Subscription-State: terminated;reason=...) and removes it.
"""

from __future__ import annotations

import enum
from dataclasses import replace

from statestore.domain.model import Subscription


class State(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class Event(enum.StrEnum):
    """RFC 3857 §3.2.4: what brought a subscription to its state."""

    SUBSCRIBE = "subscribe"  # created (pending or active), or refreshed
    APPROVED = "approved"  # the presentity authorized the watcher
    DEACTIVATED = "deactivated"  # ended; the watcher may subscribe again at once
    PROBATION = "probation"  # ended; the watcher may subscribe again later
    REJECTED = "rejected"  # the presentity refused the watcher
    TIMEOUT = "timeout"  # expired, or unsubscribed
    GIVEUP = "giveup"  # pending too long
    NORESOURCE = "noresource"  # the presentity no longer exists


# (state, event) -> next state. Anything not listed is not a move (`step` refuses it).
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.PENDING, Event.SUBSCRIBE): State.PENDING,
    (State.PENDING, Event.APPROVED): State.ACTIVE,
    (State.PENDING, Event.REJECTED): State.TERMINATED,
    (State.PENDING, Event.GIVEUP): State.TERMINATED,
    (State.PENDING, Event.TIMEOUT): State.TERMINATED,
    (State.PENDING, Event.NORESOURCE): State.TERMINATED,
    (State.PENDING, Event.DEACTIVATED): State.TERMINATED,
    (State.ACTIVE, Event.SUBSCRIBE): State.ACTIVE,
    (State.ACTIVE, Event.APPROVED): State.ACTIVE,
    (State.ACTIVE, Event.REJECTED): State.TERMINATED,
    (State.ACTIVE, Event.DEACTIVATED): State.TERMINATED,
    (State.ACTIVE, Event.PROBATION): State.TERMINATED,
    (State.ACTIVE, Event.TIMEOUT): State.TERMINATED,
    (State.ACTIVE, Event.NORESOURCE): State.TERMINATED,
}


class NoSuchMove(ValueError):
    """The event does not apply to a subscription in that state."""


def state_of(subscription: Subscription, now: float) -> State:
    if subscription.termination_reason or subscription.expires_at <= now:
        return State.TERMINATED
    return State.PENDING if subscription.status == State.PENDING else State.ACTIVE


def step(subscription: Subscription, event: Event, now: float) -> Subscription:
    """The record after `event`; NoSuchMove when the table has no such move."""
    current = state_of(subscription, now)
    target = TRANSITIONS.get((current, event))
    if target is None:
        raise NoSuchMove(f"{event.value} does not apply to a {current.value} subscription")
    if target is State.TERMINATED:
        # Unsubscribe and expiry give no reason in the record (subscription.final_reason
        # answers timeout); every other ending says why.
        reason = "" if event is Event.TIMEOUT else event.value
        return replace(subscription, expires_at=now, termination_reason=reason, status_event=event.value)
    return replace(subscription, status=target.value, status_event=event.value)
