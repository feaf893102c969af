"""The directory, account removal and presence administration in memory: the same keys
and the same rules as on etcd (statestore.stored, statestore.domain), each write one
transaction of MemoryKv."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from statestore import codec, keys, records
from statestore.domain import profiles
from statestore.domain.authorization import Authorization
from statestore.domain.directory import (
    AccountEntry,
    DirectoryError,
    merged_record,
    rules_from_record,
    rules_to_record,
)
from statestore.domain.model import Account
from statestore.domain.policy import DomainRules
from statestore.domain.removal import WatchedBy, plan_removal
from statestore.memory.kv import MemoryKv
from statestore.stored import AccountWrites, entry_keys, found, watcher_entry


def _decoded(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        return codec.decode(value)
    except ValueError:
        return None


class MemoryDirectory(MemoryKv, AccountWrites):
    """Domains, accounts, aliases; removing an account; authorization and profiles."""

    def add_domain(self, name: str, rules: DomainRules | None = None) -> None:
        if rules is None and self.get(keys.domain(name)) is not None:
            return
        self.commit({keys.domain(name): (codec.encode(rules_to_record(rules or DomainRules(name))), 0)}, ())

    def domain_exists(self, name: str) -> bool:
        return self.get(keys.domain(name)) is not None

    def domains(self) -> list[str]:
        return [key[len(keys.DOMAINS):] for key, _ in self.under(keys.DOMAINS)]

    def domain_rules(self, name: str) -> DomainRules | None:
        value = self.value(keys.domain(name))
        return None if value is None else rules_from_record(codec.decode(value))

    def set_domain_rules(self, rules: DomainRules) -> bool:
        if not self.domain_exists(rules.name):
            return False
        self.commit({keys.domain(rules.name): (codec.encode(rules_to_record(rules)), 0)}, ())
        return True

    def get_account(self, aor: str) -> Account | None:
        value = self.value(keys.account(aor))
        return None if value is None else Account.from_dict(codec.decode(value))

    def resolve_alias(self, domain: str, alias: str) -> str | None:
        value = self.value(keys.alias(domain, alias))
        return None if value is None else value.decode()

    def write_accounts(self, entries: Sequence[AccountEntry]) -> list[DirectoryError]:
        refused: list[DirectoryError] = []
        for entry in entries:
            with self._lock:
                stored = {key: None if held is None else (held.value, held.mod_revision)
                          for key in entry_keys(entry) for held in [self.get(key)]}
                try:
                    record = merged_record(entry, found(entry, stored))
                except DirectoryError as exc:
                    refused.append(exc)
                    continue
                puts = {keys.account(entry.aor): (codec.encode(record), 0)}
                puts |= {keys.alias(entry.domain, name): (entry.aor.encode(), 0) for name in entry.aliases}
                self.commit(puts, ())
        return refused

    def remove_alias(self, domain: str, alias: str) -> str | None:
        with self._lock:
            owner = self.resolve_alias(domain, alias)
            if owner is None:
                return None
            puts = {}
            data = _decoded(self.value(keys.account(owner)))
            if data is not None:
                data["aliases"] = [name for name in data.get("aliases", []) if name != alias]
                puts[keys.account(owner)] = (codec.encode(data), 0)
            self.commit(puts, (keys.alias(domain, alias),))
            return owner

    def remove_account(self, aor: str, now: float | None = None) -> bool:
        """What statestore.domain.removal says goes with the account, in one transaction."""
        with self._lock:
            record = _decoded(self.value(keys.account(aor)))
            if record is None:
                return False
            watching = [watcher_entry(key, held.value) for key, held in self.under(keys.subs_of_watcher(aor))]
            watched_by: list[WatchedBy] = []
            for key, _ in self.under(keys.subs_of_presentity(aor)):
                sub_id = key.rpartition("/")[2]
                held = self.get(keys.sub(sub_id))
                watched_by.append((sub_id, None if held is None else
                                   (codec.decode_subscription(held.value), held.mod_revision)))
            plan = plan_removal([str(name) for name in record.get("aliases", [])], watching, watched_by,
                                records.ACCOUNT_REMOVAL, time.time() if now is None else now)
            domain = aor.rpartition("@")[2]
            deletes = [keys.account(aor), *(keys.alias(domain, name) for name in plan.aliases)]
            for name in plan.deleted_kinds:
                kind = records.KINDS[name]
                prefix = f"{kind.prefix}{aor}"
                deletes += [key for key, _ in self.under(f"{prefix}/")] if kind.per_account else [prefix]
            for entry in plan.watching:
                deletes += [keys.watcher_sub(aor, entry.sub_id), keys.sub(entry.sub_id)]
                if entry.presentity:
                    deletes.append(keys.presentity_sub(entry.presentity, entry.sub_id))
            deletes += [keys.presentity_sub(aor, sub_id) for sub_id in plan.dangling]
            self.commit({keys.sub(sub.sub_id): (codec.encode_subscription(sub), 0) for sub, _ in plan.ended}, deletes)
            return True

    # --- presence authorization and rendering profiles --------------------------------------

    def authorization(self, presentity: str) -> Authorization:
        return Authorization.from_dict(_decoded(self.value(keys.authz(presentity))))

    def update_authorization(
        self, presentity: str, change: Callable[[Authorization], Authorization]
    ) -> Authorization | None:
        with self._lock:
            if self.get(keys.account(presentity)) is None:
                return None
            written = change(self.authorization(presentity))
            self.commit({keys.authz(presentity): (codec.encode(written.to_dict()), 0)}, ())
            return written

    def profile_of(self, aor: str) -> tuple[str, ...] | None:
        return profiles.profile_from_record(_decoded(self.value(keys.profile(aor))))

    def set_profile(self, aor: str, names: Sequence[str] | None) -> bool:
        with self._lock:
            if self.get(keys.account(aor)) is None:
                return False
            if names is None:
                self.commit({}, (keys.profile(aor),))
            else:
                self.commit({keys.profile(aor): (codec.encode(profiles.profile_record(names)), 0)}, ())
            return True

    def ua_profile_rules(self) -> list[profiles.UaRule]:
        return profiles.ua_rules_from_record(_decoded(self.value(keys.UA_PROFILES)))

    def update_ua_profile_rules(
        self, change: Callable[[list[profiles.UaRule]], list[profiles.UaRule]]
    ) -> list[profiles.UaRule]:
        with self._lock:
            written = change(self.ua_profile_rules())
            self.commit({keys.UA_PROFILES: (codec.encode(profiles.ua_rules_record(written)), 0)}, ())
            return written
