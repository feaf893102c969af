"""Subscriptions on etcd, and the NOTIFY numbering epoch.

A subscription is three keys written and deleted together in one transaction: the
record and its two index entries (keys.py), so that no index entry outlives its
subscription and the caps are counted from the index alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from statestore import codec, keys
from statestore.domain.errors import Contended
from statestore.domain.model import Account, Subscription, WatcherEntry
from statestore.etcd.kv import MAX_TXN_OPS, SNAPSHOT_PAGE, EtcdKv, _key_read, _object, _prefix_read, _range
from statestore.store import Census, SubscribeRead
from statestore.stored import census_entries

# Compare-and-swap attempts for a new epoch (each failure is another notifier's success).
EPOCH_ATTEMPTS = 20


class EtcdSubscriptions(EtcdKv):
    """Subscriptions, their index, the census and the epoch."""

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


def _census_reads(watcher: str, presentity: str) -> list[Any]:
    """The watcher's index entries, and how many index entries the presentity has."""
    return [
        _prefix_read(keys.subs_of_watcher(watcher)),
        _prefix_read(keys.subs_of_presentity(presentity), count_only=True),
    ]


def _census(mine: Any, theirs: Any, revision: int, presentity: str) -> Census:
    entries = census_entries([(kv.key.decode(), kv.value) for kv in mine.kvs], presentity)
    return Census(entries, revision, int(theirs.count), revision)



def _account(answer: Any) -> Account | None:
    return Account.from_dict(codec.decode(answer.kvs[0].value)) if answer.kvs else None
