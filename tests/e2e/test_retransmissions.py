"""A retransmitted SUBSCRIBE gets the answer its first copy got (RFC 3261 §17.2): the server
absorbs it in the transaction, whatever digest nonce count it carries. Before, the copy was
processed again and its (already used) nonce count refused as a replay: a fresh 401."""

from __future__ import annotations

from tests.e2e.conftest import DOMAIN, phone
from tests.sipua import Message, UserAgent

HEADERS = {"Event": "dialog", "Expires": "600"}


def _sent_twice(ua: UserAgent, uri: str, call_id: str, from_tag: str, to_tag: str = "") -> list[Message]:
    """A SUBSCRIBE with credentials for the nonce `ua` holds, sent twice byte for byte."""
    cseq = ua.next_cseq()
    message = ua._build("SUBSCRIBE", uri, HEADERS, uri, call_id, from_tag, to_tag, cseq, b"",
                        ua._credentials_line("SUBSCRIBE", uri))
    answers = []
    for _ in range(2):
        ua.sock.sendto(message, ua.proxy)
        answers.append(ua.wait_response(call_id, cseq, 5))
    return answers


def _watcher(account, phones, instance: str) -> tuple[UserAgent, str]:
    boris, catherine = account("boris"), account("catherine")
    cat = phone(phones, catherine, instance)
    cat.reuse_nonce = True  # like a phone: later requests answer the nonce it holds, nc + 1
    return cat, f"sip:{boris[0]}@{DOMAIN}"


def test_a_retransmitted_initial_subscribe_gets_the_same_answer(account, phones):
    cat, uri = _watcher(account, phones, "ks2")
    fetch = cat.request("SUBSCRIBE", uri, {"Event": "dialog", "Expires": "0"})  # takes a nonce
    assert fetch.status == 200, fetch.first_line
    answers = _sent_twice(cat, uri, "retransmitted-" + (fetch.header("call-id") or ""), "rt1")
    assert [a.status for a in answers] == [200, 200], [a.first_line for a in answers]
    assert answers[0].tag("to") == answers[1].tag("to"), "one subscription, one answer"


def test_a_retransmitted_subscribe_refresh_gets_the_same_answer(account, phones):
    cat, uri = _watcher(account, phones, "ks1")
    first = cat.request("SUBSCRIBE", uri, HEADERS)
    assert first.status == 200, first.first_line
    answers = _sent_twice(cat, uri, first.header("call-id") or "", first.tag("from"), first.tag("to"))
    assert [a.status for a in answers] == [200, 200], [a.first_line for a in answers]
