"""Publications (RFC 3903) on a real etcd: one key each, no lease; a refresh or modify
replaces the old entity-tag in one transaction, so of two at once only one wins (the
other's PUBLISH is decided again and gets 412); the sweep deletes only what it saw."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from statestore import keys
from statestore.domain.errors import SipError
from statestore.domain.model import Account, Publication
from statestore.domain.publication import PublishRequest, check, decide
from statestore.etcd_store import EtcdStore

pytestmark = [pytest.mark.integration]

ALICE = "alice@example.com"
PIDF = (
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
    '<tuple id="t1"><status><basic>open</basic></status></tuple></presence>'
)


def publication(etag: str = "e1", expires_in: float = 60) -> Publication:
    """Alive for `expires_in` seconds from now (the module may be imported long before a
    test runs: a full run collects every test first)."""
    now = round(time.time(), 3)
    return Publication(ALICE, "presence", etag, now + expires_in, "application/pidf+xml", PIDF, now, "ks1", "dev")


def refresh_of(etag: str) -> PublishRequest:
    return PublishRequest("presence", "600", etag, "", b"")


def test_put_get_and_delete_a_publication_without_a_lease(store: EtcdStore) -> None:
    pub = publication()
    leases = store.lease_count()  # other tests' leases may still run out in this etcd
    assert store.put_publication(pub) is True
    found = store.get_publication(ALICE, "e1")
    assert found is not None and found[0] == pub
    [kv] = store.client.get_prefix(keys.pubs_of(ALICE))
    assert kv[1].lease_id == 0
    assert store.lease_count() <= leases
    assert store.delete_publication(ALICE, "e1", found[1]) is True
    assert store.get_publication(ALICE, "e1") is None
    assert store.delete_publication(ALICE, "e1") is False


def test_a_new_entity_tag_that_exists_is_never_overwritten(store: EtcdStore) -> None:
    assert store.put_publication(publication()) is True
    assert store.put_publication(replace(publication(), body="<other/>")) is False
    found = store.get_publication(ALICE, "e1")
    assert found is not None and found[0].body == PIDF


def test_a_refresh_replaces_the_old_key_in_one_revision(store: EtcdStore) -> None:
    store.put_publication(publication())
    old, revision = store.get_publication(ALICE, "e1") or (None, 0)
    verdict = decide(check(refresh_of("e1")), ALICE, old, time.time(), "e2")
    assert verdict.write is not None
    assert store.put_publication(verdict.write, ("e1", revision)) is True
    assert [kv.key for kv in store.range(keys.pubs_of(ALICE))] == [keys.pub(ALICE, "e2")]


def test_two_refreshes_of_one_publication_at_once_one_wins_the_other_gets_412(store: EtcdStore) -> None:
    """Two instances read the same publication and refresh it at the same moment: the
    compare on the old key's revision lets one through; the loser reads again, finds its
    entity-tag gone, and decide() answers 412 (the adapter's retry loop, played here)."""
    store.put_publication(publication())
    read = store.get_publication(ALICE, "e1")
    assert read is not None
    barrier = threading.Barrier(2)
    results: dict[str, bool] = {}

    def refresh(new_etag: str) -> None:
        verdict = decide(check(refresh_of("e1")), ALICE, read[0], time.time(), new_etag)
        assert verdict.write is not None
        barrier.wait()
        results[new_etag] = store.put_publication(verdict.write, ("e1", read[1]))

    threads = [threading.Thread(target=refresh, args=(tag,)) for tag in ("ks1tag", "ks2tag")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [False, True]
    winner = next(tag for tag, won in results.items() if won)
    assert [kv.key for kv in store.range(keys.pubs_of(ALICE))] == [keys.pub(ALICE, winner)]
    # The loser decides again on a fresh read: its entity-tag names nothing now.
    again = store.get_publication(ALICE, "e1")
    with pytest.raises(SipError) as caught:
        decide(check(refresh_of("e1")), ALICE, again[0] if again else None, time.time(), "ks2tag2")
    assert caught.value.status == 412


def test_a_guarded_delete_loses_to_a_change(store: EtcdStore) -> None:
    store.put_publication(publication())
    _, revision = store.get_publication(ALICE, "e1") or (None, 0)
    store.client.put(keys.pub(ALICE, "e1"), b'{"changed":1}')
    assert store.delete_publication(ALICE, "e1", revision) is False
    assert store.range(keys.pubs_of(ALICE)) != []


def test_the_sweep_deletes_only_the_value_it_saw(store: EtcdStore) -> None:
    seen = publication(expires_in=-1)
    store.put_publication(seen)
    assert store.delete_publication(ALICE, "e1", expected=replace(seen, expires_at=seen.expires_at + 61)) is False
    assert store.delete_publication(ALICE, "e1", expected=seen) is True
    assert store.range(keys.pubs_of(ALICE)) == []


def test_remove_account_removes_its_publications(store: EtcdStore) -> None:
    store.add_account(Account("alice", "example.com", "0" * 32))
    store.put_publication(publication())
    store.put_publication(publication("e2"))
    assert store.remove_account(ALICE) is True
    assert store.range(keys.pubs_of(ALICE)) == []
