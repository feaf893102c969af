"""Which zone's store a blfctl command acts on (issue 14).

Everything of an account lives in its domain's zone. blfctl finds that zone by asking each
zone, in order, whether it holds the domain (`domain_exists`): this module is the one place
that does it. The zones are BLF_ZONES, else `--etcd` as zone z1, else the lab's zones when a
lab is up, else zone z1 at BLF_ETCD or 127.0.0.1:2379 (statestore.zones).
"""

from __future__ import annotations

import argparse
import os

from statestore.cli_errors import Malformed
from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import EtcdStore
from statestore.lab import Paths
from statestore.zones import Zones, configured_zones, parse_endpoints

STORE_TIMEOUT = 2.0


def zones_of(args: argparse.Namespace) -> Zones:
    try:
        if getattr(args, "etcd", None) and not os.environ.get("BLF_ZONES", "").strip():
            return {"z1": parse_endpoints(args.etcd)}
        return configured_zones(os.environ, Paths.default().state)
    except ValueError as exc:  # a malformed --etcd, BLF_ZONES or BLF_ETCD
        raise Malformed(str(exc)) from exc


class ZoneStores:
    """One store per zone, opened on first use."""

    def __init__(self, zones: Zones, timeout: float = STORE_TIMEOUT) -> None:
        self.zones = zones
        self.timeout = timeout
        self._stores: dict[str, EtcdStore] = {}

    @property
    def first(self) -> str:
        return next(iter(self.zones))

    def store(self, zone: str) -> EtcdStore:
        if zone not in self.zones:
            raise KeyError(zone)
        if zone not in self._stores:
            self._stores[zone] = EtcdStore(",".join(self.zones[zone]), timeout=self.timeout)
        return self._stores[zone]

    def zone_of(self, domain: str) -> str | None:
        """The zone that holds `domain`, None if none does. A zone that does not answer is
        passed over while another may hold it; StoreUnavailable only when the domain is in
        no zone that answered and some zone did not."""
        unavailable: StoreUnavailable | None = None
        for zone in self.zones:
            try:
                if self.store(zone).domain_exists(domain):
                    return zone
            except StoreUnavailable as exc:
                unavailable = exc
        if unavailable is not None:
            raise unavailable
        return None

    def for_domain(self, domain: str) -> EtcdStore:
        """The store of `domain`'s zone (the first zone for a domain no zone holds yet)."""
        return self.store(self.zone_of(domain) or self.first)

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()


def stores(args: argparse.Namespace) -> ZoneStores:
    return ZoneStores(zones_of(args))


def store_for(args: argparse.Namespace, domain: str) -> EtcdStore:
    """The store of `domain`'s zone: where an account of that domain, and all it has, lives."""
    return stores(args).for_domain(domain)


def domain_of(aor: str) -> str:
    return aor.rpartition("@")[2].lower()
