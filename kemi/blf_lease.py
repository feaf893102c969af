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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import blf_metrics
import KSR  # type: ignore[import-not-found]
from blf_context import Context, StoreHandle, share_instances
from blf_routing import BOOT_TIME

from statestore.domain.contention import store_is_slow
from statestore.domain.errors import StoreUnavailable
from statestore.domain.packages import PACKAGES
from statestore.etcd_store import NOSPACE_ERROR
from statestore.maintenance import AlarmLog
from statestore.metrics import STORE_UP, announced_address
from statestore.store import StateStore

PROBE_SECONDS = 0.5


@dataclass
class Probe:
    """What one refresh of the lease found in the store (LeaseKeeper.probe)."""

    sent: float
    took: float = 0.0
    lease_id: int = 0
    expired: int = 0  # the lease the store no longer knew (a new one was granted)
    instances: dict[str, dict[str, Any]] | None = None
    alarms: list[str] | None = None
    error: StoreUnavailable | None = None


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
        self.failing = False  # its last probe failed (the outage has been said)
        self.said = 0.0  # the round trip last reported slow
        self.lease_id = 0
        self.next_refresh = 0.0
        self.alarm_log = AlarmLog()

    def tick(self) -> None:
        """One refresh when due, store and shared variables alike (one zone, one thread)."""
        now = self.clock()
        if self.due(now):
            self.apply(self.probe(now), now)

    def due(self, now: float) -> bool:
        return now >= self.next_refresh or self.zone.down()

    def probe(self, now: float) -> Probe:
        """The store side of a refresh: no KSR call, so that it can run in a thread of its
        own while another zone's hangs (Keepers)."""
        ttl = self.ctx.settings.lease_ttl
        found = Probe(sent=self.clock())
        try:
            if not self.lease_id or not self.store.refresh_lease(self.lease_id):
                found.expired = self.lease_id
                found.lease_id = self.store.grant_lease(ttl)
                # `packages`: the event packages this version serves; no subscription is made the
                # responsibility of an instance that does not (a rolling upgrade, issue 13).
                info = {
                    "sip": self.ctx.settings.sip, "pid": os.getppid(), "started": time.time(), "boot": BOOT_TIME,
                    "packages": sorted(PACKAGES),
                }
                # `metrics`: where its metrics socket answers (blfctl metrics, blfctl why's last NOTIFY).
                metrics = announced_address(os.environ, self.ctx.settings.sip)
                if metrics is not None:
                    info["metrics"] = metrics
                self.store.announce_instance(self.ctx.settings.instance, info, found.lease_id)
            else:
                found.lease_id = self.lease_id
            # etcd counts the lease's TTL from when it received the refresh, after `sent`.
            found.took = self.clock() - found.sent
            # Who is alive, for routing to the instance that holds a phone's flow: as the
            # first zone says, or another zone while the first is down.
            if self.zone is self.ctx.home or self.ctx.home.down():
                found.instances = self.store.instances()
            found.alarms = self.store.alarms()
        except StoreUnavailable as exc:
            found.error = exc
            if NOSPACE_ERROR in str(exc):  # a new lease is a write too: refused under NOSPACE
                with contextlib.suppress(StoreUnavailable):
                    found.alarms = self.store.alarms()
        return found

    def apply(self, found: Probe, now: float) -> None:
        """What a probe found, shared with the instance's processes and logged."""
        ttl = self.ctx.settings.lease_ttl
        interval = max(ttl / 3.0, 0.5)
        if found.lease_id and found.lease_id != self.lease_id:
            if found.expired:
                KSR.err(f"blf lease: lease {found.expired:x} expired; call legs on it are gone\n")
            self.lease_id = found.lease_id
            # The leg writer sees the new id and writes the legs of live calls back at once.
            self.zone.share_lease_id(found.lease_id)
            KSR.info(
                f"blf lease: instance {self.ctx.settings.instance} holds lease {found.lease_id:x} ttl {ttl}s "
                f"in zone {self.zone.zone}\n"
            )
        if found.error is None:
            self.zone.share_lease_confirmed(self.lease_id, found.sent)
            self._measured(found.took)
            if found.instances is not None:
                # Each with when it last started: a binding on a connection older than that is gone.
                share_instances({
                    name: {"sip": str(info["sip"]), "boot": info.get("boot")}
                    for name, info in found.instances.items() if info.get("sip")
                })
            if self.zone.down() or self.failing:
                KSR.info(f"blf lease: etcd reachable again (zone {self.zone.zone})\n")
            self.failing = False
            self.zone.mark_reached()
        else:
            # Said once per outage, when this keeper finds it (a worker may have flagged the
            # zone down first: the log still tells when the lease keeper knew).
            if not self.failing:
                self.failing = True
                KSR.warn(
                    f"blf lease: store unavailable (zone {self.zone.zone}), probing every {PROBE_SECONDS}s: "
                    f"{found.error}\n"
                )
            self.zone.mark_down()
            interval = PROBE_SECONDS  # look again soon: the workers wait for this news
        if found.alarms is not None:
            self._said_alarms(found.alarms, now)
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

    def _said_alarms(self, alarms: list[str], now: float) -> None:
        """A raised alarm (NOSPACE above all: etcd refuses every write, the instance answers
        503 to everything) is said at once and again every minute while it lasts, never per
        request. Leases still renew under NOSPACE: this is where it shows."""
        verdict = self.alarm_log.observe(alarms, now)
        if verdict == "raised":
            KSR.crit(
                f"blf lease: etcd alarm raised: {', '.join(alarms)}: etcd refuses every write until an operator "
                "runs `blfctl store maintain` (README \"Operating the store\")\n"
            )
        elif verdict == "cleared":
            KSR.notice("blf lease: etcd alarms cleared, writes accepted again\n")


class Keepers:
    """The lease keepers of every zone, in the lease process. Each zone's store side runs in
    a thread of its own (LeaseKeeper.probe: gRPC only), what it found is applied here, in
    the process's own thread (KSR is not for other threads): a zone whose members hang
    (frozen, cut off: each request waits for its deadline, on every member) never delays
    another zone's refresh, whose lease would otherwise expire with its legs.

    The threads run while this process waits in Python (Kamailio holds the GIL otherwise,
    KAMAILIO-NOTES): each tick waits for the probes under way, at most WAIT_SECONDS."""

    WAIT_SECONDS = 0.4

    def __init__(self, keepers: list[LeaseKeeper], clock: Callable[[], float] = time.monotonic) -> None:
        self.keepers = keepers
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=len(keepers), thread_name_prefix="blf-lease")
        self.pending: dict[LeaseKeeper, Future[Probe]] = {}

    def tick(self) -> None:
        now = self.clock()
        for keeper in self.keepers:
            # As last found (the previous tick): blf_store_up lags by one tick at most.
            blf_metrics.gauge(STORE_UP, 0.0 if keeper.zone.down() else 1.0, keeper.zone.zone)
            if keeper not in self.pending and keeper.due(now):
                self.pending[keeper] = self.pool.submit(keeper.probe, now)
        if not self.pending:
            return
        wait(list(self.pending.values()), timeout=self.WAIT_SECONDS, return_when=FIRST_COMPLETED)
        for keeper, future in list(self.pending.items()):
            if future.done():
                del self.pending[keeper]
                keeper.apply(future.result(), self.clock())
