"""Removing an account on etcd: statestore.domain.removal decides what goes with it,
this module reads what it needs and carries that out in as few transactions as fit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from statestore import codec, keys, records
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Subscription
from statestore.domain.removal import RemovalPlan, WatchedBy, plan_removal
from statestore.etcd.directory import DIRECTORY_ATTEMPTS
from statestore.etcd.kv import MAX_TXN_OPS, EtcdKv, _key_read, _prefix_delete, _prefix_read, _range
from statestore.stored import watcher_entry


class EtcdAccountRemoval(EtcdKv):
    """The account removal cascade."""

    def remove_account(self, aor: str, now: float | None = None) -> bool:
        """Remove an account with what statestore.domain.removal says goes with it (the
        record kinds' declarations): its aliases, legs, registrations, publications,
        authorization and profile records and the subscriptions it is watcher of (records
        and both index entries); the subscriptions to it are rewritten ended (noresource).

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
            record = codec.decode(account.kvs[0].value)
            watching = [watcher_entry(kv.key.decode(), kv.value) for kv in mine.kvs]
            plan = plan_removal(
                [str(name) for name in record.get("aliases", [])], watching, self._watched_by(aor, theirs.kvs),
                records.ACCOUNT_REMOVAL, due,
            )
            own = keys.subs_of_watcher(aor)
            watched = _watched_keys(aor, plan)
            dangling = [keys.presentity_sub(aor, sub_id) for sub_id in plan.dangling]
            deletes = [key for key in watched + dangling if not key.startswith(own)]  # own: a prefix delete
            kind_deletes = _kind_deletes(tx, aor, plan.deleted_kinds)
            # the account, its own index prefix and what its kinds delete
            fixed = 2 + len(kind_deletes)
            if max(len(deletes) + len(plan.ended) + len(plan.aliases) + fixed, len(plan.ended) + 3) > MAX_TXN_OPS:
                self._delete_in_batches(watched + dangling)
                self._end_in_batches(plan.ended)
                if len(plan.aliases) + fixed > MAX_TXN_OPS:
                    self._shed_aliases(aor, record, int(account.kvs[0].mod_revision), fixed)
                continue
            domain = aor.rpartition("@")[2]
            compare = [
                tx.mod(keys.account(aor)) == int(account.kvs[0].mod_revision),
                _range(tx.mod, keys.subs_of_watcher(aor)) < revision + 1,
                _range(tx.mod, keys.subs_of_presentity(aor)) < revision + 1,
                *(tx.mod(keys.sub(sub.sub_id)) == mod for sub, mod in plan.ended),
            ]
            success = [tx.delete(keys.account(aor))]
            success += [tx.delete(keys.alias(domain, name)) for name in plan.aliases]
            success += [*kind_deletes, _prefix_delete(tx, own)]
            success += [tx.delete(key) for key in deletes]
            success += [tx.put(keys.sub(sub.sub_id), codec.encode_subscription(sub)) for sub, _ in plan.ended]
            with self._guard():
                ok, _ = self.client.transaction(compare=compare, success=success, failure=[])
            if ok:
                return True
        raise StoreUnavailable(f"etcd at {self.endpoint}: account removal contended {DIRECTORY_ATTEMPTS} times")

    def _watched_by(self, aor: str, theirs: Sequence[Any]) -> list[WatchedBy]:
        """The subscriptions to an account, by its presentity index entries: each record
        and its mod revision (None when gone), read MAX_TXN_OPS a transaction."""
        sub_ids = [kv.key.decode().rpartition("/")[2] for kv in theirs]
        found: list[WatchedBy] = []
        for start in range(0, len(sub_ids), MAX_TXN_OPS):
            batch = sub_ids[start : start + MAX_TXN_OPS]
            _, responses = self._read([_key_read(keys.sub(sub_id)) for sub_id in batch])
            found += [
                (sub_id, (codec.decode_subscription(answer.kvs[0].value), int(answer.kvs[0].mod_revision))
                 if answer.kvs else None)
                for sub_id, answer in zip(batch, responses, strict=True)
            ]
        return found

    def _shed_aliases(self, aor: str, record: dict[str, Any], mod_revision: int, fixed: int) -> None:
        """Remove an account's aliases until the rest fit its removal's transaction, a batch
        at a time, each with the record that lists them (guarded by the record as read;
        one that changed meanwhile is read again by the caller)."""
        tx = self.client.transactions
        aliases = [str(name) for name in record.get("aliases", [])]
        domain = aor.rpartition("@")[2]
        while len(aliases) + fixed > MAX_TXN_OPS:  # what remove_account writes besides them
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

    def _end_in_batches(self, ended: Sequence[tuple[Subscription, int]]) -> None:
        """Write ended subscriptions, MAX_TXN_OPS a transaction, each only if unchanged since
        read (a batch that lost to a refresh is read and ended again by the caller's next try)."""
        tx = self.client.transactions
        with self._guard():
            for start in range(0, len(ended), MAX_TXN_OPS):
                batch = ended[start : start + MAX_TXN_OPS]
                self.client.transaction(
                    compare=[tx.mod(keys.sub(sub.sub_id)) == mod for sub, mod in batch],
                    success=[tx.put(keys.sub(sub.sub_id), codec.encode_subscription(sub)) for sub, _ in batch],
                    failure=[],
                )


def _watched_keys(aor: str, plan: RemovalPlan) -> list[str]:
    """Every key of the subscriptions an account watches with: its index entry, the
    record, and the presentity's index entry."""
    found: dict[str, None] = {}
    for entry in plan.watching:
        found[keys.watcher_sub(aor, entry.sub_id)] = None
        found[keys.sub(entry.sub_id)] = None
        if entry.presentity:
            found[keys.presentity_sub(entry.presentity, entry.sub_id)] = None
    return list(found)


def _kind_deletes(tx: Any, aor: str, kinds: Sequence[str]) -> list[Any]:
    """The deletes of an account's records of these kinds: a prefix per kind keyed by
    account and record, the one key of a kind keyed by account alone (records.py)."""
    deletes = []
    for name in kinds:
        kind = records.KINDS[name]
        if kind.per_account:
            deletes.append(_prefix_delete(tx, f"{kind.prefix}{aor}/"))
        else:
            deletes.append(tx.delete(f"{kind.prefix}{aor}"))
    return deletes
