"""The StateStore seam: what the instance needs of a store, whatever holds it.

`EtcdStore` is today's only implementation; a later issue may give each domain zone a
store of its own. Types shared by every implementation live here, next to the seam.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from statestore.domain.model import Binding


@dataclass(frozen=True)
class StoredBindings:
    """An account's bindings as read, with what a guarded write of them needs: the lease
    each binding key holds (by binding id) and the store revision of the read."""

    bindings: list[Binding]
    revision: int
    leases: dict[str, int] = field(default_factory=dict)
