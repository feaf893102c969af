"""An in-memory copy of the store, fed by a snapshot and then by watch events.

The notifier process plans its NOTIFYs from it without reading etcd per event (which
subscriptions are due and how their NOTIFYs are numbered: mirror_due.py). Pure: the
adapter passes keys, values, revisions and the time in.

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
from dataclasses import replace
from typing import TypeVar

from statestore import codec, keys, records
from statestore.domain import packages
from statestore.domain.model import Publication, Subscription
from statestore.domain.packages import PACKAGES
from statestore.domain.subscription import LEGACY_PACKAGES, retry_delay
from statestore.mirror_due import FIRST_NOTIFY_GRACE_SECONDS, DuePlanner, Sent

T = TypeVar("T")
# Errors a record that this version cannot read raises in its decoder.
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError)


class Mirror(DuePlanner):
    def __init__(self) -> None:
        # Records of the state kinds (records.STATE_KINDS), by kind, account and key.
        self.records: dict[str, dict[str, dict[str, object]]] = {kind: {} for kind in records.STATE_KINDS}
        self.subs: dict[str, tuple[Subscription, int]] = {}
        self.instances: set[str] = set()
        # The event packages each live instance announced it serves (a rolling upgrade).
        self.serves: dict[str, frozenset[str]] = {}
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
        # The notifier's own memory, kept across a reload (load): the epoch it numbers new
        # NOTIFYs at, what it sent per subscription, what must be sent whatever the state
        # (new subscription, refresh, retry after a timeout) and when retries are due.
        self.epoch = 0
        self.sent: dict[str, Sent] = {}
        self.forced: set[str] = set()
        # sub_id -> until when its NOTIFYs wait for the SIP worker's first one (see
        # FIRST_NOTIFY_GRACE_SECONDS); entries go once that time has passed.
        self.held: dict[str, float] = {}
        self._retries: list[tuple[float, str, int]] = []
        # (when, sub_id): subscriptions whose NOTIFY waits for its package's min_interval.
        self._throttled: list[tuple[float, str]] = []
        self.throttled: set[str] = set()
        # (when, account): a publication of that account expires then (its body changes).
        self._publication_expiry: list[tuple[float, str]] = []
        self._to_sweep: set[str] = set()
        # An instance went away: subscriptions may move here; the notifier bumps the epoch
        # before it numbers any NOTIFY of theirs.
        self.bump_wanted = False

    @staticmethod
    def prefixes() -> tuple[str, ...]:
        """The parts of the store it reads (and the notifier watches): the state kinds
        some event package's bodies are made of (packages.inputs_read), never the index
        or accounts."""
        kinds = [kind.prefix for name, kind in records.STATE_KINDS.items() if packages.inputs_read(name)]
        return (keys.INSTANCES, keys.SUBS, *kinds, records.RESET.prefix)

    def load(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        """Replace the copy of the store with a snapshot; what was sent stays known (so
        numbering goes on), for the subscriptions still there."""
        memory = (self.epoch, self.sent, self.forced, self._retries, self.bump_wanted)
        before = self.instances
        self.__init__()  # type: ignore[misc]
        for key, value, revision in items:
            if not key.startswith(records.RESET.prefix):  # every presentity is looked at anyway
                self.apply(key, value, revision)
        self.epoch, sent, forced, retries, bump_wanted = memory
        self.bump_wanted = bump_wanted or bool(before - self.instances)  # one went away unseen
        self.sent = {sub_id: entry for sub_id, entry in sent.items() if sub_id in self.subs}
        # A subscription first seen in a snapshot is due anyway (nothing sent for it yet).
        self.forced = {sub_id for sub_id in forced if sub_id in self.subs}
        self._retries = [entry for entry in retries if entry[1] in self.subs]
        heapq.heapify(self._retries)

    def apply(self, key: str, value: bytes | None, revision: int, now: float = 0.0) -> set[str]:
        """Take one change in (at time `now`); the presentities whose NOTIFYs may differ."""
        parsed = keys.parse(key)
        if parsed is None:
            return set()
        try:
            return self._apply(parsed, key, value, revision, now)
        except UNREADABLE as exc:
            self._unreadable(parsed.kind, key, exc)
            return self._drop(parsed, key)

    def _apply(
        self, parsed: keys.ParsedKey, key: str, value: bytes | None, revision: int, now: float = 0.0
    ) -> set[str]:
        kind = records.STATE_KINDS.get(parsed.kind)
        if kind is not None:
            record = None if value is None else kind.decode(value)
            _put(self.records[kind.name], parsed.account, key, record)
            if isinstance(record, Publication):
                heapq.heappush(self._publication_expiry, (record.expires_at, parsed.account))
            return self._dirty_by(parsed.account, kind.name)
        if parsed.kind == "subs":
            return self._apply_sub(parsed.name, value, revision, now)
        if parsed.kind == records.RESET.name:
            return set() if value is None else self._reset(parsed.name)
        if parsed.kind == "instances":
            if value is not None:
                self.serves[parsed.name] = _packages_served(value)
            return self._apply_instance(parsed.name, value is not None)
        return set()

    def _drop(self, parsed: keys.ParsedKey, key: str) -> set[str]:
        """Forget what an unreadable value replaced: its older value is no longer true."""
        if parsed.kind in records.STATE_KINDS:
            return self._apply(parsed, key, None, 0)
        if parsed.kind == "subs":
            return self._remove_sub(parsed.name)
        return set()

    def _unreadable(self, kind: str, key: str, exc: Exception) -> None:
        if not self.unreadable[kind]:
            self.notes.append(f"unreadable {kind} record skipped ({key}: {type(exc).__name__}: {exc}); counting others")
        self.unreadable[kind] += 1

    def _dirty_by(self, presentity: str, source: str) -> set[str]:
        """{presentity} if the package of one of its subscriptions reads `source` (its inputs)."""
        ids = self.by_presentity.get(presentity, ())
        events = {self.subs[sub_id][0].event for sub_id in ids}
        return {presentity} if any(PACKAGES[event].reads(source) for event in events) else set()

    # --- subscriptions ----------------------------------------------------------------------

    def _apply_sub(self, sub_id: str, value: bytes | None, revision: int, now: float) -> set[str]:
        if value is None:
            return self._remove_sub(sub_id)  # removed without a final NOTIFY (see blf_subscribe)
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
        self._plan(current[0] if current is not None else None, subscription, now)
        return {subscription.presentity}

    def _plan(self, before: Subscription | None, after: Subscription, now: float) -> None:
        """A written record asks for a NOTIFY: a new subscription its first, a refresh
        one (RFC 6665 §4.2.1.2), a timeout counted by the failure route a retry later."""
        if before is None and now:
            self.held[after.sub_id] = now + FIRST_NOTIFY_GRACE_SECONDS
        if before is None and self._sent_of(after, now) is not None:
            return  # created by a SIP worker of ours, which sent its first NOTIFY
        if before is None or after.expires_at != before.expires_at:
            self.forced.add(after.sub_id)
        elif after.notify_timeouts > before.notify_timeouts:
            when = now + retry_delay(after.notify_timeouts)
            heapq.heappush(self._retries, (when, after.sub_id, after.notify_timeouts))

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
        self.sent.pop(sub_id, None)
        self.forced.discard(sub_id)
        self.held.pop(sub_id, None)
        if old is None:
            return set()
        self._unindex(old[0])
        return {old[0].presentity}

    def _reset(self, presentity: str) -> set[str]:
        """`blfctl reset`: every subscription to `presentity` is due whatever its state, with
        a full document (what its last NOTIFY showed is forgotten, for partial packages);
        numbered on from its last NOTIFY as any other. Only the responsible sends (due)."""
        ids = self.by_presentity.get(presentity, set())
        self.forced |= ids
        for sub_id in ids:
            sent = self.sent.get(sub_id)
            if sent is not None:
                self.sent[sub_id] = replace(sent, shown=None)
        return {presentity} if ids else set()

    def _apply_instance(self, name: str, alive: bool) -> set[str]:
        """Responsibility moves only for that instance's subscriptions and for orphans
        (rendezvous over a different set): their presentities are dirty."""
        if alive == (name in self.instances):
            return set()
        (self.instances.add if alive else self.instances.discard)(name)
        if not alive:
            self.serves.pop(name, None)
        self.bump_wanted = self.bump_wanted or not alive
        owners = {name} | {owner for owner in self.by_owner if owner not in self.instances}
        return {self.subs[sub_id][0].presentity for owner in owners for sub_id in self.by_owner.get(owner, ())}

    def forget(self, sub_id: str) -> None:
        self._remove_sub(sub_id)

    def remember(self, subscription: Subscription, revision: int) -> None:
        current = self.subs.get(subscription.sub_id)
        if current is None or current[1] < revision:
            self._index(subscription, revision)

def _packages_served(value: bytes) -> frozenset[str]:
    try:
        announced = codec.decode(value).get("packages")
    except ValueError:
        return LEGACY_PACKAGES
    return frozenset(str(name) for name in announced) if isinstance(announced, list) else LEGACY_PACKAGES


def _put(table: dict[str, dict[str, T]], account: str, key: str, value: T | None) -> None:
    entries = table.setdefault(account, {})
    if value is None:
        entries.pop(key, None)
        if not entries:
            table.pop(account, None)
    else:
        entries[key] = value
