"""How records sit in a store as keys and values, shared by the adapters that hold them
so (statestore.etcd, statestore.memory): which keys an account write reads and compares,
what such a read found, a watcher index entry as stored, a registration's lease.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence

from statestore import codec, keys
from statestore.domain.directory import AccountEntry, DirectoryError, Found
from statestore.domain.model import Account, WatcherEntry

# A binding key's lease is its expiry plus this much (orphans.py counts on it).
REGISTRATION_GRACE_SECONDS = 2


def entry_keys(entry: AccountEntry) -> list[str]:
    """Every key an account write reads and compares: the account, its user as an alias,
    and per alias the alias key and the account of that name."""
    touched = [keys.account(entry.aor), keys.alias(entry.domain, entry.user)]
    for name in entry.aliases:
        touched += [keys.alias(entry.domain, name), keys.account(f"{name}@{entry.domain}")]
    return touched


def found(entry: AccountEntry, stored: dict[str, tuple[bytes, int] | None]) -> Found:
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


def census_entries(stored: Sequence[tuple[str, bytes]], presentity: str) -> list[WatcherEntry]:
    """A watcher's index entries as a census counts them for a create of a subscription to
    `presentity`: only the entries of that presentity complete.

    A watcher has up to 300 entries: decoding them all was a tenth of an initial
    SUBSCRIBE's CPU. Only the entries of this presentity are (admit tells a device
    subscribing again by them); they hold it as codec.encode escapes it."""
    mention = json.dumps(presentity).encode()
    return [watcher_entry(key, value) if mention in value else counted_only(key) for key, value in stored]


def counted_only(key: str) -> WatcherEntry:
    """An index entry of another presentity: it counts for the watcher's cap, nothing else."""
    return WatcherEntry(key.rpartition("/")[2], "", "", "")


def watcher_entry(key: str, value: bytes) -> WatcherEntry:
    sub_id = key.rpartition("/")[2]
    try:
        return WatcherEntry.from_dict(sub_id, codec.decode(value))
    except ValueError:
        return WatcherEntry(sub_id, "", "", "")  # unreadable: it still counts for the watcher


class AccountWrites(ABC):
    """The directory writes of one account, each a `write_accounts` of one entry (which
    every adapter implements: each entry whole or not at all)."""

    @abstractmethod
    def write_accounts(self, entries: Sequence[AccountEntry]) -> list[DirectoryError]: ...

    def put_account(self, account: Account) -> None:
        """Create an account or replace its HA1s, keeping the aliases it has (its record
        lists them): add_account without new aliases, so NameTaken if its user is another
        account's alias."""
        self.add_account(account)

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
