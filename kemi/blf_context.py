"""Per-process state of a Kamailio instance: settings, the store and the cache.

Clients are created on first use in the process that uses them: a gRPC channel
created before Kamailio forks hangs in the children (KAMAILIO-NOTES, process model).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from statestore.cache import Cache
from statestore.domain.registrar import RegistrarPolicy
from statestore.domain.subscription import SubscriptionPolicy
from statestore.etcd_store import EtcdStore

# After a store failure, BLF work is skipped in this process for this long, so that a
# dead etcd costs calls one timeout per window, not one per message.
STORE_BACKOFF_SECONDS = 2.0


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
    reconcile_seconds: float
    notifier_wait: float

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            instance=env.get("BLF_INSTANCE", "ks1"),
            sip=env.get("BLF_SIP", "127.0.0.1:5071"),
            etcd=env.get("BLF_ETCD", "127.0.0.1:2379"),
            memcached=env.get("BLF_MEMCACHED", "127.0.0.1:11211"),
            lease_ttl=int(env.get("BLF_LEASE_TTL", "6")),
            store_timeout=float(env.get("BLF_STORE_TIMEOUT", "0.5")),
            sub_min_expires=int(env.get("BLF_SUB_MIN_EXPIRES", "60")),
            sub_max_expires=int(env.get("BLF_SUB_MAX_EXPIRES", "3600")),
            reconcile_seconds=float(env.get("BLF_RECONCILE_SECONDS", "10")),
            notifier_wait=float(env.get("BLF_NOTIFIER_WAIT_MS", "5")) / 1000.0,
        )


class Context:
    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.store = EtcdStore(self.settings.etcd, timeout=self.settings.store_timeout)
        self.cache = Cache(self.settings.memcached)
        self.registrar = RegistrarPolicy()
        self.subscriptions = SubscriptionPolicy(
            min_expires=self.settings.sub_min_expires, max_expires=self.settings.sub_max_expires
        )
        self._down_until = 0.0

    def store_down(self) -> bool:
        return time.monotonic() < self._down_until

    def mark_store_down(self) -> None:
        self._down_until = time.monotonic() + STORE_BACKOFF_SECONDS
        self.store.close()


_context: Context | None = None


def context() -> Context:
    global _context
    if _context is None:
        _context = Context()
    return _context
