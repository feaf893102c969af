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

import KSR  # type: ignore[import-not-found]
from blf_calls import LEG_QUEUE
from blf_context import Context, shared_lease_id
from blf_reconcile import live_dialogs
from blf_wakeup import Wakeup

from statestore import codec
from statestore.domain.errors import StoreUnavailable
from statestore.domain.legbook import LegBook, LegWrite, WriteOutcome
from statestore.domain.reconcile import reconcile

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
        self.lease_id = 0
        self.ended_lease = 0
        self.ended_granted = 0.0
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
        self._follow_lease(now)
        if not self.lease_id or now < self.next_try:
            return
        try:
            if self.book.pending:
                self._write(self.book.due(now), now)
            if now >= self.next_reconcile:
                self._reconcile(now)
        except StoreUnavailable as exc:
            if not self.ctx.store_down():
                KSR.warn(f"blf legs: store unavailable, retrying every {RETRY_SECONDS}s: {exc}\n")
            self.ctx.mark_store_down()
            self.next_try = now + RETRY_SECONDS
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

    def _follow_lease(self, now: float) -> None:
        """The lease keeper grants the instance lease; a new one means the legs on the
        old one are gone (it expired): every live call is written again, at once."""
        lease_id = shared_lease_id()
        if lease_id == self.lease_id:
            return
        if self.lease_id:
            self.book.lease_lost()
        self.lease_id = lease_id
        self.next_reconcile = now

    def _write(self, writes: list[LegWrite], now: float) -> None:
        """Every call due, in one request (store.write_calls): a flush costs one round trip
        whatever the number of calls in it."""
        if not writes:
            return
        outcomes = self.ctx.store.write_calls([(w.legs, self._lease_for(w, now), w.create) for w in writes])
        # Reconciliation or a retry created these first: written as updates instead.
        again = [index for index, outcome in enumerate(outcomes) if outcome is WriteOutcome.EXISTS]
        if again:
            retried = self.ctx.store.write_calls(
                [(writes[i].legs, self._lease_for(writes[i], now), False) for i in again]
            )
            for index, outcome in zip(again, retried, strict=True):
                outcomes[index] = outcome
        for write, outcome in zip(writes, outcomes, strict=True):
            if outcome is WriteOutcome.MISSING:
                self.book.missing(write)  # created again on the next tick
            elif outcome is not WriteOutcome.EXISTS:
                self.book.written(write)

    def _lease_for(self, write: LegWrite, now: float) -> int:
        return self._ended_lease(now) if write.ended else self.lease_id

    def _ended_lease(self, now: float) -> int:
        if not self.ended_lease or now - self.ended_granted >= ENDED_ROTATE_SECONDS:
            self.ended_lease = self.ctx.store.grant_lease(ENDED_TTL)
            self.ended_granted = now
        return self.ended_lease

    def _reconcile(self, now: float) -> None:
        self.next_reconcile = now + self.ctx.settings.reconcile_seconds
        # The store first, the dialogs second: a call that ends between the two reads is
        # then seen stored and not live (ended, correctly), never live and not stored.
        on_lease = self.ctx.store.legs_on(self.lease_id)
        before = {key: (record.legs, record.stored) for key, record in self.book.calls.items()}
        unknown = reconcile(self.book, live_dialogs(), list(on_lease), now, GRACE_SECONDS)
        if unknown:
            self.ctx.store.delete_legs([on_lease[leg_id] for leg_id in unknown])
        changed = sum(
            1 for key, record in self.book.calls.items() if before.get(key) != (record.legs, record.stored)
        )
        if changed or unknown:
            KSR.info(f"blf reconcile: {changed} calls to write again or end, {len(unknown)} unknown legs deleted\n")
