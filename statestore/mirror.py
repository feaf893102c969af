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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from statestore import codec, keys
from statestore.domain import bodies
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Binding, Leg, Subscription
from statestore.domain.subscription import (
    EPOCH_STRIDE,
    PACKAGES,
    is_expired,
    notify_numbers,
    responsible_instance,
    retry_delay,
)

T = TypeVar("T")
# How long after an expiry that another instance should have acted on (or a removal of
# ours that failed) the subscription is looked at again.
EXPIRY_RECHECK_SECONDS = 5.0
# A subscription a SIP worker has just created: that worker answers 200 and sends its NOTIFY
# number 0 right after the create, while this notifier may see the create through its watch
# at the same moment. A NOTIFY of ours sent first (the state moved between the worker's read
# and its create, or the record is numbered at an older epoch) would reach the watcher before
# version 0 (RFC 4235 §4.1: the first NOTIFY carries version 0; a watcher drops a lower one
# that comes later). So a new subscription's NOTIFYs wait until that worker says it has sent
# NOTIFY 0 (the notifier passes `first_sent`), and at most this long after its create is seen.
FIRST_NOTIFY_GRACE_SECONDS = 0.3
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
    digest: str = ""


@dataclass(frozen=True)
class Sent:
    """What this notifier sent for one subscription: `count` NOTIFYs at `epoch`, the
    last showing a state of `digest`. Memory of this process only (never written)."""

    epoch: int
    count: int
    digest: str


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
        # An instance went away: subscriptions may move here; the notifier bumps the epoch
        # before it numbers any NOTIFY of theirs.
        self.bump_wanted = False

    @staticmethod
    def prefixes() -> tuple[str, ...]:
        """The parts of the store it reads (and the notifier watches): registrations only
        if some event package's bodies are made of them, never the index or accounts."""
        reads_regs = any("regs" in package.inputs for package in PACKAGES.values())
        return (keys.INSTANCES, keys.SUBS, keys.LEGS) + ((keys.REGS,) if reads_regs else ())

    def load(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        """Replace the copy of the store with a snapshot; what was sent stays known (so
        numbering goes on), for the subscriptions still there."""
        memory = (self.epoch, self.sent, self.forced, self._retries, self.bump_wanted)
        before = self.instances
        self.__init__()  # type: ignore[misc]
        for key, value, revision in items:
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
        if parsed.kind == "legs":
            _put(self.legs, parsed.account, key, None if value is None else codec.decode_leg(value))
            return self._dirty_by(parsed.account, "legs")
        if parsed.kind == "regs":
            binding = None if value is None else codec.decode_binding(value)
            _put(self.bindings, parsed.account, key, binding)
            return self._dirty_by(parsed.account, "regs")
        if parsed.kind == "subs":
            return self._apply_sub(parsed.name, value, revision, now)
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
        if before is None and self._sent_of(after) is not None:
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

    def _apply_instance(self, name: str, alive: bool) -> set[str]:
        """Responsibility moves only for that instance's subscriptions and for orphans
        (rendezvous over a different set): their presentities are dirty."""
        if alive == (name in self.instances):
            return set()
        (self.instances.add if alive else self.instances.discard)(name)
        self.bump_wanted = self.bump_wanted or not alive
        owners = {name} | {owner for owner in self.by_owner if owner not in self.instances}
        return {self.subs[sub_id][0].presentity for owner in owners for sub_id in self.by_owner.get(owner, ())}

    def forget(self, sub_id: str) -> None:
        self._remove_sub(sub_id)

    def remember(self, subscription: Subscription, revision: int) -> None:
        current = self.subs.get(subscription.sub_id)
        if current is None or current[1] < revision:
            self._index(subscription, revision)

    def numbers(self, due: Due) -> tuple[int, int] | None:
        """CSeq and version of the subscription's next NOTIFY, counted as sent; None when it
        cannot be numbered now: its epoch's numbers are used up (then `bump_wanted`, and it
        stays due) or CSeq would pass 2**31-1 (then it must end)."""
        subscription = due.subscription
        sent = self._sent_of(subscription)
        if sent is None or sent.count >= EPOCH_STRIDE:
            epoch = max(self.epoch, subscription.epoch)
            if sent is not None and epoch <= sent.epoch:
                self.bump_wanted = True
                self.forced.add(subscription.sub_id)
                return None
            sent = Sent(epoch, 0, "")
        result = notify_numbers(subscription, sent.epoch, sent.count)
        if result is not None:
            self.sent[subscription.sub_id] = Sent(sent.epoch, sent.count + 1, due.digest)
        return result

    def numbered(self, due: Due) -> Subscription | None:
        """The subscription as its next NOTIFY carries it (numbers() in its CSeq and version)."""
        result = self.numbers(due)
        return None if result is None else replace(due.subscription, cseq=result[0], version=result[1])

    def unsent(self, sub_id: str) -> None:
        """The NOTIFY just numbered for `sub_id` could not be sent (tm refused it, out of
        shared memory for one): its numbers are taken back, so that the watcher still sees
        CSeq and version step by one, and the subscription is due again at its next look."""
        sent = self.sent.get(sub_id)
        if sent is not None and sent.count > 0:
            self.sent[sub_id] = Sent(sent.epoch, sent.count - 1, "")

    # --- what to send -----------------------------------------------------------------------

    def state_of(self, presentity: str) -> PresentityState:
        return bodies.presentity_state(
            list(self.legs.get(presentity, {}).values()), list(self.bindings.get(presentity, {}).values())
        )

    def due(
        self, me: str, dirty: set[str], now: float, first_sent: Callable[[str], bool] | None = None
    ) -> list[Due]:
        """Subscriptions `me` sends for that need a NOTIFY: of dirty presentities whose
        body changed, and every one that expired. State, digest and body are computed
        once per presentity and event, whatever its number of watchers. `first_sent(sub_id)`:
        whether the SIP worker that created a subscription has sent its NOTIFY 0 (without
        it, a new subscription waits FIRST_NOTIFY_GRACE_SECONDS)."""
        live = sorted(self.instances)
        if not live:
            return []
        found: dict[str, Due] = {}
        expired = set(self._expired(me, live, now))
        forced, self.forced = (self.forced | self._retries_due(now)) & self.subs.keys(), set()
        presentities = set(dirty) | {self.subs[sub_id][0].presentity for sub_id in forced | expired}
        for presentity in presentities:
            ids = self.by_presentity.get(presentity, set())
            mine = []
            for sub_id in ids:
                if responsible_instance(self.subs[sub_id][0], live) == me:
                    mine.append(self.subs[sub_id])
                else:
                    self.sent.pop(sub_id, None)  # another sends: start afresh if it comes back
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
                sub_id = subscription.sub_id
                gone = sub_id in expired or is_expired(subscription, now)
                sent = self._sent_of(subscription)
                if gone or sub_id in forced or sent is None or sent.digest != digest:
                    found[sub_id] = Due(subscription, revision, state, gone, body, digest)
        return self._after_first_notifies(found, now, first_sent)

    def _after_first_notifies(
        self, found: dict[str, Due], now: float, first_sent: Callable[[str], bool] | None
    ) -> list[Due]:
        """`found` without the subscriptions whose SIP worker may still be sending their
        first NOTIFY: those are looked at again on a later call (forced)."""
        for sub_id, until in list(self.held.items()):
            if until <= now or (first_sent is not None and first_sent(sub_id)):
                del self.held[sub_id]
            elif sub_id in found and not found[sub_id].expired:
                del found[sub_id]
                self.forced.add(sub_id)
        return list(found.values())

    def _sent_of(self, subscription: Subscription) -> Sent | None:
        """What this notifier sent for the subscription. A record numbered at this
        notifier's own epoch was created by a SIP worker of this instance, which answered
        200 and then sent NOTIFY number 0 showing `last_digest` (RFC 6665 §4.2.1.1: the 200
        first); epochs are never handed out twice, so no other process numbered at it."""
        sent = self.sent.get(subscription.sub_id)
        if sent is None and self.epoch and subscription.epoch == self.epoch:
            sent = self.sent[subscription.sub_id] = Sent(self.epoch, 1, subscription.last_digest)
        return sent

    def _retries_due(self, now: float) -> set[str]:
        """Subscriptions whose NOTIFY timed out and whose retry is due (the count in the
        record still the one the retry was planned for: a refresh resets it)."""
        due: set[str] = set()
        while self._retries and self._retries[0][0] <= now:
            _, sub_id, timeouts = heapq.heappop(self._retries)
            current = self.subs.get(sub_id)
            if current is not None and current[0].notify_timeouts == timeouts:
                due.add(sub_id)
        return due

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
