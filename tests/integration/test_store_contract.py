"""The StateStore contract (tests/store_contract.py) on a real etcd: what the in-memory
store of the unit tests is checked against too (tests/unit/test_store_contract.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from statestore.etcd import EtcdStore
from statestore.store import StateStore
from tests.store_contract import CHECKS

pytestmark = [
    pytest.mark.integration,
    # python-etcd3 0.12 cannot stop its watch thread (tests/integration/test_etcd_store.py).
    pytest.mark.filterwarnings(
        r"ignore:Exception in thread etcd3_watch_[\s\S]*Cannot invoke RPC. Channel closed"
        r":pytest.PytestUnhandledThreadExceptionWarning"
    ),
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_etcd_keeps_the_contract(store: EtcdStore, check: Callable[[StateStore], None]) -> None:
    check(store)
