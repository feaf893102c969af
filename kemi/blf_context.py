"""Per-process state of a Kamailio instance: settings, the store and the cache.

Clients are created on first use in the process that uses them: a gRPC channel
created before Kamailio forks hangs in the children (KAMAILIO-NOTES, process model).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping

import KSR  # type: ignore[import-not-found]
from blf_settings import Settings

from statestore.cache import Cache
from statestore.domain.contention import (
    probe_timeout,
    race_budget_left,
    race_pause,
    recent_round_trip,
    request_timeout,
    store_is_slow,
)
from statestore.domain.errors import StoreUnavailable, store_unavailable_error
from statestore.domain.model import Subscription
from statestore.domain.registrar import RegistrarPolicy
from statestore.domain.subscription import SubscriptionPolicy
from statestore.etcd_store import EtcdStore
from statestore.store import StateStore

# Values the processes of an instance share about a zone other than the first (htable,
# shared memory made before the fork: the zones are not known to kamailio.cfg). The first
# zone keeps its $shv variables (kamailio.cfg), named as before zones: blf_store, blf_lease...
ZONES_TABLE = "blf_zones"


class ZoneValues:
    """What the processes of an instance share about one zone: whether its store was last
    found down, the instance lease granted on it (every call leg written there carries it),
    the notifier's epoch, the round trip the lease keeper measured. The first zone's values
    are the $shv variables of kamailio.cfg (blf_store, blf_store_down_at, blf_lease...), any
    other zone's are entries of the htable blf_zones ("<zone>:store", ...)."""

    def __init__(self, zone: str = "", first: bool = True) -> None:
        self.zone = zone
        self.first = first

    def get(self, name: str) -> str:
        if self.first:
            return str(KSR.pv.get(f"$shv(blf_{name})") or "")
        return str(KSR.htable.sht_get(ZONES_TABLE, f"{self.zone}:{name}") or "")

    def set(self, name: str, value: str) -> None:
        if self.first:
            KSR.pv.sets(f"$shv(blf_{name})", value)
        else:
            KSR.htable.sht_sets(ZONES_TABLE, f"{self.zone}:{name}", value)

    def down(self) -> bool:
        """Whether this instance last found the zone's store unreachable."""
        return self.get("store") == "down"

    def mark_reached(self) -> None:
        self.set("store", "up")

    def lease_id(self) -> int:
        raw = self.get("lease")
        return int(raw) if raw else 0

    def share_lease_id(self, lease_id: int) -> None:
        self.set("lease", str(lease_id))

    def epoch(self) -> int:
        """The notifier's ownership epoch in this zone, for the SIP workers that create subscriptions."""
        raw = self.get("epoch")
        return int(raw) if raw else 0

    def share_epoch(self, epoch: int) -> None:
        self.set("epoch", str(epoch))

    def share_round_trip(self, at: float, seconds: float) -> None:
        """The store's round trip as the lease keeper last measured it: "<monotonic time> <seconds>"."""
        self.set("store_rtt", f"{at:.3f} {seconds:.4f}")

    def round_trip(self, now: float) -> float | None:
        """The store's recent round trip in seconds, None when none was measured lately."""
        raw = self.get("store_rtt").split()
        if len(raw) != 2:
            return None
        return recent_round_trip(float(raw[0]), float(raw[1]), now)

    def share_lease_confirmed(self, lease_id: int, sent_at: float) -> None:
        """When the lease keeper last had the lease confirmed: "<lease id> <monotonic time
        the confirming request was sent>"; the notifier sends nothing once that is too old
        (contention.ownership_current)."""
        self.set("lease_confirmed", f"{lease_id} {sent_at:.3f}")

    def lease_confirmed(self) -> tuple[int, float] | None:
        raw = self.get("lease_confirmed").split()
        return (int(raw[0]), float(raw[1])) if len(raw) == 2 else None


class StoreHandle(ZoneValues):
    """One zone's store, with what the instance's processes share about it (ZoneValues).

    After an outage each process's client may still hold a channel from before it, one that
    gRPC is still backing off reconnecting (up to minutes): its first call would fail, flag
    the whole zone down again and answer 503. So a process whose client predates the
    last outage (it has not used the store since the outage began) drops it at its next use
    and connects afresh. Not a process that holds watches (the notifier, the directory
    keeper, `holds_watches`): closing its client would end a healthy watch without telling
    it; those reconnect and resync when their watch reports an error.
    """

    def __init__(self, zone: str, store: StateStore, first: bool = True) -> None:
        super().__init__(zone, first)
        self._store = store
        self._outage_seen = ""
        self.holds_watches = False
        # The etcd adapter's request timeout as configured (BLF_STORE_TIMEOUT), adapted below.
        self._timed = store if isinstance(store, EtcdStore) else None
        self._base_timeout = self._timed.timeout if self._timed is not None else 0.0

    @property
    def store(self) -> StateStore:
        outage = self.get("store_down_at")
        if outage != self._outage_seen:
            if (self._outage_seen or outage) and not self.holds_watches:
                self._store.close()
            self._outage_seen = outage
        if self._timed is not None:
            # A store the lease keeper measured slow but answering is waited for longer
            # than BLF_STORE_TIMEOUT: used, not declared down (contention.request_timeout).
            self._timed.timeout = request_timeout(self._base_timeout, self.round_trip(time.monotonic()))
        return self._store

    @property
    def raw(self) -> StateStore:
        """The store itself, without the checks of `store`."""
        return self._store

    def mark_down(self) -> None:
        """Every process of the instance now answers without waiting on this store, until
        the lease keeper, which probes twice a second while it is down, reaches it again."""
        if not self.down():
            self.set("store_down_at", repr(time.time()))
        self.set("store", "down")
        self._store.close()


# Where the directory keepers note which zone holds a domain (htable blf_dir, as the
# domain's own record): "zoneof/<domain>" -> zone name.
ZONE_OF = "zoneof/"


class Context:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.stores: dict[str, StoreHandle] = {}
        # The lease keepers' own clients: their deadline is longer than a request's, so
        # that a store that answers slowly is measured as slow instead of declared down.
        self.probes: dict[str, StateStore] = {}
        for index, (zone, members) in enumerate(self.settings.zones.items()):
            store = EtcdStore(members, timeout=self.settings.store_timeout)
            self.stores[zone] = StoreHandle(zone, store, first=index == 0)
            self.probes[zone] = EtcdStore(
                members, timeout=probe_timeout(self.settings.store_timeout, self.settings.lease_ttl)
            )
        self.probe = self.probes[next(iter(self.stores))]
        self.cache = Cache(self.settings.memcached)
        self.registrar = RegistrarPolicy(
            max_bindings=self.settings.max_bindings, nat_expires=self.settings.nat_expires
        )
        self.subscriptions = SubscriptionPolicy(
            min_expires=self.settings.sub_min_expires, max_expires=self.settings.sub_max_expires,
            max_subs_per_watcher=self.settings.max_subs_per_watcher,
            max_subs_per_pair=self.settings.max_subs_per_pair,
            max_subs_per_presentity=self.settings.max_subs_per_presentity,
        )

    @property
    def home(self) -> StoreHandle:
        """The first zone's store: the default for a domain not known to be elsewhere."""
        return next(iter(self.stores.values()))

    def zone(self, name: str) -> StoreHandle:
        """The store of the zone holding `name`: an account ("user@domain") or a domain.
        Which zone holds a domain comes from the directory copy (blf_directory notes it
        as it loads each zone's domains); a domain it does not know is the first zone's."""
        if len(self.stores) == 1:
            return self.home
        domain = name.rpartition("@")[2].lower()
        held = KSR.htable.sht_get("blf_dir", ZONE_OF + domain)
        return self.stores.get(str(held), self.home) if held else self.home

    def zone_named(self, zone: str) -> StoreHandle:
        """A zone's store by its name (a subscription's dialog carries it: subscription_zone)."""
        return self.stores.get(zone, self.home)

    @property
    def store(self) -> StateStore:
        return self.home.store

    def store_down(self) -> bool:
        """Whether this instance last found the first zone's store unreachable (shared by its processes)."""
        return self.home.down()

    def mark_store_down(self) -> None:
        self.home.mark_down()

    def mark_unavailable(self, exc: StoreUnavailable) -> None:
        """Flag down the zone whose store raised `exc` (the first zone when it does not say)."""
        for handle in self.stores.values():
            if isinstance(handle.raw, EtcdStore) and handle.raw.endpoint == exc.endpoint:
                handle.mark_down()
                return
        self.home.mark_down()


# Live instances, name -> SIP host:port as JSON, kept fresh by the lease keeper.
INSTANCES_VAR = "$shv(blf_instances)"


def shared_instances() -> str:
    return str(KSR.pv.get(INSTANCES_VAR) or "")


def share_instances(instances: Mapping[str, object]) -> None:
    KSR.pv.sets(INSTANCES_VAR, json.dumps(instances, sort_keys=True))


# The first zone's values (its $shv variables), for code that serves one zone only.
FIRST_ZONE = ZoneValues()


def shared_epoch(zone: ZoneValues = FIRST_ZONE) -> int:
    return zone.epoch()


def share_epoch(epoch: int, zone: ZoneValues = FIRST_ZONE) -> None:
    zone.share_epoch(epoch)


def note_store_reached() -> None:
    FIRST_ZONE.mark_reached()


def shared_lease_id() -> int:
    return FIRST_ZONE.lease_id()


def share_lease_id(lease_id: int) -> None:
    FIRST_ZONE.share_lease_id(lease_id)


def share_round_trip(at: float, seconds: float) -> None:
    FIRST_ZONE.share_round_trip(at, seconds)


def shared_round_trip(now: float, zone: ZoneValues = FIRST_ZONE) -> float | None:
    """The store's recent round trip in seconds, None when none was measured lately."""
    return zone.round_trip(now)


def trying_if_store_slow() -> bool:
    """Called right before the first store access of a REGISTER or SUBSCRIBE (after its
    authentication): when the store answered slowly lately, send `100 Trying` first, so the
    phone stops retransmitting at T1 (500 ms, RFC 3261 §17.1.2.2) while we wait on the
    store; the final answer follows as soon as the store answers (503 if it does not)."""
    if not store_is_slow(shared_round_trip(time.monotonic())):
        return False
    KSR.sl.send_reply(100, "Trying")
    return True


def share_lease_confirmed(lease_id: int, sent_at: float) -> None:
    FIRST_ZONE.share_lease_confirmed(lease_id, sent_at)


def shared_lease_confirmed(zone: ZoneValues = FIRST_ZONE) -> tuple[int, float] | None:
    return zone.lease_confirmed()


def find_subscription(
    ctx: Context, sub_id: str, domain: str
) -> tuple[StoreHandle, tuple[Subscription, int] | None]:
    """A subscription by its id, in the zone of `domain` (its presentity's, from the dialog's
    URI on our side), then in the other zones (a domain moved meanwhile); that zone's store."""
    first = ctx.zone(domain)
    found = first.store.get_subscription(sub_id)
    if found is not None or len(ctx.stores) == 1:
        return first, found
    for handle in ctx.stores.values():
        if handle is not first and not handle.down():
            found = handle.store.get_subscription(sub_id)
            if found is not None:
                return handle, found
    return first, None


def lost_races(
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
) -> Iterator[int]:
    """Attempts at an optimistic (compare-and-swap) write: the first at once, each later one
    after a jittered pause (contention.race_pause); every lost race was another writer's
    win, so this ends. Past contention.RACE_BUDGET_SECONDS the request is answered 503 with
    Retry-After (the store is not keeping up), never 500."""
    started = clock()
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        if not race_budget_left(started, clock()):
            raise store_unavailable_error()
        sleep(race_pause(attempt, draw()))


_context: Context | None = None


def context() -> Context:
    global _context
    if _context is None:
        _context = Context()
    return _context
