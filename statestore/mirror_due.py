"""What the notifier sends from its copy of the store (statestore/mirror.py): which
subscriptions are due, when (rate control, retries after a timeout, expiry, the SIP
worker's first NOTIFY) and how each NOTIFY is numbered.

Pure: the time is passed in. `DuePlanner` is the part of `Mirror` that reads the copy and
the notifier's own memory of what it sent; the copy itself (records, subscriptions and
their indexes, live instances) is kept by `Mirror`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, replace

from statestore.domain import bodies, packages
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Binding, Leg, Publication, Subscription
from statestore.domain.packages import PACKAGES
from statestore.domain.subscription import (
    EPOCH_STRIDE,
    is_expired,
    notify_numbers,
    responsible_for,
    responsible_instance,
    serving,
)

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
    last showing a state of `digest`, sent `at` (rate control), showing `shown` (kept
    for packages that send partial state only). Memory of this process only."""

    epoch: int
    count: int
    digest: str
    at: float = 0.0
    shown: PresentityState | None = None


class DuePlanner:
    """Due subscriptions and NOTIFY numbers, from the state `Mirror` keeps (declared here,
    set up by Mirror.__init__)."""

    records: dict[str, dict[str, dict[str, object]]]
    subs: dict[str, tuple[Subscription, int]]
    instances: set[str]
    serves: dict[str, frozenset[str]]
    by_presentity: dict[str, set[str]]
    _expiry: list[tuple[float, str, float]]
    epoch: int
    sent: dict[str, Sent]
    forced: set[str]
    held: dict[str, float]
    _retries: list[tuple[float, str, int]]
    _throttled: list[tuple[float, str]]
    throttled: set[str]
    _publication_expiry: list[tuple[float, str]]
    _to_sweep: set[str]
    bump_wanted: bool

    @property
    def legs(self) -> dict[str, dict[str, Leg]]:
        return self.records["legs"]  # type: ignore[return-value]

    @property
    def bindings(self) -> dict[str, dict[str, Binding]]:
        return self.records["regs"]  # type: ignore[return-value]

    @property
    def publications(self) -> dict[str, dict[str, Publication]]:
        return self.records["pubs"]  # type: ignore[return-value]

    # --- numbering --------------------------------------------------------------------------

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
            shown = due.state if PACKAGES[subscription.event].partial else None
            self.sent[subscription.sub_id] = Sent(sent.epoch, sent.count + 1, due.digest, due.state.now, shown)
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
            self.sent[sub_id] = Sent(sent.epoch, sent.count - 1, "", 0.0, None)

    # --- what to send -----------------------------------------------------------------------

    def state_of(self, presentity: str, now: float = 0.0) -> PresentityState:
        """What the bodies of `presentity` are made of at `now`; its watchers only when a
        package of one of its subscriptions shows them (watcher information)."""
        subs = [self.subs[sub_id][0] for sub_id in self.by_presentity.get(presentity, ())]
        shown = any(PACKAGES[sub.event].reads("subs") for sub in subs)
        watchers = sorted(subs, key=lambda sub: sub.sub_id) if shown else []
        return PresentityState(
            tuple(self.legs.get(presentity, {}).values()),
            tuple(self.bindings.get(presentity, {}).values()),
            tuple(self.publications.get(presentity, {}).values()),
            tuple(watchers),
            now,
        )

    def _publications_expired(self, now: float) -> set[str]:
        """Accounts a publication of which expired by `now` (their bodies change); they are
        also left for the sweep (expired_publications)."""
        accounts: set[str] = set()
        while self._publication_expiry and self._publication_expiry[0][0] <= now:
            accounts.add(heapq.heappop(self._publication_expiry)[1])
        self._to_sweep |= accounts
        return accounts

    def expired_publications(self, me: str, now: float) -> list[tuple[str, Publication]]:
        """(key, publication) of the expired publications `me` removes from the store: those
        of accounts whose expiry came up, when `me` is the live instance chosen for the
        account by rendezvous hashing (one sweeper per account, no lease per publication)."""
        live = sorted(self.instances)
        found: list[tuple[str, Publication]] = []
        for account in self._to_sweep:
            if responsible_for(account, live) == me:
                entries = self.publications.get(account, {})
                found += [(key, pub) for key, pub in entries.items() if pub.expires_at <= now]
        self._to_sweep = set()
        return found

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
        waited = self._throttle_over(now)
        presentities = (set(dirty) | self._publications_expired(now)
                        | {self.subs[sub_id][0].presentity for sub_id in forced | expired | waited})
        for presentity in presentities:
            ids = self.by_presentity.get(presentity, set())
            mine = []
            for sub_id in ids:
                subscription = self.subs[sub_id][0]
                if responsible_instance(subscription, self._serving(subscription.event, live)) == me:
                    mine.append(self.subs[sub_id])
                else:
                    self.sent.pop(sub_id, None)  # another sends: start afresh if it comes back
            if not mine:
                continue
            state = self.state_of(presentity, now)
            plans: dict[tuple[object, ...], tuple[str, bodies.Template]] = {}
            for subscription, revision in mine:
                sub_id = subscription.sub_id
                gone = sub_id in expired or is_expired(subscription, now)
                sent = self._sent_of(subscription)
                previous = sent.shown if sent is not None else None
                plan = (subscription.event, subscription.profile, subscription.status, subscription.content_type,
                        id(previous) if previous is not None else None)
                if plan not in plans:
                    plans[plan] = (
                        packages.digest_for(subscription, state),
                        packages.template_for(subscription, state, previous),
                    )
                digest, body = plans[plan]
                if gone or sub_id in forced or sent is None or sent.digest != digest:
                    if not gone and sub_id not in forced and self._throttle(subscription, sent, now):
                        continue
                    found[sub_id] = Due(subscription, revision, state, gone, body, digest)
        return self._after_first_notifies(found, now, first_sent)

    def _serving(self, event: str, live: list[str]) -> list[str]:
        return serving(event, self.serves, live)

    def _throttle(self, subscription: Subscription, sent: Sent | None, now: float) -> bool:
        """Whether the subscription's NOTIFY waits for its package's min_interval (RFC 3856
        §6.10 rate control): then it is looked at again once the interval is over, with the
        state current then, so changes in between are merged and the last one is sent."""
        interval = PACKAGES[subscription.event].min_interval
        if sent is None or not sent.at or now >= sent.at + interval:
            return False
        if subscription.sub_id not in self.throttled:
            self.throttled.add(subscription.sub_id)
            heapq.heappush(self._throttled, (sent.at + interval, subscription.sub_id))
        return True

    def _throttle_over(self, now: float) -> set[str]:
        """Subscriptions whose wait for min_interval is over."""
        over: set[str] = set()
        while self._throttled and self._throttled[0][0] <= now:
            sub_id = heapq.heappop(self._throttled)[1]
            self.throttled.discard(sub_id)
            if sub_id in self.subs:
                over.add(sub_id)
        return over

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

    def _sent_of(self, subscription: Subscription, now: float = 0.0) -> Sent | None:
        """What this notifier sent for the subscription. A record numbered at this
        notifier's own epoch was created by a SIP worker of this instance, which answered
        200 and then sent NOTIFY number 0 showing `last_digest` (RFC 6665 §4.2.1.1: the 200
        first); epochs are never handed out twice, so no other process numbered at it.
        For a package with partial state, what it showed is the state here now if that
        has the same digest (seen when its create comes in): the next NOTIFY is partial."""
        sent = self.sent.get(subscription.sub_id)
        if sent is None and self.epoch and subscription.epoch == self.epoch:
            shown = None
            if PACKAGES[subscription.event].partial:
                state = self.state_of(subscription.presentity, now)
                shown = state if packages.digest_for(subscription, state) == subscription.last_digest else None
            sent = self.sent[subscription.sub_id] = Sent(self.epoch, 1, subscription.last_digest, 0.0, shown)
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
            if responsible_instance(current[0], self._serving(current[0].event, live)) == me:
                expired.append(sub_id)
        return expired
