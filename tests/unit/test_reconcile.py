"""Reconciling the leg writer's book and the legs on the instance lease with the dialogs
an instance really holds."""

from __future__ import annotations

from statestore.domain.legbook import LegBook
from statestore.domain.legs import CallParties, LegChange
from statestore.domain.model import LegState
from statestore.domain.reconcile import LiveDialog, reconcile

GRACE = 5.0
NOW = 1_000.0


def parties(call_id: str) -> CallParties:
    return CallParties(call_id, f"ft-{call_id}", "alice@example.com", "boris@example.com", "Alice", "", "sip:a@h")


def stored_book(*calls: tuple[str, LegState], at: float = NOW - 60) -> LegBook:
    book = LegBook("ks1", 0.05)
    for call_id, state in calls:
        book.take(parties(call_id), LegChange(state, "tt"), at)
    for write in book.due(at + 1):
        book.written(write)
    return book


def ids(book: LegBook, call_id: str) -> set[str]:
    return {leg.leg_id for leg in book.calls[parties(call_id).key].legs}


def test_a_stored_call_without_a_live_dialog_ends() -> None:
    book = stored_book(("gone", LegState.CONFIRMED))
    assert reconcile(book, [], ids(book, "gone"), NOW, GRACE) == []
    (write,) = book.due(NOW)
    assert write.ended and not write.create


def test_young_calls_are_left_alone() -> None:
    book = stored_book(("new", LegState.EARLY), at=NOW - 1)
    reconcile(book, [], ids(book, "new"), NOW, GRACE)
    assert book.due(NOW) == []


def test_a_live_call_missing_from_the_store_is_written_back_in_its_state() -> None:
    book = LegBook("ks1", 0.05)
    live = LiveDialog(parties("up"), LegState.CONFIRMED, to_tag="tt", callee_target="sip:b@h")
    assert reconcile(book, [live], [], NOW, GRACE) == []
    (write,) = book.due(NOW)
    outgoing, incoming = write.legs
    assert write.create and outgoing.state is incoming.state is LegState.CONFIRMED
    assert incoming.local_tag == "tt" and outgoing.remote.target == "sip:b@h"


def test_a_live_call_whose_legs_left_the_lease_is_created_again() -> None:
    book = stored_book(("up", LegState.CONFIRMED))
    reconcile(book, [LiveDialog(parties("up"), LegState.CONFIRMED, "tt")], [], NOW, GRACE)
    (write,) = book.due(NOW)
    assert write.create and write.legs[0].state is LegState.CONFIRMED


def test_a_live_call_already_stored_needs_nothing() -> None:
    book = stored_book(("up", LegState.EARLY))
    reconcile(book, [LiveDialog(parties("up"), LegState.EARLY, "tt")], ids(book, "up"), NOW, GRACE)
    assert book.due(NOW) == []


def test_the_dialog_moves_a_call_forward_whose_change_was_lost() -> None:
    book = stored_book(("up", LegState.EARLY))
    reconcile(book, [LiveDialog(parties("up"), LegState.CONFIRMED, "tt")], ids(book, "up"), NOW, GRACE)
    (write,) = book.due(NOW)
    assert write.legs[0].state is LegState.CONFIRMED and not write.create


def test_a_dialog_in_deleted_state_is_not_written_back() -> None:
    book = LegBook("ks1", 0.05)
    assert reconcile(book, [LiveDialog(parties("ending"), LegState.TERMINATED)], [], NOW, GRACE) == []
    assert book.due(NOW) == []


def test_stored_legs_no_call_of_the_book_knows_are_returned_for_deletion() -> None:
    book = stored_book(("up", LegState.CONFIRMED))
    live = [LiveDialog(parties("up"), LegState.CONFIRMED, "tt")]
    assert reconcile(book, live, [*ids(book, "up"), "0123456789abcdef"], NOW, GRACE) == ["0123456789abcdef"]
