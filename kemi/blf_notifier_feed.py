"""The notifier's feed: keeps its mirror of one zone's store in step with etcd.

A snapshot read once (paged), then a watch per prefix the mirror reads; a broken watch is
resumed from the last revision it delivered, or the snapshot read again after a compaction
or a lapse. Each tick drains what the watch thread queued, blocking on the queue for a few
milliseconds: the only time the watch thread can run, since Kamailio 5.6 never releases
the GIL otherwise (KAMAILIO-NOTES). `MirrorFeed` is the part of blf_notifier.Notifier that
does this; the state it uses is set up by Notifier.__init__.
"""

from __future__ import annotations

import contextlib
import queue
import time
import traceback
from collections import deque
from collections.abc import Iterable

import blf_metrics
import KSR  # type: ignore[import-not-found]
from blf_context import Context, StoreHandle

from statestore.domain.errors import StoreUnavailable
from statestore.etcd import compacted
from statestore.mirror import Mirror
from statestore.store import StateStore, WatchEvent

RESYNC_BACKOFF_SECONDS = 1.0
# A resync that fails for another reason than an unreachable store is a bug (a record this
# version cannot load, for one): logged once with its traceback, then tried again after
# 2, 4, ... seconds, at most this long, not on every tick.
RESYNC_BUG_BACKOFF_MAX_SECONDS = 60.0


def resync_backoff(failures: int) -> float:
    """Seconds before the next resync after `failures` failed ones in a row (a bug, not an
    outage): 2, 4, 8, ... up to RESYNC_BUG_BACKOFF_MAX_SECONDS."""
    return min(RESYNC_BUG_BACKOFF_MAX_SECONDS, 2.0 ** min(failures, 16))


class MirrorFeed:
    """Snapshot, watch and resume for a Notifier's mirror (declared here, set up by
    Notifier.__init__)."""

    ctx: Context
    zone: StoreHandle
    wait_share: float
    events: queue.Queue[list[WatchEvent] | Exception]
    mirror: Mirror
    synced: bool
    next_sync: float
    reached: dict[str, int]
    watches: list[int]
    resumable: bool
    resync_failures: int
    backlog: deque[str]
    in_backlog: set[str]
    report: blf_metrics.NotifierReport

    @property
    def store(self) -> StateStore:
        return self.zone.store

    def _to_backlog(self, presentities: Iterable[str]) -> None:
        for presentity in presentities:
            if presentity not in self.in_backlog:
                self.in_backlog.add(presentity)
                self.backlog.append(presentity)

    def _resync(self) -> None:
        """Load what the mirror reads (paged) and watch it from the revision after the
        snapshot. A watch that breaks, or falls behind a compaction (etcd then cancels it
        with RevisionCompactedError), brings us back here."""
        # A queue of its own for each sync: what an older watch still delivers (events from
        # before the snapshot, its error) goes to the old queue, which nobody reads.
        self.events = queue.Queue()
        if self.resumable:
            self._resume()
            return
        try:
            started = time.monotonic()
            revision, items = self.store.snapshot(Mirror.prefixes())
            self.mirror.load((kv.key, kv.value, kv.mod_revision) for kv in items)
            self.reached = dict.fromkeys(Mirror.prefixes(), revision)
            self.watches = self.store.watch_prefixes(revision + 1, self.events.put, Mirror.prefixes())
        except StoreUnavailable as exc:
            self.store.close()
            self.next_sync = time.monotonic() + RESYNC_BACKOFF_SECONDS
            KSR.warn(f"blf notifier: store unavailable, retrying: {exc}\n")
            return
        except Exception:  # noqa: BLE001 - a bug: said once per attempt, with a growing pause
            self.store.close()
            self.resync_failures += 1
            pause = resync_backoff(self.resync_failures)
            self.next_sync = time.monotonic() + pause
            KSR.err(f"blf notifier: resync failed (a bug), next try in {pause:.0f}s: {traceback.format_exc()}\n")
            return
        self.resync_failures = 0
        self.synced = True
        # What changed while we were not watching: every presentity is looked at once,
        # from the backlog, after the live changes of each tick; those on a call first
        # (their lamps are the ones that moved while we were away, most likely).
        self.backlog.clear()
        self.in_backlog.clear()
        self._to_backlog(sorted(self.mirror.by_presentity, key=lambda p: (p not in self.mirror.legs, p)))
        KSR.info(
            f"blf notifier: synced at revision {revision}, {len(items)} keys in {time.monotonic() - started:.1f}s, "
            f"{len(self.backlog)} presentities to look at\n"
        )

    def _resume(self) -> None:
        """Watch again each prefix from the revision after the last one it delivered, on
        whichever member answers (statestore/etcd_failover.py): nothing missed, nothing
        twice, and no snapshot to read. A revision compacted meanwhile ends the watch at
        once with that error, and the next sync reads a snapshot (_take)."""
        for watch_id in self.watches:
            with contextlib.suppress(StoreUnavailable):
                self.store.cancel_watch(watch_id)
        try:
            self.watches = [
                watch_id
                for prefix, revision in self.reached.items()
                for watch_id in self.store.watch_prefixes(revision + 1, self.events.put, [prefix])
            ]
        except StoreUnavailable as exc:
            self.store.close()
            self.next_sync = time.monotonic() + RESYNC_BACKOFF_SECONDS
            KSR.warn(f"blf notifier: store unavailable, retrying: {exc}\n")
            return
        self.synced = True
        KSR.info(f"blf notifier: watch resumed after revision {min(self.reached.values())}\n")

    def _drain(self) -> set[str]:
        dirty: set[str] = set()
        try:
            # Blocking here is what lets the watch thread run (KAMAILIO-NOTES); with a wait
            # of 0 the queue is only polled (the benchmark's baseline).
            wait = self.ctx.settings.notifier_wait * self.wait_share
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
            self.resumable = not compacted(item)
            KSR.warn(f"blf notifier: watch broken ({item}), {'resuming' if self.resumable else 'resyncing'}\n")
            self.synced = False
            self.store.close()
            return set()
        dirty: set[str] = set()
        now = time.time()
        for event in item:
            dirty |= self.mirror.apply(event.key, event.value, event.revision, now)
            prefix = next((prefix for prefix in self.reached if event.key.startswith(prefix)), None)
            if prefix is not None:
                self.reached[prefix] = max(self.reached[prefix], event.revision)
        self.report.changed(dirty, time.monotonic())
        return dirty
