"""The SIP path's copy of the directory (kemi/blf_directory.py) against a fake KSR: the
keeper loads it from a snapshot and a watch, the workers read it without the store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from statestore import codec, keys
from statestore.domain.directory import rules_to_record
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Account
from statestore.domain.policy import DomainRules, NumberRule
from statestore.memory import MemoryStore
from statestore.store import KeyValue
from tests.fakeksr import FakeContext, FakeKSR, back_htables, install

ALICE = Account("alice", "acme.example", "0" * 32, "1" * 64)
ACME = DomainRules("acme.example", may_call=frozenset({"beta.example"}), numbers=NumberRule(strip_plus=True))


class Store(MemoryStore):
    """The shared in-memory store, recording the reads the directory makes and failing
    snapshots (resyncs) when told."""

    def __init__(self, items: dict[str, bytes]) -> None:
        super().__init__(items)
        self.calls: list[str] = []
        self.fail = False

    def snapshot(self, prefix: str | Sequence[str] = keys.ROOT, page: int = 0) -> tuple[int, list[KeyValue]]:
        self.calls.append("snapshot")
        if self.fail:
            raise StoreUnavailable("etcd down")
        return super().snapshot(prefix, page)

    def get_account(self, aor: str) -> Account | None:
        self.calls.append(f"get_account {aor}")
        return super().get_account(aor)

    def resolve_alias(self, domain: str, alias: str) -> str | None:
        self.calls.append(f"resolve_alias {domain} {alias}")
        return super().resolve_alias(domain, alias)

    def domain_rules(self, name: str) -> DomainRules | None:
        self.calls.append(f"domain_rules {name}")
        return super().domain_rules(name)


class Cache:
    def put_account(self, account: Account) -> None:
        pass

    def get_account(self, aor: str) -> Account | None:
        return None


def directory_items() -> dict[str, bytes]:
    return {
        keys.account(ALICE.aor): codec.encode({**ALICE.to_dict(), "aliases": ["101"]}),
        keys.alias("acme.example", "101"): ALICE.aor.encode(),
        keys.domain("acme.example"): codec.encode(rules_to_record(ACME)),
    }


@pytest.fixture
def ksr() -> Iterator[FakeKSR]:
    fake = install()
    back_htables(fake)
    yield fake


def setup(ksr: FakeKSR, items: dict[str, bytes] | None = None) -> tuple[Any, Any, Store]:
    import blf_directory
    import blf_directory_keeper

    store = Store(directory_items() if items is None else items)
    ctx = FakeContext(store, cache=Cache())
    return blf_directory_keeper.Keeper(ctx), blf_directory.SharedDirectory(ctx), store  # type: ignore[arg-type]


def test_before_the_copy_is_loaded_lookups_go_to_the_store(ksr: FakeKSR) -> None:
    _, view, store = setup(ksr)
    assert not view.loaded()
    assert view.account("acme.example", "alice") == ALICE.aor
    assert view.alias("acme.example", "101") == ALICE.aor
    assert view.get("ACME.example") == ACME
    assert view.get("acme.example") == ACME  # remembered: one read per domain
    assert store.calls == [
        "get_account alice@acme.example", "resolve_alias acme.example 101", "domain_rules acme.example",
    ]


def test_once_loaded_every_lookup_is_served_from_shared_memory(ksr: FakeKSR) -> None:
    keeper, view, store = setup(ksr)
    keeper.tick()
    assert ksr.pvs["$shv(blf_dir)"] == str(store.revision)
    store.calls.clear()
    assert view.account_record(ALICE.aor) == ALICE
    assert view.account("acme.example", "nobody") is None
    assert view.alias("acme.example", "101") == ALICE.aor
    assert view.alias("acme.example", "102") is None
    assert view.get("acme.example") == ACME
    assert view.get("beta.example") is None
    assert store.calls == []
    assert view.stats.counts == {"shm": 6, "store": 0}


def test_watch_events_reach_the_copy_and_a_resync_drops_what_etcd_no_longer_has(ksr: FakeKSR) -> None:
    keeper, view, store = setup(ksr)
    keeper.tick()
    assert store.watching()
    store.commit({keys.alias("acme.example", "102"): (ALICE.aor.encode(), 0)}, [keys.alias("acme.example", "101")])
    keeper.tick()
    assert (view.alias("acme.example", "102"), view.alias("acme.example", "101")) == (ALICE.aor, None)
    # The watch breaks; meanwhile the account goes. The resync removes it from the copy.
    store.break_watches(RuntimeError("watch broken"))
    keeper.tick()
    store.delete_key(keys.account(ALICE.aor))
    keeper.tick()
    assert view.account("acme.example", "alice") is None
    assert view.get("acme.example") == ACME
    assert ksr.pvs["$shv(blf_dir)"] == str(store.revision)


def test_a_copy_stays_served_while_the_store_is_unreachable(ksr: FakeKSR) -> None:
    keeper, view, store = setup(ksr)
    keeper.tick()
    loaded = ksr.pvs["$shv(blf_dir)"]
    store.break_watches(RuntimeError("etcd gone"))
    store.fail = True
    keeper.tick()
    keeper.tick()
    assert "resync in" in ksr.logged("warn")
    assert view.account("acme.example", "alice") == ALICE.aor  # calls are still routed
    assert ksr.pvs["$shv(blf_dir)"] == loaded


def test_an_unreadable_record_is_absent_and_logged(ksr: FakeKSR) -> None:
    items = directory_items()
    items[keys.domain("acme.example")] = b"{not json"
    keeper, view, _ = setup(ksr, items)
    keeper.tick()
    assert view.get("acme.example") is None
    assert "unreadable" in ksr.logged("err")


def test_stats_are_logged_with_where_lookups_were_served_from(ksr: FakeKSR) -> None:
    keeper, view, _ = setup(ksr)
    view.get("acme.example")  # from the store
    keeper.tick()
    view.get("acme.example")  # from the copy
    view.stats.flush()
    line = ksr.logged("info")
    assert "blf directory: stats lookups=2 shm=1 store=1 shm_p50_us=" in line
    assert "store_p99_us=" in line
