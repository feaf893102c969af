"""The Kamailio side of the last NOTIFYs (kemi/blf_notified.py) with the fake KSR: what the
notifier records as it sends, what a watcher's answer and tm's timeout add, and what the
metrics socket answers."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from statestore import codec, keys
from statestore.domain.notified import NotifyRecord
from statestore.domain.subscription import subscription_id
from tests.fakeksr import FakeKSR, back_htables
from tests.unit import test_notifier
from tests.unit.test_notifier import LEG, SUB, cseqs, lab
from tests.unit.test_notifier import clock as clock  # noqa: PLC0414 - fixtures, by name
from tests.unit.test_notifier import ksr as ksr  # noqa: PLC0414

# Its id as Kamailio computes it from a NOTIFY's answer: Call-ID, To tag (the watcher's), From tag (ours).
SUB_ID = subscription_id(SUB.call_id, SUB.remote_tag, SUB.local_tag)


def answer(ksr: FakeKSR, status: int, cseq: int) -> None:
    """A response to our NOTIFY, as the onreply route sees it."""
    import blf_notified

    ksr.pvs.update({"$rs": str(status), "$cs": str(cseq), "$ci": SUB.call_id, "$tt": SUB.remote_tag,
                    "$ft": SUB.local_tag})
    blf_notified.on_reply()


@pytest.fixture
def metrics_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    import blf_metrics

    monkeypatch.setenv("BLF_METRICS_PORT", "9471")
    monkeypatch.setattr(blf_metrics, "_access", None)


def notifier_that_sent_once(ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], int, Any, Any]:
    """A notifier that sent the first NOTIFY of SUB, stored under the id Kamailio computes."""
    monkeypatch.setattr(test_notifier, "SUB", replace(SUB, sub_id=SUB_ID))
    table = back_htables(ksr)
    notifier, store = lab(ksr)
    notifier.tick()
    return table, cseqs(ksr)[-1], notifier, store


def test_the_notifier_records_each_notify_it_sends_and_its_answer(
    ksr: FakeKSR, clock: list[float], monkeypatch: pytest.MonkeyPatch,
) -> None:
    table, cseq, notifier, store = notifier_that_sent_once(ksr, monkeypatch)
    record = NotifyRecord.decode(table[SUB_ID])
    assert record is not None
    assert (record.cseq, record.answer) == (cseq, "pending")
    assert record.sent_ms == int((1_700_000_000.0 + clock[0]) * 1000)
    answer(ksr, 180, cseq)
    assert NotifyRecord.decode(table[SUB_ID]).answer == "pending"  # type: ignore[union-attr]
    answer(ksr, 200, cseq)
    assert NotifyRecord.decode(table[SUB_ID]).answer == "200"  # type: ignore[union-attr]
    # A change: the next NOTIFY replaces it, pending; the late answer to the first leaves it.
    clock[0] += 1.0
    store.write_key(keys.leg(LEG.account, "ks1", "leg-1"), codec.encode_leg(LEG))
    notifier.tick()
    assert cseqs(ksr)[-1] == cseq + 1
    answer(ksr, 200, cseq)
    following = NotifyRecord.decode(table[SUB_ID])
    assert following is not None
    assert (following.cseq, following.version, following.answer) == (cseq + 1, record.version + 1, "pending")
    answer(ksr, 481, cseq + 1)
    assert NotifyRecord.decode(table[SUB_ID]).answer == "481"  # type: ignore[union-attr]


@pytest.mark.parametrize(("reply_type", "code", "expected"), [
    ("1", "408", "timeout"),  # tm's own 408: no answer within fr_timer
    ("0", "408", "pending"),  # the watcher's 408: its onreply route records it, not this
])
def test_a_timeout_is_recorded_from_the_failure_route(
    ksr: FakeKSR, clock: list[float], monkeypatch: pytest.MonkeyPatch, reply_type: str, code: str, expected: str,
) -> None:
    import blf_notified

    table, cseq, _, _ = notifier_that_sent_once(ksr, monkeypatch)
    ksr.pvs.update({"$T(reply_type)": reply_type, "$T_reply_code": code, "$cs": str(cseq), "$ci": SUB.call_id,
                    "$tt": SUB.remote_tag, "$ft": SUB.local_tag})
    blf_notified.on_local_failure()
    assert NotifyRecord.decode(table[SUB_ID]).answer == expected  # type: ignore[union-attr]


def test_a_notify_tm_refuses_is_recorded_unsent(ksr: FakeKSR, clock: list[float]) -> None:
    table = back_htables(ksr)
    ksr.answers["tm.t_uac_send"] = -1
    notifier, _ = lab(ksr)
    notifier.tick()
    record = NotifyRecord.decode(table[SUB.sub_id])
    assert record is not None
    assert (record.cseq, record.answer) == (cseqs(ksr)[-1], "unsent")


def test_each_record_expires_a_minute_after_its_subscription(ksr: FakeKSR, clock: list[float]) -> None:
    back_htables(ksr)
    notifier, _ = lab(ksr)
    notifier.tick()
    [(table, key, _value, expire)] = ksr.calls_of("htable.sht_setxs")
    assert (table, key) == ("blf_notified", SUB.sub_id)
    assert expire == int(SUB.expires_at) + 60 - int(1_700_000_000.0 + clock[0])


@pytest.mark.usefixtures("metrics_socket")
def test_the_metrics_socket_answers_the_last_notifies_asked(ksr: FakeKSR) -> None:
    import blf_metrics

    table = back_htables(ksr)
    table["abc"] = NotifyRecord(3, 65539, 1_700_000_000_500, 1_700_000_360, "200").encode()
    ksr.pvs.update({"$Rp": "9471", "$si": "127.0.0.1", "$hu": "/blf/notified?ids=abc,def"})
    assert blf_metrics.answer_http("ks1") is True
    [(code, reason, content_type, body)] = ksr.calls_of("xhttp.xhttp_reply")
    assert (code, reason, content_type) == (200, "OK", "application/json")
    assert json.loads(body) == {"instance": "ks1", "notified": {
        "abc": {"version": 3, "cseq": 65539, "sent_at": 1_700_000_000.5, "answer": 200}, "def": None}}
    assert ksr.calls_of("xhttp_prom.dispatch") == []


@pytest.mark.parametrize(("port", "source", "url", "answered"), [
    ("9471", "127.0.0.1", "/blf/notified?ids=XYZ", 400),
    ("9471", "127.0.0.1", "/blf/notified", 400),
    ("5071", "127.0.0.1", "/blf/notified?ids=abc", None),  # a SIP port: nothing
    ("9471", "127.0.0.5", "/blf/notified?ids=abc", None),  # not allowed: nothing
    ("9471", "127.0.0.1", "/blf/other?ids=abc", None),
])
@pytest.mark.usefixtures("metrics_socket")
def test_the_last_notifies_are_only_for_those_who_may_scrape(ksr: FakeKSR, port: str, source: str, url: str,
                                                            answered: int | None) -> None:
    import blf_metrics

    back_htables(ksr)
    ksr.pvs.update({"$Rp": port, "$si": source, "$hu": url})
    assert blf_metrics.answer_http("ks1") is (answered is not None)
    assert [call[0] for call in ksr.calls_of("xhttp.xhttp_reply")] == ([answered] if answered else [])


@pytest.mark.parametrize(("method", "armed"), [
    ("NOTIFY", [("tm.t_on_reply", ("ksr_notify_reply",)), ("tm.t_on_failure", ("ksr_notify_failure",))]),
    ("OPTIONS", []),
])
def test_each_notify_we_send_has_its_answers_handled(ksr: FakeKSR, method: str, armed: list[Any]) -> None:
    import blf_kemi

    ksr.pvs["$rm"] = method
    blf_kemi.kamailio().ksr_tm_event(None, "tm:local-request")
    assert [call for call in ksr.calls if call[0].startswith("tm.")] == armed
    handler = blf_kemi.kamailio()
    for name, _ in armed:
        assert callable(getattr(handler, ksr.calls_of(name)[0][0]))
