"""The notifier process: watches the store and sends the NOTIFYs this instance owns.

Runs in its own rtimer process. The etcd watch thread hands changes over through a
queue; each tick blocks on that queue for a few milliseconds, the only time the watch
thread can run, since Kamailio 5.6 never releases the GIL otherwise (KAMAILIO-NOTES).
Snapshot, watch and resume of its mirror: blf_notifier_feed.py.

It also sweeps expired publications (RFC 3903) from the store, those of the accounts it is
responsible for (Mirror.expired_publications), about once a second. A publication holds
no etcd lease of its own: lease expiry storms of a few hundred per second have stalled
etcd clusters (etcd issue #9360, KAMAILIO-NOTES), and phones publish in step (a PBX
restart, a morning log-in) so their publications would expire in step too. A lease per
publication would also cost a grant per PUBLISH and a lease the leader tracks and
revokes. Measured on one local member (bench/lease_vs_sweep.py, one client): grant + put
190-320 per second against 620-650 plain puts; guarded deletes (the sweep) 500-600 per
second; 3,000 leases expiring together were all gone 2.7 s late (etcd revokes about 1,000
a second), while a probe's writes kept their idle latency: the stall of #9360 is a
cluster's risk, not reproduced on one member. Watchers do not wait for the sweep: the
mirror re-renders a presentity at its publication's expiry; the sweep only frees the
store, one guarded delete per publication (compared on its value, so a refresh that won
meanwhile is never deleted).
"""

from __future__ import annotations

import queue
import random
import time
import traceback
from collections import deque

import blf_metrics
import blf_notify
import KSR  # type: ignore[import-not-found]
from blf_context import Context, StoreHandle, share_epoch, shared_lease_confirmed
from blf_notifier_feed import MirrorFeed

from statestore.domain.contention import ownership_current
from statestore.domain.errors import Contended, StoreUnavailable
from statestore.domain.model import Publication
from statestore.domain.subscription import final_reason
from statestore.mirror import Mirror
from statestore.mirror_due import Due
from statestore.store import WatchEvent

# A NOTIFY deferred by a store outage is tried again this much later.
RETRY_SECONDS = 1.0
# NOTIFYs sent per tick at most (about 0.1 s of work).
NOTIFY_BUDGET = 500
# A bulk of presentities to look at (all of them after a resync, an instance's after its
# death) waits in a backlog, looked at this many at a time within each tick's budget, after
# the tick's live changes: calls placed meanwhile are NOTIFYed first, and a tick never
# computes more than it can send.
BULK_PRESENTITIES = 256
BACKLOG_CHUNK = 32
# How often the NOTIFY headers cached for subscriptions that have gone are dropped.
PRUNE_SECONDS = 30.0
# How often expired publications are removed from the store (see the module's docstring).
SWEEP_SECONDS = 1.0


class Notifier(MirrorFeed):
    """The NOTIFYs of one zone's subscriptions that this instance owns, from a mirror of
    that zone's store (the notifier process runs one per zone served, in turn: each blocks
    on its watch queue for its share of the tick's wait, `wait_share`)."""

    def __init__(self, ctx: Context, zone: StoreHandle | None = None, wait_share: float = 1.0) -> None:
        self.ctx = ctx
        self.zone = zone or ctx.home
        self.wait_share = wait_share
        self.events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
        self.mirror = Mirror()
        self.synced = False
        self.next_sync = 0.0
        # The last revision each watched prefix delivered, the watches, and whether a broken
        # watch may be resumed from there (not after a lapse or a compaction: read again).
        self.reached: dict[str, int] = {}
        self.watches: list[int] = []
        self.resumable = False
        # Presentities whose NOTIFYs were deferred, and when to try them again.
        self.deferred: set[str] = set()
        self.next_retry = 0.0
        self.next_bump = 0.0
        self.resync_failures = 0
        # NOTIFYs tm could not send (counted, and logged once per tick).
        self.unsendable = 0
        # Presentities to look at after the live changes, oldest first (see BULK_PRESENTITIES).
        self.backlog: deque[str] = deque()
        self.in_backlog: set[str] = set()
        self.next_prune = 0.0
        # The instance lease the notifier last saw confirmed, and whether it has stopped
        # sending because that confirmation grew too old (see _owning).
        self.lease_seen = 0
        self.lapsed = False
        self.next_sweep = 0.0
        # Expired publications a sweep could not remove (store unavailable): tried again.
        self.unswept: list[Publication] = []
        self.report = blf_metrics.NotifierReport(self.zone.zone)

    def tick(self) -> None:
        now = time.monotonic()
        self.report.tick(self.mirror if self.synced else None, self.ctx.settings.instance, now)
        if not self._owning(now):
            self._drain()  # lets the watch thread run; what it brings is read again after the resync
            return
        if not self._epoch_ready(now):
            return  # nothing is numbered before the epoch is ours
        if not self.synced and now >= self.next_sync and not self.zone.down():
            # (not while the lease keeper finds the zone down: its probe says when it is back,
            # and the tries would hold up the other zones' notifiers in this process)
            self._resync()
        dirty = self._drain()
        if self.deferred and now >= self.next_retry:
            dirty |= self.deferred
            self.deferred = set()
        if not self._epoch_ready(now):
            self.deferred |= dirty  # an instance went away: take its subscriptions over later
            return
        if self.synced:
            self._notify(dirty, time.time())
            if now >= self.next_prune:
                blf_notify.forget_dialogs(self.mirror.subs)
                self.next_prune = now + PRUNE_SECONDS
            if now >= self.next_sweep:
                self._sweep(time.time())
                self.next_sweep = now + SWEEP_SECONDS
        self._log_notes()

    def _sweep(self, now: float) -> None:
        """Remove from the store the expired publications this instance sweeps; each only if
        still as the mirror saw it (refreshed meanwhile: a new key, and the old one is gone)."""
        found = self.unswept + [pub for _, pub in self.mirror.expired_publications(self.ctx.settings.instance, now)]
        self.unswept = []
        for index, publication in enumerate(found):
            try:
                self.store.delete_publication(publication.account, publication.etag, expected=publication)
            except StoreUnavailable as exc:
                self.unswept = found[index:]
                KSR.warn(f"blf notifier: {len(self.unswept)} expired publications left for later: {exc}\n")
                return

    def _notify(self, dirty: set[str], now: float) -> None:
        """NOTIFY what is due: the live changes first, then the backlog, NOTIFY_BUDGET at most.
        Expiries and retries come from the mirror's heaps: a tick costs nothing when none is due."""
        me = self.ctx.settings.instance
        if len(dirty) > BULK_PRESENTITIES:
            self._to_backlog(dirty)
            dirty = set()
        dues = self.mirror.due(me, dirty, now, blf_notify.first_sent)
        for due in dues[:NOTIFY_BUDGET]:
            self._act(due)
        self._to_backlog(due.subscription.presentity for due in dues[NOTIFY_BUDGET:])
        budget = NOTIFY_BUDGET - len(dues)
        while budget > 0 and self.backlog:
            chunk: set[str] = set()
            while self.backlog and len(chunk) < BACKLOG_CHUNK:
                presentity = self.backlog.popleft()
                self.in_backlog.discard(presentity)
                chunk.add(presentity)
            for due in self.mirror.due(me, chunk, now, blf_notify.first_sent):
                self._act(due)
                budget -= 1

    def _may_send(self, now: float) -> bool:
        """Whether the lease this notifier knows was confirmed by etcd recently enough that no
        other instance can have taken this one's subscriptions over (contention.ownership_current),
        by the monotonic clock read now: after a freeze (SIGSTOP, a paused VM) this is the
        first thing that notices it."""
        confirmed = shared_lease_confirmed(self.zone)
        if confirmed is None or confirmed[0] != self.lease_seen:
            return False
        return ownership_current(confirmed[1], now, self.ctx.settings.lease_ttl)

    def _owning(self, now: float) -> bool:
        """Whether this notifier may send. Once its lease went unconfirmed too long, or was
        replaced (it expired: another instance may have taken over and NOTIFYed above our
        numbers), it sends nothing until it has taken a new epoch and read again what it owns
        (RFC 6665 §4.1.2.2: CSeq strictly increases within a dialog; RFC 4235 §4.1: version too)."""
        confirmed = shared_lease_confirmed(self.zone)
        if confirmed is not None and confirmed[0] != self.lease_seen:
            if self.lease_seen:
                self._lapse(f"lease {self.lease_seen:x} replaced by {confirmed[0]:x}")
            self.lease_seen = confirmed[0]
        if not self._may_send(now):
            if self.lease_seen and not self.lapsed:
                age = now - confirmed[1] if confirmed is not None else float("inf")
                self._lapse(f"lease {self.lease_seen:x} not confirmed for {age:.1f}s (frozen or cut off)")
            self.lapsed = True
            return False
        if self.lapsed:
            self.lapsed = False
            # Read again what we own, numbered at an epoch above every other sender's: what
            # this notifier sent before is forgotten, or it would number on from there
            # (mirror.numbers), below what an instance that took over sent meanwhile.
            self.synced, self.next_sync, self.resumable = False, 0.0, False
            if self.mirror.epoch:
                self.mirror.bump_wanted = True
            self.mirror.sent.clear()
            self.deferred.clear()
            self.backlog.clear()
            self.in_backlog.clear()
            if self.mirror.epoch:
                KSR.info("blf notifier: lease confirmed again: new epoch and a fresh read before any NOTIFY\n")
        return True

    def _lapse(self, why: str) -> None:
        if not self.lapsed:
            KSR.warn(f"blf notifier: {why}: sending nothing until a new epoch and a fresh read\n")
        self.lapsed = True

    def _epoch_ready(self, now: float) -> bool:
        """Whether NOTIFYs can be numbered: a new ownership epoch (one compare-and-swap) is
        taken at start, and before numbering the NOTIFYs of subscriptions taken over, so
        that they number above every earlier sender's."""
        if self.mirror.epoch and not self.mirror.bump_wanted:
            return True
        if now < self.next_bump:
            return False
        try:
            epoch = self.store.next_epoch()
        except StoreUnavailable as exc:
            self.next_bump = now + RETRY_SECONDS
            KSR.warn(f"blf notifier: cannot take a new epoch, store unavailable: {exc}\n")
            return False
        except Contended as exc:  # many notifiers took epochs at once: ours comes shortly
            self.next_bump = now + random.uniform(0.05, 0.25)
            KSR.info(f"blf notifier: {exc}; trying again\n")
            return False
        self.mirror.epoch, self.mirror.bump_wanted = epoch, False
        share_epoch(epoch, self.zone)
        KSR.info(f"blf notifier: instance {self.ctx.settings.instance} numbers NOTIFYs at epoch {epoch}\n")
        return True

    def _log_notes(self) -> None:
        if self.unsendable:
            KSR.warn(
                f"blf notifier: tm could not send {self.unsendable} NOTIFYs, retried in {RETRY_SECONDS}s\n"
            )
            self.unsendable = 0
        for note in self.mirror.notes:
            KSR.warn(f"blf notifier: {note}\n")
        self.mirror.notes.clear()

    def _act(self, due: Due) -> None:
        if not self._may_send(time.monotonic()):
            # Frozen between the tick's check and this NOTIFY: the next tick lapses and resyncs.
            self.deferred.add(due.subscription.presentity)
            return
        try:
            self._send(due)
        except StoreUnavailable as exc:
            self.deferred.add(due.subscription.presentity)
            self.next_retry = time.monotonic() + RETRY_SECONDS
            KSR.warn(f"blf notifier: NOTIFY for {due.subscription.sub_id} deferred: {exc}\n")
        except Exception:  # noqa: BLE001 - one bad record never stops the others' NOTIFYs
            KSR.err(f"blf notifier: NOTIFY for {due.subscription.sub_id} failed: {traceback.format_exc()}\n")

    def _send(self, due: Due) -> None:
        """Send what `due` asks for; the record is written only to remove it (expiry, or
        ended: an unsubscribe, a removed account, with the reason it was ended with)."""
        now = time.time()
        subscription = due.subscription
        if due.expired:
            if not self.store.delete_subscription(subscription, due.revision):
                return  # refreshed (or removed) meanwhile: its watch event tells us which
            final = self.mirror.numbers(due)
            self.mirror.forget(subscription.sub_id)
            if final is not None:
                blf_notify.send_numbered(
                    self.ctx, subscription, *final, due.state, now, final_reason(subscription), due.body
                )
            return
        numbers = self.mirror.numbers(due)
        if numbers is not None:
            if not blf_notify.send_numbered(self.ctx, subscription, *numbers, due.state, now, None, due.body):
                # Not sent at all (tm refused it): the same numbers, with the state current
                # (the presentity is looked at again), go out on a later tick, as for a
                # NOTIFY deferred by a store outage.
                self.mirror.unsent(subscription.sub_id)
                self.deferred.add(subscription.presentity)
                self.next_retry = time.monotonic() + RETRY_SECONDS
                self.unsendable += 1
            else:
                self.report.sent(subscription.presentity, time.monotonic())
        elif not self.mirror.bump_wanted:
            # CSeq would pass 2**31-1: the subscription ends; the phone subscribes again.
            self.store.delete_subscription(subscription, due.revision)
            KSR.notice(f"blf notifier: subscription {subscription.sub_id} used up its CSeq space, removed\n")
