"""Per-process state of a Kamailio instance: settings, the store and the cache.

Clients are created on first use in the process that uses them: a gRPC channel
created before Kamailio forks hangs in the children (KAMAILIO-NOTES, process model).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import KSR  # type: ignore[import-not-found]

from statestore.cache import Cache
from statestore.domain.contention import (
    probe_timeout,
    race_budget_left,
    race_pause,
    recent_round_trip,
    request_timeout,
    store_is_slow,
)
from statestore.domain.errors import store_unavailable_error
from statestore.domain.registrar import RegistrarPolicy
from statestore.domain.subscription import SubscriptionPolicy
from statestore.etcd_store import EtcdStore
from statestore.store import StateStore


@dataclass(frozen=True)
class Settings:
    instance: str
    sip: str
    etcd: str
    memcached: str
    lease_ttl: int
    store_timeout: float
    sub_min_expires: int
    sub_max_expires: int
    max_subs_per_watcher: int
    max_subs_per_pair: int
    max_subs_per_presentity: int
    reconcile_seconds: float
    notifier_wait: float
    max_bindings: int
    nat_expires: int
    # Signs nonces, Record-Route entries and flow routes; the same on every instance.
    secret: str
    # The least Expires of a PUBLISH (423 below it); 0: the package's (Publishing.min_expires).
    # Lowered in tests only, so that a publication's expiry is seen within one.
    pub_min_expires: int = 0

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            instance=instance_name(env.get("BLF_INSTANCE", "")),
            sip=env.get("BLF_SIP", "127.0.0.1:5071"),
            etcd=env.get("BLF_ETCD", "127.0.0.1:2379"),
            memcached=env.get("BLF_MEMCACHED", "127.0.0.1:11211"),
            lease_ttl=int(env.get("BLF_LEASE_TTL", "6")),
            store_timeout=float(env.get("BLF_STORE_TIMEOUT", "0.5")),
            sub_min_expires=int(env.get("BLF_SUB_MIN_EXPIRES", "60")),
            sub_max_expires=int(env.get("BLF_SUB_MAX_EXPIRES", "3600")),
            max_subs_per_watcher=int(env.get("BLF_MAX_SUBS_PER_WATCHER", "300")),
            max_subs_per_pair=int(env.get("BLF_MAX_SUBS_PER_PAIR", "4")),
            max_subs_per_presentity=int(env.get("BLF_MAX_SUBS_PER_PRESENTITY", "500")),
            reconcile_seconds=float(env.get("BLF_RECONCILE_SECONDS", "10")),
            notifier_wait=float(env.get("BLF_NOTIFIER_WAIT_MS", "50")) / 1000.0,
            max_bindings=int(env.get("BLF_MAX_BINDINGS", "10")),
            nat_expires=int(env.get("BLF_NAT_EXPIRES", "60")),
            secret=env["BLF_AUTH_SECRET"],
            pub_min_expires=int(env.get("BLF_PUB_MIN_EXPIRES", "0")),
        )


def instance_name(value: str) -> str:
    """BLF_INSTANCE, required: it names the instance's lease, its call legs and the
    bindings it took. There is no default: two instances defaulting to one name would
    each take the other's legs for their own (kamailio.cfg also refuses to start without it)."""
    name = value.strip()
    if not name or any(char in name for char in "/ \t"):
        raise ValueError(f"BLF_INSTANCE must name this instance (ks1, ks2, ...), not {value!r}")
    return name


class StoreHandle:
    """One store and what this instance holds of it, shared by the instance's processes
    through $shv variables named after the store's zone: whether it was last found down,
    and the instance lease granted on it (every call leg written there carries it).

    Today there is one store, the default zone "" (variables blf_store, blf_store_down_at
    and blf_lease). A zone of its own (a later issue) needs its variables declared in
    kamailio.cfg (modparam("pv", "shvset", ...)): a $shv created after the fork is not shared.

    After an outage each process's client may still hold a channel from before it, one that
    gRPC is still backing off reconnecting (up to minutes): its first call would fail, flag
    the whole instance down again and answer 503. So a process whose client predates the
    last outage (it has not used the store since the outage began) drops it at its next use
    and connects afresh. Not a process that holds watches (the notifier, the directory
    keeper, `holds_watches`): closing its client would end a healthy watch without telling
    it; those reconnect and resync when their watch reports an error.
    """

    def __init__(self, zone: str, store: StateStore) -> None:
        self.zone = zone
        self._store = store
        suffix = f"_{zone}" if zone else ""
        self.state_var = f"$shv(blf_store{suffix})"
        self.down_at_var = f"$shv(blf_store_down_at{suffix})"
        self.lease_var = f"$shv(blf_lease{suffix})"
        self._outage_seen = ""
        self.holds_watches = False
        # The etcd adapter's request timeout as configured (BLF_STORE_TIMEOUT), adapted below.
        self._timed = store if isinstance(store, EtcdStore) else None
        self._base_timeout = self._timed.timeout if self._timed is not None else 0.0

    @property
    def store(self) -> StateStore:
        outage = str(KSR.pv.get(self.down_at_var) or "")
        if outage != self._outage_seen:
            if (self._outage_seen or outage) and not self.holds_watches:
                self._store.close()
            self._outage_seen = outage
        if self._timed is not None:
            # A store the lease keeper measured slow but answering is waited for longer
            # than BLF_STORE_TIMEOUT: used, not declared down (contention.request_timeout).
            self._timed.timeout = request_timeout(self._base_timeout, shared_round_trip(time.monotonic()))
        return self._store

    def down(self) -> bool:
        """Whether this instance last found the store unreachable."""
        return str(KSR.pv.get(self.state_var)) == "down"

    def mark_down(self) -> None:
        """Every process of the instance now answers without waiting on this store, until
        the lease keeper, which probes twice a second while it is down, reaches it again."""
        if not self.down():
            KSR.pv.sets(self.down_at_var, repr(time.time()))
        KSR.pv.sets(self.state_var, "down")
        self._store.close()

    def mark_reached(self) -> None:
        KSR.pv.sets(self.state_var, "up")

    def lease_id(self) -> int:
        raw = KSR.pv.get(self.lease_var)
        return int(raw) if raw else 0

    def share_lease_id(self, lease_id: int) -> None:
        KSR.pv.sets(self.lease_var, str(lease_id))


DEFAULT_ZONE = ""


class Context:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        store = EtcdStore(self.settings.etcd, timeout=self.settings.store_timeout)
        # The lease keeper's own client: its deadline is longer than a request's, so that a
        # store that answers slowly is measured as slow instead of declared down.
        self.probe = EtcdStore(
            self.settings.etcd, timeout=probe_timeout(self.settings.store_timeout, self.settings.lease_ttl)
        )
        # One store per zone; the flag and the lease live with each (statestore/store.py).
        self.stores = {DEFAULT_ZONE: StoreHandle(DEFAULT_ZONE, store)}
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
        """The store of the default zone (the only one today)."""
        return self.stores[DEFAULT_ZONE]

    @property
    def store(self) -> StateStore:
        return self.home.store

    def store_down(self) -> bool:
        """Whether this instance last found the default store unreachable (shared by its processes)."""
        return self.home.down()

    def mark_store_down(self) -> None:
        self.home.mark_down()


# Live instances, name -> SIP host:port as JSON, kept fresh by the lease keeper.
INSTANCES_VAR = "$shv(blf_instances)"


def shared_instances() -> str:
    return str(KSR.pv.get(INSTANCES_VAR) or "")


def share_instances(instances: Mapping[str, object]) -> None:
    KSR.pv.sets(INSTANCES_VAR, json.dumps(instances, sort_keys=True))


# The notifier's ownership epoch, for the SIP workers that create subscriptions.
EPOCH_VAR = "$shv(blf_epoch)"


def shared_epoch() -> int:
    raw = KSR.pv.get(EPOCH_VAR)
    return int(raw) if raw else 0


def share_epoch(epoch: int) -> None:
    KSR.pv.sets(EPOCH_VAR, str(epoch))


def note_store_reached() -> None:
    context().home.mark_reached()


def shared_lease_id() -> int:
    return context().home.lease_id()


def share_lease_id(lease_id: int) -> None:
    context().home.share_lease_id(lease_id)


# The store's round trip as the lease keeper last measured it: "<monotonic time> <seconds>".
ROUND_TRIP_VAR = "$shv(blf_store_rtt)"


def share_round_trip(at: float, seconds: float) -> None:
    KSR.pv.sets(ROUND_TRIP_VAR, f"{at:.3f} {seconds:.4f}")


def shared_round_trip(now: float) -> float | None:
    """The store's recent round trip in seconds, None when none was measured lately."""
    raw = str(KSR.pv.get(ROUND_TRIP_VAR) or "").split()
    if len(raw) != 2:
        return None
    return recent_round_trip(float(raw[0]), float(raw[1]), now)


def trying_if_store_slow() -> bool:
    """Called right before the first store access of a REGISTER or SUBSCRIBE (after its
    authentication): when the store answered slowly lately, send `100 Trying` first, so the
    phone stops retransmitting at T1 (500 ms, RFC 3261 §17.1.2.2) while we wait on the
    store; the final answer follows as soon as the store answers (503 if it does not)."""
    if not store_is_slow(shared_round_trip(time.monotonic())):
        return False
    KSR.sl.send_reply(100, "Trying")
    return True


# When the lease keeper last had the instance lease confirmed by etcd: "<lease id> <monotonic
# time the confirmed request was sent>" (blf_lease); the notifier sends nothing once that is
# too old (contention.ownership_current).
LEASE_CONFIRMED_VAR = "$shv(blf_lease_confirmed)"


def share_lease_confirmed(lease_id: int, sent_at: float) -> None:
    KSR.pv.sets(LEASE_CONFIRMED_VAR, f"{lease_id} {sent_at:.3f}")


def shared_lease_confirmed() -> tuple[int, float] | None:
    raw = str(KSR.pv.get(LEASE_CONFIRMED_VAR) or "").split()
    return (int(raw[0]), float(raw[1])) if len(raw) == 2 else None


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
