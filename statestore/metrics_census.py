"""What the notifier reports as gauges and latencies, from its mirror (pure: time passed in).

`census` counts for blf_subscriptions, blf_registrations and blf_publications;
`ChangeTimes` remembers when a presentity's change was taken off the watch, so that each
NOTIFY it causes reports blf_notify_latency_seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from statestore.domain.subscription import responsible_instance, serving
from statestore.metrics import package_label
from statestore.mirror import Mirror


@dataclass(frozen=True)
class Census:
    subscriptions: dict[str, int]  # by package label
    registrations: int
    publications: int


def census(mirror: Mirror, me: str) -> Census:
    """The subscriptions `me` is responsible for, by package: every one it owns while it
    lives, and those of owners that are gone that rendezvous gives it (only they cost a
    hash each); the zone's registration bindings and publications the mirror holds."""
    live = sorted(mirror.instances)
    subs = mirror.subs
    events: Counter[str] = Counter()
    for owner, ids in mirror.by_owner.items():
        if owner == me:
            events.update(subs[sub_id][0].event for sub_id in ids)
        elif owner not in mirror.instances:
            for sub_id in ids:
                subscription = subs[sub_id][0]
                if responsible_instance(subscription, serving(subscription.event, mirror.serves, live)) == me:
                    events[subscription.event] += 1
    counts: Counter[str] = Counter()
    for event, number in events.items():
        counts[package_label(event)] += number
    return Census(
        subscriptions=dict(counts),
        registrations=sum(len(entries) for entries in mirror.bindings.values()),
        publications=sum(len(entries) for entries in mirror.publications.values()),
    )


class ChangeTimes:
    """When each presentity's pending change was first seen; bounded by the presentities
    changed within one notifier tick (`clear` at its end)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def seen(self, presentities: Iterable[str], now: float) -> None:
        for presentity in presentities:
            self._seen.setdefault(presentity, now)

    def latency(self, presentity: str, now: float) -> float | None:
        """Seconds since the change this NOTIFY shows was seen; None for a NOTIFY no change
        caused in this tick (a refresh, a retry, an expiry, the backlog)."""
        seen = self._seen.get(presentity)
        return None if seen is None else max(0.0, now - seen)

    def clear(self) -> None:
        self._seen.clear()
