"""Orphans in the store: keys and leases that nothing live owns (issue 8, "No orphans").

Pure: it gets what was read from the store at one revision (keys with their values and
leases, and every lease with its TTLs and keys) and the time, and returns what is owned by
nobody. Two checks:

- `find_orphans`: what must hold at any moment, under load too. A leg hangs on its
  instance's lease (or on the short lease of calls that just ended) and its instance is
  alive; a binding and an instance key hang on a lease; a binding or a subscription is
  not past its expiry (the lease, the notifier, should have removed it); a subscription
  has both index entries and every index entry its subscription (keys.py: the three are
  written and deleted in one transaction); a lease holds a key, unless it is a short one.
- `find_leftovers`: after the load stopped and every call, registration and subscription
  of the run ended or expired, the store holds only provisioning (domains, accounts,
  aliases, the epoch) and the running instances on their own leases.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from statestore import codec, keys
from statestore.stored import REGISTRATION_GRACE_SECONDS

# Terminated legs hang on a shared lease of a few seconds (kemi/blf_legs.py ENDED_TTL = 3);
# any lease granted at most this long is such a short one, keyless or not.
SHORT_LEASE_TTL = 10
# A binding's lease is its expiry plus this (the adapters grant it so).
BINDING_GRACE_SECONDS = REGISTRATION_GRACE_SECONDS
# Time allowed past an expiry before a record counts as forgotten: the notifier ends an
# expired subscription on its next due tick, etcd expires leases within about a second,
# and the snapshot's clock is the reader's.
EXPIRY_SLACK_SECONDS = 10.0
# Kinds that describe the run's live state; after the run none may remain.
LIVE_STATE_KINDS = ("legs", "regs", "pubs", "subs", "watchers", "watched")


@dataclass(frozen=True)
class StoredKey:
    value: bytes
    lease: int = 0  # 0: on no lease


@dataclass(frozen=True)
class StoredLease:
    granted_ttl: int
    ttl: int  # seconds left
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """The store as read at one revision: every key under keys.ROOT and every lease."""

    keys: Mapping[str, StoredKey]
    leases: Mapping[int, StoredLease] = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class Orphan:
    what: str  # a key, or "lease <hex id>"
    reason: str


def find_orphans(snapshot: Snapshot, now: float) -> list[Orphan]:
    """What nothing live owns, at any moment (see the module docstring)."""
    instance_lease = _instance_leases(snapshot)
    found: list[Orphan] = []
    for key, stored in sorted(snapshot.keys.items()):
        parsed = keys.parse(key)
        if parsed is None:
            if key not in (keys.EPOCH, keys.MAINTENANCE):
                found.append(Orphan(key, "not a key of the layout (statestore/keys.py)"))
            continue
        reason = _orphaned(snapshot, parsed, stored, now, instance_lease)
        if reason:
            found.append(Orphan(key, reason))
    for lease_id, lease in sorted(snapshot.leases.items()):
        if not lease.keys and lease.granted_ttl > SHORT_LEASE_TTL:
            found.append(Orphan(f"lease {lease_id:x}", f"holds no key, {lease.ttl}s left of {lease.granted_ttl}s"))
    return found


def find_leftovers(snapshot: Snapshot, instances: Collection[str]) -> list[Orphan]:
    """What remains of the run once all of it ended: any leg, binding, subscription or index
    entry; an instance key of an instance not running; a lease that is not the lease of a
    running instance's key."""
    found: list[Orphan] = []
    owned_by_instances: set[int] = set()
    for key, stored in sorted(snapshot.keys.items()):
        parsed = keys.parse(key)
        if parsed is None:
            continue
        if parsed.kind in LIVE_STATE_KINDS:
            found.append(Orphan(key, "left after every call, registration and subscription ended"))
        elif parsed.kind == "instances":
            if parsed.name in instances:
                owned_by_instances.add(stored.lease)
            else:
                found.append(Orphan(key, "an instance that is not running"))
    for lease_id, lease in sorted(snapshot.leases.items()):
        if lease_id not in owned_by_instances:
            held = ", ".join(lease.keys[:3]) or "no key"
            found.append(Orphan(f"lease {lease_id:x}", f"left after the run ({held}; {lease.ttl}s left)"))
    return found


def _instance_leases(snapshot: Snapshot) -> dict[str, int]:
    """Instance name -> the lease its key hangs on, for instances whose lease is alive."""
    found: dict[str, int] = {}
    for key, stored in snapshot.keys.items():
        parsed = keys.parse(key)
        if parsed is not None and parsed.kind == "instances" and stored.lease in snapshot.leases:
            found[parsed.name] = stored.lease
    return found


def _orphaned(
    snapshot: Snapshot, parsed: keys.ParsedKey, stored: StoredKey, now: float, instance_lease: Mapping[str, int]
) -> str:
    kind = parsed.kind
    if kind in ("instances", "legs", "regs"):
        if not stored.lease:
            return f"{_NOUN[kind]} on no lease"
        if stored.lease not in snapshot.leases:
            return f"{_NOUN[kind]} on lease {stored.lease:x} that etcd no longer holds"
    if kind == "legs":
        return _leg_orphaned(snapshot, parsed, stored, instance_lease)
    if kind == "regs":
        return _binding_orphaned(snapshot, stored, now)
    if kind == "subs":
        return _subscription_orphaned(snapshot, parsed, stored, now)
    if kind == "pubs":
        return _publication_orphaned(stored, now)
    if kind in ("watchers", "watched"):
        return _index_orphaned(snapshot, parsed)
    return ""


_NOUN = {"instances": "instance key", "legs": "leg", "regs": "binding"}


def _leg_orphaned(
    snapshot: Snapshot, parsed: keys.ParsedKey, stored: StoredKey, instance_lease: Mapping[str, int]
) -> str:
    instance = parsed.name.partition("/")[0]  # legs/<aor>/<instance>/<leg id>
    if instance not in instance_lease:
        return f"leg of instance {instance}, which is not alive"
    if stored.lease != instance_lease[instance] and snapshot.leases[stored.lease].granted_ttl > SHORT_LEASE_TTL:
        return f"leg on lease {stored.lease:x}, neither {instance}'s nor a short one"
    return ""


def _binding_orphaned(snapshot: Snapshot, stored: StoredKey, now: float) -> str:
    expires_at = _number(stored.value, "expires_at")
    if expires_at is None:
        return "binding without an expiry"
    if expires_at + BINDING_GRACE_SECONDS + EXPIRY_SLACK_SECONDS < now:
        return f"binding {now - expires_at:.0f}s past its expiry"
    left = snapshot.leases[stored.lease].ttl
    if left > expires_at - now + BINDING_GRACE_SECONDS + EXPIRY_SLACK_SECONDS:
        return f"binding's lease outlives it: {left}s left, the binding expires in {expires_at - now:.0f}s"
    return ""


# The instance responsible for an account sweeps its expired publications within a few
# seconds (kemi/blf_notifier.py); one left longer than this is an orphan.
PUBLICATION_SWEEP_GRACE = 30.0


def _publication_orphaned(stored: StoredKey, now: float) -> str:
    try:
        expires_at = float(codec.decode(stored.value).get("expires_at", 0))
    except (ValueError, TypeError):
        return "unreadable publication"
    if expires_at + PUBLICATION_SWEEP_GRACE < now:
        return f"publication {now - expires_at:.0f}s past its expiry"
    return ""


def _subscription_orphaned(snapshot: Snapshot, parsed: keys.ParsedKey, stored: StoredKey, now: float) -> str:
    record = _record(stored.value)
    expires_at = record.get("expires_at")
    if not isinstance(expires_at, int | float):
        return "subscription without an expiry"
    if expires_at + EXPIRY_SLACK_SECONDS < now:
        return f"subscription {now - expires_at:.0f}s past its expiry"
    watcher, presentity = str(record.get("watcher", "")), str(record.get("presentity", ""))
    for index in (keys.watcher_sub(watcher, parsed.name), keys.presentity_sub(presentity, parsed.name)):
        if index not in snapshot.keys:
            return f"subscription without its index entry {index}"
    return ""


def _index_orphaned(snapshot: Snapshot, parsed: keys.ParsedKey) -> str:
    stored = snapshot.keys.get(keys.sub(parsed.name))
    if stored is None:
        return "index entry without its subscription"
    role = "watcher" if parsed.kind == "watchers" else "presentity"
    named = str(_record(stored.value).get(role, ""))
    if named != parsed.account:
        return f"index entry of {parsed.account}, but the subscription's {role} is {named}"
    return ""


def _record(value: bytes) -> dict[str, object]:
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _number(value: bytes, name: str) -> float | None:
    found = _record(value).get(name)
    return float(found) if isinstance(found, int | float) else None
