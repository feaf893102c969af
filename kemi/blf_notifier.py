"""The notifier process: watches the store and sends the NOTIFYs this instance owns.

Runs in its own rtimer process. The etcd watch thread hands changes over through a
queue; each tick blocks on that queue for a few milliseconds, the only time the watch
thread can run, since Kamailio 5.6 never releases the GIL otherwise (KAMAILIO-NOTES).
"""

from __future__ import annotations

import queue
import time
import traceback

import blf_notify
import KSR  # type: ignore[import-not-found]
from blf_context import Context

from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import WatchEvent
from statestore.mirror import Due, Mirror

# A NOTIFY deferred by a store outage is tried again this much later.
RETRY_SECONDS = 1.0
RESYNC_BACKOFF_SECONDS = 1.0


class Notifier:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
        self.mirror = Mirror()
        self.synced = False
        self.next_sync = 0.0
        # Presentities whose NOTIFYs were deferred, and when to try them again.
        self.deferred: set[str] = set()
        self.next_retry = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if not self.synced and now >= self.next_sync:
            self._resync()
        dirty = self._drain()
        if self.deferred and now >= self.next_retry:
            dirty |= self.deferred
            self.deferred = set()
        if self.synced:
            # Expiries come from the mirror's heap: a call costs nothing when none is due.
            for due in self.mirror.due(self.ctx.settings.instance, dirty, time.time()):
                self._act(due)
        self._log_notes()

    def _log_notes(self) -> None:
        for note in self.mirror.notes:
            KSR.warn(f"blf notifier: {note}\n")
        self.mirror.notes.clear()

    def _resync(self) -> None:
        """Load what the mirror reads (paged) and watch it from the revision after the
        snapshot. A watch that breaks, or falls behind a compaction (etcd then cancels it
        with RevisionCompactedError), brings us back here."""
        # A queue of its own for each sync: what an older watch still delivers (events from
        # before the snapshot, its error) goes to the old queue, which nobody reads.
        self.events = queue.Queue()
        try:
            revision, items = self.ctx.store.snapshot(Mirror.prefixes())
            self.mirror.load((kv.key, kv.value, kv.mod_revision) for kv in items)
            self.ctx.store.watch_prefixes(revision + 1, self.events.put, Mirror.prefixes())
        except StoreUnavailable as exc:
            self.ctx.store.close()
            self.next_sync = time.monotonic() + RESYNC_BACKOFF_SECONDS
            KSR.warn(f"blf notifier: store unavailable, retrying: {exc}\n")
            return
        self.synced = True
        # What changed while we were not watching: every presentity is looked at once.
        self.deferred = set(self.mirror.by_presentity)
        self.next_retry = 0.0
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
                if not self.synced:
                    return set()  # the watch broke: the resync looks at everything
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
        try:
            self._send(due)
        except StoreUnavailable as exc:
            self.deferred.add(due.subscription.presentity)
            self.next_retry = time.monotonic() + RETRY_SECONDS
            KSR.warn(f"blf notifier: NOTIFY for {due.subscription.sub_id} deferred: {exc}\n")
        except Exception:  # noqa: BLE001 - one bad record never stops the others' NOTIFYs
            KSR.err(f"blf notifier: NOTIFY for {due.subscription.sub_id} failed: {traceback.format_exc()}\n")

    def _send(self, due: Due) -> None:
        now = time.time()
        if due.expired:
            final = blf_notify.end(self.ctx, due.subscription, due.revision, due.state)
            if final is not None:
                self.mirror.forget(due.subscription.sub_id)
                blf_notify.send(self.ctx, final, due.state, now, "timeout", due.body)
            return
        sent = blf_notify.notify_if_changed(self.ctx, due.subscription, due.revision, due.state, now, due.body)
        if sent is not None:
            self.mirror.remember(*sent)
