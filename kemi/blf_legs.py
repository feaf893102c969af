"""The leg writer: one rtimer process per instance that owns every leg write.

SIP workers queue each change of a call in shared memory (mqueue `blf_legs`,
blf_calls.report) and never touch the store for calls. Each tick here drains the
queue, folds the changes into the calls' legs (LegBook, the transition table) and
writes what is due: one transaction per call and flush, the INVITE held briefly so
that its first 18x joins it. A call that ends is written `terminated`, with its event
and code, under a short-lived lease shared by every call ending in the same second:
watchers see the end once, then the legs leave the store without another request.
It also reconciles the instance's legs with its live dialogs (blf_reconcile).
"""

from __future__ import annotations

import os
import time

import blf_metrics
import KSR  # type: ignore[import-not-found]
from blf_calls import LEG_QUEUE
from blf_context import Context, StoreHandle
from blf_reconcile import live_dialogs
from blf_wakeup import Wakeup

from statestore import codec
from statestore.domain.errors import LeaseGone, StoreUnavailable
from statestore.domain.legbook import LegBook, LegWrite, WriteOutcome
from statestore.domain.model import Leg
from statestore.domain.reconcile import reconcile
from statestore.metrics import LEG_WRITES

# A new call is written once its first 18x is in, or after this long (ms): so that an
# answered call is three writes also when the callee is slow to ring. Nothing rings
# before the 18x, so only a `trying` dialog can be shown that much later.
HOLD_SECONDS = float(os.environ.get("BLF_LEG_HOLD_MS", "250")) / 1000.0
# Terminated legs live under a lease of this TTL, granted at most once per rotation:
# they stay in the store between ENDED_TTL - ENDED_ROTATE and ENDED_TTL seconds.
ENDED_TTL = 3
ENDED_ROTATE_SECONDS = 1.0
RETRY_SECONDS = 0.5
# How often ended calls are let go of (LegBook.forget_ended looks at every call).
FORGET_SECONDS = 1.0
# Calls younger than this are left alone by reconciliation: the dialog list and the
# store may not show them yet.
GRACE_SECONDS = 5.0
# With no call held, the writer sleeps until a SIP worker wakes it (blf_wakeup), or this long.
IDLE_WAIT_SECONDS = 0.05


class LegWriter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.book = LegBook(ctx.settings.instance, HOLD_SECONDS)
        # Per zone: each party's leg is written in its account's zone, on that zone's
        # instance lease (Context.zone); a call between two zones is one write in each.
        self.leases: dict[str, int] = {}
        self.ended_leases: dict[str, tuple[int, float]] = {}
        self.next_try = 0.0
        self.next_forget = 0.0
        self.next_reconcile = time.monotonic() + ctx.settings.reconcile_seconds
        self.wakeup: Wakeup | None = None
        try:
            self.wakeup = Wakeup(ctx.settings.instance)
        except OSError as exc:  # another process holds the name: poll every tick instead
            KSR.warn(f"blf legs: no wake-up socket ({exc}), polling the queue\n")

    def tick(self) -> None:
        if self.wakeup is not None:
            # Held calls are written on time by the rtimer's 2 ms beat; otherwise nothing
            # happens before a SIP worker queues a change.
            self.wakeup.wait(0.0 if self.book.pending else IDLE_WAIT_SECONDS)
        now = time.monotonic()
        self._drain(now)
        self._follow_leases(now)
        if not any(self.leases.values()) or now < self.next_try:
            return
        if self.book.pending:
            self._write(self.book.due(now), now)
        if now >= self.next_reconcile:
            self._reconcile(now)
        if now >= self.next_forget:
            self.next_forget = now + FORGET_SECONDS
            self.book.forget_ended(now)

    def _drain(self, now: float) -> None:
        while KSR.mqueue.mq_fetch(LEG_QUEUE) == 1:
            raw = KSR.pv.get(f"$mqv({LEG_QUEUE})")
            try:
                parties, change = codec.decode_change(raw)
            except (ValueError, KeyError, TypeError) as exc:
                KSR.err(f"blf legs: unreadable change {raw!r}: {exc}\n")
                continue
            self.book.take(parties, change, now)

    def _follow_leases(self, now: float) -> None:
        """The lease keepers grant the instance lease of each zone; a new one means the legs
        on the old one are gone (it expired): every live call is written again, at once."""
        for name, zone in self.ctx.stores.items():
            lease_id = zone.lease_id()
            if lease_id == self.leases.get(name, 0):
                continue
            if self.leases.get(name):
                self.book.lease_lost()
            self.leases[name] = lease_id
            self.next_reconcile = now

    def _write(self, writes: list[LegWrite], now: float) -> None:
        """Every call due, one request per zone (store.write_calls): a flush costs one round
        trip per zone whatever the number of calls in it. A call is written when every zone
        of its parties took its leg; a zone that could not is tried again RETRY_SECONDS
        later (what another zone took is then written again: an update, the same legs)."""
        if not writes:
            return
        parts: dict[str, list[tuple[int, tuple[Leg, ...]]]] = {}
        for index, write in enumerate(writes):
            for name, legs in self._by_zone(write.legs).items():
                parts.setdefault(name, []).append((index, legs))
        outcomes: dict[int, list[WriteOutcome | None]] = {index: [] for index in range(len(writes))}
        for name, part in parts.items():
            zone = self.ctx.zone_named(name)
            try:
                answers = self._write_zone(zone, [(legs, writes[index]) for index, legs in part], now)
            except StoreUnavailable as exc:
                if not zone.down():
                    KSR.warn(f"blf legs: store unavailable (zone {name}), retrying every {RETRY_SECONDS}s: {exc}\n")
                zone.mark_down()
                self.next_try = now + RETRY_SECONDS
                answers = [None] * len(part)
            except LeaseGone:
                # The zone's lease expired (the store was out of reach past its TTL): the
                # lease keeper grants another, and every live call is written again on it.
                self.next_try = now + RETRY_SECONDS
                answers = [None] * len(part)
            for (index, _), answer in zip(part, answers, strict=True):
                outcomes[index].append(answer)
        written = 0
        for index, write in enumerate(writes):
            found = outcomes[index]
            if WriteOutcome.MISSING in found:
                self.book.missing(write)  # created again on the next tick
            elif found and None not in found and WriteOutcome.EXISTS not in found:
                self.book.written(write)
                written += 1
        if written:
            blf_metrics.count(LEG_WRITES, "written", by=written)
        if len(writes) > written:
            blf_metrics.count(LEG_WRITES, "retried", by=len(writes) - written)

    def _by_zone(self, legs: tuple[Leg, ...]) -> dict[str, tuple[Leg, ...]]:
        grouped: dict[str, tuple[Leg, ...]] = {}
        for leg in legs:
            name = self.ctx.zone(leg.account).zone
            grouped[name] = (*grouped.get(name, ()), leg)
        return grouped

    def _write_zone(
        self, zone: StoreHandle, part: list[tuple[tuple[Leg, ...], LegWrite]], now: float
    ) -> list[WriteOutcome | None]:
        lease = self.leases.get(zone.zone, 0)
        if not lease:
            return [None] * len(part)  # no lease in that zone yet: its keeper is getting one
        outcomes: list[WriteOutcome | None] = list(
            zone.store.write_calls([(legs, self._lease_for(zone, w, now), w.create) for legs, w in part])
        )
        # Reconciliation or a retry created these first: written as updates instead.
        again = [index for index, outcome in enumerate(outcomes) if outcome is WriteOutcome.EXISTS]
        if again:
            retried = zone.store.write_calls(
                [(part[i][0], self._lease_for(zone, part[i][1], now), False) for i in again]
            )
            for index, outcome in zip(again, retried, strict=True):
                outcomes[index] = outcome
        return outcomes

    def _lease_for(self, zone: StoreHandle, write: LegWrite, now: float) -> int:
        return self._ended_lease(zone, now) if write.ended else self.leases.get(zone.zone, 0)

    def _ended_lease(self, zone: StoreHandle, now: float) -> int:
        lease, granted = self.ended_leases.get(zone.zone, (0, 0.0))
        if not lease or now - granted >= ENDED_ROTATE_SECONDS:
            lease = zone.store.grant_lease(ENDED_TTL)
            self.ended_leases[zone.zone] = (lease, now)
        return lease

    def _reconcile(self, now: float) -> None:
        self.next_reconcile = now + self.ctx.settings.reconcile_seconds
        # The store first, the dialogs second: a call that ends between the two reads is
        # then seen stored and not live (ended, correctly), never live and not stored.
        on_lease: dict[str, tuple[StoreHandle, str]] = {}
        for name, lease in self.leases.items():
            zone = self.ctx.zone_named(name)
            if not lease or zone.down():
                continue
            try:
                on_lease.update((leg_id, (zone, key)) for leg_id, key in zone.store.legs_on(lease).items())
            except StoreUnavailable:
                zone.mark_down()
                self.next_reconcile = now + RETRY_SECONDS
                return  # reconciled as a whole, or a live call's legs could be taken for unknown
        before = {key: (record.legs, record.stored) for key, record in self.book.calls.items()}
        unknown = reconcile(self.book, live_dialogs(), list(on_lease), now, GRACE_SECONDS)
        for zone in {on_lease[leg_id][0] for leg_id in unknown}:
            try:
                zone.store.delete_legs([on_lease[leg_id][1] for leg_id in unknown if on_lease[leg_id][0] is zone])
            except StoreUnavailable:
                zone.mark_down()
        changed = sum(
            1 for key, record in self.book.calls.items() if before.get(key) != (record.legs, record.stored)
        )
        if changed or unknown:
            KSR.info(f"blf reconcile: {changed} calls to write again or end, {len(unknown)} unknown legs deleted\n")
