"""blfctl subs|legs|regs pages and `why`'s account resolution (statestore.cli_inspect) on
the in-memory store: each page reads one prefix, `next` is the cursor of the page after."""

from __future__ import annotations

import pytest

from statestore import keys
from statestore.cli_inspect import describe, page_of_account, page_of_all, page_of_instance, resolve, table
from statestore.domain import why
from statestore.domain.directory import DirectoryError, UnknownAccount
from statestore.domain.model import Account
from statestore.memory import MemoryStore
from tests.factories import subscription
from tests.store_contract import ALICE, BOB, binding, call


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.add_domain("example.com")
    store.add_account(Account("alice", "example.com", "0" * 32, "1" * 64), ["104"])
    return store


def test_an_alias_resolves_to_its_account_and_an_unknown_name_is_refused(store: MemoryStore) -> None:
    assert resolve(store, "alice@EXAMPLE.com") == resolve(store, "104@example.com") == ALICE
    with pytest.raises(UnknownAccount, match="no account nobody@example.com"):
        resolve(store, "nobody@example.com")
    with pytest.raises(DirectoryError, match="is not USER@DOMAIN"):
        resolve(store, "alice")


def test_pages_of_an_accounts_registrations_and_subscriptions(store: MemoryStore) -> None:
    for n in range(3):
        store.apply_bindings([(f"b{n}", binding(BOB, f"sip:bob@192.0.2.{n}"), 60)], [], BOB)
        store.create_subscription(subscription(watcher=f"w{n}@example.com", presentity=BOB))
    first = page_of_account(store, "regs", BOB, "", 2)
    assert [row["contact"] for row in first.rows] == ["sip:bob@192.0.2.0", "sip:bob@192.0.2.1"]
    assert first.cursor == keys.reg(BOB, "b1")
    last = page_of_account(store, "regs", BOB, first.cursor, 2)
    assert ([row["contact"] for row in last.rows], last.cursor) == (["sip:bob@192.0.2.2"], None)
    subs = page_of_account(store, "subs", BOB, "", 2)
    assert len(subs.rows) == 2 and subs.cursor == subs.rows[-1]["key"]
    assert subs.cursor.startswith(keys.subs_of_presentity(BOB))
    rest = page_of_account(store, "subs", BOB, subs.cursor, 2)
    assert len(rest.rows) == 1 and rest.cursor is None
    assert {row["watcher"] for row in subs.rows + rest.rows} == {"w0@example.com", "w1@example.com", "w2@example.com"}


def test_an_instances_legs_are_those_its_lease_holds(store: MemoryStore) -> None:
    ks1, ks2 = store.grant_lease(60), store.grant_lease(60)
    store.announce_instance("ks1", {}, ks1)
    store.announce_instance("ks2", {}, ks2)
    store.write_legs(call(), ks1, create=True)
    store.write_legs(call(BOB, ALICE), ks2, create=True)
    first = page_of_instance(store, "legs", "ks1", "", 1)
    assert len(first.rows) == 1 and first.cursor == first.rows[0]["key"]
    rest = page_of_instance(store, "legs", "ks1", first.cursor, 1)
    assert len(rest.rows) == 1 and rest.cursor is None
    assert {row["account"] for row in first.rows + rest.rows} == {ALICE, BOB}
    assert page_of_instance(store, "legs", "ks9", "", 10).rows == []


def test_registrations_of_an_instance_are_filtered_from_pages_of_the_whole_kind(store: MemoryStore) -> None:
    store.apply_bindings([("a", binding(ALICE, "sip:alice@192.0.2.9"), 60)], [], ALICE)
    store.apply_bindings([("b", binding(BOB), 60)], [], BOB)
    first = page_of_instance(store, "regs", "ks1", "", 1)
    assert [row["account"] for row in first.rows] == [ALICE] and first.cursor == keys.reg(ALICE, "a")
    assert page_of_instance(store, "regs", "ks2", "", 1).rows == []  # none of ks2 on that page; more follow
    assert [row["account"] for row in page_of_all(store, "regs", first.cursor, 5).rows] == [BOB]


def test_the_table_and_the_human_verdict() -> None:
    assert table(("A", "LONGER"), [("xxx", "y")]) == ["A   LONGER", "xxx y"]
    facts = why.Facts(ALICE, (), (), (), (), {}, 0.0, asked="104@example.com")
    text = describe(why.explain(facts))
    assert text[0] == "alice@example.com: offline (asked as 104@example.com, an alias of alice@example.com)"
    assert text[-1] == "watchers (0):"
