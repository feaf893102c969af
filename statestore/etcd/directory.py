"""Domains, accounts and aliases on etcd (issue 7).

An account's value lists its aliases; each alias is a key of its own naming the
account. Both are written in one transaction that compares every key it read, so
that an alias never has two owners and never outlives or escapes its account.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import etcd3  # type: ignore[import-untyped]

from statestore import codec, keys
from statestore.domain.directory import (
    AccountEntry,
    DirectoryError,
    merged_record,
    rules_from_record,
    rules_to_record,
)
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Account
from statestore.domain.policy import DomainRules
from statestore.etcd.kv import MAX_TXN_OPS, SNAPSHOT_PAGE, EtcdKv, _key_read
from statestore.stored import AccountWrites, entry_keys, found

# Optimistic directory writes retried when a concurrent writer changed what they read.
DIRECTORY_ATTEMPTS = 10


class EtcdDirectory(EtcdKv, AccountWrites):
    """The directory: provisioning, accounts, aliases, domain rules."""

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

    def get_account(self, aor: str) -> Account | None:
        with self._guard():
            value, _ = self.client.get(keys.account(aor))
        return None if value is None else Account.from_dict(codec.decode(value))

    def account_aliases(self, aor: str) -> list[str] | None:
        """The aliases an account's record lists, None if there is no such account."""
        with self._guard():
            value, _ = self.client.get(keys.account(aor))
        return None if value is None else [str(name) for name in codec.decode(value).get("aliases", [])]

    def accounts_in(self, domain: str | None, page: int = SNAPSHOT_PAGE) -> Iterator[str]:
        """The AORs of `domain`'s accounts (every account's if None) in key order, read `page` keys (no values) per
        request at one revision: what is held never grows with the directory. Account keys
        are not grouped by domain (keys.account), so the other domains' keys of the zone
        are read and skipped, never kept."""
        start, end = keys.ACCOUNTS.encode(), etcd3.utils.increment_last_byte(keys.ACCOUNTS.encode())
        suffix = f"@{domain}".encode() if domain is not None else None
        revision = 0
        while True:
            with self._guard():
                response = self._range_page(start, end, page, revision, keys_only=True)
            revision = revision or int(response.header.revision)
            for kv in response.kvs:
                if suffix is None or kv.key.endswith(suffix):
                    yield kv.key[len(keys.ACCOUNTS):].decode()
            if not response.more or not response.kvs:
                return
            start = response.kvs[-1].key + b"\0"

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

    def write_accounts(self, entries: Sequence[AccountEntry]) -> list[DirectoryError]:
        """Write accounts with their aliases in as few transactions as fit MAX_TXN_OPS
        (bulk import). Each entry is written whole or not at all; the refusals are
        returned, the others written."""
        refused: list[DirectoryError] = []
        batch: list[AccountEntry] = []
        touched: set[str] = set()
        for entry in entries:
            written = entry_keys(entry)
            # etcd refuses a transaction writing one key twice: an entry touching what the
            # batch writes goes into the next one (and is checked against it).
            if batch and (len(touched) + len(written) > MAX_TXN_OPS or touched.intersection(written)):
                refused += self._write_batch(batch)
                batch, touched = [], set()
            batch.append(entry)
            touched.update(written)
        if batch:
            refused += self._write_batch(batch)
        return refused

    def _write_batch(self, batch: Sequence[AccountEntry]) -> list[DirectoryError]:
        tx = self.client.transactions
        for _ in range(DIRECTORY_ATTEMPTS):
            reads = [key for entry in batch for key in entry_keys(entry)]
            _, responses = self._read([_key_read(key) for key in reads])
            stored = {key: (answer.kvs[0].value, int(answer.kvs[0].mod_revision)) if answer.kvs else None
                      for key, answer in zip(reads, responses, strict=True)}
            refused: list[DirectoryError] = []
            compare: list[Any] = []
            success: list[Any] = []
            for entry in batch:
                try:
                    record = merged_record(entry, found(entry, stored))
                except DirectoryError as exc:
                    refused.append(exc)
                    continue
                for key in entry_keys(entry):
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
