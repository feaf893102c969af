"""An in-memory copy of the store, fed by a snapshot and then by watch events.

The notifier process plans its NOTIFYs from it without reading etcd per event. Pure:
the adapter passes keys, values, revisions and the time in.

Work per event is proportional to the watchers of what changed, not to the cluster:
subscriptions are indexed by presentity and by owner, expiry comes from a heap, and a
change dirties a presentity only when an event package watching it reads that input
(a registration does not change a dialog body). A record this version cannot read (a
newer field layout, an event package it does not serve) is skipped and counted: one
bad record never stops the notifier (a rolling upgrade writes such records).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from statestore import codec, keys
from statestore.domain import bodies
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Binding, Leg, Subscription
from statestore.domain.subscription import PACKAGES, is_expired, responsible_instance

T = TypeVar("T")
# How long after an expiry that another instance should have acted on (or a removal of
# ours that failed) the subscription is looked at again.
EXPIRY_RECHECK_SECONDS = 5.0
# Errors a record that this version cannot read raises in its decoder.
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError)


@dataclass(frozen=True)
class Due:
    """A subscription this instance must act on: expire it, or notify its new state.

    `body` renders the presentity's document once for all its watchers (bodies.Template).
    """

    subscription: Subscription
    revision: int
    state: PresentityState
    expired: bool
    body: bodies.Template | None = None


class Mirror:
    def __init__(self) -> None:
        self.legs: dict[str, dict[str, Leg]] = {}
        self.bindings: dict[str, dict[str, Binding]] = {}
        self.subs: dict[str, tuple[Subscription, int]] = {}
        self.instances: set[str] = set()
        self.by_presentity: dict[str, set[str]] = {}
        self.by_owner: dict[str, set[str]] = {}
        # (when to look, sub_id, expires_at): stale entries (refreshed or gone) are dropped
        # when they come up.
        self._expiry: list[tuple[float, str, float]] = []
        # Records skipped: unknown event packages by name, unreadable records by kind.
        self.unknown_packages: Counter[str] = Counter()
        self.unreadable: Counter[str] = Counter()
        # One line per new kind of skipped record, for the adapter to log once.
        self.notes: list[str] = []

    @staticmethod
    def prefixes() -> tuple[str, ...]:
        """The parts of the store it reads (and the notifier watches): registrations only
        if some event package's bodies are made of them, never the index or accounts."""
        reads_regs = any("regs" in package.inputs for package in PACKAGES.values())
        return (keys.INSTANCES, keys.SUBS, keys.LEGS) + ((keys.REGS,) if reads_regs else ())

    def load(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        self.__init__()  # type: ignore[misc]
        for key, value, revision in items:
            self.apply(key, value, revision)

    def apply(self, key: str, value: bytes | None, revision: int) -> set[str]:
        """Take one change in; the presentities whose NOTIFYs may differ."""
        parsed = keys.parse(key)
        if parsed is None:
            return set()
        try:
            return self._apply(parsed, key, value, revision)
        except UNREADABLE as exc:
            self._unreadable(parsed.kind, key, exc)
            return self._drop(parsed, key)

    def _apply(self, parsed: keys.ParsedKey, key: str, value: bytes | None, revision: int) -> set[str]:
        if parsed.kind == "legs":
            _put(self.legs, parsed.account, key, None if value is None else codec.decode_leg(value))
            return self._dirty_by(parsed.account, "legs")
        if parsed.kind == "regs":
            binding = None if value is None else codec.decode_binding(value)
            _put(self.bindings, parsed.account, key, binding)
            return self._dirty_by(parsed.account, "regs")
        if parsed.kind == "subs":
            return self._apply_sub(parsed.name, value, revision)
        if parsed.kind == "instances":
            return self._apply_instance(parsed.name, value is not None)
        return set()

    def _drop(self, parsed: keys.ParsedKey, key: str) -> set[str]:
        """Forget what an unreadable value replaced: its older value is no longer true."""
        if parsed.kind in ("legs", "regs"):
            return self._apply(parsed, key, None, 0)
        if parsed.kind == "subs":
            return self._remove_sub(parsed.name)
        return set()

    def _unreadable(self, kind: str, key: str, exc: Exception) -> None:
        if not self.unreadable[kind]:
            self.notes.append(f"unreadable {kind} record skipped ({key}: {type(exc).__name__}: {exc}); counting others")
        self.unreadable[kind] += 1

    def _dirty_by(self, presentity: str, source: str) -> set[str]:
        """{presentity} if a package of one of its subscriptions reads `source` (bodies.INPUTS)."""
        if source == "legs":
            return {presentity}  # the lamp of every package; also what the state is made of
        ids = self.by_presentity.get(presentity, ())
        events = {self.subs[sub_id][0].event for sub_id in ids}
        return {presentity} if any(source in PACKAGES[event].inputs for event in events) else set()

    # --- subscriptions ----------------------------------------------------------------------

    def _apply_sub(self, sub_id: str, value: bytes | None, revision: int) -> set[str]:
        if value is None:
            return self._remove_sub(sub_id)
        current = self.subs.get(sub_id)
        if current is not None and current[1] >= revision:
            return set()  # our own write, already remembered
        subscription = codec.decode_subscription(value)
        if subscription.event not in PACKAGES:
            if not self.unknown_packages[subscription.event]:
                self.notes.append(f"subscriptions of unknown event package {subscription.event!r} skipped")
            self.unknown_packages[subscription.event] += 1
            return self._remove_sub(sub_id)
        self._index(subscription, revision)
        return {subscription.presentity}

    def _index(self, subscription: Subscription, revision: int) -> None:
        current = self.subs.get(subscription.sub_id)
        if current is not None:
            self._unindex(current[0])
        self.subs[subscription.sub_id] = (subscription, revision)
        self.by_presentity.setdefault(subscription.presentity, set()).add(subscription.sub_id)
        self.by_owner.setdefault(subscription.owner, set()).add(subscription.sub_id)
        if current is None or current[0].expires_at != subscription.expires_at:
            heapq.heappush(self._expiry, (subscription.expires_at, subscription.sub_id, subscription.expires_at))

    def _unindex(self, subscription: Subscription) -> None:
        for table, name in ((self.by_presentity, subscription.presentity), (self.by_owner, subscription.owner)):
            ids = table.get(name)
            if ids is not None:
                ids.discard(subscription.sub_id)
                if not ids:
                    del table[name]

    def _remove_sub(self, sub_id: str) -> set[str]:
        old = self.subs.pop(sub_id, None)
        if old is None:
            return set()
        self._unindex(old[0])
        return {old[0].presentity}

    def _apply_instance(self, name: str, alive: bool) -> set[str]:
        """Responsibility moves only for that instance's subscriptions and for orphans
        (rendezvous over a different set): their presentities are dirty."""
        if alive == (name in self.instances):
            return set()
        (self.instances.add if alive else self.instances.discard)(name)
        owners = {name} | {owner for owner in self.by_owner if owner not in self.instances}
        return {self.subs[sub_id][0].presentity for owner in owners for sub_id in self.by_owner.get(owner, ())}

    def forget(self, sub_id: str) -> None:
        self._remove_sub(sub_id)

    def remember(self, subscription: Subscription, revision: int) -> None:
        current = self.subs.get(subscription.sub_id)
        if current is None or current[1] < revision:
            self._index(subscription, revision)

    # --- what to send -----------------------------------------------------------------------

    def state_of(self, presentity: str) -> PresentityState:
        return bodies.presentity_state(
            list(self.legs.get(presentity, {}).values()), list(self.bindings.get(presentity, {}).values())
        )

    def due(self, me: str, dirty: set[str], now: float) -> list[Due]:
        """Subscriptions `me` sends for that need a NOTIFY: of dirty presentities whose
        body changed, and every one that expired. State, digest and body are computed
        once per presentity and event, whatever its number of watchers."""
        live = sorted(self.instances)
        if not live:
            return []
        found: dict[str, Due] = {}
        for sub_id in self._expired(me, live, now):
            subscription, revision = self.subs[sub_id]
            found[sub_id] = Due(subscription, revision, self.state_of(subscription.presentity), expired=True)
        for presentity in dirty:
            ids = [sub_id for sub_id in self.by_presentity.get(presentity, ()) if sub_id not in found]
            mine = [self.subs[sub_id] for sub_id in ids if responsible_instance(self.subs[sub_id][0], live) == me]
            if not mine:
                continue
            state = self.state_of(presentity)
            plans: dict[str, tuple[str, bodies.Template]] = {}
            for subscription, revision in mine:
                if subscription.event not in plans:
                    plans[subscription.event] = (
                        bodies.digest(subscription.event, state), bodies.Template(subscription.event, state)
                    )
                digest, body = plans[subscription.event]
                if is_expired(subscription, now) or digest != subscription.last_digest:
                    expired = is_expired(subscription, now)
                    found[subscription.sub_id] = Due(subscription, revision, state, expired, body)
        return list(found.values())

    def _expired(self, me: str, live: list[str], now: float) -> list[str]:
        """Ids of subscriptions past their expiry that `me` is responsible for. Each is
        looked at again later in case it is still there (another instance's that it did
        not remove, or a removal of ours that failed)."""
        expired: list[str] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, sub_id, expires_at = heapq.heappop(self._expiry)
            current = self.subs.get(sub_id)
            if current is None or current[0].expires_at != expires_at:
                continue  # gone, or refreshed: a newer entry is in the heap
            heapq.heappush(self._expiry, (now + EXPIRY_RECHECK_SECONDS, sub_id, expires_at))
            if responsible_instance(current[0], live) == me:
                expired.append(sub_id)
        return expired


def _put(table: dict[str, dict[str, T]], account: str, key: str, value: T | None) -> None:
    entries = table.setdefault(account, {})
    if value is None:
        entries.pop(key, None)
        if not entries:
            table.pop(account, None)
    else:
        entries[key] = value
