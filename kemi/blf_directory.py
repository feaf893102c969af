"""The directory on the SIP path: accounts, aliases and domain rules from a shared copy.

Every request needs the directory (authentication reads the account's HA1s, the Request-URI
resolves through aliases, could_call reads both domains' rules), so it is never read from
etcd per request. One process per instance, the keeper (rtimer `blf_directory`, blf_directory_keeper.py), loads the
directory keys from an etcd snapshot into the htable `blf_dir` in shared memory and keeps
them fresh from a watch (a blfctl change reaches every instance in milliseconds); every SIP
worker reads them with `sht_get`, no network. Keys are the etcd keys without `/blf/`
(`accounts/<aor>`, `aliases/<domain>/<alias>`, `domains/<domain>`), values as stored.

`$shv(blf_dir)` is "0" until the first snapshot is in, then the revision it was taken at.
Before that, lookups go to etcd (accounts fall back to memcached when etcd is down). After
it, the copy is served even while etcd is unreachable (calls are still routed) and while a
broken watch resyncs: a copy a few seconds old is better than none for what it has. Not
for what it lacks: `$shv(blf_dir_current)` is "1" only while the copy follows etcd through
a live watch; a miss in a copy not known current (its watch broke, a resync is under way)
is asked of etcd while etcd is not known down (503 if that request fails). Before that
flag such a miss was final: an account created while the watch was broken (an etcd
outage, then a resync retried every second) was refused with 401 until the resync came
through (issue 12, finding 15).

The keeper also copies every account's bindings (`regs/<aor>`: a JSON object, binding id
to the stored binding), so that an INVITE finds its callee's contacts without a store
round trip (kemi/blf_calls.py): a slow or stalled etcd never delays a call.

Why this copy and not memcached or etcd per request: docs/directory.md (measured).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import TypeVar, cast

import KSR  # type: ignore[import-not-found]
from blf_context import Context, StoreHandle
from blf_sip import pv

from statestore import codec
from statestore.domain import identity, policy
from statestore.domain.directory import rules_from_record
from statestore.domain.errors import SipError, StoreUnavailable
from statestore.domain.identity import DOMAIN_NOT_SERVED, Identities, RequestFacts, resolve
from statestore.domain.model import Account, Binding

TABLE = "blf_dir"
# Per zone (blf_context.ZoneValues: the first zone's $shv(blf_dir) and $shv(blf_dir_current)).
LOADED = "dir"
CURRENT = "dir_current"
REGS_TABLE = "regs/"  # + aor: that account's bindings, one JSON object
# Before the copy is loaded, a domain's rules read from etcd are remembered this long by a
# process, both ways: a flood of requests for one domain costs no round trip each.
DOMAIN_CACHE_SECONDS = float(os.environ.get("BLF_DOMAIN_CACHE_SECONDS", "10"))
_DOMAIN_CACHE_ENTRIES = 4096
# Decoded records kept per process (SharedDirectory._decoded); cleared when full.
DECODED_CACHE_SIZE = 4096
STATS_SECONDS = float(os.environ.get("BLF_DIRECTORY_STATS_SECONDS", "300"))
_STATS_SAMPLES = 4096
T = TypeVar("T")


def key_domain(key: str) -> str:
    """The domain a key of the copy belongs to: accounts/<user@domain>, aliases/<domain>/<alias>,
    domains/<domain>."""
    kind, _, rest = key.partition("/")
    if kind == "aliases":
        return rest.partition("/")[0]
    return rest.rpartition("@")[2]


class Stats:
    """Lookups of this process, where they were served from and how long they took; logged
    every STATS_SECONDS when there were any (docs/directory.md reads these lines)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}
        self.since = 0.0
        self.reset()

    def reset(self) -> None:
        self.samples = {"shm": [], "store": []}
        self.counts = {"shm": 0, "store": 0}
        self.since = time.monotonic()

    def record(self, source: str, seconds: float) -> None:
        self.counts[source] += 1
        samples = self.samples[source]
        if len(samples) < _STATS_SAMPLES:
            samples.append(seconds)
        else:
            samples[self.counts[source] % _STATS_SAMPLES] = seconds
        if time.monotonic() - self.since >= STATS_SECONDS:
            self.flush()

    def flush(self) -> None:
        total = sum(self.counts.values())
        if total:
            parts = [f"lookups={total}", f"shm={self.counts['shm']}", f"store={self.counts['store']}"]
            for source in ("shm", "store"):
                ordered = sorted(self.samples[source])
                for name, q in (("p50", 0.5), ("p99", 0.99)):
                    value = ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6 if ordered else 0.0
                    parts.append(f"{source}_{name}_us={value:.1f}")
            KSR.info(f"blf directory: stats {' '.join(parts)}\n")
        self.reset()


class SharedDirectory:
    """The directory as the SIP path reads it: `identity.DirectoryView` and `policy.Rules`,
    and the accounts' HA1s for authentication."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stats = Stats()
        self._domains: dict[str, tuple[policy.DomainRules | None, float]] = {}
        # The last decoded value of each key read, with the text it was decoded from: a
        # record is decoded again only when it changed (every challenge reads its domain).
        self._decoded: dict[str, tuple[str, object]] = {}

    def loaded(self) -> bool:
        """Whether the copy of every zone is in (a zone whose store is down counts: what it
        has not loaded is not served until it comes back)."""
        return all(zone.get(LOADED) not in ("", "0") or zone.down() for zone in self.ctx.stores.values())

    def current(self) -> bool:
        """Whether the copy follows etcd through a live watch (what it lacks, etcd lacks)."""
        return all(zone.get(CURRENT) == "1" for zone in self.ctx.stores.values())

    def _lookup(
        self, key: str, decode: Callable[[str], T | None], from_store: Callable[[], T | None],
        miss_asks_store: bool = True,
    ) -> T | None:
        """`key` from the copy once loaded (decoded), before that from etcd; and from etcd
        when the copy lacks it and is not known current (a resync under way), unless
        `miss_asks_store` is False (a lookup made before any authentication: a flood of
        made-up names must not turn into store reads)."""
        started = time.perf_counter()
        if self.loaded():
            raw = KSR.htable.sht_get(TABLE, key)
            self.stats.record("shm", time.perf_counter() - started)
            if raw is None:
                if self.current() or self.ctx.zone(key_domain(key)).down() or not miss_asks_store:
                    # Current: etcd has none either. Store down: the copy is all there is
                    # (calls keep being routed from it; REGISTER and SUBSCRIBE get 503 anyway).
                    return None
                return self._from_store(from_store)
            text = str(raw)
            cached = self._decoded.get(key)
            if cached is not None and cached[0] == text:
                return cast(T, cached[1])  # records are frozen: one decode per version
            try:
                value = decode(text)
            except (ValueError, TypeError, KeyError) as exc:
                KSR.err(f"blf directory: {key} unreadable ({exc}): treated as absent\n")
                return None
            if len(self._decoded) >= DECODED_CACHE_SIZE:
                self._decoded.clear()
            self._decoded[key] = (text, value)
            return value
        return self._from_store(from_store)

    def _from_store(self, from_store: Callable[[], T | None]) -> T | None:
        started = time.perf_counter()
        value = from_store()
        self.stats.record("store", time.perf_counter() - started)
        return value

    def bindings(self, aor: str) -> list[Binding] | None:
        """The account's bindings from the copy, no store access; None when the copy cannot
        say (not loaded, or it has none and is not known current). Expired ones included:
        the caller filters by time (registrar.call_targets)."""
        if not self.loaded():
            return None
        raw = KSR.htable.sht_get(TABLE, REGS_TABLE + aor)
        if raw is None:
            return [] if self.current() else None
        try:
            return [Binding.from_dict(codec.decode(value)) for value in json.loads(str(raw)).values()]
        except (ValueError, TypeError, KeyError) as exc:
            KSR.err(f"blf directory: bindings of {aor} unreadable ({exc}): asked of the store\n")
            return None

    # --- identity.DirectoryView ---

    def account(self, domain: str, user: str) -> str | None:
        found = self.account_record(f"{user}@{domain}")
        return None if found is None else found.aor

    def alias(self, domain: str, alias: str) -> str | None:
        return self._lookup(
            f"aliases/{domain}/{alias}", str,
            lambda: self._store(self.ctx.zone(domain), lambda zone: zone.store.resolve_alias(domain, alias)),
        )

    # --- policy.Rules ---

    def get(self, domain: str, /) -> policy.DomainRules | None:
        name = domain.lower()
        # Read before any challenge (the realm, a served Request-URI): once the copy is
        # loaded, a domain it lacks is not served, even while it resyncs.
        return self._lookup(
            f"domains/{name}", lambda raw: rules_from_record(codec.decode(raw)), lambda: self._domain_from_store(name),
            miss_asks_store=False,
        )

    # --- accounts ---

    def account_record(self, aor: str, store_required: bool = False) -> Account | None:
        """The account `user@domain`; None if there is none. Raises StoreUnavailable when
        neither the copy, etcd nor (unless `store_required`) memcached can say."""
        return self._lookup(
            f"accounts/{aor}",
            lambda raw: Account.from_dict(codec.decode(raw)),
            lambda: self._account_from_store(aor, store_required),
        )

    # --- before the copy is loaded ---

    def _store(self, zone: StoreHandle, read: Callable[[StoreHandle], str | None]) -> str | None:
        if zone.down():
            raise StoreUnavailable("store marked down")
        try:
            return read(zone)
        except StoreUnavailable:
            zone.mark_down()
            raise

    def _account_from_store(self, aor: str, store_required: bool) -> Account | None:
        zone = self.ctx.zone(aor)
        if not zone.down():
            try:
                account = zone.store.get_account(aor)
            except StoreUnavailable:
                zone.mark_down()
            else:
                if account is not None:
                    self.ctx.cache.put_account(account)
                return account
        if store_required:
            raise StoreUnavailable("store marked down")
        cached = self.ctx.cache.get_account(aor)
        if cached is None:
            # Neither store nor cache can say: a 503 with Retry-After, not an endless challenge.
            raise StoreUnavailable(f"store down and {aor} not cached")
        return cached

    def _domain_from_store(self, name: str) -> policy.DomainRules | None:
        now = time.monotonic()
        cached = self._domains.get(name)
        if cached is not None and now - cached[1] < DOMAIN_CACHE_SECONDS:
            rules = cached[0]
        else:
            rules = self._domain_in_zones(name)
            if len(self._domains) >= _DOMAIN_CACHE_ENTRIES:
                self._domains.clear()
            self._domains[name] = (rules, now)
        return rules

    def _domain_in_zones(self, name: str) -> policy.DomainRules | None:
        """A domain's rules before the copy is in: from the zone known to hold it, else
        from each zone in turn (503 when a zone that might hold it cannot answer)."""
        first = self.ctx.zone(name)
        unanswered: StoreUnavailable | None = None
        for zone in [first, *(z for z in self.ctx.stores.values() if z is not first)]:
            try:
                rules = self._rules_from(zone, name)
            except StoreUnavailable as exc:
                unanswered = exc
                continue
            if rules is not None:
                return rules
        if unanswered is not None:
            raise unanswered
        return None

    def _rules_from(self, zone: StoreHandle, name: str) -> policy.DomainRules | None:
        if zone.down():
            raise StoreUnavailable("store marked down")
        try:
            return zone.store.domain_rules(name)
        except StoreUnavailable:
            zone.mark_down()
            raise


_directory: SharedDirectory | None = None


def directory(ctx: Context) -> SharedDirectory:
    global _directory
    if _directory is None:
        _directory = SharedDirectory(ctx)
    return _directory


def realm_candidates() -> list[str]:
    """The request's candidates for the realm (identity.realm_candidates)."""
    # $(ai{uri.host}) of a request without P-Asserted-Identity logs an ERROR in Kamailio
    # ("unable to get pv value"): read the host only when there is one.
    pai_host = pv("$(ai{uri.host})") if pv("$ai") else ""
    return identity.realm_candidates(pv("$fd"), pai_host, pv("$rd"), KSR.is_myself_ruri() > 0)


def require_served_target(ctx: Context) -> None:
    """A Request-URI naming a domain not served here is 404 before any challenge (which
    domains are served is no secret: requests to them are challenged), so a request for
    another provider costs no digest round. The server's own address is decided after
    authentication: it names the caller's own domain (identity.resolve)."""
    if KSR.is_myself_ruri() <= 0 and directory(ctx).get(pv("$rd")) is None:
        raise SipError(404, DOMAIN_NOT_SERVED)


def request_identities(ctx: Context, caller: str) -> Identities:
    """The request's caller and callee, resolved once (identity.resolve) against the copy."""
    user, _, realm = caller.rpartition("@")
    facts = RequestFacts(
        auth_user=user, auth_realm=realm,
        ruri_user=pv("$rU"), ruri_host=pv("$rd"), ruri_user_param=pv("$(ru{uri.param,user})"),
        ruri_is_us=KSR.is_myself_ruri() > 0,
        from_uri=pv("$fu"), to_uri=pv("$tu"), pai=pv("$ai"), display=pv("$fn"),
    )
    view = directory(ctx)
    return resolve(facts, view, view)
