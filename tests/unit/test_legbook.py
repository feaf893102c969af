"""The leg writer's book: changes of a call folded with the transition table, coalesced
into at most three writes per answered call, never undone by a late reply."""

from __future__ import annotations

from statestore.domain.legbook import ENDED_MEMORY_SECONDS, LegBook, LegWrite
from statestore.domain.legs import CallParties, LegChange, ending_of_bye, ending_of_failure
from statestore.domain.model import LegState, TerminationEvent

HOLD = 0.05
PARTIES = CallParties("call-1", "ft", "alice@example.com", "boris@example.com", "Alice", "", "sip:a@h")
INVITE = LegChange(LegState.TRYING)
RINGING = LegChange(LegState.EARLY, "tt", "sip:b@h")
ANSWERED = LegChange(LegState.CONFIRMED, "tt", "sip:b@h")
BYE = LegChange(LegState.TERMINATED, ending=ending_of_bye(sent_by_caller=True))


def flush(book: LegBook, now: float) -> list[LegWrite]:
    """What a writer does each tick: write what is due, and the store takes it."""
    writes = book.due(now)
    for write in writes:
        book.written(write)
    return writes


def states(writes: list[LegWrite]) -> list[tuple[LegState, bool]]:
    return [(write.legs[0].state, write.create) for write in writes]


def test_an_answered_call_is_three_writes_when_the_180_follows_the_invite_closely() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, INVITE, 0.0)
    assert flush(book, 0.01) == [], "a new call is held for its first 18x"
    book.take(PARTIES, RINGING, 0.02)
    writes = flush(book, 0.02)
    book.take(PARTIES, ANSWERED, 1.0)
    writes += flush(book, 1.0)
    book.take(PARTIES, BYE, 2.0)
    writes += flush(book, 2.0)
    assert states(writes) == [(LegState.EARLY, True), (LegState.CONFIRMED, False), (LegState.TERMINATED, False)]
    assert flush(book, 3.0) == []


def test_a_call_without_a_quick_18x_is_written_when_its_hold_ends() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, INVITE, 0.0)
    assert book.next_due() == HOLD
    assert states(flush(book, HOLD)) == [(LegState.TRYING, True)]
    assert book.next_due() is None


def test_a_call_rejected_at_once_is_one_write_of_its_end() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, INVITE, 0.0)
    book.take(PARTIES, LegChange(LegState.TERMINATED, ending=ending_of_failure(486, False, False)), 0.01)
    (write,) = flush(book, 0.01)
    assert write.create and write.ended
    assert [(leg.event, leg.code) for leg in write.legs] == [(TerminationEvent.REJECTED, 486)] * 2


def test_a_late_180_after_the_200_or_after_the_end_writes_nothing() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, INVITE, 0.0)
    book.take(PARTIES, ANSWERED, 0.01)
    flush(book, 0.01)
    assert book.take(PARTIES, RINGING, 0.02) is False
    assert flush(book, 0.02) == []
    book.take(PARTIES, BYE, 1.0)
    flush(book, 1.0)
    book.forget_ended(1.0 + ENDED_MEMORY_SECONDS / 2)
    assert book.take(PARTIES, RINGING, 1.0 + ENDED_MEMORY_SECONDS / 2) is False
    assert flush(book, 2.0) == []


def test_changes_reaching_the_writer_out_of_order_settle_forward() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, ANSWERED, 0.0)  # the 200's worker was quicker than the INVITE's
    book.take(PARTIES, INVITE, 0.0)
    book.take(PARTIES, RINGING, 0.0)
    assert states(flush(book, 0.0)) == [(LegState.CONFIRMED, True)]


def test_a_lost_lease_writes_every_live_call_again_and_no_ended_one() -> None:
    book = LegBook("ks1", HOLD)
    other = CallParties("call-2", "ft2", "carol@example.com", "boris@example.com", "", "", "")
    book.take(PARTIES, ANSWERED, 0.0)
    book.take(other, ANSWERED, 0.0)
    book.take(other, BYE, 0.0)
    flush(book, 0.0)
    book.lease_lost()
    assert [(write.call, write.create) for write in flush(book, 1.0)] == [(PARTIES.key, True)]


def test_a_write_the_store_found_missing_is_created_next() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, ANSWERED, 0.0)
    flush(book, 0.0)
    book.take(PARTIES, BYE, 1.0)
    (write,) = book.due(1.0)
    book.missing(write)
    assert states(book.due(1.0)) == [(LegState.TERMINATED, True)]


def test_ended_calls_are_forgotten_only_once_written_and_old() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, ANSWERED, 0.0)
    book.take(PARTIES, BYE, 0.0)
    book.forget_ended(ENDED_MEMORY_SECONDS + 1)
    assert PARTIES.key in book.calls, "not written yet"
    flush(book, ENDED_MEMORY_SECONDS + 1)
    book.forget_ended(ENDED_MEMORY_SECONDS - 1)
    assert PARTIES.key in book.calls, "ended too recently"
    book.forget_ended(ENDED_MEMORY_SECONDS + 1)
    assert book.calls == {}


def test_only_calls_with_something_to_write_are_pending() -> None:
    book = LegBook("ks1", HOLD)
    book.take(PARTIES, ANSWERED, 0.0)
    assert book.pending == {PARTIES.key}
    flush(book, 0.0)
    assert book.pending == set()
    assert book.take(PARTIES, RINGING, 0.1) is False
    assert book.pending == set(), "a refused change leaves nothing to write"
    book.lease_lost()
    assert book.pending == {PARTIES.key}
