"""The directory in a real etcd (issue 7): accounts with aliases, alias removal, account
removal with everything of the account (the subscriptions to it ended for a final NOTIFY),
domain rules. Every write is whole or nothing."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from statestore import codec, keys
from statestore.cli_directory import new_account
from statestore.domain.directory import AccountEntry, NameTaken, UnknownAccount
from statestore.domain.model import Account
from statestore.domain.policy import DomainRules
from statestore.etcd_store import MAX_TXN_OPS, EtcdStore
from tests.integration.test_etcd_store import binding, call
from tests.integration.test_subscription_index import subscription

pytestmark = [pytest.mark.integration]

D = "example.com"
ALICE, BOB, CAROL = f"alice@{D}", f"bob@{D}", f"carol@{D}"
NOW = round(time.time(), 3)


def everything(store: EtcdStore) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in store.range(keys.ROOT)}


def account(aor: str) -> Account:
    user, _, domain = aor.partition("@")
    return new_account(user, domain, f"{user}-pw")


def test_add_account_with_aliases_resolves_each(store: EtcdStore) -> None:
    store.add_account(account(ALICE), ["101", "+15551230101", "sales-desk"])
    for alias in ("101", "+15551230101", "sales-desk"):
        assert store.resolve_alias(D, alias) == ALICE
    assert store.resolve_alias(D, "102") is None
    assert store.resolve_alias("other.example", "101") is None
    stored = store.get_account(ALICE)
    assert stored is not None and stored.ha1 == account(ALICE).ha1


def test_alias_taken_by_another_account_changes_nothing(store: EtcdStore) -> None:
    store.add_account(account(ALICE), ["101"])
    before = everything(store)
    with pytest.raises(NameTaken, match=f"alias 101@{D} is taken by {ALICE}"):
        store.add_account(account(BOB), ["102", "101"])
    with pytest.raises(NameTaken, match=f"taken by {ALICE}"):
        store.add_account(account(CAROL), ["101"])
    assert everything(store) == before


def test_an_alias_cannot_be_another_accounts_user_nor_the_reverse(store: EtcdStore) -> None:
    store.add_account(account(BOB))
    store.add_account(account(ALICE), ["101"])
    before = everything(store)
    with pytest.raises(NameTaken, match=f"alias bob@{D} is taken by {BOB}"):
        store.add_aliases(ALICE, ["bob"])
    with pytest.raises(NameTaken, match=f"alias 101@{D} is taken by {ALICE}"):
        store.add_account(account(f"101@{D}"))
    assert everything(store) == before


def test_add_aliases_to_an_account_keeps_the_others_and_is_idempotent(store: EtcdStore) -> None:
    store.add_account(account(ALICE), ["101"])
    store.add_aliases(ALICE, ["102", "101"])
    store.add_aliases(ALICE, ["102"])
    assert [store.resolve_alias(D, a) for a in ("101", "102")] == [ALICE, ALICE]
    with pytest.raises(UnknownAccount):
        store.add_aliases(BOB, ["103"])
    assert store.resolve_alias(D, "103") is None


def test_account_add_again_changes_the_password_and_keeps_its_aliases(store: EtcdStore) -> None:
    store.add_account(account(ALICE), ["101"])
    store.add_account(new_account("alice", D, "new-pw"))
    stored = store.get_account(ALICE)
    assert stored is not None and stored.ha1 == new_account("alice", D, "new-pw").ha1
    assert store.resolve_alias(D, "101") == ALICE
    store.remove_account(ALICE)
    assert everything(store) == {}


def test_put_account_keeps_its_aliases(store: EtcdStore) -> None:
    store.add_account(account(ALICE), ["101"])
    store.put_account(new_account("alice", D, "new-pw"))  # as bench/ provisions
    assert store.get_account(ALICE) == new_account("alice", D, "new-pw")
    assert codec.decode(store.client.get(keys.account(ALICE))[0])["aliases"] == ["101"]
    store.remove_account(ALICE)  # the alias goes with it: the record still listed it
    assert everything(store) == {}


def test_remove_alias(store: EtcdStore) -> None:
    store.add_account(account(ALICE), ["101", "102"])
    assert store.remove_alias(D, "101") == ALICE
    assert store.remove_alias(D, "101") is None
    assert store.resolve_alias(D, "101") is None
    assert store.resolve_alias(D, "102") == ALICE
    store.add_account(account(BOB), ["101"])  # free again
    assert store.resolve_alias(D, "101") == BOB
    store.remove_account(ALICE)  # its remaining alias goes, Bob's 101 stays
    assert store.resolve_alias(D, "102") is None
    assert store.resolve_alias(D, "101") == BOB


def test_remove_account_takes_everything_of_it_and_ends_its_watchers_subscriptions(store: EtcdStore) -> None:
    store.add_domain(D)
    for aor, aliases in ((ALICE, ["101", "+1555101"]), (BOB, ["102"]), (CAROL, [])):
        store.add_account(account(aor), aliases)
    lease = store.grant_lease(60)
    store.write_legs(call(ALICE, BOB), lease, create=True)
    store.apply_bindings([("b1", binding(ALICE, "sip:alice@127.0.0.1:5090"), 60)], [], ALICE)
    store.apply_bindings([("b1", binding(BOB, "sip:bob@127.0.0.1:5092"), 60)], [], BOB)
    gone = [subscription(ALICE, BOB), subscription(ALICE, ALICE)]  # Alice watches: deleted
    ending = [subscription(BOB, ALICE), subscription(CAROL, ALICE)]  # Alice watched: ended
    kept = [subscription(CAROL, BOB), subscription(BOB, CAROL)]
    for sub in gone + ending + kept:
        assert store.create_subscription(sub) is not None

    assert store.remove_account(ALICE, now=NOW) is True

    left = everything(store)
    assert not [key for key in left if ALICE in key and not key.startswith((keys.SUBS, keys.WATCHERS, keys.WATCHED))]
    assert store.get_account(ALICE) is None
    assert store.resolve_alias(D, "101") is None and store.resolve_alias(D, "+1555101") is None
    assert store.resolve_alias(D, "102") == BOB
    assert store.legs_of(ALICE) == [] and store.bindings_of(ALICE) == []
    assert len(store.legs_of(BOB)) == 1  # Bob's side of the call is his (it ends with the call)
    assert len(store.bindings_of(BOB)) == 1
    stored = {s.sub_id: s for s in store.subscriptions()}
    assert sorted(stored) == sorted(s.sub_id for s in ending + kept)
    for sub in ending:  # due now, for their notifier to send the final NOTIFY and remove them
        assert stored[sub.sub_id] == replace(
            sub, expires_at=NOW, termination_reason="noresource", status_event="noresource"
        )
    for sub in kept:
        assert stored[sub.sub_id] == sub
    expected_index = {keys.watcher_sub(s.watcher, s.sub_id) for s in ending + kept} | {
        keys.presentity_sub(s.presentity, s.sub_id) for s in ending + kept
    }
    assert {key for key in left if key.startswith((keys.WATCHERS, keys.WATCHED))} == expected_index
    assert store.domain_exists(D)
    assert store.remove_account(ALICE) is False
    for sub in ending:  # what the notifier does with each (blf_notifier expired path)
        found = store.get_subscription(sub.sub_id)
        assert found is not None and store.delete_subscription(found[0], found[1])
    assert not [key for key in everything(store) if ALICE in key]


def test_remove_account_in_more_subscriptions_than_one_transaction_holds(store: EtcdStore) -> None:
    store.add_account(account(ALICE), ["101"])
    watchers = [f"w{index}@{D}" for index in range(2 * MAX_TXN_OPS + 5)]
    for watcher in watchers:
        assert store.create_subscription(subscription(watcher, ALICE)) is not None
    watched = [subscription(ALICE, f"p{index}@{D}") for index in range(MAX_TXN_OPS)]
    for sub in watched:
        assert store.create_subscription(sub) is not None
    assert store.remove_account(ALICE, now=NOW) is True
    assert store.get_account(ALICE) is None and store.resolve_alias(D, "101") is None
    ended = store.subscriptions()
    assert sorted(s.watcher for s in ended) == sorted(watchers)
    assert all(s.expires_at == NOW and s.termination_reason == "noresource" for s in ended)
    assert len(store.range(keys.subs_of_presentity(ALICE))) == len(watchers)  # removed with each record
    assert store.range(keys.subs_of_watcher(ALICE)) == []
    assert all(store.range(keys.subs_of_presentity(sub.presentity)) == [] for sub in watched)


def test_remove_account_with_more_aliases_than_one_transaction_holds(store: EtcdStore) -> None:
    names = [str(1000 + index) for index in range(3 * MAX_TXN_OPS + 7)]
    store.add_account(account(ALICE))
    for start in range(0, len(names), 50):  # MAX_ALIASES a request
        store.add_aliases(ALICE, names[start : start + 50])
    store.add_account(account(BOB), ["999"])
    assert store.create_subscription(subscription(BOB, ALICE)) is not None
    assert store.remove_account(ALICE, now=NOW) is True
    assert store.get_account(ALICE) is None
    assert store.range(keys.aliases_in(D)) == [store.range(keys.alias(D, "999"))[0]]
    [ended] = store.subscriptions()
    assert ended.termination_reason == "noresource"


def test_remove_account_does_not_end_again_what_it_ended(store: EtcdStore) -> None:
    store.add_account(account(ALICE))
    sub = subscription(BOB, ALICE)
    revision = store.create_subscription(replace(sub, expires_at=NOW - 10, termination_reason="noresource"))
    assert revision is not None
    dangling = subscription(CAROL, ALICE)
    store.client.put(keys.presentity_sub(ALICE, dangling.sub_id), b"")  # its record is gone
    assert store.remove_account(ALICE, now=NOW) is True
    found = store.get_subscription(sub.sub_id)
    assert found is not None and found[1] == revision
    assert store.range(keys.subs_of_presentity(ALICE)) == [
        store.range(keys.presentity_sub(ALICE, sub.sub_id))[0]
    ]


def test_write_accounts_refuses_only_the_entries_in_conflict(store: EtcdStore) -> None:
    store.add_account(account(CAROL), ["300"])
    entries = [
        AccountEntry(f"u{index}@{D}", account(f"u{index}@{D}").to_dict(), (str(1000 + index),)) for index in range(100)
    ]
    entries.insert(50, AccountEntry(ALICE, account(ALICE).to_dict(), ("101", "300")))
    entries.append(AccountEntry(BOB, account(BOB).to_dict(), ("1000",)))  # u0's, in an earlier batch
    refused = store.write_accounts(entries)
    assert [str(error) for error in refused] == [
        f"alias 300@{D} is taken by {CAROL}", f"alias 1000@{D} is taken by u0@{D}",
    ]
    assert store.get_account(ALICE) is None and store.resolve_alias(D, "101") is None
    assert store.get_account(BOB) is None
    assert all(store.resolve_alias(D, str(1000 + index)) == f"u{index}@{D}" for index in range(100))


def test_domain_rules(store: EtcdStore) -> None:
    store.add_domain("a.example")
    assert store.domain_rules("a.example") == DomainRules("a.example")
    assert store.domain_rules("nowhere.example") is None
    rules = DomainRules("a.example", frozenset({"b.example"}), frozenset({"c.example"}))
    assert store.set_domain_rules(rules) is True
    store.add_domain("a.example")  # an existing domain keeps its rules
    assert store.domain_rules("a.example") == rules
    store.add_domain("a.example", DomainRules("a.example"))
    assert store.domain_rules("a.example") == DomainRules("a.example")
    assert store.set_domain_rules(DomainRules("nowhere.example")) is False
    assert store.domain_exists("nowhere.example") is False


def test_a_domain_written_before_rules_reads_as_the_defaults(store: EtcdStore) -> None:
    store.client.put(keys.domain("old.example"), b'{"domain":"old.example"}')
    assert store.domain_rules("old.example") == DomainRules("old.example")
    assert store.domains() == ["old.example"]
