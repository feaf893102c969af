"""The subscription index on a real etcd: written and removed with its subscription, in the
same transaction, on every path; counted for the caps; guarding creates under concurrency."""

from __future__ import annotations

import random
from dataclasses import replace

from statestore import keys
from statestore.domain.model import Subscription, WatcherEntry
from statestore.etcd_store import EtcdStore
from tests.factories import subscription

BOB = "bob@example.com"
MALLORY = "mallory@example.com"
ALICE = "alice@example.com"
CAROL = "carol@example.com"


def index_keys(sub: Subscription) -> set[str]:
    return {keys.watcher_sub(sub.watcher, sub.sub_id), keys.presentity_sub(sub.presentity, sub.sub_id)}


def stored(store: EtcdStore) -> dict[str, int]:
    """Every key of the store and its mod revision."""
    return {kv.key: kv.mod_revision for kv in store.range(keys.ROOT)}


def assert_index_consistent(store: EtcdStore) -> None:
    """Exactly two index entries per stored subscription, none without one."""
    subs = store.subscriptions()
    expected = set().union(*(index_keys(s) for s in subs)) if subs else set()
    present = {key for key in stored(store) if key.startswith((keys.WATCHERS, keys.WATCHED))}
    assert present == expected
    for sub in subs:
        entries = {e.sub_id: e for e in store.census(sub.watcher, sub.presentity).entries}
        assert entries[sub.sub_id] == WatcherEntry.of(sub)


def test_create_writes_the_subscription_and_both_index_entries_in_one_revision(store: EtcdStore) -> None:
    sub = subscription()
    revision = store.create_subscription(sub)
    assert revision is not None
    assert stored(store) == {keys.sub(sub.sub_id): revision} | {key: revision for key in index_keys(sub)}
    census = store.census(BOB, ALICE)
    assert census.entries == [WatcherEntry.of(sub)]
    assert census.presentity_count == 1
    assert census.watcher_revision >= revision and census.presentity_revision >= revision


def test_a_duplicate_create_writes_nothing(store: EtcdStore) -> None:
    sub = subscription()
    store.create_subscription(sub)
    before = stored(store)
    assert store.create_subscription(replace(sub, watcher_contact="sip:other@127.0.0.1")) is None
    assert stored(store) == before


def test_census_counts_per_watcher_and_per_presentity(store: EtcdStore) -> None:
    mine = [subscription(BOB, ALICE), subscription(BOB, ALICE), subscription(BOB, CAROL)]
    theirs = [subscription(MALLORY, ALICE), subscription(MALLORY, CAROL)]
    for sub in mine + theirs:
        assert store.create_subscription(sub) is not None
    census = store.census(BOB, ALICE)
    assert sorted(e.sub_id for e in census.entries) == sorted(s.sub_id for s in mine)
    assert census.presentity_count == 3
    assert store.census("nobody@example.com", "bob@example.com.au").presentity_count == 0


def test_every_delete_removes_the_index_entries_with_the_subscription(store: EtcdStore) -> None:
    conditional, unconditional = subscription(), subscription()
    revision = store.create_subscription(conditional)
    store.create_subscription(unconditional)
    assert revision is not None
    newer = store.update_subscription(replace(conditional, cseq=1), revision)
    assert store.delete_subscription(conditional, revision) is False, "stale revision: nothing deleted"
    assert_index_consistent(store)
    assert store.delete_subscription(conditional, newer) is True
    assert store.delete_subscription(unconditional) is True
    assert stored(store) == {}


def test_a_replacement_creates_and_removes_in_one_revision(store: EtcdStore) -> None:
    old = subscription()
    store.create_subscription(old)
    new = subscription(watcher_contact=old.watcher_contact)
    census = store.census(BOB, ALICE)
    revision = store.create_subscription(new, [WatcherEntry.of(old)], census)
    assert revision is not None
    assert stored(store) == {keys.sub(new.sub_id): revision} | {key: revision for key in index_keys(new)}


def test_a_create_counted_before_another_create_of_the_watcher_fails_and_counts_again(store: EtcdStore) -> None:
    census = store.census(BOB, ALICE)
    racer = subscription(BOB, CAROL)
    assert store.create_subscription(racer) is not None
    late = subscription(BOB, ALICE)
    assert store.create_subscription(late, (), census) is None
    assert store.get_subscription(late.sub_id) is None
    assert store.create_subscription(late, (), store.census(BOB, ALICE)) is not None


def test_a_delete_after_the_count_does_not_fail_the_create(store: EtcdStore) -> None:
    gone = subscription(BOB, CAROL)
    store.create_subscription(gone)
    census = store.census(BOB, ALICE)
    store.delete_subscription(gone)
    assert store.create_subscription(subscription(BOB, ALICE), (), census) is not None


def test_the_presentity_count_guards_only_when_asked(store: EtcdStore) -> None:
    census = store.census(BOB, ALICE)
    assert store.create_subscription(subscription(MALLORY, ALICE)) is not None
    assert store.create_subscription(subscription(BOB, ALICE), (), census, guard_presentity=True) is None
    assert store.create_subscription(subscription(BOB, ALICE), (), census, guard_presentity=False) is not None


def test_an_update_rewrites_the_watcher_entry_only_when_reindexing(store: EtcdStore) -> None:
    sub = subscription()
    revision = store.create_subscription(sub)
    assert revision is not None
    watcher_key = keys.watcher_sub(BOB, sub.sub_id)
    notified = store.update_subscription(replace(sub, cseq=1), revision)
    assert notified is not None and stored(store)[watcher_key] == revision
    moved = replace(sub, cseq=2, watcher_contact="sip:bob@192.0.2.1:5060", received="udp:192.0.2.1:5060")
    moved_revision = store.update_subscription(moved, notified, reindex=True)
    assert moved_revision is not None
    assert stored(store)[watcher_key] == moved_revision
    assert stored(store)[keys.presentity_sub(ALICE, sub.sub_id)] == revision
    assert store.census(BOB, ALICE).entries == [WatcherEntry.of(moved)]


def test_no_orphans_after_a_random_mix_of_creates_replacements_updates_and_deletes(store: EtcdStore) -> None:
    rng = random.Random(5)
    live: dict[str, tuple[Subscription, int]] = {}
    for _ in range(60):
        action = rng.choice(["create", "create", "replace", "update", "delete", "delete_stale"])
        if action == "create" or not live:
            sub = subscription(rng.choice([BOB, MALLORY]), rng.choice([ALICE, CAROL]))
            revision = store.create_subscription(sub, (), store.census(sub.watcher, sub.presentity))
            assert revision is not None
            live[sub.sub_id] = (sub, revision)
            continue
        sub, revision = live[rng.choice(sorted(live))]
        if action == "replace":
            new = subscription(sub.watcher, sub.presentity, watcher_contact=sub.watcher_contact)
            census = store.census(sub.watcher, sub.presentity)
            new_revision = store.create_subscription(new, [WatcherEntry.of(sub)], census)
            assert new_revision is not None
            del live[sub.sub_id]
            live[new.sub_id] = (new, new_revision)
        elif action == "update":
            moved = replace(sub, cseq=sub.cseq + 1, received=f"udp:127.0.0.2:{rng.randint(1024, 65535)}")
            updated = store.update_subscription(moved, revision, reindex=True)
            assert updated is not None
            live[sub.sub_id] = (moved, updated)
        elif action == "delete":
            assert store.delete_subscription(sub, revision)
            del live[sub.sub_id]
        else:
            assert not store.delete_subscription(sub, revision - 1)
    assert {s.sub_id for s in store.subscriptions()} == set(live)
    assert_index_consistent(store)
