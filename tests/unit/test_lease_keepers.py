"""The lease process keeps each zone's lease on its own (kemi/blf_lease.py Keepers): a zone
whose store hangs does not delay another zone's refresh, whose lease would expire with
every call leg on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from statestore.memory import MemoryStore
from tests.fakeksr import FakeContext, FakeKSR, back_htables, install


class HangingStore(MemoryStore):
    """A zone whose every member hangs: refresh and grant wait until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def grant_lease(self, ttl: int) -> int:
        self.entered.set()
        self.release.wait(10)
        return super().grant_lease(ttl)


@pytest.fixture
def ksr() -> Iterator[FakeKSR]:
    fake = install()
    back_htables(fake)
    yield fake


def test_a_hanging_zone_does_not_hold_up_another_zones_lease(ksr: FakeKSR) -> None:
    import blf_context
    import blf_lease

    hanging, healthy = HangingStore(), MemoryStore()
    ctx: Any = FakeContext(healthy)
    z1 = blf_context.StoreHandle("z1", hanging, first=True)
    z2 = blf_context.StoreHandle("z2", healthy, first=False)
    keepers = blf_lease.Keepers([
        blf_lease.LeaseKeeper(ctx, store=hanging, zone=z1),
        blf_lease.LeaseKeeper(ctx, store=healthy, zone=z2),
    ])
    try:
        keepers.tick()
        assert hanging.entered.wait(5), "z1's probe started"
        for _ in range(3):
            if z2.lease_id():
                break
            keepers.tick()
        assert z2.lease_id() and z2.lease_confirmed() is not None, "z2 got its lease while z1 hangs"
        assert not z1.lease_id()
    finally:
        hanging.release.set()
    for _ in range(3):
        if z1.lease_id():
            break
        keepers.tick()
    assert z1.lease_id(), "z1 applied what its probe found once its store answered"
