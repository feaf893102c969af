"""The StateStore seam: what an instance needs of a store, whatever holds it.

`EtcdStore` is today's only implementation (mypy checks that it satisfies `StateStore`,
at the bottom of this module). A later issue may give each domain zone a store of its
own and one instance several zones: the instance holds, per store, its "store down" flag
and its lease (kemi/blf_context.py `StoreHandle`), never one for the whole process.

Errors: a store that cannot be reached raises `StoreUnavailable` (a 503 where a request
waits on it); any other error is a bug and keeps its own type and traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from statestore.domain.authorization import Authorization
from statestore.domain.directory import AccountEntry, DirectoryError
from statestore.domain.model import Account, Binding, Leg, Publication, Subscription, WatcherEntry
from statestore.domain.policy import DomainRules
from statestore.domain.profiles import UaRule

if TYPE_CHECKING:
    # Value types the adapter defines today; they move here with a second adapter.
    from statestore.domain.legbook import WriteOutcome
    from statestore.etcd_store import EtcdStore, KeyValue, WatchCallback


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


class StateStore(Protocol):
    """Every operation an instance, the notifier and blfctl use. Writes that guard against
    a concurrent writer return a falsy value (False, None) when they lost, and write nothing.

    Left out on purpose: EtcdStore's whole-prefix reads (`range`, `subscriptions`, for tests
    and tools: their answers grow with the cluster), `watch` (one prefix; `watch_prefixes`
    is the seam) and its etcd `client`."""

    def close(self) -> None: ...

    # provisioning
    def add_domain(self, name: str, rules: DomainRules | None = None) -> None: ...
    def domain_exists(self, name: str) -> bool: ...
    def domains(self) -> list[str]: ...
    def put_account(self, account: Account) -> None: ...
    def get_account(self, aor: str) -> Account | None: ...

    # the directory (issue 7): each write is one transaction, whole or not at all
    def domain_rules(self, name: str) -> DomainRules | None: ...
    def set_domain_rules(self, rules: DomainRules) -> bool: ...
    def resolve_alias(self, domain: str, alias: str) -> str | None: ...
    def add_account(self, account: Account, aliases: Sequence[str] = ()) -> None: ...
    def add_aliases(self, aor: str, aliases: Sequence[str]) -> None: ...
    def write_accounts(self, entries: Sequence[AccountEntry]) -> list[DirectoryError]: ...
    def remove_alias(self, domain: str, alias: str) -> str | None: ...
    def remove_account(self, aor: str, now: float | None = None) -> bool: ...

    # leases and instances
    def grant_lease(self, ttl: int) -> int: ...
    def refresh_lease(self, lease_id: int) -> bool: ...
    def revoke_lease(self, lease_id: int) -> None: ...
    def announce_instance(self, name: str, info: dict[str, Any], lease_id: int) -> None: ...
    def instances(self) -> dict[str, dict[str, Any]]: ...

    # call legs
    def write_legs(self, legs: Sequence[Leg], lease_id: int, create: bool) -> WriteOutcome: ...
    def write_calls(self, writes: Sequence[tuple[Sequence[Leg], int, bool]]) -> list[WriteOutcome]: ...
    def legs_on(self, lease_id: int) -> dict[str, str]: ...
    def delete_legs(self, leg_keys: Sequence[str]) -> None: ...
    def legs_of(self, aor: str) -> list[Leg]: ...

    # registrations
    def bindings_of(self, aor: str) -> list[Binding]: ...
    def read_bindings(self, aor: str) -> StoredBindings: ...
    def apply_bindings(
        self,
        upserts: Sequence[tuple[str, Binding, int]],
        removals: Sequence[str],
        aor: str,
        read: StoredBindings | None = None,
    ) -> bool: ...

    # subscriptions
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

    # publications (RFC 3903): no lease each; expired ones are swept by the notifier
    def publications_of(self, aor: str) -> list[tuple[Publication, int]]: ...
    def get_publication(self, aor: str, etag: str) -> tuple[Publication, int] | None: ...
    def put_publication(self, publication: Publication, replaces: tuple[str, int] | None = None) -> bool: ...
    def delete_publication(
        self, aor: str, etag: str, mod_revision: int | None = None, expected: Publication | None = None
    ) -> bool: ...

    # NOTIFY numbering: a new ownership epoch (notifier start, takeover); Contended when
    # the compare-and-swap lost every try (not StoreUnavailable: the store answered)
    def next_epoch(self) -> int: ...

    # presence authorization and rendering profiles (blfctl presence|watcher|profile):
    # read-modify-write by compare-and-swap; Contended when it lost every try; an account's
    # records only while it exists (None, False: no such account)
    def authorization(self, presentity: str) -> Authorization: ...
    def update_authorization(
        self, presentity: str, change: Callable[[Authorization], Authorization]
    ) -> Authorization | None: ...
    def profile_of(self, aor: str) -> tuple[str, ...] | None: ...
    def set_profile(self, aor: str, names: Sequence[str] | None) -> bool: ...
    def ua_profile_rules(self) -> list[UaRule]: ...
    def update_ua_profile_rules(self, change: Callable[[list[UaRule]], list[UaRule]]) -> list[UaRule]: ...

    # reading and watching (the notifier's mirror)
    def snapshot(self, prefix: str | Sequence[str] = ..., page: int = ...) -> tuple[int, list[KeyValue]]: ...
    def watch_prefixes(self, start_revision: int, callback: WatchCallback, prefixes: Sequence[str]) -> list[int]: ...
    def cancel_watch(self, watch_id: int) -> None: ...

    # the store's own health (issue 8): the lease keeper logs a raised alarm (NOSPACE: every
    # write fails until `blfctl store maintain`)
    def alarms(self) -> list[str]: ...


if TYPE_CHECKING:

    def _etcd_store_is_a_state_store(store: EtcdStore) -> StateStore:
        return store  # mypy --strict fails here when EtcdStore drifts from the seam
