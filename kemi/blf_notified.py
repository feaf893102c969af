"""The last NOTIFY this instance sent on each subscription, kept in shared memory (htable
blf_notified, kamailio/kamailio.cfg) and served on the metrics socket (docs/inspect.md).

One htable write per NOTIFY, before it is handed to tm (its answer may reach another SIP
worker before the sender returns from tm), and one read and write per final answer. No
store write: `blfctl why` asks the responsible instance. KSR is called from the main
thread of each process only (the notifier, SIP workers, tm's timer for a timeout).
"""

from __future__ import annotations

import time

import KSR  # type: ignore[import-not-found]
from blf_sip import pv

from statestore.domain.model import Subscription
from statestore.domain.notified import UNSENT, NotifyRecord, local_answer, reply_answer, sent
from statestore.domain.subscription import subscription_id
from statestore.notified import NotifiedQueryError, answer_body, parse_query

TABLE = "blf_notified"


def sending(subscription: Subscription, cseq: int, version: int, now: float) -> NotifyRecord:
    """Record the NOTIFY about to be handed to tm; returned for `unsent`."""
    record = sent(version, cseq, now, subscription.expires_at)
    _put(subscription.sub_id, record, now)
    return record


def unsent(sub_id: str, record: NotifyRecord, now: float) -> None:
    """tm could not send it: said so (the notifier sends it again later, numbered alike)."""
    answered = record.answered(record.cseq, UNSENT)
    if answered is not None:
        _put(sub_id, answered, now)


def on_reply() -> None:
    """A final response to one of our NOTIFYs (the onreply route tm runs for it): its
    status, if it answers the last NOTIFY recorded."""
    answer = reply_answer(int(pv("$rs") or 0))
    if answer is not None:
        _answer(answer)


def on_local_failure() -> None:
    """tm's own final response (no answer came within fr_timer: 408); a received one was
    recorded by on_reply."""
    if pv("$T(reply_type)") == "1":
        _answer(local_answer(int(pv("$T_reply_code") or 0)))


def _answer(answer: str) -> None:
    # In a reply (and a failure route) From and To are our NOTIFY's: the From tag ours,
    # the To tag the watcher's (blf_notify_replies).
    sub_id = subscription_id(pv("$ci"), pv("$tt"), pv("$ft"))
    cseq = pv("$cs")
    if not cseq.isdigit():
        return
    # Locked: the next NOTIFY's record, written meanwhile, is not overwritten with this one's.
    KSR.htable.sht_lock(TABLE, sub_id)
    try:
        record = NotifyRecord.decode(KSR.htable.sht_get(TABLE, sub_id))
        answered = None if record is None else record.answered(int(cseq), answer)
        if answered is not None:
            _put(sub_id, answered, time.time())
    finally:
        KSR.htable.sht_unlock(TABLE, sub_id)


def _put(sub_id: str, record: NotifyRecord, now: float) -> None:
    KSR.htable.sht_setxs(TABLE, sub_id, record.encode(), record.keep_seconds(now))


def answer_http(url: str, instance: str) -> None:
    """GET /blf/notified?ids=...: each id's record, or null (statestore/notified.py)."""
    try:
        ids = parse_query(url)
    except NotifiedQueryError as exc:
        KSR.xhttp.xhttp_reply(400, "Bad Request", "text/plain", f"{exc}\n")
        return
    found = {sub_id: NotifyRecord.decode(KSR.htable.sht_get(TABLE, sub_id)) for sub_id in ids}
    KSR.xhttp.xhttp_reply(200, "OK", "application/json", answer_body(instance, found))
