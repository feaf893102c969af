"""The StateStore contract, one check per record kind, run against every implementation:
the in-memory store in tests/unit/test_store_contract.py, a real etcd in
tests/integration/test_store_contract.py. Each check starts from an empty store."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from statestore import keys
from statestore.domain.authorization import Authorization, Decision, Policy
from statestore.domain.directory import NameTaken
from statestore.domain.legbook import WriteOutcome
from statestore.domain.legs import CallParties, advance, initial_legs
from statestore.domain.model import Account, Binding, Leg, LegState, Publication, WatcherEntry
from statestore.domain.policy import DomainRules
from statestore.domain.profiles import UaRule
from statestore.domain.subscription import REASON_NORESOURCE
from statestore.store import StateStore, WatchEvent
from tests.factories import subscription

ALICE, BOB = "alice@example.com", "bob@example.com"
DOMAIN = "example.com"


def account(user: str) -> Account:
    return Account(user, DOMAIN, "0" * 32, "1" * 64)


def call(caller: str = ALICE, callee: str = BOB) -> tuple[Leg, Leg]:
    parties = CallParties(
        call_id=f"{uuid.uuid4().hex}@contract", from_tag="ftag", caller=caller, callee=callee,
        caller_display="", callee_display="", caller_target=f"sip:{caller}",
    )
    return initial_legs(parties, "ks1", version=1)


def binding(aor: str = BOB, contact: str = "sip:bob@192.0.2.2") -> Binding:
    return Binding(account=aor, contact=contact, expires_at=time.time() + 60, call_id="c@contract", cseq=1,
                   instance="ks1")


def publication(etag: str, aor: str = ALICE) -> Publication:
    return Publication(aor, "presence", etag, time.time() + 60, "application/pidf+xml", "<presence/>",
                       time.time(), "ks1")


def directory(store: StateStore) -> None:
    store.add_domain(DOMAIN)
    assert store.domain_exists(DOMAIN) and store.domains() == [DOMAIN]
    assert store.set_domain_rules(DomainRules(DOMAIN, may_call=frozenset({"beta.example"})))
    store.add_domain(DOMAIN)  # an existing domain keeps its rules
    rules = store.domain_rules(DOMAIN)
    assert rules is not None and "beta.example" in rules.may_call
    assert not store.set_domain_rules(DomainRules("nowhere.example"))
    store.add_account(account("alice"), ["101"])
    assert store.get_account(ALICE) == account("alice")
    assert store.resolve_alias(DOMAIN, "101") == ALICE
    with pytest.raises(NameTaken):
        store.add_account(account("bob"), ["101"])
    assert store.get_account(BOB) is None, "all or nothing"
    store.add_aliases(ALICE, ["102"])
    assert store.remove_alias(DOMAIN, "101") == ALICE and store.resolve_alias(DOMAIN, "101") is None
    assert store.remove_alias(DOMAIN, "101") is None


def account_removal(store: StateStore) -> None:
    store.add_domain(DOMAIN)
    store.add_account(account("alice"), ["101"])
    store.add_account(account("bob"))
    lease = store.grant_lease(60)
    assert store.write_legs(call(ALICE, BOB), lease, create=True) is WriteOutcome.WRITTEN
    assert store.apply_bindings([("b1", binding(ALICE), 60)], [], ALICE)
    assert store.put_publication(publication("e1"))
    assert store.set_profile(ALICE, ["single-dialog"])
    assert store.update_authorization(ALICE, lambda a: replace(a, policy=Policy.ASK)) is not None
    watching, watched = subscription(ALICE, BOB), subscription(BOB, ALICE)
    assert store.create_subscription(watching) and store.create_subscription(watched)
    assert store.remove_account(ALICE, now=1000.0)
    assert (store.get_account(ALICE), store.resolve_alias(DOMAIN, "101")) == (None, None)
    assert (store.legs_of(ALICE), store.bindings_of(ALICE), store.publications_of(ALICE)) == ([], [], [])
    assert (store.profile_of(ALICE), store.authorization(ALICE)) == (None, Authorization())
    assert store.get_subscription(watching.sub_id) is None and store.subscriptions_to(BOB) == []
    ended = store.get_subscription(watched.sub_id)
    assert ended is not None and (ended[0].termination_reason, ended[0].expires_at) == (REASON_NORESOURCE, 1000.0)
    assert store.legs_of(BOB), "the other party's leg stays"
    assert not store.remove_account(ALICE)


def leases(store: StateStore) -> None:
    lease = store.grant_lease(60)
    store.announce_instance("ks1", {"sip": "192.0.2.1:5060"}, lease)
    assert store.instances() == {"ks1": {"sip": "192.0.2.1:5060"}}
    assert store.refresh_lease(lease)
    store.revoke_lease(lease)
    assert store.instances() == {} and not store.refresh_lease(lease)


def legs(store: StateStore) -> None:
    lease = store.grant_lease(60)
    first, other = call(), call(BOB, ALICE)
    assert store.write_legs(first, lease, create=True) is WriteOutcome.WRITTEN
    assert store.write_legs(first, lease, create=True) is WriteOutcome.EXISTS
    assert store.write_legs(other, lease, create=True) is WriteOutcome.WRITTEN
    later = advance(first, LegState.EARLY, 2, to_tag="tt", callee_target="sip:bob@192.0.2.2")
    assert store.write_calls([(later, lease, False), (other, lease, False)]) == [
        WriteOutcome.WRITTEN, WriteOutcome.STALE]  # `other` again: the store has it already
    assert store.write_legs(call(), lease, create=False) is WriteOutcome.MISSING
    assert sorted(leg.state for leg in store.legs_of(BOB)) == sorted([LegState.EARLY, LegState.TRYING])
    on = store.legs_on(lease)
    assert set(on) == {leg.leg_id for leg in (*later, *other)}
    store.delete_legs(list(on.values()))
    assert store.legs_of(ALICE) == store.legs_of(BOB) == []


def bindings(store: StateStore) -> None:
    read = store.read_bindings(BOB)
    assert read.bindings == []
    assert store.apply_bindings([("b1", binding(), 60)], [], BOB, read)
    assert not store.apply_bindings([("b2", binding(contact="sip:bob@192.0.2.3"), 60)], [], BOB, read), "stale read"
    again = store.read_bindings(BOB)
    assert [b.contact for b in again.bindings] == ["sip:bob@192.0.2.2"] and set(again.leases) == {"b1"}
    assert store.apply_bindings([], ["b1"], BOB, again)
    assert store.bindings_of(BOB) == []


def subscriptions(store: StateStore) -> None:
    store.add_domain(DOMAIN)
    store.add_account(account("alice"))
    store.add_account(account("bob"))
    counted = store.census(ALICE, BOB)
    assert (counted.entries, counted.presentity_count) == ([], 0)
    first = subscription(ALICE, BOB)
    revision = store.create_subscription(first, counted=counted, guard_presentity=True)
    assert revision
    assert store.create_subscription(subscription(ALICE, BOB), counted=counted) is None, "counted before the first"
    census = store.census(ALICE, BOB)
    assert (census.entries, census.presentity_count) == ([WatcherEntry.of(first)], 1)
    assert store.get_subscription(first.sub_id) == (first, revision)
    refreshed = replace(first, cseq=2)
    assert store.update_subscription(refreshed, revision + 1000) is None
    updated = store.update_subscription(refreshed, revision, reindex=True)
    assert updated and store.subscriptions_to(BOB) == [refreshed]
    second = subscription(ALICE, BOB)
    assert store.create_subscription(second, replaced=[WatcherEntry.of(refreshed)])
    assert store.subscriptions_to(BOB) == [second]
    read = store.initial_subscribe_read(ALICE, BOB, ["regs", "pubs"])
    assert (read.watcher_account, read.presentity_account) == (account("alice"), account("bob"))
    assert read.census.presentity_count == 1 and (read.legs, read.bindings, read.publications) == ([], [], [])
    assert not store.delete_subscription(second, mod_revision=1)
    assert store.delete_subscription(second)
    assert store.census(ALICE, BOB).presentity_count == 0
    epoch = store.next_epoch()
    assert store.next_epoch() == epoch + 1


def publications(store: StateStore) -> None:
    first = publication("e1")
    assert store.put_publication(first) and not store.put_publication(first)
    found = store.get_publication(ALICE, "e1")
    assert found is not None and found[0] == first
    second = publication("e2")
    assert not store.put_publication(second, replaces=("e1", found[1] + 1000))
    assert store.put_publication(second, replaces=("e1", found[1]))
    assert [pub.etag for pub, _ in store.publications_of(ALICE)] == ["e2"]
    assert not store.delete_publication(ALICE, "e2", expected=first)
    assert store.delete_publication(ALICE, "e2", expected=second)
    assert store.get_publication(ALICE, "e2") is None


def presence_admin(store: StateStore) -> None:
    assert store.authorization(ALICE) == Authorization()
    assert store.update_authorization(ALICE, lambda a: a) is None, "no such account"
    assert not store.set_profile(ALICE, ["single-dialog"])
    store.add_domain(DOMAIN)
    store.add_account(account("alice"))
    block = Authorization(Policy.ALLOW, {BOB: Decision.BLOCKED})
    assert store.update_authorization(ALICE, lambda a: block) == block and store.authorization(ALICE) == block
    assert store.set_profile(ALICE, ["single-dialog"]) and store.profile_of(ALICE) == ("single-dialog",)
    assert store.set_profile(ALICE, None) and store.profile_of(ALICE) is None
    rule: UaRule = ("Polycom", ("single-dialog",))
    assert store.update_ua_profile_rules(lambda rules: [*rules, rule]) == [rule] == store.ua_profile_rules()


def watching(store: StateStore) -> None:
    seen: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
    revision, items = store.snapshot([keys.LEGS, keys.SUBS])
    assert items == []
    store.watch_prefixes(revision + 1, seen.put, [keys.LEGS])
    lease = store.grant_lease(60)
    legs = call()
    store.write_legs(legs, lease, create=True)
    store.create_subscription(subscription(ALICE, BOB))  # not under the prefix watched
    events: list[WatchEvent] = []
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        batch = seen.get(timeout=max(deadline - time.monotonic(), 0.01))
        assert not isinstance(batch, Exception)
        events += batch
    assert sorted(event.key for event in events) == sorted(keys.leg(leg.account, "ks1", leg.leg_id) for leg in legs)
    later, items = store.snapshot(keys.LEGS)
    assert later > revision and len(items) == 2
    assert {event.revision for event in events} == {item.mod_revision for item in items}


def inspection(store: StateStore) -> None:
    """blfctl's reads: a page of a prefix after a key, an instance's lease, a reset request."""
    lease = store.grant_lease(60)
    for contact in ("sip:bob@192.0.2.2", "sip:bob@192.0.2.3", "sip:bob@192.0.2.4"):
        assert store.apply_bindings([(contact[-1], binding(contact=contact), 60)], [], BOB)
    first, more = store.page(keys.regs_of(BOB), "", 2)
    assert [item.key for item in first] == [keys.reg(BOB, "2"), keys.reg(BOB, "3")] and more
    rest, more = store.page(keys.regs_of(BOB), first[-1].key, 2)
    assert [item.key for item in rest] == [keys.reg(BOB, "4")] and not more
    assert store.page(keys.regs_of(ALICE)) == ([], False)
    assert store.instance_lease("ks1") is None
    store.announce_instance("ks1", {"sip": "192.0.2.1:5060"}, lease)
    found = store.instance_lease("ks1")
    assert found is not None and (found.lease_id, found.granted_ttl) == (lease, 60) and 55 <= found.remaining <= 60
    store.revoke_lease(lease)
    assert store.instance_lease("ks1") is None
    events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
    revision, _ = store.snapshot(keys.RESET)
    store.watch_prefixes(revision + 1, events.put, [keys.RESET])
    store.request_reset(ALICE, 5)
    seen = events.get(timeout=5)
    assert not isinstance(seen, Exception) and [event.key for event in seen] == [keys.reset(ALICE)]


def health(store: StateStore) -> None:
    assert store.alarms() == []


CHECKS: list[Callable[[StateStore], None]] = [
    directory, account_removal, leases, legs, bindings, subscriptions, publications, presence_admin, watching,
    inspection, health,
]
