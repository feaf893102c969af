"""Presence authorization and rendering profiles on etcd.

Records of blfctl (keys.authz, keys.profile, keys.UA_PROFILES), each rewritten by
compare-and-swap on the revision it was read at. An account's records are written only
while the account exists (the write compares it): its removal deletes them, and one
written after it would be an orphan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from statestore import codec, keys
from statestore.domain import profiles
from statestore.domain.authorization import Authorization
from statestore.domain.errors import Contended
from statestore.etcd.directory import DIRECTORY_ATTEMPTS
from statestore.etcd.kv import EtcdKv, _key_read, _object


class EtcdPresenceAdmin(EtcdKv):
    """Authorization records and rendering profiles."""

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
