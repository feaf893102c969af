"""The StateStore on etcd: the only module that imports the etcd client.

A failure to reach etcd surfaces as `StoreUnavailable`; callers decide whether that
means a 503 (SUBSCRIBE, REGISTER) or carrying on without BLF (calls). Every other error
(a request etcd refuses, a record we cannot read) is a bug and propagates as it is: the
one boundary that answers requests logs it with its traceback (`unavailability`).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]

from statestore import codec, keys
from statestore.domain import profiles
from statestore.domain.authorization import Authorization
from statestore.domain.directory import (
    AccountEntry,
    DirectoryError,
    Found,
    merged_record,
    rules_from_record,
    rules_to_record,
)
from statestore.domain.errors import Contended, LeaseGone, StoreUnavailable
from statestore.domain.legbook import WriteOutcome
from statestore.domain.model import Account, Binding, Leg, Publication, Subscription, WatcherEntry
from statestore.domain.policy import DomainRules
from statestore.domain.subscription import REASON_NORESOURCE, ended
from statestore.etcd_failover import FailoverClient, split_endpoint, split_endpoints
from statestore.maintenance import KINDS, MaintenanceRecord, MemberStatus, status_field
from statestore.maintenance import metric as metric_sample
from statestore.store import Census, StoredBindings, SubscribeRead

REGISTRATION_GRACE_SECONDS = 2
# Keys per response of a snapshot: 1,000 subscriptions are about 0.6 MB.
SNAPSHOT_PAGE = 1000
# Compare-and-swap attempts for a new epoch (each failure is another notifier's success).
EPOCH_ATTEMPTS = 20
# etcd's default --max-txn-ops: operations in one transaction.
MAX_TXN_OPS = 128
# Calls written in one request by write_calls (each a nested transaction of a few operations).
CALLS_PER_REQUEST = 64
# Optimistic directory writes retried when a concurrent writer changed what they read.
DIRECTORY_ATTEMPTS = 10

# gRPC backs off reconnecting exponentially (to minutes), and shares that back-off between
# channels to the same target: after an etcd outage a fresh client would still fail for
# a long while. Keep retries quick, and each channel's subchannels its own.
# A call made while the channel is reconnecting waits for it (up to its deadline) rather
# than failing at once.
_WAIT_FOR_READY = {
    "methodConfig": [
        {
            "name": [{"service": f"etcdserverpb.{name}"} for name in ("KV", "Lease", "Watch", "Maintenance")],
            "waitForReady": True,
        }
    ]
}
GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.service_config", json.dumps(_WAIT_FOR_READY)),
]


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class WatchEvent:
    """A change of one key; `value` is None for a deletion (lease expiry included)."""

    key: str
    value: bytes | None
    revision: int


WatchCallback = Callable[[list[WatchEvent] | Exception], None]


def _quiet_closed_watchers(previous: Any = threading.excepthook) -> None:
    """etcd3 0.12 cannot stop its watch thread: after `close()` the thread's next call
    on the closed channel raises and the thread ends. That end is expected; keep its
    traceback out of the Kamailio log and let every other thread error through."""

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else ""
        if name.startswith("etcd3_watch_") and "Channel closed" in str(args.exc_value):
            return
        previous(args)

    threading.excepthook = hook


_quiet_closed_watchers()


# gRPC status codes that mean etcd cannot answer now (down, unreachable, too slow). Any
# other (INVALID_ARGUMENT, RESOURCE_EXHAUSTED for a response over 4 MB, INTERNAL...) says
# the request or its handling is wrong, and retrying it, here or on another instance,
# cannot help.
UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# What etcd answers every write with while its NOSPACE alarm is raised (RESOURCE_EXHAUSTED).
NOSPACE_ERROR = "database space exceeded"
# A defragmentation blocks its member for as long as it rewrites the file: seconds per
# hundred MB (README "Operating the store"); its own deadline, not the store's.
DEFRAG_TIMEOUT = 300.0


def compacted(exc: BaseException) -> bool:
    """Whether a watch ended because the revision it was at has been compacted away: it
    cannot be resumed, what it watched must be read again."""
    if isinstance(exc, etcd3.exceptions.RevisionCompactedError):
        return True
    return (
        isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None))
        and exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in str(exc.details())
    )


def unavailability(exc: BaseException) -> bool:
    """Whether an error of the etcd client means etcd is unavailable (not a bug).

    A read at a revision etcd has compacted meanwhile (a paged snapshot, a watch) counts
    too: that state cannot be read any more, the caller reads again (never a request's).
    """
    if isinstance(exc, etcd3.exceptions.ConnectionFailedError | etcd3.exceptions.ConnectionTimeoutError):
        return True  # etcd3's names for UNAVAILABLE and DEADLINE_EXCEEDED
    if isinstance(exc, etcd3.exceptions.WatchTimedOut):
        return True  # no member confirmed a new watch in time (etcd_failover)
    if isinstance(exc, etcd3.exceptions.RevisionCompactedError):
        return True
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in str(exc.details()):
            return True
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and NOSPACE_ERROR in str(exc.details()):
            return True  # the NOSPACE alarm: no write succeeds until `blfctl store maintain`
        return exc.code() in UNAVAILABLE_CODES
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    # The channel was closed under the call: another thread of this process found etcd
    # unreachable and closed it (Context.mark_store_down).
    return isinstance(exc, ValueError) and "closed channel" in str(exc)


class EtcdStore:
    """StateStore adapter. The gRPC channel is created on first use, in the process using it."""

    def __init__(self, endpoint: str = "127.0.0.1:2379", timeout: float = 1.0) -> None:
        # One member ("h:p") or a cluster's ("h:p,h:p,h:p"): statestore/etcd_failover.py.
        self.endpoint = endpoint
        self.endpoints = split_endpoints(endpoint)
        self._timeout = timeout
        self._client: Any = None

    @property
    def timeout(self) -> float:
        """Each request's deadline in seconds; a change applies to the next request."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = seconds
        if self._client is not None:
            self._client.timeout = seconds  # etcd3 0.12 reads it on every call

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = FailoverClient(self.endpoint, self.timeout, GRPC_OPTIONS)
        return self._client

    def member_in_use(self) -> str:
        """The member requests go to now (the first one until one fails)."""
        return self.client.pool.current.endpoint if self._client is not None else self.endpoints[0]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except StoreUnavailable:
            raise
        except Exception as exc:
            if not unavailability(exc):
                raise  # a bug, not an outage: no 503 for it, its traceback in the log
            raise StoreUnavailable(f"etcd at {self.endpoint}: {type(exc).__name__}: {exc}", self.endpoint) from exc

    # --- provisioning -------------------------------------------------------------------

    def add_domain(self, name: str, rules: DomainRules | None = None) -> None:
        """Provision a domain. Without `rules` a new domain gets the defaults (it may call
        itself only, accepts calls from all) and an existing one keeps its rules; with
        them, they are the domain's."""
        tx = self.client.transactions
        key = keys.domain(name)
        with self._guard():
            if rules is None:
                value = codec.encode(rules_to_record(DomainRules(name)))
                self.client.transaction(compare=[tx.version(key) == 0], success=[tx.put(key, value)], failure=[])
            else:
                self.client.put(key, codec.encode(rules_to_record(rules)))

    def domain_exists(self, name: str) -> bool:
        with self._guard():
            value, _ = self.client.get(keys.domain(name))
        return value is not None

    def domains(self) -> list[str]:
        return [kv.key[len(keys.DOMAINS):] for kv in self.range(keys.DOMAINS)]

    def put_account(self, account: Account) -> None:
        """Create an account or replace its HA1s, keeping the aliases it has (its record
        lists them): add_account without new aliases, so NameTaken if its user is another
        account's alias."""
        self.add_account(account)

    def get_account(self, aor: str) -> Account | None:
        with self._guard():
            value, _ = self.client.get(keys.account(aor))
        return None if value is None else Account.from_dict(codec.decode(value))

    # --- the directory: accounts, aliases, domain rules (issue 7) ---------------------------
    #
    # An account's value lists its aliases; each alias is a key of its own naming the
    # account. Both are written in one transaction that compares every key it read, so
    # that an alias never has two owners and never outlives or escapes its account.

    def domain_rules(self, name: str) -> DomainRules | None:
        with self._guard():
            value, _ = self.client.get(keys.domain(name))
        return None if value is None else rules_from_record(codec.decode(value))

    def set_domain_rules(self, rules: DomainRules) -> bool:
        """Replace the rules of a provisioned domain; False (nothing written) if there is none."""
        tx = self.client.transactions
        key = keys.domain(rules.name)
        with self._guard():
            ok, _ = self.client.transaction(
                compare=[tx.version(key) > 0], success=[tx.put(key, codec.encode(rules_to_record(rules)))], failure=[]
            )
        return bool(ok)

    def resolve_alias(self, domain: str, alias: str) -> str | None:
        """The AOR of the account `alias` reaches in `domain`, or None."""
        with self._guard():
            value, _ = self.client.get(keys.alias(domain, alias))
        return None if value is None else bytes(value).decode()

    def add_account(self, account: Account, aliases: Sequence[str] = ()) -> None:
        """Create or update an account (its HA1s) and add aliases to it, all or nothing:
        NameTaken if any alias (or its user) belongs to another account."""
        refused = self.write_accounts([AccountEntry(account.aor, account.to_dict(), tuple(dict.fromkeys(aliases)))])
        if refused:
            raise refused[0]

    def add_aliases(self, aor: str, aliases: Sequence[str]) -> None:
        """Add aliases to an existing account, all or nothing (UnknownAccount, NameTaken)."""
        refused = self.write_accounts([AccountEntry(aor, None, tuple(dict.fromkeys(aliases)))])
        if refused:
            raise refused[0]

    def write_accounts(self, entries: Sequence[AccountEntry]) -> list[DirectoryError]:
        """Write accounts with their aliases in as few transactions as fit MAX_TXN_OPS
        (bulk import). Each entry is written whole or not at all; the refusals are
        returned, the others written."""
        refused: list[DirectoryError] = []
        batch: list[AccountEntry] = []
        touched: set[str] = set()
        for entry in entries:
            entry_keys = _entry_keys(entry)
            # etcd refuses a transaction writing one key twice: an entry touching what the
            # batch writes goes into the next one (and is checked against it).
            if batch and (len(touched) + len(entry_keys) > MAX_TXN_OPS or touched.intersection(entry_keys)):
                refused += self._write_batch(batch)
                batch, touched = [], set()
            batch.append(entry)
            touched.update(entry_keys)
        if batch:
            refused += self._write_batch(batch)
        return refused

    def _write_batch(self, batch: Sequence[AccountEntry]) -> list[DirectoryError]:
        tx = self.client.transactions
        for _ in range(DIRECTORY_ATTEMPTS):
            reads = [key for entry in batch for key in _entry_keys(entry)]
            _, responses = self._read([_key_read(key) for key in reads])
            stored = {key: (answer.kvs[0].value, int(answer.kvs[0].mod_revision)) if answer.kvs else None
                      for key, answer in zip(reads, responses, strict=True)}
            refused: list[DirectoryError] = []
            compare: list[Any] = []
            success: list[Any] = []
            for entry in batch:
                try:
                    record = merged_record(entry, _found(entry, stored))
                except DirectoryError as exc:
                    refused.append(exc)
                    continue
                for key in _entry_keys(entry):
                    held = stored[key]
                    compare.append(tx.version(key) == 0 if held is None else tx.mod(key) == held[1])
                success.append(tx.put(keys.account(entry.aor), codec.encode(record)))
                success += [tx.put(keys.alias(entry.domain, name), entry.aor) for name in entry.aliases]
            if not success:
                return refused
            with self._guard():
                ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
            if ok:
                return refused
        raise StoreUnavailable(f"etcd at {self.endpoint}: directory write contended {DIRECTORY_ATTEMPTS} times")

    def remove_alias(self, domain: str, alias: str) -> str | None:
        """Remove an alias from its account (one transaction); the AOR it reached, or None."""
        tx = self.client.transactions
        alias_key = keys.alias(domain, alias)
        for _ in range(DIRECTORY_ATTEMPTS):
            with self._guard():
                value, alias_meta = self.client.get(alias_key)
                if value is None:
                    return None
                owner = bytes(value).decode()
                account_key = keys.account(owner)
                record, account_meta = self.client.get(account_key)
                compare = [tx.mod(alias_key) == alias_meta.mod_revision]
                success = [tx.delete(alias_key)]
                if record is not None:
                    data = codec.decode(record)
                    data["aliases"] = [name for name in data.get("aliases", []) if name != alias]
                    compare.append(tx.mod(account_key) == account_meta.mod_revision)
                    success.append(tx.put(account_key, codec.encode(data)))
                ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
            if ok:
                return owner
        raise StoreUnavailable(f"etcd at {self.endpoint}: alias removal contended {DIRECTORY_ATTEMPTS} times")

    def remove_account(self, aor: str, now: float | None = None) -> bool:
        """Remove an account with its aliases, legs, registrations, authorization and profile
        records and the subscriptions it is watcher of (records and both index entries), and
        end the subscriptions to it: each is rewritten due now with reason `noresource`
        (subscription.ended), so that the notifier responsible for it sends the final NOTIFY (`Subscription-State:
        terminated;reason=noresource`, RFC 6665 §4.2.2) and removes it (issue 7 §1).

        One transaction, guarded by the account, both index prefixes as read and each
        subscription ended as read; an account in more subscriptions than one transaction
        holds has them deleted and ended first, a batch at a time (MAX_TXN_OPS). `now` is
        the time the ended subscriptions are due at (default: the clock). False if there
        is no account."""
        tx = self.client.transactions
        for _ in range(DIRECTORY_ATTEMPTS):
            due = time.time() if now is None else now
            revision, (account, mine, theirs) = self._read(
                [_key_read(keys.account(aor)), _prefix_read(keys.subs_of_watcher(aor)),
                 _prefix_read(keys.subs_of_presentity(aor), keys_only=True)]
            )
            if not account.kvs:
                return False
            watched = self._watched_keys(mine.kvs)
            to_end, dangling = self._subscriptions_to(theirs.kvs, set(watched))
            own = keys.subs_of_watcher(aor)
            deletes = [key for key in watched + dangling if not key.startswith(own)]  # own: a prefix delete
            record = codec.decode(account.kvs[0].value)
            aliases = [str(name) for name in record.get("aliases", [])]
            # + 7: the account, four prefixes, its authorization and its profile record
            if max(len(deletes) + len(to_end) + len(aliases) + 7, len(to_end) + 3) > MAX_TXN_OPS:
                self._delete_in_batches(watched + dangling)
                self._end_in_batches(to_end, due)
                if len(aliases) + 7 > MAX_TXN_OPS:
                    self._shed_aliases(aor, record, int(account.kvs[0].mod_revision))
                continue
            domain = aor.rpartition("@")[2]
            compare = [
                tx.mod(keys.account(aor)) == int(account.kvs[0].mod_revision),
                _range(tx.mod, keys.subs_of_watcher(aor)) < revision + 1,
                _range(tx.mod, keys.subs_of_presentity(aor)) < revision + 1,
                *(tx.mod(keys.sub(sub.sub_id)) == mod for sub, mod in to_end),
            ]
            success = [tx.delete(keys.account(aor))]
            success += [tx.delete(keys.alias(domain, name)) for name in aliases]
            # Its publications (RFC 3903) go with it: no sweep would remove them before they expire.
            success += [_prefix_delete(tx, prefix)
                        for prefix in (keys.legs_of(aor), keys.regs_of(aor), keys.pubs_of(aor), own)]
            # Its presence authorization and rendering profile go with it (records.AUTHZ, PROFILES).
            success += [tx.delete(keys.authz(aor)), tx.delete(keys.profile(aor))]
            success += [tx.delete(key) for key in deletes]
            success += [tx.put(keys.sub(sub.sub_id), codec.encode_subscription(_ended(sub, due))) for sub, _ in to_end]
            with self._guard():
                ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
            if ok:
                return True
        raise StoreUnavailable(f"etcd at {self.endpoint}: account removal contended {DIRECTORY_ATTEMPTS} times")

    def _watched_keys(self, mine: Sequence[Any]) -> list[str]:
        """Every key of the subscriptions an account watches with: its index entry, the
        record, and the presentity's index entry."""
        found: dict[str, None] = {}
        for kv in mine:
            entry = _watcher_entry(kv.key.decode(), kv.value)
            found[kv.key.decode()] = None
            found[keys.sub(entry.sub_id)] = None
            if entry.presentity:
                found[keys.presentity_sub(entry.presentity, entry.sub_id)] = None
        return list(found)

    def _subscriptions_to(
        self, theirs: Sequence[Any], deleted: set[str]
    ) -> tuple[list[tuple[Subscription, int]], list[str]]:
        """The subscriptions to an account still to be ended (record and mod revision; not
        those it watches itself, deleted, nor those already ended with noresource: their
        notifier is at it), and index entries whose record is gone (to delete)."""
        sub_ids = [kv.key.decode().rpartition("/")[2] for kv in theirs]
        to_end: list[tuple[Subscription, int]] = []
        dangling: list[str] = []
        for start in range(0, len(sub_ids), MAX_TXN_OPS):
            batch = sub_ids[start : start + MAX_TXN_OPS]
            _, responses = self._read([_key_read(keys.sub(sub_id)) for sub_id in batch])
            for kv, sub_id, answer in zip(theirs[start : start + MAX_TXN_OPS], batch, responses, strict=True):
                if keys.sub(sub_id) in deleted:
                    continue
                if not answer.kvs:
                    dangling.append(kv.key.decode())
                    continue
                subscription = codec.decode_subscription(answer.kvs[0].value)
                if subscription.termination_reason != REASON_NORESOURCE:
                    to_end.append((subscription, int(answer.kvs[0].mod_revision)))
        return to_end, dangling

    def _shed_aliases(self, aor: str, record: dict[str, Any], mod_revision: int) -> None:
        """Remove an account's aliases until the rest fit its removal's transaction, a batch
        at a time, each with the record that lists them (guarded by the record as read;
        one that changed meanwhile is read again by the caller)."""
        tx = self.client.transactions
        aliases = [str(name) for name in record.get("aliases", [])]
        domain = aor.rpartition("@")[2]
        while len(aliases) + 7 > MAX_TXN_OPS:  # what remove_account writes besides them
            shed, aliases = aliases[: MAX_TXN_OPS - 1], aliases[MAX_TXN_OPS - 1 :]
            with self._guard():
                ok, responses = self.client.transaction(
                    compare=[tx.mod(keys.account(aor)) == mod_revision],
                    success=[tx.put(keys.account(aor), codec.encode(record | {"aliases": aliases})),
                             *(tx.delete(keys.alias(domain, name)) for name in shed)],
                    failure=[],
                )
            if not ok:
                return
            mod_revision = int(responses[0].response_put.header.revision)

    def _end_in_batches(self, to_end: Sequence[tuple[Subscription, int]], now: float) -> None:
        """End subscriptions, MAX_TXN_OPS a transaction, each only if unchanged since read
        (a batch that lost to a refresh is read and ended again by the caller's next try)."""
        tx = self.client.transactions
        with self._guard():
            for start in range(0, len(to_end), MAX_TXN_OPS):
                batch = to_end[start : start + MAX_TXN_OPS]
                self.client.transaction(
                    compare=[tx.mod(keys.sub(sub.sub_id)) == mod for sub, mod in batch],
                    success=[tx.put(keys.sub(sub.sub_id), codec.encode_subscription(_ended(sub, now)))
                             for sub, _ in batch],
                    failure=[],
                )

    def _delete_in_batches(self, key_list: Sequence[str]) -> None:
        tx = self.client.transactions
        with self._guard():
            for start in range(0, len(key_list), MAX_TXN_OPS):
                batch = key_list[start : start + MAX_TXN_OPS]
                self.client.transaction(compare=[], success=[tx.delete(key) for key in batch], failure=[])

    # --- leases and instances -------------------------------------------------------------

    def grant_lease(self, ttl: int) -> int:
        with self._guard():
            return int(self.client.lease(ttl).id)

    def refresh_lease(self, lease_id: int) -> bool:
        """Keep a lease alive; False when etcd no longer knows it (it expired)."""
        with self._guard():
            responses = list(self.client.refresh_lease(lease_id))
        return bool(responses) and int(responses[0].TTL) > 0

    def revoke_lease(self, lease_id: int) -> None:
        try:
            with self._guard():
                self.client.revoke_lease(lease_id)
        except grpc.RpcError as exc:
            # Gone already: expired, or revoked by an attempt whose answer was lost before
            # the revocation was tried on another member (etcd_failover).
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise

    def announce_instance(self, name: str, info: dict[str, Any], lease_id: int) -> None:
        with self._guard():
            self.client.put(keys.instance(name), codec.encode(info), lease=lease_id)

    def instances(self) -> dict[str, dict[str, Any]]:
        return {kv.key[len(keys.INSTANCES):]: codec.decode(kv.value) for kv in self.range(keys.INSTANCES)}

    # --- call legs --------------------------------------------------------------------------

    def write_legs(self, legs: Sequence[Leg], lease_id: int, create: bool) -> WriteOutcome:
        """Write the legs of one call in one transaction: one write request.

        `create` writes them only if none exists; otherwise each is written only if the
        stored value sorts lower (a later state, or a later write of the same state:
        codec, legs.order_of), and never created. Legs go under `lease_id`: the instance
        lease while the call lives, a short-lived shared lease once it ended, so that
        the terminated legs leave the store without another request.
        """
        return self.write_calls([(legs, lease_id, create)])[0]

    def write_calls(self, writes: Sequence[tuple[Sequence[Leg], int, bool]]) -> list[WriteOutcome]:
        """write_legs for several calls in one request: each call is a transaction of its
        own, with its own guards, nested in one unconditional transaction (etcd >= 3.3),
        so a flush of many calls is one round trip and one raft entry. At most
        CALLS_PER_REQUEST calls per request; the outcomes in the order of `writes`."""
        outcomes: list[WriteOutcome] = []
        for start in range(0, len(writes), CALLS_PER_REQUEST):
            outcomes += self._write_calls(writes[start : start + CALLS_PER_REQUEST])
        return outcomes

    def _write_calls(self, writes: Sequence[tuple[Sequence[Leg], int, bool]]) -> list[WriteOutcome]:
        tx = self.client.transactions
        nested = []
        for legs, lease_id, create in writes:
            key_of = [keys.leg(leg.account, leg.instance, leg.leg_id) for leg in legs]
            values = [codec.encode_leg(leg) for leg in legs]
            if create:
                compare = [tx.version(key) == 0 for key in key_of]
                failure: list[Any] = []
            else:
                compare = [tx.value(key) < value for key, value in zip(key_of, values, strict=True)]
                failure = [tx.get(key) for key in key_of]
            success = [tx.put(key, value, lease=lease_id) for key, value in zip(key_of, values, strict=True)]
            nested.append(etcd3.transactions.Txn(compare, success, failure))
        try:
            with self._guard():
                _, responses = self.client.transaction(compare=[], success=nested, failure=[])
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and "lease not found" in str(exc.details()):
                raise LeaseGone(str(exc.details())) from exc
            raise
        outcomes = []
        for (_, _, create), response in zip(writes, responses, strict=True):
            inner = response.response_txn
            if inner.succeeded:
                outcomes.append(WriteOutcome.WRITTEN)
            elif create:
                outcomes.append(WriteOutcome.EXISTS)
            else:
                # The failure branch read the keys: a missing one was never created or has
                # gone with its lease; otherwise the store holds a later state already.
                missing = any(not read.response_range.kvs for read in inner.responses)
                outcomes.append(WriteOutcome.MISSING if missing else WriteOutcome.STALE)
        return outcomes

    def legs_on(self, lease_id: int) -> dict[str, str]:
        """The legs attached to a lease, leg id -> key: an instance's own legs, without
        reading any other's (etcd's LeaseTimeToLive with keys; no values are read)."""
        with self._guard():
            response = self.client.get_lease_info(lease_id)
        found = {}
        for raw in response.keys:
            key = raw.decode()
            parsed = keys.parse(key)
            if parsed is not None and parsed.kind == "legs":
                found[key.rpartition("/")[2]] = key
        return found

    def delete_legs(self, leg_keys: Sequence[str]) -> None:
        self._delete_in_batches(leg_keys)

    def legs_of(self, aor: str) -> list[Leg]:
        return [codec.decode_leg(kv.value) for kv in self.range(keys.legs_of(aor))]

    # --- registrations ----------------------------------------------------------------------

    def bindings_of(self, aor: str) -> list[Binding]:
        return self.read_bindings(aor).bindings

    def read_bindings(self, aor: str) -> StoredBindings:
        """The account's bindings, the lease of each key, and the revision of the read."""
        with self._guard():
            response = self.client.get_prefix_response(keys.regs_of(aor))
        bindings, leases = [], {}
        for kv in response.kvs:
            bindings.append(codec.decode_binding(kv.value))
            if kv.lease:
                leases[kv.key.decode().rpartition("/")[2]] = int(kv.lease)
        return StoredBindings(bindings, int(response.header.revision), leases)

    def apply_bindings(
        self,
        upserts: Sequence[tuple[str, Binding, int]],
        removals: Sequence[str],
        aor: str,
        read: StoredBindings | None = None,
    ) -> bool:
        """Write (binding_id, binding, seconds) under a lease of that many seconds (plus a
        grace); delete ids. With `read`, only if no binding key of the account changed
        since that read (one transaction: the Call-ID/CSeq check the registrar made on it
        and the write are one atomic step); False when one did, and nothing is written.

        Each binding key has a lease of its own. A refresh keeps its key's lease: a
        keep-alive resets it to its granted TTL, which is the new expiry when the phone
        refreshes with the same Expires (phones do). Only a binding that is new, or whose
        expiry changes, gets a lease granted; the lease a rewritten or deleted key had
        is then revoked (found by prev_kv, without a read).
        """
        guarded = read is not None
        current = read if read is not None else self.read_bindings(aor)
        tx = self.client.transactions
        with self._guard():
            leases = {
                binding_id: self._binding_lease(current.leases.get(binding_id), seconds + REGISTRATION_GRACE_SECONDS)
                for binding_id, _, seconds in upserts
            }
            fresh = {lease for lease, granted in leases.values() if granted}
            ops = [
                tx.put(
                    keys.reg(aor, binding_id), codec.encode_binding(binding), lease=leases[binding_id][0], prev_kv=True
                )
                for binding_id, binding, _ in upserts
            ]
            ops += [tx.delete(keys.reg(aor, binding_id), prev_kv=True) for binding_id in removals]
            compare = [_range(tx.mod, keys.regs_of(aor)) < current.revision + 1] if guarded else []
            replaced: set[int] = set()
            for start in range(0, len(ops), MAX_TXN_OPS):
                ok, responses = self.client.transaction(
                    compare=compare if start == 0 else [], success=ops[start : start + MAX_TXN_OPS], failure=[]
                )
                if not ok:
                    for lease_id in fresh:
                        self._revoke_if_granted(lease_id)
                    return False
                replaced |= _previous_leases(responses)
            for lease_id in replaced - {lease for lease, _ in leases.values()}:
                self._revoke_if_granted(lease_id)
        return True

    def _binding_lease(self, previous: int | None, ttl: int) -> tuple[int, bool]:
        """The lease for a binding key: its previous one, kept alive, when that one was
        granted `ttl`; else a new one. (lease id, whether it was granted now)."""
        if previous:
            responses = list(self.client.refresh_lease(previous))
            if responses and int(responses[0].TTL) == ttl:
                return previous, False
        return int(self.client.lease(ttl).id), True

    def _revoke_if_granted(self, lease_id: int) -> None:
        """Revoke a lease; one that has just expired (or another instance revoked) is fine."""
        try:
            self.client.revoke_lease(lease_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise

    # --- one account's subscriptions (blfctl show) --------------------------------------------

    def subscriptions_to(self, presentity: str) -> list[Subscription]:
        """The subscriptions to one presentity, found through its index entries
        (/blf/watched/<presentity>/) and read by id, in transactions of at most
        MAX_TXN_OPS reads: never the whole /blf/subs/ prefix."""
        tx = self.client.transactions
        with self._guard():
            index = self.client.get_prefix_response(keys.subs_of_presentity(presentity), keys_only=True)
            sub_ids = [kv.key.decode().rpartition("/")[2] for kv in index.kvs]
            found: list[Subscription] = []
            for start in range(0, len(sub_ids), MAX_TXN_OPS):
                reads = [tx.get(keys.sub(sub_id)) for sub_id in sub_ids[start : start + MAX_TXN_OPS]]
                _, responses = self.client.transaction(compare=[], success=reads, failure=[])
                # A subscription deleted since its index entry was read is simply not there.
                found += [codec.decode_subscription(value) for response in responses for value, _ in response]
        return found

    # --- subscriptions ----------------------------------------------------------------------
    #
    # A subscription is three keys written and deleted together in one transaction: the
    # record and its two index entries (keys.py), so that no index entry outlives its
    # subscription and the caps are counted from the index alone.

    def get_subscription(self, sub_id: str) -> tuple[Subscription, int] | None:
        with self._guard():
            value, meta = self.client.get(keys.sub(sub_id))
        if value is None:
            return None
        return codec.decode_subscription(value), int(meta.mod_revision)

    def census(self, watcher: str, presentity: str) -> Census:
        """The watcher's subscriptions and the presentity's count, from the index, at one
        revision (one read transaction, one round trip)."""
        revision, (mine, theirs) = self._read(_census_reads(watcher, presentity))
        return _census(mine, theirs, revision, presentity)

    def initial_subscribe_read(self, watcher: str, presentity: str, inputs: Collection[str]) -> SubscribeRead:
        """Everything an initial SUBSCRIBE reads, in one read transaction (one round trip,
        one revision): both accounts, the presentity's legs (and its bindings and
        publications when the package's bodies show them: `inputs`), the presentity's
        authorization record, the watcher's rendering profile and the User-Agent profile
        rules, and the census its create is guarded by.

        Serializable: etcd answers from what it has applied, without first confirming
        through raft that it is current (a linearizable read waits for that, behind the
        pending writes' fsync: most of the time of this read under a burst of creates).
        A read a few writes behind is safe here: the create compares the index against
        this read's revision and fails if anything changed since (caps hold), and the
        notifier compares the state shown (last_digest) with its own."""
        kinds = (("regs", keys.regs_of), ("pubs", keys.pubs_of))
        optional = [(kind, prefix) for kind, prefix in kinds if kind in inputs]
        reads = [
            _key_read(keys.account(watcher)),
            _key_read(keys.account(presentity)),
            _prefix_read(keys.legs_of(presentity), limit=SNAPSHOT_PAGE),
            *_census_reads(watcher, presentity),
            _key_read(keys.authz(presentity)),
            _key_read(keys.profile(watcher)),
            _key_read(keys.UA_PROFILES),
            *(_prefix_read(prefix(presentity), limit=SNAPSHOT_PAGE) for _, prefix in optional),
        ]
        revision, responses = self._read(reads, serializable=True)
        watcher_account, presentity_account, legs, mine, theirs, authz, profile, ua_profiles = responses[:8]
        found: dict[str, list[bytes]] = {}
        for (kind, prefix), answer in zip(optional, responses[8:], strict=True):
            kvs = answer.kvs if not answer.more else self.range(prefix(presentity))  # rare: page through
            found[kind] = [kv.value for kv in kvs]
        leg_values = [kv.value for kv in (legs.kvs if not legs.more else self.range(keys.legs_of(presentity)))]
        return SubscribeRead(
            watcher_account=_account(watcher_account),
            presentity_account=_account(presentity_account),
            legs=[codec.decode_leg(value) for value in leg_values],
            bindings=[codec.decode_binding(value) for value in found.get("regs", [])],
            census=_census(mine, theirs, revision, presentity),
            publications=[codec.decode_publication(value) for value in found.get("pubs", [])],
            authz=_object(authz),
            profile=_object(profile),
            ua_profiles=_object(ua_profiles),
        )

    def _read(self, reads: Sequence[Any], serializable: bool = False) -> tuple[int, list[Any]]:
        """Range requests in one transaction without compares: one round trip, every
        answer at the same store revision. etcd3 0.12 cannot put count_only or limit in
        a transaction's reads, so the request is built here (as for _range_page). etcd
        serves the transaction without a linearizable wait only if every read in it is
        `serializable`."""
        for read in reads:
            read.serializable = serializable
        request = etcd3.etcdrpc.TxnRequest(
            compare=[], success=[etcd3.etcdrpc.RequestOp(request_range=read) for read in reads], failure=[]
        )
        client = self.client
        with self._guard():
            response = client.kvstub.Txn(
                request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
            )
        return int(response.header.revision), [answer.response_range for answer in response.responses]

    def create_subscription(
        self,
        subscription: Subscription,
        replaced: Sequence[WatcherEntry] = (),
        counted: Census | None = None,
        guard_presentity: bool = False,
    ) -> int | None:
        """Store a new subscription with its index entries and remove the ones it replaces,
        in one transaction; its revision, or None if the id is taken or, when `counted` is
        given, an index entry of that watcher (and with `guard_presentity`, of that
        presentity) was added or changed since it was counted: the caller counts again,
        so that caps hold under concurrency."""
        tx = self.client.transactions
        key = keys.sub(subscription.sub_id)
        compare = [tx.version(key) == 0]
        if counted is not None:
            watcher_range = _range(tx.mod, keys.subs_of_watcher(subscription.watcher))
            compare.append(watcher_range < counted.watcher_revision + 1)
            if guard_presentity:
                presentity_range = _range(tx.mod, keys.subs_of_presentity(subscription.presentity))
                compare.append(presentity_range < counted.presentity_revision + 1)
        success = [tx.put(key, codec.encode_subscription(subscription)), *self._index_puts(subscription)]
        for entry in replaced:
            success += self._deletes(entry.sub_id, subscription.watcher, entry.presentity)
        with self._guard():
            ok, responses = self.client.transaction(compare=compare, success=success, failure=[])
        return int(responses[0].response_put.header.revision) if ok else None

    def update_subscription(self, subscription: Subscription, mod_revision: int, reindex: bool = False) -> int | None:
        """Compare-and-swap on the revision read: one writer per CSeq, across instances.

        `reindex` rewrites the watcher index entry too (its Contact or source changed).
        Returns the new revision, or None when someone else wrote first.
        """
        tx = self.client.transactions
        key = keys.sub(subscription.sub_id)
        success = [tx.put(key, codec.encode_subscription(subscription))]
        if reindex:
            success += self._index_puts(subscription)[:1]  # the presentity's entry never changes
        with self._guard():
            ok, responses = self.client.transaction(compare=[tx.mod(key) == mod_revision], success=success, failure=[])
        return int(responses[0].response_put.header.revision) if ok else None

    def delete_subscription(self, subscription: Subscription, mod_revision: int | None = None) -> bool:
        """Delete a subscription and its index entries; with `mod_revision`, only if unchanged."""
        tx = self.client.transactions
        key = keys.sub(subscription.sub_id)
        compare = [] if mod_revision is None else [tx.mod(key) == mod_revision]
        success = self._deletes(subscription.sub_id, subscription.watcher, subscription.presentity)
        with self._guard():
            ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
        return bool(ok)

    def _index_puts(self, subscription: Subscription) -> list[Any]:
        """The watcher's entry, then the presentity's (an empty value: it is only counted)."""
        tx = self.client.transactions
        entry = WatcherEntry.of(subscription)
        return [
            tx.put(keys.watcher_sub(subscription.watcher, subscription.sub_id), codec.encode(entry.to_dict())),
            tx.put(keys.presentity_sub(subscription.presentity, subscription.sub_id), b""),
        ]

    def _deletes(self, sub_id: str, watcher: str, presentity: str) -> list[Any]:
        tx = self.client.transactions
        return [
            tx.delete(keys.sub(sub_id)),
            tx.delete(keys.watcher_sub(watcher, sub_id)),
            tx.delete(keys.presentity_sub(presentity, sub_id)),
        ]

    def next_epoch(self) -> int:
        """A new ownership epoch, above every one handed out before: one compare-and-swap
        (retried when another notifier took one at the same moment)."""
        tx = self.client.transactions
        with self._guard():
            for _ in range(EPOCH_ATTEMPTS):
                value, meta = self.client.get(keys.EPOCH)
                current = int(value) if value else 0
                unchanged = tx.version(keys.EPOCH) == 0 if value is None else tx.mod(keys.EPOCH) == meta.mod_revision
                ok, _ = self.client.transaction(
                    compare=[unchanged], success=[tx.put(keys.EPOCH, str(current + 1))], failure=[]
                )
                if ok:
                    return current + 1
        raise Contended(f"etcd at {self.endpoint}: the epoch compare-and-swap lost {EPOCH_ATTEMPTS} times")

    def subscriptions(self) -> list[Subscription]:
        return [codec.decode_subscription(kv.value) for kv in self.range(keys.SUBS)]

    # --- presence authorization and rendering profiles ------------------------------------
    #
    # Records of blfctl (keys.authz, keys.profile, keys.UA_PROFILES), each rewritten by
    # compare-and-swap on the revision it was read at. An account's records are written only
    # while the account exists (the write compares it): its removal deletes them, and one
    # written after it would be an orphan.

    def authorization(self, presentity: str) -> Authorization:
        """The presentity's policy and decisions (the default, allow, when none is stored)."""
        with self._guard():
            value, _ = self.client.get(keys.authz(presentity))
        return Authorization.from_dict(None if value is None else codec.decode(value))

    def update_authorization(
        self, presentity: str, change: Callable[[Authorization], Authorization]
    ) -> Authorization | None:
        """Write `change` of the stored record (read-modify-write, retried when another
        writer came first); the record written, or None when there is no such account."""
        key, account_key = keys.authz(presentity), keys.account(presentity)
        for _ in range(DIRECTORY_ATTEMPTS):
            _, (account, stored) = self._read([_key_read(account_key), _key_read(key)])
            if not account.kvs:
                return None
            written = change(Authorization.from_dict(_object(stored)))
            ok = self._put_if_unchanged(key, stored, codec.encode(written.to_dict()), account_key)
            if ok:
                return written
        raise Contended(f"etcd at {self.endpoint}: authorization of {presentity} contended {DIRECTORY_ATTEMPTS} times")

    def profile_of(self, aor: str) -> tuple[str, ...] | None:
        """The account's own rendering profile; None when not set."""
        with self._guard():
            value, _ = self.client.get(keys.profile(aor))
        return profiles.profile_from_record(None if value is None else codec.decode(value))

    def set_profile(self, aor: str, names: Sequence[str] | None) -> bool:
        """Set the account's rendering profile (None: clear it); False when there is no
        such account, and nothing is written."""
        tx = self.client.transactions
        key, account_key = keys.profile(aor), keys.account(aor)
        write = tx.delete(key) if names is None else tx.put(key, codec.encode(profiles.profile_record(names)))
        with self._guard():
            ok, _ = self.client.transaction(compare=[tx.version(account_key) > 0], success=[write], failure=[])
        return bool(ok)

    def ua_profile_rules(self) -> list[profiles.UaRule]:
        with self._guard():
            value, _ = self.client.get(keys.UA_PROFILES)
        return profiles.ua_rules_from_record(None if value is None else codec.decode(value))

    def update_ua_profile_rules(
        self, change: Callable[[list[profiles.UaRule]], list[profiles.UaRule]]
    ) -> list[profiles.UaRule]:
        """Write `change` of the stored User-Agent rules (read-modify-write, retried when
        another writer came first); the rules written."""
        for _ in range(DIRECTORY_ATTEMPTS):
            _, (stored,) = self._read([_key_read(keys.UA_PROFILES)])
            written = change(profiles.ua_rules_from_record(_object(stored)))
            if self._put_if_unchanged(keys.UA_PROFILES, stored, codec.encode(profiles.ua_rules_record(written))):
                return written
        raise Contended(f"etcd at {self.endpoint}: User-Agent profile rules contended {DIRECTORY_ATTEMPTS} times")

    def _put_if_unchanged(self, key: str, stored: Any, value: bytes, account_key: str | None = None) -> bool:
        """Put `value` if `key` is as read (`stored`, a range answer) and, with
        `account_key`, that account still exists."""
        tx = self.client.transactions
        compare = [tx.mod(key) == int(stored.kvs[0].mod_revision) if stored.kvs else tx.version(key) == 0]
        if account_key is not None:
            compare.append(tx.version(account_key) > 0)
        with self._guard():
            ok, _ = self.client.transaction(compare=compare, success=[tx.put(key, value)], failure=[])
        return bool(ok)

    # --- publications ---------------------------------------------------------------------
    #
    # A publication (RFC 3903) is one key, keys.pub(account, etag), without a lease: an
    # expired one is removed by the sweep of the notifier responsible for its account
    # (kemi/blf_notifier.py says why no lease); watchers stop seeing it at its expiry
    # whether or not it has been swept (the mirror re-renders then).

    def get_publication(self, aor: str, etag: str) -> tuple[Publication, int] | None:
        """The publication and its mod revision; None when there is none under that tag."""
        with self._guard():
            value, meta = self.client.get(keys.pub(aor, etag))
        if value is None:
            return None
        return codec.decode_publication(value), int(meta.mod_revision)

    def put_publication(self, publication: Publication, replaces: tuple[str, int] | None = None) -> bool:
        """Store a publication under its (new) entity-tag and, with `replaces` (etag, mod
        revision), delete the one it replaces, in one transaction: the new key must not
        exist and the old one must be as read. Of two refreshes of one publication at once
        (through two instances) one wins; the other gets False (its PUBLISH: 412)."""
        tx = self.client.transactions
        key = keys.pub(publication.account, publication.etag)
        compare = [tx.version(key) == 0]
        success = [tx.put(key, codec.encode_publication(publication))]
        if replaces is not None:
            old_key = keys.pub(publication.account, replaces[0])
            compare.append(tx.mod(old_key) == replaces[1])
            success.append(tx.delete(old_key))
        with self._guard():
            ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
        return bool(ok)

    def publications_of(self, aor: str) -> list[tuple[Publication, int]]:
        """An account's publications and their mod revisions (a few: publication.admit caps them)."""
        return [(codec.decode_publication(kv.value), kv.mod_revision) for kv in self.range(keys.pubs_of(aor))]

    def delete_publication(
        self, aor: str, etag: str, mod_revision: int | None = None, expected: Publication | None = None
    ) -> bool:
        """Delete a publication; with `mod_revision`, only if unchanged since read; with
        `expected` (the sweep, whose mirror keeps no revisions), only if its value is still
        that one. False when it is gone or changed (or, unguarded, was not there)."""
        tx = self.client.transactions
        key = keys.pub(aor, etag)
        compare = [tx.version(key) > 0]
        if mod_revision is not None:
            compare.append(tx.mod(key) == mod_revision)
        if expected is not None:
            compare.append(tx.value(key) == codec.encode_publication(expected))
        with self._guard():
            ok, _ = self.client.transaction(compare=compare, success=[tx.delete(key)], failure=[])
        return bool(ok)

    # --- reading and watching ---------------------------------------------------------------

    def range(self, prefix: str) -> list[KeyValue]:
        return self.snapshot(prefix)[1]

    def snapshot(
        self, prefix: str | Sequence[str] = keys.ROOT, page: int = SNAPSHOT_PAGE
    ) -> tuple[int, list[KeyValue]]:
        """All keys under the prefix (or prefixes) and the one store revision they were read
        at, read `page` keys per response: no response grows with the cluster (gRPC refuses
        answers over 4 MB). The pages after the first are read at the first one's revision;
        if it is compacted meanwhile, that is StoreUnavailable and the caller reads again."""
        prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
        revision = 0
        items: list[KeyValue] = []
        with self._guard():
            for name in prefixes:
                start, end = name.encode(), etcd3.utils.increment_last_byte(name.encode())
                while True:
                    response = self._range_page(start, end, page, revision)
                    revision = revision or int(response.header.revision)
                    items += [KeyValue(kv.key.decode(), kv.value, int(kv.mod_revision)) for kv in response.kvs]
                    if not response.more or not response.kvs:
                        break
                    start = response.kvs[-1].key + b"\0"  # the next key after the last one read
        return revision, items

    def _range_page(self, start: bytes, end: bytes, limit: int, revision: int) -> Any:
        # etcd3 0.12 has no paged range; the request is built here (as for _read).
        request = etcd3.etcdrpc.RangeRequest(key=start, range_end=end, limit=limit, revision=revision)
        client = self.client
        return client.kvstub.Range(request, self.timeout, credentials=client.call_credentials, metadata=client.metadata)

    def watch(self, start_revision: int, callback: WatchCallback, prefix: str = keys.ROOT) -> int:
        """Deliver every change under prefix from start_revision on, from a client thread."""

        def deliver(response: Any) -> None:
            if isinstance(response, Exception):
                callback(response)
                return
            callback([_watch_event(event) for event in response.events])

        with self._guard():
            return int(
                self.client.add_watch_prefix_callback(prefix, deliver, start_revision=start_revision)
            )

    def watch_prefixes(self, start_revision: int, callback: WatchCallback, prefixes: Sequence[str]) -> list[int]:
        """`watch` on each prefix (one stream: etcd3 multiplexes them): only what the
        caller reads travels, not every change of the cluster."""
        return [self.watch(start_revision, callback, prefix) for prefix in prefixes]

    def cancel_watch(self, watch_id: int) -> None:
        with self._guard():
            self.client.cancel_watch(watch_id)

    # --- maintenance (issue 8): statestore.maintenance decides, these only ask etcd ----------

    def member_endpoints(self) -> list[str]:
        """host:port of each member's first client URL."""
        with self._guard():
            members = list(self.client.members)
        return [str(member.client_urls[0]).split("://", 1)[-1] for member in members if member.client_urls]

    def member_status(self, endpoint: str | None = None) -> MemberStatus:
        """One member's database size, in-use size and revision (this store's own by default)."""
        endpoint = endpoint or self.member_in_use()
        with self._member(endpoint, self.timeout) as client, self._guard():
            response = client.maintenancestub.Status(
                etcd3.etcdrpc.StatusRequest(), self.timeout, credentials=client.call_credentials,
                metadata=client.metadata,
            )
        return MemberStatus(
            endpoint=endpoint, member_id=int(response.header.member_id), db_size=int(response.dbSize),
            db_size_in_use=status_field(response.SerializeToString(), 9), revision=int(response.header.revision),
        )

    def alarms(self) -> list[str]:
        """The alarms raised in the cluster, as "NOSPACE member 8e9e05c52164694d"."""
        return [f"{name} member {member:x}" for member, name in self._alarms()]

    def _alarms(self) -> list[tuple[int, str]]:
        request = etcd3.etcdrpc.AlarmRequest(action=etcd3.etcdrpc.AlarmRequest.GET, memberID=0, alarm=0)
        client = self.client
        with self._guard():
            response = client.maintenancestub.Alarm(
                request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
            )
        return [(int(alarm.memberID), etcd3.etcdrpc.AlarmType.Name(alarm.alarm)) for alarm in response.alarms]

    def disarm_alarms(self) -> list[str]:
        """Disarm every raised alarm (after the space is back); the ones disarmed."""
        disarmed = []
        client = self.client
        for member, name in self._alarms():
            request = etcd3.etcdrpc.AlarmRequest(
                action=etcd3.etcdrpc.AlarmRequest.DEACTIVATE, memberID=member,
                alarm=etcd3.etcdrpc.AlarmType.Value(name),
            )
            with self._guard():
                client.maintenancestub.Alarm(
                    request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
                )
            disarmed.append(f"{name} member {member:x}")
        return disarmed

    def compact_revision(self) -> int:
        """The revision etcd compacted its history to (0 if never): the oldest revision a
        read still gets, found by bisection with count-only reads of one key (etcd tells it
        only to a watch that starts below it)."""
        low, high = 0, self.revision()  # `high` is readable; `low` is not (or 0)
        if self._readable_at(1):
            return 0
        low = 1
        while high - low > 1:
            middle = (low + high) // 2
            if self._readable_at(middle):
                high = middle
            else:
                low = middle
        return high

    def revision(self) -> int:
        revision, _ = self._read([_key_read(keys.MAINTENANCE)])
        return revision

    def _readable_at(self, revision: int) -> bool:
        request = etcd3.etcdrpc.RangeRequest(key=keys.MAINTENANCE.encode(), revision=revision, count_only=True)
        client = self.client
        try:
            with self._guard():
                client.kvstub.Range(
                    request, self.timeout, credentials=client.call_credentials, metadata=client.metadata
                )
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, grpc.RpcError) and exc.__cause__.code() == grpc.StatusCode.OUT_OF_RANGE:
                return False
            raise
        return True

    def compact(self, revision: int) -> bool:
        """Compact the history to `revision` and wait until the backend has dropped it
        (physical); False if it already was compacted that far (by etcd itself)."""
        try:
            with self._guard():
                self.client.compact(revision, physical=True)
        except StoreUnavailable as exc:
            if "compacted" in str(exc).lower():
                return False
            raise
        return True

    def defragment(self, endpoint: str, timeout: float = DEFRAG_TIMEOUT) -> float:
        """Defragment one member's database file; the seconds it blocked that member."""
        with self._member(endpoint, timeout) as client, self._guard():
            started = time.monotonic()
            client.maintenancestub.Defragment(
                etcd3.etcdrpc.DefragmentRequest(), timeout, credentials=client.call_credentials,
                metadata=client.metadata,
            )
        return time.monotonic() - started

    @contextmanager
    def _member(self, endpoint: str, timeout: float) -> Iterator[Any]:
        """A client of one member: maintenance RPCs act on the member that receives them."""
        host, port = split_endpoint(endpoint)
        client = etcd3.client(host=host, port=port, timeout=timeout, grpc_options=GRPC_OPTIONS)
        try:
            yield client
        finally:
            client.close()

    def key_counts(self) -> tuple[int, dict[str, int]]:
        """How many keys there are under keys.ROOT, and per kind (count-only: no value read)."""
        prefixes = [keys.ROOT, *(f"{keys.ROOT}{kind}/" for kind in KINDS)]
        _, responses = self._read([_prefix_read(prefix, count_only=True) for prefix in prefixes])
        counts = [int(response.count) for response in responses]
        return counts[0], dict(zip(KINDS, counts[1:], strict=True))

    def lease_count(self) -> int:
        client = self.client
        with self._guard():
            response = client.leasestub.LeaseLeases(
                etcd3.etcdrpc.LeaseLeasesRequest(), self.timeout, credentials=client.call_credentials,
                metadata=client.metadata,
            )
        return len(response.leases)

    def quota(self) -> int | None:
        """The member's --quota-backend-bytes, from its /metrics (etcd serves them on the
        client URL too); None if it cannot be read (TLS, a proxy in between)."""
        try:
            with urllib.request.urlopen(f"http://{self.member_in_use()}/metrics", timeout=self.timeout) as answer:  # noqa: S310
                text = answer.read().decode(errors="replace")
        except OSError:
            return None
        value = metric_sample(text, "etcd_server_quota_backend_bytes")
        return None if value is None else int(value)

    def maintenance_record(self) -> MaintenanceRecord:
        with self._guard():
            value, _ = self.client.get(keys.MAINTENANCE)
        return MaintenanceRecord.decode(None if value is None else bytes(value))

    def record_maintenance(self, record: MaintenanceRecord) -> None:
        with self._guard():
            self.client.put(keys.MAINTENANCE, record.encode())


def _key_read(key: str) -> Any:
    return etcd3.etcdrpc.RangeRequest(key=key.encode())


def _prefix_read(prefix: str, limit: int = 0, count_only: bool = False, keys_only: bool = False) -> Any:
    key = prefix.encode()
    return etcd3.etcdrpc.RangeRequest(
        key=key, range_end=etcd3.utils.increment_last_byte(key), limit=limit, count_only=count_only,
        keys_only=keys_only,
    )


def _prefix_delete(tx: Any, prefix: str) -> Any:
    return tx.delete(prefix, range_end=etcd3.utils.increment_last_byte(prefix.encode()))


def _entry_keys(entry: AccountEntry) -> list[str]:
    """Every key an account write reads and compares: the account, its user as an alias,
    and per alias the alias key and the account of that name."""
    found = [keys.account(entry.aor), keys.alias(entry.domain, entry.user)]
    for name in entry.aliases:
        found += [keys.alias(entry.domain, name), keys.account(f"{name}@{entry.domain}")]
    return found


def _found(entry: AccountEntry, stored: dict[str, tuple[bytes, int] | None]) -> Found:
    def owner(key: str) -> str | None:
        held = stored[key]
        return None if held is None else bytes(held[0]).decode()

    record = stored[keys.account(entry.aor)]
    return Found(
        record=None if record is None else codec.decode(record[0]),
        user_alias_owner=owner(keys.alias(entry.domain, entry.user)),
        alias_owners={name: str(owner(keys.alias(entry.domain, name)))
                      for name in entry.aliases if stored[keys.alias(entry.domain, name)] is not None},
        accounts_named=frozenset(
            name for name in entry.aliases if stored[keys.account(f"{name}@{entry.domain}")] is not None
        ),
    )


def _census_reads(watcher: str, presentity: str) -> list[Any]:
    """The watcher's index entries, and how many index entries the presentity has."""
    return [
        _prefix_read(keys.subs_of_watcher(watcher)),
        _prefix_read(keys.subs_of_presentity(presentity), count_only=True),
    ]


def _census(mine: Any, theirs: Any, revision: int, presentity: str) -> Census:
    # A watcher has up to 300 entries: decoding them all was a tenth of an initial
    # SUBSCRIBE's CPU. Only the entries of this presentity are (admit tells a device
    # subscribing again by them); they hold it as codec.encode escapes it.
    mention = json.dumps(presentity).encode()
    entries = [
        _watcher_entry(kv.key.decode(), kv.value) if mention in kv.value else _counted_only(kv.key.decode())
        for kv in mine.kvs
    ]
    return Census(entries, revision, int(theirs.count), revision)


def _counted_only(key: str) -> WatcherEntry:
    """An index entry of another presentity: it counts for the watcher's cap, nothing else."""
    return WatcherEntry(key.rpartition("/")[2], "", "", "")


def _object(answer: Any) -> dict[str, Any] | None:
    """The JSON object a single-key read found; None when absent or unreadable."""
    if not answer.kvs:
        return None
    try:
        return codec.decode(answer.kvs[0].value)
    except ValueError:
        return None


def _account(answer: Any) -> Account | None:
    return Account.from_dict(codec.decode(answer.kvs[0].value)) if answer.kvs else None


def _range(target: Any, prefix: str) -> Any:
    """A transaction compare over every key under `prefix` (it holds for an empty range)."""
    return target(prefix, etcd3.utils.increment_last_byte(prefix.encode()))


def _watcher_entry(key: str, value: bytes) -> WatcherEntry:
    sub_id = key.rpartition("/")[2]
    try:
        return WatcherEntry.from_dict(sub_id, codec.decode(value))
    except ValueError:
        return WatcherEntry(sub_id, "", "", "")  # unreadable: it still counts for the watcher


def _previous_leases(responses: Sequence[Any]) -> set[int]:
    """Lease ids the keys had before the puts and deletes of a transaction (prev_kv)."""
    leases: set[int] = set()
    for response in responses:
        if response.HasField("response_put"):
            previous = [response.response_put.prev_kv] if response.response_put.HasField("prev_kv") else []
        else:
            previous = list(response.response_delete_range.prev_kvs)
        leases |= {int(kv.lease) for kv in previous if kv.lease}
    return leases


def _ended(subscription: Subscription, now: float) -> Subscription:
    """A subscription to a removed account: due now, its final NOTIFY says noresource."""
    return ended(subscription, now, REASON_NORESOURCE)


def _watch_event(event: Any) -> WatchEvent:
    deleted = isinstance(event, etcd3.events.DeleteEvent)
    return WatchEvent(
        key=event.key.decode(),
        value=None if deleted else bytes(event.value),
        revision=int(event.mod_revision),
    )
