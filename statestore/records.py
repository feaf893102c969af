"""Record kinds of the store, each one declaration.

A kind says where its records live (`prefix`, keys.py), how they are read (`decode`),
what keeps them alive, what removing an account does to them and how an orphan is
recognised. The mirror reads the state kinds from here (`STATE_KINDS`: what event package
bodies are made of), store health counts every kind, `blfctl show` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statestore import codec, keys
from statestore.domain.removal import AccountRemoved


@dataclass(frozen=True)
class RecordKind:
    name: str  # the key segment after /blf/ (keys.parse gives it back)
    prefix: str
    decode: Callable[[bytes], Any]
    lifetime: str  # what keeps a record alive
    on_account_removed: AccountRemoved  # what `blfctl account remove` does (domain.removal)
    orphan: str  # how `blfctl store orphans` recognises one left behind
    per_account: bool = True  # keyed /blf/<kind>/<account>/<name>: part of a presentity's state


def _raw(value: bytes) -> Any:
    return codec.decode(value)


LEGS = RecordKind(
    "legs", keys.LEGS, codec.decode_leg,
    lifetime="the lease of the instance serving the call",
    on_account_removed=AccountRemoved.DELETED,
    orphan="its instance is not live (its lease should have taken it)",
)
REGS = RecordKind(
    "regs", keys.REGS, codec.decode_binding,
    lifetime="a lease of its expiry",
    on_account_removed=AccountRemoved.DELETED,
    orphan="past its expiry",
)
PUBS = RecordKind(
    "pubs", keys.PUBS, codec.decode_publication,
    lifetime="its expiry, swept by the instance responsible for its account",
    on_account_removed=AccountRemoved.DELETED,
    orphan="past its expiry by more than the sweep interval",
)
SUBS = RecordKind(
    "subs", keys.SUBS, codec.decode_subscription,
    lifetime="its expiry, ended by the responsible instance's notifier (final NOTIFY)",
    on_account_removed=AccountRemoved.ENDED,
    orphan="its index entries missing, or past its expiry",
    per_account=False,
)
AUTHZ = RecordKind(
    "authz", keys.AUTHZ, _raw,
    lifetime="until the account is removed",
    on_account_removed=AccountRemoved.DELETED,
    orphan="its account is gone",
    per_account=False,
)
PROFILES = RecordKind(
    "profiles", keys.PROFILES, _raw,
    lifetime="until the account is removed",
    on_account_removed=AccountRemoved.DELETED,
    orphan="its account is gone",
    per_account=False,
)
RESET = RecordKind(
    "reset", keys.RESET, _raw,
    lifetime="a short lease (`blfctl reset`): the put is what the notifiers act on",
    on_account_removed=AccountRemoved.DELETED,
    orphan="its lease should have taken it",
    per_account=False,
)

# Records a presentity's state is made of, by the name event packages list as inputs.
STATE_KINDS: dict[str, RecordKind] = {kind.name: kind for kind in (LEGS, REGS, PUBS)}
KINDS: dict[str, RecordKind] = {kind.name: kind for kind in (LEGS, REGS, PUBS, SUBS, AUTHZ, PROFILES, RESET)}
# What removing an account does to each kind (statestore.domain.removal.plan_removal).
ACCOUNT_REMOVAL: dict[str, AccountRemoved] = {name: kind.on_account_removed for name, kind in KINDS.items()}
