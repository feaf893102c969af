"""The directory keeper: fills the SIP path's shared copy of the directory and keeps it fresh.

One process per instance (rtimer `blf_directory`, blf_kemi.ksr_directory_tick) runs a keeper
per zone: it loads the directory keys (and every account's bindings) from an etcd snapshot
into the htable `blf_dir` and applies the watch's changes to it. What the copy holds, and
how SIP workers read it: blf_directory.py.
"""

from __future__ import annotations

import json
import queue
import time
import traceback

import KSR  # type: ignore[import-not-found]
from blf_context import ZONE_OF, Context, StoreHandle
from blf_directory import CURRENT, LOADED, REGS_TABLE, TABLE

from statestore import keys
from statestore.domain.errors import StoreUnavailable
from statestore.store import WatchEvent

PREFIXES = (keys.ACCOUNTS, keys.ALIASES, keys.DOMAINS, keys.REGS)
RESYNC_BACKOFF_SECONDS = 1.0


def table_key(key: str) -> str:
    return key[len(keys.ROOT):]


def zone_key(domain_key: str) -> str:
    """Where the copy notes which zone holds a domain, from the domain's etcd key."""
    return ZONE_OF + domain_key[len(keys.DOMAINS):].lower()


def binding_key(key: str) -> tuple[str, str] | None:
    """(aor, binding id) of a binding's etcd key, None for any other key."""
    if not key.startswith(keys.REGS):
        return None
    aor, _, binding_id = key[len(keys.REGS):].rpartition("/")
    return (aor, binding_id) if aor and binding_id else None


class Keeper:
    """Fills and refreshes the shared copy from one zone's store (one process per instance
    runs a keeper per zone). Domains are unique across zones: each keeper notes which zone
    holds the domains it loads ("zoneof/<domain>", Context.zone)."""

    def __init__(self, ctx: Context, zone: StoreHandle | None = None) -> None:
        self.ctx = ctx
        self.zone = zone or ctx.home
        self.events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
        self.synced = False
        self.next_sync = 0.0
        # The keys this process put in the table: a resync removes those etcd no longer has.
        self.held: set[str] = set()
        # The bindings copied, by account and binding id (their etcd values as text).
        self.regs: dict[str, dict[str, str]] = {}

    def tick(self) -> None:
        if not self.synced and time.monotonic() >= self.next_sync and not self.zone.down():
            self._resync()  # not while the zone is known down: see Notifier.tick
        self._drain()

    def _resync(self) -> None:
        self.events = queue.Queue()  # an older watch's leftovers go to a queue nobody reads
        self.zone.set(CURRENT, "0")
        started = time.monotonic()
        try:
            revision, items = self.zone.store.snapshot(PREFIXES)
            fresh: dict[str, str] = {}
            regs: dict[str, dict[str, str]] = {}
            for kv in items:
                value = _text(kv.value)
                found = binding_key(kv.key)
                if value is None:
                    continue
                if found is not None:
                    regs.setdefault(found[0], {})[found[1]] = value
                else:
                    fresh[table_key(kv.key)] = value
                    if kv.key.startswith(keys.DOMAINS):
                        fresh[zone_key(kv.key)] = self.zone.zone
            for aor, bindings in regs.items():
                fresh[REGS_TABLE + aor] = json.dumps(bindings, sort_keys=True)
            self.regs = regs
            for key in self.held - fresh.keys():
                KSR.htable.sht_rm(TABLE, key)
            for key, value in fresh.items():
                KSR.htable.sht_sets(TABLE, key, value)
            self.held = set(fresh)
            self.zone.store.watch_prefixes(revision + 1, self.events.put, PREFIXES)
        except StoreUnavailable as exc:
            self._retry_later(f"store unavailable: {exc}")
            return
        except Exception:  # noqa: BLE001 - a bug: logged, tried again, never fatal to the process
            self._retry_later(f"resync failed: {traceback.format_exc()}")
            return
        self.synced = True
        self.zone.set(LOADED, str(revision))
        self.zone.set(CURRENT, "1")
        KSR.info(
            f"blf directory: copy of zone {self.zone.zone} loaded at revision {revision}, {len(fresh)} keys "
            f"in {time.monotonic() - started:.2f}s\n"
        )

    def _retry_later(self, why: str) -> None:
        self.zone.raw.close()
        self.next_sync = time.monotonic() + RESYNC_BACKOFF_SECONDS
        KSR.warn(f"blf directory: {why}; the copy stays as it is, resync in {RESYNC_BACKOFF_SECONDS:.0f}s\n")

    def _drain(self) -> None:
        wait = self.ctx.settings.notifier_wait / len(self.ctx.stores)
        try:
            # Blocking here is what lets the watch thread run (KAMAILIO-NOTES).
            item = self.events.get(timeout=wait) if wait > 0 else self.events.get_nowait()
            while True:
                if isinstance(item, Exception):
                    KSR.warn(f"blf directory: watch broken ({item}), resyncing\n")
                    self.zone.set(CURRENT, "0")  # what it lacks from now on is asked of etcd
                    self.synced = False
                    self.zone.raw.close()
                    return
                for event in item:
                    self._apply(event)
                item = self.events.get_nowait()
        except queue.Empty:
            return

    def _apply(self, event: WatchEvent) -> None:
        value = None if event.value is None else _text(event.value)
        found = binding_key(event.key)
        if found is not None:
            self._apply_binding(found[0], found[1], value)
            return
        key = table_key(event.key)
        if value is None:
            KSR.htable.sht_rm(TABLE, key)
            self.held.discard(key)
        else:
            KSR.htable.sht_sets(TABLE, key, value)
            self.held.add(key)
        if event.key.startswith(keys.DOMAINS):
            noted = zone_key(event.key)
            if value is None:
                KSR.htable.sht_rm(TABLE, noted)
                self.held.discard(noted)
            else:
                KSR.htable.sht_sets(TABLE, noted, self.zone.zone)
                self.held.add(noted)

    def _apply_binding(self, aor: str, binding_id: str, value: str | None) -> None:
        bindings = self.regs.setdefault(aor, {})
        if value is None:
            bindings.pop(binding_id, None)
        else:
            bindings[binding_id] = value
        key = REGS_TABLE + aor
        if bindings:
            KSR.htable.sht_sets(TABLE, key, json.dumps(bindings, sort_keys=True))
            self.held.add(key)
        else:
            del self.regs[aor]
            KSR.htable.sht_rm(TABLE, key)
            self.held.discard(key)


def _text(raw: bytes | str) -> str | None:
    try:
        return raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        KSR.warn("blf directory: a value that is not UTF-8 skipped\n")
        return None

