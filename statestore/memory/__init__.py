"""The StateStore in memory: one zone's store as etcd would hold it (the same keys,
values, revisions, leases and watches), with the same rules (statestore.domain,
statestore.stored). Every unit test's store; a test that needs a failure subclasses it.

Beyond the seam, what a test does behind the store user's back: `write_key`,
`delete_key`, `commit` (another writer's transaction), `expire_lease`, `break_watches`
(an outage), `raised` (alarms), `watching()`.
"""

from __future__ import annotations

from statestore.memory.kv import MemoryKv, Stored
from statestore.memory.state import MemoryState


class MemoryStore(MemoryState):
    """StateStore in memory (mypy checks it against the seam: statestore/store.py)."""


__all__ = ["MemoryKv", "MemoryStore", "Stored"]
