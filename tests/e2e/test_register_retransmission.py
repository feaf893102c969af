"""A retransmitted REGISTER (its 200 was lost) gets the same answer, never 400 (issue 6,
finding 6). Real instances: the very same bytes (Call-ID, CSeq, branch, credentials) twice."""

from __future__ import annotations

import re
import urllib.request
import uuid

from tests.e2e.conftest import DOMAIN, blfctl, phone
from tests.sipua import Message, UserAgent


def authorised_register(ua: UserAgent, call_id: str, expires: int = 300) -> tuple[bytes, int]:
    """The bytes of a REGISTER with credentials for the challenge `ua` holds, and its CSeq."""
    uri = f"sip:{DOMAIN}"
    cseq = ua.next_cseq()
    credentials = ua._credentials_line("REGISTER", uri)
    headers = {"Expires": str(expires), "Contact": ua.contact}
    message = ua._build("REGISTER", uri, headers, ua.aor, call_id, "tag" + call_id[:6], "", cseq, b"", credentials)
    return message, cseq


def send(ua: UserAgent, message: bytes, call_id: str, cseq: int) -> Message:
    ua.sock.sendto(message, ua.proxy)
    return ua.wait_response(call_id, cseq, timeout=5.0)


def test_a_retransmitted_register_gets_200_again_and_writes_nothing(account, phones):
    alice = account("alice")
    desk = phone(phones, alice, "ks1")
    first = desk.register(300)  # takes a challenge, as a phone does at boot
    assert first.status == 200, first.first_line
    call_id = f"retrans-{uuid.uuid4().hex}"
    message, cseq = authorised_register(desk, call_id)
    answers = [send(desk, message, call_id, cseq) for _ in range(3)]
    assert [answer.status for answer in answers] == [200, 200, 200], [a.first_line for a in answers]
    assert answers[1].all("contact") == answers[0].all("contact")
    shown = blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout
    assert shown.count('"contact"') == 1, shown


def lease_grants() -> float:
    """Leases the lab's etcd has granted so far (its own counter, on its client URL)."""
    with urllib.request.urlopen("http://127.0.0.1:2379/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^etcd_debugging_lease_granted_total (\S+)$", text, re.MULTILINE)
    assert found, "etcd exports no lease counter"
    return float(found.group(1))


def test_register_refreshes_grant_no_lease(account, phones):
    """A phone refreshing with the same Expires keeps its binding's lease (issue 6)."""
    boris = account("boris")
    desk = phone(phones, boris, "ks2")
    assert desk.register(300).status == 200
    before = lease_grants()
    for _ in range(REFRESHES):
        assert desk.register(300).status == 200
    assert lease_grants() - before == 0, f"{lease_grants() - before} leases granted for {REFRESHES} refreshes"


REFRESHES = 20
