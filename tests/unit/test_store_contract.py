"""The StateStore contract (tests/store_contract.py) on the in-memory store every unit
test uses; tests/integration/test_store_contract.py runs it on a real etcd."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from statestore.memory import MemoryStore
from statestore.store import StateStore
from tests.store_contract import CHECKS


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_the_in_memory_store_keeps_the_contract(check: Callable[[StateStore], None]) -> None:
    check(MemoryStore())
