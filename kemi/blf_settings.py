"""An instance's settings, read once from its environment (BLF_*; etc/blf.env.example).

Checked by blf_kemi.mod_init before Kamailio forks, so that an instance with a missing or
bad setting does not start; each process's Context (blf_context.py) reads them again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from statestore.zones import DEFAULT_ENDPOINT, DEFAULT_ZONE, parse_zones


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
    # The zones served, name -> members (BLF_ZONES; one zone "z1" of BLF_ETCD without it).
    zones: Mapping[str, str] = field(default_factory=lambda: {"z1": "127.0.0.1:2379"})

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
            zones=zones_setting(env),
        )


def instance_name(value: str) -> str:
    """BLF_INSTANCE, required: it names the instance's lease, its call legs and the
    bindings it took. There is no default: two instances defaulting to one name would
    each take the other's legs for their own (kamailio.cfg also refuses to start without it)."""
    name = value.strip()
    if not name or any(char in name for char in "/ \t"):
        raise ValueError(f"BLF_INSTANCE must name this instance (ks1, ks2, ...), not {value!r}")
    return name


def zones_setting(env: Mapping[str, str]) -> dict[str, str]:
    """The zones this instance serves, name -> its members ("h:p,h:p,h:p"), in order: the
    first is the default zone (a domain not known to be elsewhere is looked for there).
    BLF_ZONES (statestore/zones.py) or, without it, one zone "z1" of BLF_ETCD."""
    raw = env.get("BLF_ZONES", "").strip()
    if not raw:
        return {DEFAULT_ZONE: env.get("BLF_ETCD", DEFAULT_ENDPOINT)}
    return {name: ",".join(members) for name, members in parse_zones(raw).items()}
