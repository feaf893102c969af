"""Presence authorization as an operator changes it (blfctl presence|watcher), through the
StateStore seam.

The rules are statestore.domain.authorization's (what a policy and a decision mean) and
statestore.domain.lifecycle's (every move of a subscription). This module writes the
authorization record, then moves the subscriptions the change concerns, each by
compare-and-swap on the revision it was read at. It sends nothing: the notifier of the
instance responsible for a subscription sees the write through its watch and sends the
NOTIFY (active) or the final NOTIFY (terminated;reason=rejected), and removes the record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from statestore.domain.authorization import Authorization, Decision, Policy
from statestore.domain.errors import Contended
from statestore.domain.lifecycle import Event, State, state_of, step
from statestore.domain.model import Subscription
from statestore.store import StateStore

# The only package a presentity authorizes watchers for (authorization.py).
PRESENCE = "presence"
# Compare-and-swap attempts per subscription (each failure is a refresh or a NOTIFY written
# meanwhile: read again and decide again).
SUBSCRIPTION_ATTEMPTS = 10


def decision_event(decision: Decision, state: State) -> Event | None:
    """What a decision does to one of the watcher's presence subscriptions in `state`:
    approve activates a pending one; deny and block end a pending or active one."""
    if decision is Decision.APPROVED:
        return Event.APPROVED if state is State.PENDING else None
    return Event.REJECTED if state is not State.TERMINATED else None


def set_policy(store: StateStore, presentity: str, policy: Policy, now: float) -> Authorization | None:
    """Set the presentity's policy; None when there is no such account. Switching to
    `allow` approves every pending presence subscription to it (but a blocked watcher's):
    the presentity now allows everyone."""
    written = store.update_authorization(presentity, lambda stored: Authorization(policy, stored.watchers))
    if written is None or policy is not Policy.ALLOW:
        return written
    pending = [
        subscription for subscription in store.subscriptions_to(presentity)
        if subscription.event == PRESENCE and written.watchers.get(subscription.watcher) is not Decision.BLOCKED
    ]
    apply(store, pending, lambda subscription: decision_event(Decision.APPROVED, state_of(subscription, now)), now)
    return written


def decide(store: StateStore, presentity: str, watcher: str, decision: Decision, now: float) -> Authorization | None:
    """Record a decision about a watcher (approve, block; a deny is not kept) and apply it
    to the watcher's presence subscriptions to the presentity; None when there is no
    such account."""
    written = store.update_authorization(presentity, lambda stored: stored.decided(watcher, decision))
    if written is None:
        return None
    concerned = [
        subscription for subscription in store.subscriptions_to(presentity)
        if subscription.event == PRESENCE and subscription.watcher == watcher
    ]
    apply(store, concerned, lambda subscription: decision_event(decision, state_of(subscription, now)), now)
    return written


def apply(
    store: StateStore, subscriptions: Iterable[Subscription], event_for: Callable[[Subscription], Event | None],
    now: float,
) -> int:
    """Move each subscription by the event `event_for` gives it as it is stored now (none:
    left as it is), by compare-and-swap; read again and decide again when another writer
    came first. One gone meanwhile is skipped. How many were moved."""
    moved = 0
    for subscription in subscriptions:
        for _ in range(SUBSCRIPTION_ATTEMPTS):
            stored = store.get_subscription(subscription.sub_id)
            if stored is None:
                break
            current, mod_revision = stored
            event = event_for(current)
            if event is None:
                break
            if store.update_subscription(step(current, event, now), mod_revision) is not None:
                moved += 1
                break
        else:
            raise Contended(f"subscription {subscription.sub_id} changed {SUBSCRIPTION_ATTEMPTS} times while moved")
    return moved


def _reason(subscription: Subscription, state: State) -> str:
    """RFC 3857 §3.2.4 event of the row: what ended a terminated one (an expiry: timeout)."""
    if state is State.TERMINATED:
        return subscription.termination_reason or Event.TIMEOUT.value
    return subscription.status_event


def watchers(
    presentity: str, authorization: Authorization, subscriptions: Sequence[Subscription], now: float
) -> dict[str, Any]:
    """`blfctl watcher list --json`: every subscription to the presentity (any event) and
    the decisions stored for watchers without one, by watcher then event."""
    rows: list[dict[str, Any]] = []
    for subscription in subscriptions:
        state = state_of(subscription, now)
        rows.append({
            "watcher": subscription.watcher, "event": subscription.event, "status": state.value,
            "event_reason": _reason(subscription, state), "expires": subscription.remaining(now),
            "id": subscription.sub_id, "decision": _decision(authorization, subscription.watcher),
        })
    subscribed = {subscription.watcher for subscription in subscriptions}
    rows += [
        {"watcher": watcher, "event": "", "status": "", "event_reason": "", "expires": None, "id": "",
         "decision": decision.value}
        for watcher, decision in authorization.watchers.items() if watcher not in subscribed
    ]
    rows.sort(key=lambda row: (row["watcher"], row["event"], row["id"]))
    return {"presentity": presentity, "policy": authorization.policy.value, "watchers": rows}


def _decision(authorization: Authorization, watcher: str) -> str:
    decision = authorization.watchers.get(watcher)
    return "" if decision is None else decision.value
