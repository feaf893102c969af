"""The notifier process: watches the store and sends the NOTIFYs this instance owns.

Runs in its own rtimer process. The etcd watch thread hands changes over through a
queue; each tick blocks on that queue for a few milliseconds, the only time the watch
thread can run, since Kamailio 5.6 never releases the GIL otherwise (KAMAILIO-NOTES).
"""

from __future__ import annotations

import queue
import time

import blf_notify
import KSR  # type: ignore[import-not-found]
from blf_context import Context

from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import WatchEvent
from statestore.mirror import ALL, Due, Mirror

SWEEP_SECONDS = 1.0
RESYNC_BACKOFF_SECONDS = 1.0


class Notifier:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
        self.mirror = Mirror()
        self.synced = False
        self.next_sync = 0.0
        self.next_sweep = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if not self.synced and now >= self.next_sync:
            self._resync()
        dirty = self._drain()
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP_SECONDS
            dirty.add(ALL)
        if dirty and self.synced:
            for due in self.mirror.due(self.ctx.settings.instance, dirty, time.time()):
                self._act(due)

    def _resync(self) -> None:
        """Load everything and watch from the revision after the snapshot."""
        try:
            revision, items = self.ctx.store.snapshot()
            self.mirror.load((kv.key, kv.value, kv.mod_revision) for kv in items)
            self.ctx.store.watch(revision + 1, self.events.put)
        except StoreUnavailable as exc:
            self.ctx.store.close()
            self.next_sync = time.monotonic() + RESYNC_BACKOFF_SECONDS
            KSR.warn(f"blf notifier: store unavailable, retrying: {exc}\n")
            return
        self.synced = True
        KSR.info(f"blf notifier: synced at revision {revision}, {len(items)} keys\n")

    def _drain(self) -> set[str]:
        dirty: set[str] = set()
        try:
            # Blocking here is what lets the watch thread run (KAMAILIO-NOTES); with a wait
            # of 0 the queue is only polled (the benchmark's baseline).
            wait = self.ctx.settings.notifier_wait
            item = self.events.get(timeout=wait) if wait > 0 else self.events.get_nowait()
            while True:
                dirty |= self._take(item)
                item = self.events.get_nowait()
        except queue.Empty:
            return dirty

    def _take(self, item: list[WatchEvent] | Exception) -> set[str]:
        if isinstance(item, Exception):
            KSR.warn(f"blf notifier: watch broken ({item}), resyncing\n")
            self.synced = False
            self.ctx.store.close()
            return set()
        dirty: set[str] = set()
        for event in item:
            dirty |= self.mirror.apply(event.key, event.value, event.revision)
        return dirty

    def _act(self, due: Due) -> None:
        now = time.time()
        try:
            if due.expired:
                final = blf_notify.end(self.ctx, due.subscription, due.revision, due.state)
                if final is not None:
                    self.mirror.forget(due.subscription.sub_id)
                    blf_notify.send(self.ctx, final, due.state, now, "timeout")
                return
            sent = blf_notify.notify_if_changed(self.ctx, due.subscription, due.revision, due.state, now)
            if sent is not None:
                self.mirror.remember(*sent)
        except StoreUnavailable as exc:
            KSR.warn(f"blf notifier: NOTIFY for {due.subscription.sub_id} deferred: {exc}\n")
