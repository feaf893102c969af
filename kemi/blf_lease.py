"""The instance lease: one per instance, kept alive here, shared with the SIP workers.

Every live call leg and the instance's own key hang on it; if the instance dies the lease
expires after its TTL and etcd deletes them, so no lamp stays lit (issue 2, item 4).
The lease id reaches the other processes through a shared variable (blf_context); the
leg writer (blf_legs) writes the legs and reconciles them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

import KSR  # type: ignore[import-not-found]
from blf_context import Context, StoreHandle, share_instances
from blf_routing import BOOT_TIME

from statestore.domain.contention import store_is_slow
from statestore.domain.errors import StoreUnavailable
from statestore.domain.packages import PACKAGES
from statestore.etcd_store import NOSPACE_ERROR
from statestore.maintenance import AlarmLog
from statestore.store import StateStore

PROBE_SECONDS = 0.5


class LeaseKeeper:
    """The instance lease in one zone (the lease process runs one keeper per zone served):
    every zone has its own lease, "store down" flag and measured round trip."""

    def __init__(
        self, ctx: Context, clock: Callable[[], float] = time.monotonic, store: StateStore | None = None,
        zone: StoreHandle | None = None,
    ) -> None:
        self.ctx = ctx
        self.zone = zone or ctx.home
        self.clock = clock
        # Its own client, with a deadline longer than a request's (Context.probes): a store
        # that answers slowly is measured slow and shared as such, not declared down.
        probes = getattr(ctx, "probes", {})
        self.store: StateStore = store if store is not None else probes.get(self.zone.zone, ctx.store)
        self.slow = False
        self.said = 0.0  # the round trip last reported slow
        self.lease_id = 0
        self.next_refresh = 0.0
        self.alarm_log = AlarmLog()

    def tick(self) -> None:
        now = self.clock()
        if now < self.next_refresh and not self.zone.down():
            return
        ttl = self.ctx.settings.lease_ttl
        interval = max(ttl / 3.0, 0.5)
        try:
            sent = self.clock()
            if not self.lease_id or not self.store.refresh_lease(self.lease_id):
                self._grant(ttl)
            # etcd counts the lease's TTL from when it received the refresh, after `sent`.
            self.zone.share_lease_confirmed(self.lease_id, sent)
            self._measured(self.clock() - sent)
            # Who is alive, for routing to the instance that holds a phone's flow: as the
            # first zone says, or another zone while the first is down.
            if self.zone is self.ctx.home or self.ctx.home.down():
                found = self.store.instances()
                # Each with when it last started: a binding on a connection older than that is gone.
                share_instances({
                    name: {"sip": str(info["sip"]), "boot": info.get("boot")}
                    for name, info in found.items() if info.get("sip")
                })
            if self.zone.down():
                KSR.info(f"blf lease: etcd reachable again (zone {self.zone.zone})\n")
            self.zone.mark_reached()
            self._watch_alarms(now)
        except StoreUnavailable as exc:
            if not self.zone.down():
                KSR.warn(
                    f"blf lease: store unavailable (zone {self.zone.zone}), probing every {PROBE_SECONDS}s: {exc}\n"
                )
            self.zone.mark_down()
            if NOSPACE_ERROR in str(exc):  # a new lease is a write too: refused under NOSPACE
                with contextlib.suppress(StoreUnavailable):
                    self._watch_alarms(now)
            interval = PROBE_SECONDS  # look again soon: the workers wait for this news
        self.next_refresh = now + interval

    def _measured(self, seconds: float) -> None:
        """Share the store's round trip (the workers' timeouts and their `100 Trying` go by
        it) and say when the store turns slow, changes its pace by a factor 1.5 while slow,
        or turns fast again: once each, not per probe."""
        self.zone.share_round_trip(self.clock(), seconds)
        slow = store_is_slow(seconds)
        if slow and (not self.slow or not self.said / 1.5 < seconds < self.said * 1.5):
            KSR.warn(f"blf lease: store slow, round trip {seconds:.3f}s; requests wait longer\n")
            self.said = seconds
        elif self.slow and not slow:
            KSR.info(f"blf lease: store fast again, round trip {seconds:.3f}s\n")
        self.slow = slow

    def _watch_alarms(self, now: float) -> None:
        """A raised alarm (NOSPACE above all: etcd refuses every write, the instance answers
        503 to everything) is said at once and again every minute while it lasts, never per
        request. Leases still renew under NOSPACE: this is where it shows."""
        alarms = self.store.alarms()
        verdict = self.alarm_log.observe(alarms, now)
        if verdict == "raised":
            KSR.crit(
                f"blf lease: etcd alarm raised: {', '.join(alarms)}: etcd refuses every write until an operator "
                "runs `blfctl store maintain` (README \"Operating the store\")\n"
            )
        elif verdict == "cleared":
            KSR.notice("blf lease: etcd alarms cleared, writes accepted again\n")

    def _grant(self, ttl: int) -> None:
        if self.lease_id:
            KSR.err(f"blf lease: lease {self.lease_id:x} expired; call legs on it are gone\n")
        lease_id = self.store.grant_lease(ttl)
        # `packages`: the event packages this version serves; no subscription is made the
        # responsibility of an instance that does not (a rolling upgrade, issue 13).
        info = {
            "sip": self.ctx.settings.sip, "pid": os.getppid(), "started": time.time(), "boot": BOOT_TIME,
            "packages": sorted(PACKAGES),
        }
        self.store.announce_instance(self.ctx.settings.instance, info, lease_id)
        self.lease_id = lease_id
        # The leg writer sees the new id and writes the legs of live calls back at once.
        self.zone.share_lease_id(lease_id)
        KSR.info(
            f"blf lease: instance {self.ctx.settings.instance} holds lease {lease_id:x} ttl {ttl}s "
            f"in zone {self.zone.zone}\n"
        )
