"""Per-process state of a Kamailio instance: settings, the store and the cache.

Clients are created on first use in the process that uses them: a gRPC channel
created before Kamailio forks hangs in the children (KAMAILIO-NOTES, process model).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import KSR  # type: ignore[import-not-found]

from statestore.cache import Cache
from statestore.domain.registrar import RegistrarPolicy
from statestore.domain.subscription import SubscriptionPolicy
from statestore.etcd_store import EtcdStore


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
            notifier_wait=float(env.get("BLF_NOTIFIER_WAIT_MS", "5")) / 1000.0,
            max_bindings=int(env.get("BLF_MAX_BINDINGS", "10")),
            nat_expires=int(env.get("BLF_NAT_EXPIRES", "60")),
            secret=env["BLF_AUTH_SECRET"],
        )


def instance_name(value: str) -> str:
    """BLF_INSTANCE, required: it names the instance's lease, its call legs and the
    bindings it took. There is no default: two instances defaulting to one name would
    each take the other's legs for their own (kamailio.cfg also refuses to start without it)."""
    name = value.strip()
    if not name or any(char in name for char in "/ \t"):
        raise ValueError(f"BLF_INSTANCE must name this instance (ks1, ks2, ...), not {value!r}")
    return name


class Context:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.store = EtcdStore(self.settings.etcd, timeout=self.settings.store_timeout)
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

    def store_down(self) -> bool:
        """Whether this instance last found etcd unreachable (shared by its processes)."""
        return KSR.pv.get(STORE_STATE_VAR) == "down"

    def mark_store_down(self) -> None:
        """Every process of the instance now answers without waiting on etcd, until the
        lease keeper, which probes twice a second while it is down, reaches it again."""
        KSR.pv.sets(STORE_STATE_VAR, "down")
        self.store.close()


STORE_STATE_VAR = "$shv(blf_store)"
# The instance lease id, granted by the lease keeper, written with every call leg.
LEASE_VAR = "$shv(blf_lease)"


# Live instances, name -> SIP host:port as JSON, kept fresh by the lease keeper.
INSTANCES_VAR = "$shv(blf_instances)"


def shared_instances() -> str:
    return str(KSR.pv.get(INSTANCES_VAR) or "")


def share_instances(instances: dict[str, str]) -> None:
    KSR.pv.sets(INSTANCES_VAR, json.dumps(instances, sort_keys=True))


def note_store_reached() -> None:
    KSR.pv.sets(STORE_STATE_VAR, "up")


def shared_lease_id() -> int:
    raw = KSR.pv.get(LEASE_VAR)
    return int(raw) if raw else 0


def share_lease_id(lease_id: int) -> None:
    KSR.pv.sets(LEASE_VAR, str(lease_id))


_context: Context | None = None


def context() -> Context:
    global _context
    if _context is None:
        _context = Context()
    return _context
