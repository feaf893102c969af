"""Leases, call legs, registrations, subscriptions and publications in memory: the same
keys, guards and answers as on etcd, each write one transaction of MemoryKv."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from statestore import codec, keys
from statestore.domain.legbook import WriteOutcome
from statestore.domain.model import Binding, Leg, Publication, Subscription, WatcherEntry
from statestore.memory.directory import MemoryDirectory, _decoded
from statestore.store import Census, KeyValue, LeaseInfo, StoredBindings, SubscribeRead
from statestore.stored import REGISTRATION_GRACE_SECONDS, census_entries


class MemoryState(MemoryDirectory):
    """What instances write and the notifier reads, in memory."""

    closed = 0
    raised: Sequence[str] = ()  # the alarms `alarms` reports (a test raises them)

    def close(self) -> None:
        self.closed += 1

    def alarms(self) -> list[str]:
        return list(self.raised)

    # --- leases and instances ---------------------------------------------------------------

    def grant_lease(self, ttl: int) -> int:
        return self.grant(ttl)

    def refresh_lease(self, lease_id: int) -> bool:
        return lease_id in self.leases

    def revoke_lease(self, lease_id: int) -> None:
        self.expire_lease(lease_id)

    def announce_instance(self, name: str, info: dict[str, Any], lease_id: int) -> None:
        self.commit({keys.instance(name): (codec.encode(info), lease_id)}, ())

    def instances(self) -> dict[str, dict[str, Any]]:
        return {key[len(keys.INSTANCES):]: codec.decode(held.value) for key, held in self.under(keys.INSTANCES)}

    # --- inspection (blfctl) -----------------------------------------------------------------

    def page(self, prefix: str, after: str = "", limit: int = 50) -> tuple[list[KeyValue], bool]:
        found = [KeyValue(key, held.value, held.mod_revision) for key, held in self.under(prefix) if key > after]
        return found[:limit], len(found) > limit

    def instance_lease(self, name: str) -> LeaseInfo | None:
        held = self.get(keys.instance(name))
        if held is None or held.lease not in self.leases:
            return None
        ttl = self.leases[held.lease].ttl
        return LeaseInfo(held.lease, ttl, ttl)  # memory leases do not count down

    def request_reset(self, aor: str, ttl: int) -> None:
        self.commit({keys.reset(aor): (codec.encode({"at": 0}), self.grant(ttl))}, ())

    # --- call legs --------------------------------------------------------------------------

    def write_legs(self, legs: Sequence[Leg], lease_id: int, create: bool) -> WriteOutcome:
        return self.write_calls([(legs, lease_id, create)])[0]

    def write_calls(self, writes: Sequence[tuple[Sequence[Leg], int, bool]]) -> list[WriteOutcome]:
        """Each call all or nothing: `create` only if none of its legs exists, an update
        only if every stored value sorts lower (codec, legs.order_of); one revision."""
        outcomes: list[WriteOutcome] = []
        puts: dict[str, tuple[bytes, int]] = {}
        with self._lock:
            for legs, lease_id, create in writes:
                new = {keys.leg(leg.account, leg.instance, leg.leg_id): codec.encode_leg(leg) for leg in legs}
                held = {key: self.value(key) for key in new}
                if create:
                    outcome = WriteOutcome.EXISTS if any(v is not None for v in held.values()) else WriteOutcome.WRITTEN
                elif any(value is None for value in held.values()):
                    outcome = WriteOutcome.MISSING
                else:
                    written = all(bytes(held[key] or b"") < value for key, value in new.items())
                    outcome = WriteOutcome.WRITTEN if written else WriteOutcome.STALE
                if outcome is WriteOutcome.WRITTEN:
                    puts |= {key: (value, lease_id) for key, value in new.items()}
                outcomes.append(outcome)
            self.commit(puts, ())
        return outcomes

    def legs_on(self, lease_id: int) -> dict[str, str]:
        return {key.rpartition("/")[2]: key for key, held in self.under(keys.LEGS) if held.lease == lease_id}

    def delete_legs(self, leg_keys: Sequence[str]) -> None:
        self.commit({}, leg_keys)

    def legs_of(self, aor: str) -> list[Leg]:
        return [codec.decode_leg(held.value) for _, held in self.under(keys.legs_of(aor))]

    # --- registrations ----------------------------------------------------------------------

    def bindings_of(self, aor: str) -> list[Binding]:
        return self.read_bindings(aor).bindings

    def read_bindings(self, aor: str) -> StoredBindings:
        with self._lock:
            stored = self.under(keys.regs_of(aor))
            leases = {key.rpartition("/")[2]: held.lease for key, held in stored if held.lease}
            return StoredBindings([codec.decode_binding(held.value) for _, held in stored], self.revision, leases)

    def apply_bindings(
        self,
        upserts: Sequence[tuple[str, Binding, int]],
        removals: Sequence[str],
        aor: str,
        read: StoredBindings | None = None,
    ) -> bool:
        """Each binding under a lease of its seconds plus the grace: the one it had when
        granted that long, else a new one (the one it had is revoked)."""
        with self._lock:
            if read is not None and self.changed_since(keys.regs_of(aor), read.revision):
                return False
            puts = {}
            for binding_id, binding, seconds in upserts:
                held = self.get(keys.reg(aor, binding_id))
                ttl = seconds + REGISTRATION_GRACE_SECONDS
                kept = held is not None and held.lease in self.leases and self.leases[held.lease].ttl == ttl
                lease = held.lease if held is not None and kept else self.grant(ttl)
                puts[keys.reg(aor, binding_id)] = (codec.encode_binding(binding), lease)
            deletes = [keys.reg(aor, binding_id) for binding_id in removals]
            before = {held.lease for key in [*puts, *deletes] for held in [self.get(key)] if held and held.lease}
            self.commit(puts, deletes)
            for lease in before - {lease for _, lease in puts.values()}:
                self.leases.pop(lease, None)
            return True

    # --- subscriptions ----------------------------------------------------------------------

    def subscriptions_to(self, presentity: str) -> list[Subscription]:
        found = []
        for key, _ in self.under(keys.subs_of_presentity(presentity)):
            held = self.value(keys.sub(key.rpartition("/")[2]))
            if held is not None:
                found.append(codec.decode_subscription(held))
        return found

    def subscriptions(self) -> list[Subscription]:
        return [codec.decode_subscription(held.value) for _, held in self.under(keys.SUBS)]

    def get_subscription(self, sub_id: str) -> tuple[Subscription, int] | None:
        held = self.get(keys.sub(sub_id))
        return None if held is None else (codec.decode_subscription(held.value), held.mod_revision)

    def census(self, watcher: str, presentity: str) -> Census:
        with self._lock:
            mine = [(key, held.value) for key, held in self.under(keys.subs_of_watcher(watcher))]
            count = len(self.under(keys.subs_of_presentity(presentity)))
            return Census(census_entries(mine, presentity), self.revision, count, self.revision)

    def initial_subscribe_read(self, watcher: str, presentity: str, inputs: Collection[str]) -> SubscribeRead:
        with self._lock:
            return SubscribeRead(
                watcher_account=self.get_account(watcher),
                presentity_account=self.get_account(presentity),
                legs=self.legs_of(presentity),
                bindings=self.bindings_of(presentity) if "regs" in inputs else [],
                census=self.census(watcher, presentity),
                publications=[pub for pub, _ in self.publications_of(presentity)] if "pubs" in inputs else [],
                authz=_decoded(self.value(keys.authz(presentity))),
                profile=_decoded(self.value(keys.profile(watcher))),
                ua_profiles=_decoded(self.value(keys.UA_PROFILES)),
            )

    def create_subscription(
        self,
        subscription: Subscription,
        replaced: Sequence[WatcherEntry] = (),
        counted: Census | None = None,
        guard_presentity: bool = False,
    ) -> int | None:
        with self._lock:
            if self.get(keys.sub(subscription.sub_id)) is not None:
                return None
            if counted is not None and (
                self.changed_since(keys.subs_of_watcher(subscription.watcher), counted.watcher_revision)
                or guard_presentity
                and self.changed_since(keys.subs_of_presentity(subscription.presentity), counted.presentity_revision)
            ):
                return None
            deletes = [key for entry in replaced
                       for key in _keys_of(entry.sub_id, subscription.watcher, entry.presentity)]
            return self.commit(_puts(subscription, index=True), deletes)

    def update_subscription(self, subscription: Subscription, mod_revision: int, reindex: bool = False) -> int | None:
        with self._lock:
            held = self.get(keys.sub(subscription.sub_id))
            if held is None or held.mod_revision != mod_revision:
                return None
            puts = _puts(subscription, index=reindex)
            puts.pop(keys.presentity_sub(subscription.presentity, subscription.sub_id), None)  # never changes
            return self.commit(puts, ())

    def delete_subscription(self, subscription: Subscription, mod_revision: int | None = None) -> bool:
        with self._lock:
            held = self.get(keys.sub(subscription.sub_id))
            if mod_revision is not None and (held is None or held.mod_revision != mod_revision):
                return False
            self.commit({}, _keys_of(subscription.sub_id, subscription.watcher, subscription.presentity))
            return True

    def next_epoch(self) -> int:
        with self._lock:
            epoch = int(self.value(keys.EPOCH) or 0) + 1
            self.commit({keys.EPOCH: (str(epoch).encode(), 0)}, ())
            return epoch

    # --- publications -----------------------------------------------------------------------

    def get_publication(self, aor: str, etag: str) -> tuple[Publication, int] | None:
        held = self.get(keys.pub(aor, etag))
        return None if held is None else (codec.decode_publication(held.value), held.mod_revision)

    def put_publication(self, publication: Publication, replaces: tuple[str, int] | None = None) -> bool:
        key = keys.pub(publication.account, publication.etag)
        with self._lock:
            if self.get(key) is not None:
                return False
            deletes = []
            if replaces is not None:
                old = self.get(keys.pub(publication.account, replaces[0]))
                if old is None or old.mod_revision != replaces[1]:
                    return False
                deletes.append(keys.pub(publication.account, replaces[0]))
            self.commit({key: (codec.encode_publication(publication), 0)}, deletes)
            return True

    def publications_of(self, aor: str) -> list[tuple[Publication, int]]:
        return [(codec.decode_publication(held.value), held.mod_revision) for _, held in self.under(keys.pubs_of(aor))]

    def delete_publication(
        self, aor: str, etag: str, mod_revision: int | None = None, expected: Publication | None = None
    ) -> bool:
        with self._lock:
            held = self.get(keys.pub(aor, etag))
            if held is None or mod_revision is not None and held.mod_revision != mod_revision:
                return False
            if expected is not None and held.value != codec.encode_publication(expected):
                return False
            self.commit({}, (keys.pub(aor, etag),))
            return True


def _puts(subscription: Subscription, index: bool) -> dict[str, tuple[bytes, int]]:
    """The record, and with `index` its two index entries (the presentity's is only counted)."""
    puts = {keys.sub(subscription.sub_id): (codec.encode_subscription(subscription), 0)}
    if index:
        entry = codec.encode(WatcherEntry.of(subscription).to_dict())
        puts[keys.watcher_sub(subscription.watcher, subscription.sub_id)] = (entry, 0)
        puts[keys.presentity_sub(subscription.presentity, subscription.sub_id)] = (b"", 0)
    return puts


def _keys_of(sub_id: str, watcher: str, presentity: str) -> list[str]:
    return [keys.sub(sub_id), keys.watcher_sub(watcher, sub_id), keys.presentity_sub(presentity, sub_id)]

