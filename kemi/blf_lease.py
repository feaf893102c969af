"""The instance lease: one per instance, kept alive here, shared with the SIP workers.

Every live call leg and the instance's own key hang on it; if the instance dies the lease
expires after its TTL and etcd deletes them, so no lamp stays lit (issue 2, item 4).
The lease id reaches the other processes through a shared variable (blf_context); the
leg writer (blf_legs) writes the legs and reconciles them.
"""

from __future__ import annotations

import os
import time

import KSR  # type: ignore[import-not-found]
from blf_context import Context, note_store_reached, share_instances, share_lease_id

from statestore.domain.errors import StoreUnavailable

PROBE_SECONDS = 0.5


class LeaseKeeper:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lease_id = 0
        self.next_refresh = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now < self.next_refresh and not self.ctx.store_down():
            return
        ttl = self.ctx.settings.lease_ttl
        interval = max(ttl / 3.0, 0.5)
        try:
            if not self.lease_id or not self.ctx.store.refresh_lease(self.lease_id):
                self._grant(ttl)
            # Who is alive, for routing to the instance that holds a phone's flow.
            found = self.ctx.store.instances()
            share_instances({name: str(info.get("sip", "")) for name, info in found.items() if info.get("sip")})
            if self.ctx.store_down():
                KSR.info("blf lease: etcd reachable again\n")
            note_store_reached()
        except StoreUnavailable as exc:
            if not self.ctx.store_down():
                KSR.warn(f"blf lease: store unavailable, probing every {PROBE_SECONDS}s: {exc}\n")
            self.ctx.mark_store_down()
            interval = PROBE_SECONDS  # look again soon: the workers wait for this news
        self.next_refresh = now + interval

    def _grant(self, ttl: int) -> None:
        if self.lease_id:
            KSR.err(f"blf lease: lease {self.lease_id:x} expired; call legs on it are gone\n")
        lease_id = self.ctx.store.grant_lease(ttl)
        info = {"sip": self.ctx.settings.sip, "pid": os.getppid(), "started": time.time()}
        self.ctx.store.announce_instance(self.ctx.settings.instance, info, lease_id)
        self.lease_id = lease_id
        # The leg writer sees the new id and writes the legs of live calls back at once.
        share_lease_id(lease_id)
        KSR.info(f"blf lease: instance {self.ctx.settings.instance} holds lease {lease_id:x} ttl {ttl}s\n")
