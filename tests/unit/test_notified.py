"""The last NOTIFY an instance keeps per subscription (statestore.domain.notified) and the
GET /blf/notified contract both sides speak (statestore.notified)."""

from __future__ import annotations

import json

import pytest

from statestore.domain.notified import (
    PENDING,
    TIMEOUT,
    UNSENT,
    LastNotify,
    NotifyRecord,
    local_answer,
    reply_answer,
    sent,
)
from statestore.notified import MAX_IDS, NotifiedQueryError, answer_body, parse_query, query_path, read_answer

NOW = 1_765_000_000.25
ID = "0123456789abcdef01234567"


def test_a_sent_notify_is_kept_until_a_minute_after_its_subscription_expires() -> None:
    record = sent(7, 65543, NOW, NOW + 300)
    assert record == NotifyRecord(7, 65543, 1_765_000_000_250, int(NOW) + 360, PENDING)
    assert record.keep_seconds(NOW) == 360
    assert record.keep_seconds(NOW + 1000) == 1  # never 0: that is the table's default


@pytest.mark.parametrize("answer", [PENDING, UNSENT, TIMEOUT, "200", "481", "699"])
def test_records_round_trip_at_one_width_whatever_their_answer(answer: str) -> None:
    # One width: Kamailio 5.6's htable loses the expiry of a value replaced by a longer one.
    record = NotifyRecord(2**31 - 1, 2**31 - 1, 1_765_000_000_250, 1_765_000_360, answer)
    assert NotifyRecord.decode(record.encode()) == record
    assert len(record.encode()) == len(sent(0, 1, NOW, NOW).encode())


@pytest.mark.parametrize("value", [
    None, 5, "", "garbage", "1 2 3 4", "1 2 3 4 5 6", "1 2 x 4 pending", "1 2 3 4 maybe", "1 2 3 4 099", "1 2 3 4 2000",
])
def test_anything_else_in_the_table_is_no_record(value: object) -> None:
    assert NotifyRecord.decode(value) is None


@pytest.mark.parametrize(("cseq", "answer", "expected"), [
    (65543, "200", "200"),
    (65543, TIMEOUT, TIMEOUT),
    (65542, "200", None),  # the answer to an earlier NOTIFY: this one's is still to come
    (65543, "180", None),
    (65543, "bogus", None),
])
def test_an_answer_completes_only_the_notify_it_answers(cseq: int, answer: str, expected: str | None) -> None:
    record = sent(7, 65543, NOW, NOW + 300)
    answered = record.answered(cseq, answer)
    assert (answered.answer if answered else None) == expected


@pytest.mark.parametrize(("status", "reply", "local"), [
    (100, None, "100"), (180, None, "180"), (200, "200", "200"), (202, "202", "202"), (408, "408", TIMEOUT),
    (481, "481", "481"), (0, None, TIMEOUT), (700, None, "700"),
])
def test_which_responses_are_answers(status: int, reply: str | None, local: str) -> None:
    assert reply_answer(status) == reply
    assert local_answer(status) == local


@pytest.mark.parametrize(("answer", "text"), [
    (200, "answered 200"), (481, "answered 481"), (None, "no answer yet"), (TIMEOUT, "no answer (timed out)"),
    (UNSENT, "not sent (tm refused it; sent again later)"),
])
def test_the_answer_as_why_says_it(answer: int | str | None, text: str) -> None:
    assert LastNotify(1, 2, NOW, "ks1", answer).answer_text() == text


@pytest.mark.parametrize(("url", "ids"), [
    (f"/blf/notified?ids={ID}", [ID]),
    (f"/blf/notified?ids={ID},abc,{ID}", [ID, "abc"]),
    (f"/blf/notified?ids={ID}%2Cabc", [ID, "abc"]),
    (f"/blf/notified?ids={ID}&ids=def&x=1", [ID, "def"]),
    ("/blf/notified?ids=" + ",".join(f"{n:x}" for n in range(MAX_IDS)), [f"{n:x}" for n in range(MAX_IDS)]),
])
def test_the_query_names_the_subscriptions(url: str, ids: list[str]) -> None:
    assert parse_query(url) == ids


@pytest.mark.parametrize(("url", "why"), [
    ("/blf/notified", "no subscription id"),
    ("/blf/notified?ids=", "no subscription id"),
    ("/blf/notified?ids=,,", "no subscription id"),
    ("/blf/notified?ids=" + ",".join(f"{n:x}" for n in range(MAX_IDS + 1)), "at most 100"),
    ("/blf/notified?ids=ABC", "not a subscription id"),
    ("/blf/notified?ids=abc,x%27y", "not a subscription id"),
    ("/blf/notified?ids=" + "a" * 65, "not a subscription id"),
])
def test_a_bad_query_is_refused(url: str, why: str) -> None:
    with pytest.raises(NotifiedQueryError, match=why):
        parse_query(url)


def test_what_the_instance_answers_is_what_why_reads() -> None:
    record = NotifyRecord(7, 65543, 1_765_000_000_250, 1_765_000_360, "200")
    body = answer_body("ks2", {ID: record, "abc": None})
    assert json.loads(body) == {"instance": "ks2", "notified": {
        ID: {"version": 7, "cseq": 65543, "sent_at": 1_765_000_000.25, "answer": 200}, "abc": None}}
    assert read_answer(body, "ks2") == {ID: LastNotify(7, 65543, 1_765_000_000.25, "ks2", 200), "abc": None}
    pending = answer_body("ks2", {ID: NotifyRecord(7, 65543, 1, 2, PENDING)})
    assert read_answer(pending, "ks2")[ID] == LastNotify(7, 65543, 0.001, "ks2", None)


@pytest.mark.parametrize(("text", "error"), [
    ("[]", TypeError), ('{"instance": "ks1"}', TypeError), ("not json", ValueError),
    ('{"notified": {"a": {"version": 1}}}', KeyError),
    ('{"notified": {"a": {"version": 1, "cseq": 2, "sent_at": 3, "answer": [1]}}}', TypeError),
])
def test_what_is_not_an_answer_is_refused(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_answer(text, "ks1")


def test_the_query_why_sends_is_one_the_instance_parses() -> None:
    assert parse_query(query_path([ID, "abc"])) == [ID, "abc"]
    with pytest.raises(ValueError, match="1 to 100"):
        query_path([])
    with pytest.raises(ValueError, match="1 to 100"):
        query_path(["a"] * (MAX_IDS + 1))
