"""The StateStore seam: what an instance needs of a store, whatever holds it.

One store is one zone's: an instance serving several zones holds one per zone, with its
"store down" flag and its lease (kemi/blf_context.py `StoreHandle`), and nothing here
spans two zones (no transaction, no read). The seam is split by record kind (`Directory`,
`Leases`, `Legs`, `Bindings`, `Subscriptions`, `Publications`, `PresenceAdmin`,
`Watching`, `Inspection`, `Health`); `StateStore` is all of them. Two implementations fill it, both
checked by mypy at the bottom of this module: `statestore.etcd.EtcdStore` and
`statestore.memory.MemoryStore` (the one every unit test uses).

Errors: a store that cannot be reached raises `StoreUnavailable` (a 503 where a request
waits on it); any other error is a bug and keeps its own type and traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from statestore.domain.authorization import Authorization
from statestore.domain.directory import AccountEntry, DirectoryError
from statestore.domain.legbook import WriteOutcome
from statestore.domain.model import Account, Binding, Leg, Publication, Subscription, WatcherEntry
from statestore.domain.policy import DomainRules
from statestore.domain.profiles import UaRule

if TYPE_CHECKING:
    from statestore.etcd import EtcdStore
    from statestore.memory import MemoryStore


@dataclass(frozen=True)
class KeyValue:
    """A stored key as read: its value and the store revision that last changed it."""

    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class WatchEvent:
    """A change of one key; `value` is None for a deletion (lease expiry included)."""

    key: str
    value: bytes | None
    revision: int


# Called with the changes of one store revision (or more), or the error that ended the watch.
WatchCallback = Callable[[list[WatchEvent] | Exception], None]


@dataclass(frozen=True)
class StoredBindings:
    """An account's bindings as read, with what a guarded write of them needs: the lease
    each binding key holds (by binding id) and the store revision of the read."""

    bindings: list[Binding]
    revision: int
    leases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Census:
    """A watcher's subscriptions and its presentity's count, with the revisions they were
    read at: a create guarded by them fails if either changed since. Only the entries of
    that presentity are complete; the others carry their id alone (enough to count)."""

    entries: list[WatcherEntry]
    watcher_revision: int
    presentity_count: int
    presentity_revision: int


@dataclass(frozen=True)
class SubscribeRead:
    """What an initial SUBSCRIBE reads of the store, all at the census's revision."""

    watcher_account: Account | None
    presentity_account: Account | None
    legs: list[Leg]
    bindings: list[Binding]
    census: Census
    publications: list[Publication] = field(default_factory=list)
    # The presentity's authorization record (keys.authz), the watcher's rendering profile
    # (keys.profile) and the User-Agent profile rules (keys.UA_PROFILES), when stored.
    authz: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    ua_profiles: dict[str, Any] | None = None


class Directory(Protocol):
    """Domains, accounts and aliases (issue 7): each write is one transaction, whole or not
    at all; removing an account takes what domain.removal says with it."""

    def add_domain(self, name: str, rules: DomainRules | None = None) -> None: ...
    def domain_exists(self, name: str) -> bool: ...
    def domains(self) -> list[str]: ...
    def domain_rules(self, name: str) -> DomainRules | None: ...
    def set_domain_rules(self, rules: DomainRules) -> bool: ...
    def put_account(self, account: Account) -> None: ...
    def get_account(self, aor: str) -> Account | None: ...
    def resolve_alias(self, domain: str, alias: str) -> str | None: ...
    def add_account(self, account: Account, aliases: Sequence[str] = ()) -> None: ...
    def add_aliases(self, aor: str, aliases: Sequence[str]) -> None: ...
    def write_accounts(self, entries: Sequence[AccountEntry]) -> list[DirectoryError]: ...
    def remove_alias(self, domain: str, alias: str) -> str | None: ...
    def remove_account(self, aor: str, now: float | None = None) -> bool: ...


class Leases(Protocol):
    """Instance leases and the instances announced under them."""

    def grant_lease(self, ttl: int) -> int: ...
    def refresh_lease(self, lease_id: int) -> bool: ...
    def revoke_lease(self, lease_id: int) -> None: ...
    def announce_instance(self, name: str, info: dict[str, Any], lease_id: int) -> None: ...
    def instances(self) -> dict[str, dict[str, Any]]: ...


class Legs(Protocol):
    """Call legs, under the lease of the instance serving the call."""

    def write_legs(self, legs: Sequence[Leg], lease_id: int, create: bool) -> WriteOutcome: ...
    def write_calls(self, writes: Sequence[tuple[Sequence[Leg], int, bool]]) -> list[WriteOutcome]: ...
    def legs_on(self, lease_id: int) -> dict[str, str]: ...
    def delete_legs(self, leg_keys: Sequence[str]) -> None: ...
    def legs_of(self, aor: str) -> list[Leg]: ...


class Bindings(Protocol):
    """Registrations, each under a lease of its expiry."""

    def bindings_of(self, aor: str) -> list[Binding]: ...
    def read_bindings(self, aor: str) -> StoredBindings: ...
    def apply_bindings(
        self,
        upserts: Sequence[tuple[str, Binding, int]],
        removals: Sequence[str],
        aor: str,
        read: StoredBindings | None = None,
    ) -> bool: ...


class Subscriptions(Protocol):
    """Subscriptions with their index entries (the caps are counted from them), and the
    NOTIFY numbering epoch: `next_epoch` raises Contended when its compare-and-swap lost
    every try (not StoreUnavailable: the store answered)."""

    def subscriptions_to(self, presentity: str) -> list[Subscription]: ...
    def get_subscription(self, sub_id: str) -> tuple[Subscription, int] | None: ...
    def census(self, watcher: str, presentity: str) -> Census: ...
    def initial_subscribe_read(self, watcher: str, presentity: str, inputs: Collection[str]) -> SubscribeRead: ...
    def create_subscription(
        self,
        subscription: Subscription,
        replaced: Sequence[WatcherEntry] = (),
        counted: Census | None = None,
        guard_presentity: bool = False,
    ) -> int | None: ...
    def update_subscription(
        self, subscription: Subscription, mod_revision: int, reindex: bool = False
    ) -> int | None: ...
    def delete_subscription(self, subscription: Subscription, mod_revision: int | None = None) -> bool: ...
    def next_epoch(self) -> int: ...


class Publications(Protocol):
    """Publications (RFC 3903): no lease each; expired ones are swept by the notifier."""

    def publications_of(self, aor: str) -> list[tuple[Publication, int]]: ...
    def get_publication(self, aor: str, etag: str) -> tuple[Publication, int] | None: ...
    def put_publication(self, publication: Publication, replaces: tuple[str, int] | None = None) -> bool: ...
    def delete_publication(
        self, aor: str, etag: str, mod_revision: int | None = None, expected: Publication | None = None
    ) -> bool: ...


class PresenceAdmin(Protocol):
    """Presence authorization and rendering profiles (blfctl presence|watcher|profile):
    read-modify-write by compare-and-swap, Contended when it lost every try; an account's
    records only while it exists (None, False: no such account)."""

    def authorization(self, presentity: str) -> Authorization: ...
    def update_authorization(
        self, presentity: str, change: Callable[[Authorization], Authorization]
    ) -> Authorization | None: ...
    def profile_of(self, aor: str) -> tuple[str, ...] | None: ...
    def set_profile(self, aor: str, names: Sequence[str] | None) -> bool: ...
    def ua_profile_rules(self) -> list[UaRule]: ...
    def update_ua_profile_rules(self, change: Callable[[list[UaRule]], list[UaRule]]) -> list[UaRule]: ...


class Watching(Protocol):
    """Reading and watching the zone's records (the notifier's mirror, the directory copy):
    a snapshot at one revision, then every change after it."""

    def snapshot(self, prefix: str | Sequence[str] = ..., page: int = ...) -> tuple[int, list[KeyValue]]: ...
    def watch_prefixes(self, start_revision: int, callback: WatchCallback, prefixes: Sequence[str]) -> list[int]: ...
    def cancel_watch(self, watch_id: int) -> None: ...


@dataclass(frozen=True)
class LeaseInfo:
    """An instance's lease as etcd holds it now: its id, the TTL it was granted and the
    seconds left before it lapses (and takes that instance's legs with it)."""

    lease_id: int
    granted_ttl: int
    remaining: int


class Inspection(Protocol):
    """What `blfctl why|subs|legs|regs|reset` read and write (statestore.cli_inspect): a
    page of keys under a prefix, an instance's lease, and the reset request the notifiers
    watch (keys.RESET)."""

    def page(self, prefix: str, after: str = "", limit: int = 50) -> tuple[list[KeyValue], bool]: ...
    def instance_lease(self, name: str) -> LeaseInfo | None: ...
    def request_reset(self, aor: str, ttl: int) -> None: ...


class Health(Protocol):
    """The store's own health (issue 8): the lease keeper logs a raised alarm (NOSPACE:
    every write fails until `blfctl store maintain`)."""

    def alarms(self) -> list[str]: ...


class StateStore(
    Directory, Leases, Legs, Bindings, Subscriptions, Publications, PresenceAdmin, Watching, Inspection, Health,
    Protocol,
):
    """Every operation an instance, the notifier and blfctl use of one zone's store. Writes
    that guard against a concurrent writer return a falsy value (False, None) when they
    lost, and write nothing.

    Left out on purpose: EtcdStore's whole-prefix reads (`range`, `subscriptions`, for tests
    and tools: their answers grow with the cluster), `watch` (one prefix; `watch_prefixes`
    is the seam), its maintenance calls (statestore.maintenance) and its etcd `client`."""

    def close(self) -> None: ...


if TYPE_CHECKING:

    def _etcd_store_is_a_state_store(store: EtcdStore) -> StateStore:
        return store  # mypy --strict fails here when EtcdStore drifts from the seam

    def _memory_store_is_a_state_store(store: MemoryStore) -> StateStore:
        return store  # and here when the in-memory store does
