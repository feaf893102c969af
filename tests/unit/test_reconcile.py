"""Reconciling stored legs with the dialogs an instance really holds."""

from __future__ import annotations

from statestore.domain.legs import CallParties, initial_legs
from statestore.domain.model import LegState
from statestore.domain.reconcile import LiveDialog, reconcile

SECOND = 1_000_000_000
NOW = 1_000 * SECOND


def parties(call_id: str) -> CallParties:
    return CallParties(call_id, f"ft-{call_id}", "alice@example.com", "boris@example.com", "Alice", "", "sip:a@h")


def test_stored_legs_of_an_ended_call_are_terminated():
    stale = initial_legs(parties("gone"), "ks1", NOW - 60 * SECOND)
    repair = reconcile([], list(stale), "ks1", NOW, 5 * SECOND)
    assert repair.create == ()
    assert sorted(leg.leg_id for leg in repair.terminate) == sorted(leg.leg_id for leg in stale)
    assert all(leg.state is LegState.TERMINATED and leg.version == NOW for leg in repair.terminate)


def test_young_legs_and_other_instances_legs_are_left_alone():
    young = initial_legs(parties("new"), "ks1", NOW - SECOND)
    theirs = initial_legs(parties("theirs"), "ks2", NOW - 60 * SECOND)
    repair = reconcile([], [*young, *theirs], "ks1", NOW, 5 * SECOND)
    assert repair == type(repair)((), ())


def test_live_call_missing_from_the_store_is_written_back_in_its_state():
    live = LiveDialog(parties("up"), LegState.CONFIRMED, to_tag="tt", callee_target="sip:b@h")
    repair = reconcile([live], [], "ks1", NOW, 5 * SECOND)
    assert len(repair.create) == 1 and repair.terminate == ()
    outgoing, incoming = repair.create[0]
    assert outgoing.state is incoming.state is LegState.CONFIRMED
    assert incoming.local_tag == "tt" and outgoing.remote.target == "sip:b@h"


def test_live_call_already_stored_needs_nothing():
    live = LiveDialog(parties("up"), LegState.EARLY, to_tag="tt")
    stored = initial_legs(parties("up"), "ks1", NOW - 60 * SECOND)
    repair = reconcile([live], list(stored), "ks1", NOW, 5 * SECOND)
    assert repair.create == () and repair.terminate == ()


def test_dialog_in_deleted_state_is_not_written_back():
    live = LiveDialog(parties("ending"), LegState.TERMINATED)
    assert reconcile([live], [], "ks1", NOW, 5 * SECOND).create == ()
