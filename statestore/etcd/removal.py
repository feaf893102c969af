"""Removing an account on etcd: statestore.domain.removal decides what goes with it,
this module reads what it needs and carries that out in as few transactions as fit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from statestore import codec, keys
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Subscription
from statestore.domain.subscription import REASON_NORESOURCE, ended
from statestore.etcd.directory import DIRECTORY_ATTEMPTS
from statestore.etcd.kv import MAX_TXN_OPS, EtcdKv, _key_read, _prefix_delete, _prefix_read, _range
from statestore.etcd.subscriptions import _watcher_entry


class EtcdAccountRemoval(EtcdKv):
    """The account removal cascade."""

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


def _ended(subscription: Subscription, now: float) -> Subscription:
    """A subscription to a removed account: due now, its final NOTIFY says noresource."""
    return ended(subscription, now, REASON_NORESOURCE)
