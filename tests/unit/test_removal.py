"""What removing an account takes with it (statestore/domain/removal.py), from the record
kinds' declarations (statestore/records.py): no store, the clock passed in."""

from __future__ import annotations

from dataclasses import replace

from statestore import records
from statestore.domain.model import WatcherEntry
from statestore.domain.removal import AccountRemoved, plan_removal
from statestore.domain.subscription import REASON_NORESOURCE
from tests.factories import subscription

ALICE, BOB = "alice@example.com", "bob@example.com"
NOW = 1_700_000_000.0


def test_every_kind_but_subscriptions_is_deleted_with_the_account() -> None:
    plan = plan_removal(["101", "alice.smith"], [], [], records.ACCOUNT_REMOVAL, NOW)
    assert plan.aliases == ("101", "alice.smith")
    assert set(plan.deleted_kinds) == {"legs", "regs", "pubs", "authz", "profiles", "reset"}
    assert (plan.watching, plan.ended, plan.dangling) == ((), (), ())


def test_subscriptions_it_watches_are_deleted_and_those_to_it_end_with_noresource() -> None:
    mine = subscription(watcher=ALICE, presentity=BOB)
    theirs = subscription(watcher=BOB, presentity=ALICE, expires_at=NOW + 3600)
    plan = plan_removal([], [WatcherEntry.of(mine)], [(theirs.sub_id, (theirs, 42))], records.ACCOUNT_REMOVAL, NOW)
    assert plan.watching == (WatcherEntry.of(mine),)
    ((ended, revision),) = plan.ended
    assert revision == 42, "rewritten only if unchanged since read"
    assert (ended.sub_id, ended.termination_reason, ended.expires_at) == (theirs.sub_id, REASON_NORESOURCE, NOW)


def test_a_subscription_to_itself_is_deleted_not_ended() -> None:
    own = subscription(watcher=ALICE, presentity=ALICE)
    plan = plan_removal([], [WatcherEntry.of(own)], [(own.sub_id, (own, 7))], records.ACCOUNT_REMOVAL, NOW)
    assert (plan.watching, plan.ended) == ((WatcherEntry.of(own),), ())


def test_an_index_entry_without_its_record_is_deleted_and_one_already_ended_left_to_its_notifier() -> None:
    over = replace(subscription(watcher=BOB, presentity=ALICE), termination_reason=REASON_NORESOURCE)
    plan = plan_removal([], [], [("gone", None), (over.sub_id, (over, 3))], records.ACCOUNT_REMOVAL, NOW)
    assert (plan.dangling, plan.ended) == (("gone",), ())


def test_the_declarations_decide_a_kind_declared_kept_is_not_touched() -> None:
    kinds = {"legs": AccountRemoved.DELETED}
    sub = subscription(watcher=BOB, presentity=ALICE)
    plan = plan_removal([], [], [(sub.sub_id, (sub, 1))], kinds, NOW)
    assert (plan.deleted_kinds, plan.ended) == (("legs",), ())
