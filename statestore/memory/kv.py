"""Keys and values in memory, as etcd holds them: one revision per transaction, each key's
mod revision, leases that take their keys with them, and watches that see every change
after the revision they start from (statestore.store's KeyValue and WatchEvent).

Watch callbacks are called in the writer's thread, once per transaction, after it is
applied (etcd calls them from its client's thread: callers hand the events on to a queue
either way).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from statestore import keys
from statestore.store import KeyValue, WatchCallback, WatchEvent


@dataclass(frozen=True)
class Stored:
    value: bytes
    mod_revision: int
    lease: int = 0


@dataclass
class Lease:
    ttl: int


class MemoryKv:
    """The key space of one zone's store, in memory."""

    endpoint = "memory"

    def __init__(self, items: Mapping[str, bytes] | Iterable[tuple[str, bytes]] = ()) -> None:
        self.revision = 1
        self.records: dict[str, Stored] = {}
        self.leases: dict[int, Lease] = {}
        self._last_lease = 0
        self._watches: dict[int, tuple[tuple[str, ...], WatchCallback]] = {}
        self._last_watch = 0
        self._history: list[WatchEvent] = []
        self._lock = threading.RLock()
        for key, value in items.items() if isinstance(items, Mapping) else items:
            self.write_key(key, value)

    # --- what a test does to the store behind its user's back -------------------------------

    def write_key(self, key: str, value: bytes, lease: int = 0) -> int:
        """Put one key (another writer, a record an older version wrote); its revision."""
        return self.commit({key: (value, lease)}, ())

    def delete_key(self, key: str) -> None:
        self.commit({}, (key,))

    def expire_lease(self, lease_id: int) -> None:
        """The lease is gone (its TTL ran out): its keys with it."""
        with self._lock:
            self.leases.pop(lease_id, None)
            self.commit({}, [key for key, stored in self.records.items() if stored.lease == lease_id])

    def break_watches(self, error: Exception) -> None:
        """Every watch ends with `error`, as etcd's end when it cannot be reached."""
        with self._lock:
            watches, self._watches = list(self._watches.values()), {}
        for _, callback in watches:
            callback(error)

    # --- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> Stored | None:
        return self.records.get(key)

    def value(self, key: str) -> bytes | None:
        stored = self.records.get(key)
        return None if stored is None else stored.value

    def under(self, prefix: str) -> list[tuple[str, Stored]]:
        """The keys under a prefix, in key order (as etcd's range)."""
        with self._lock:
            return sorted((key, stored) for key, stored in self.records.items() if key.startswith(prefix))

    def changed_since(self, prefix: str, revision: int) -> bool:
        """Whether a key under `prefix` was written after `revision` (etcd's compare of a
        range's mod revision: a deleted key is not seen)."""
        return any(stored.mod_revision > revision for _, stored in self.under(prefix))

    def range(self, prefix: str) -> list[KeyValue]:
        return self.snapshot(prefix)[1]

    def snapshot(self, prefix: str | Sequence[str] = keys.ROOT, page: int = 0) -> tuple[int, list[KeyValue]]:
        """All keys under the prefix (or prefixes) and the revision they were read at."""
        prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
        with self._lock:
            found = [KeyValue(key, stored.value, stored.mod_revision) for name in prefixes
                     for key, stored in self.under(name)]
            return self.revision, found

    # --- writing ----------------------------------------------------------------------------

    def commit(self, puts: Mapping[str, tuple[bytes, int]], deletes: Iterable[str]) -> int:
        """One transaction: puts (key -> value, lease) and deletes at one new revision; the
        revision (the current one when there was nothing to change)."""
        with self._lock:
            gone = [key for key in deletes if key in self.records and key not in puts]
            if not puts and not gone:
                return self.revision
            self.revision += 1
            events = []
            for key, (value, lease) in puts.items():
                self.records[key] = Stored(value, self.revision, lease)
                events.append(WatchEvent(key, value, self.revision))
            for key in gone:
                del self.records[key]
                events.append(WatchEvent(key, None, self.revision))
            self._history += events
            watches = list(self._watches.values())
            revision = self.revision
        for prefixes, callback in watches:
            seen = [event for event in events if event.key.startswith(prefixes)]
            if seen:
                callback(seen)
        return revision

    def grant(self, ttl: int) -> int:
        with self._lock:
            self._last_lease += 1
            self.leases[self._last_lease] = Lease(ttl)
            return self._last_lease

    # --- watching ---------------------------------------------------------------------------

    def watch_prefixes(self, start_revision: int, callback: WatchCallback, prefixes: Sequence[str]) -> list[int]:
        """Every change under the prefixes from `start_revision` on (one watch for all of
        them: the changes of one transaction come in one call)."""
        with self._lock:
            self._last_watch += 1
            self._watches[self._last_watch] = (tuple(prefixes), callback)
            missed = [event for event in self._history
                      if event.revision >= start_revision and event.key.startswith(tuple(prefixes))]
        if missed:
            callback(missed)
        return [self._last_watch]

    def cancel_watch(self, watch_id: int) -> None:
        with self._lock:
            self._watches.pop(watch_id, None)

    def watching(self) -> bool:
        return bool(self._watches)
