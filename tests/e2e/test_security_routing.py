"""Routing as an attacker and as real phones see it (issue 5, findings 1, 6, 7 and 8).

Mallory sends from another address (127.0.0.5) and knows no password of the lab's domain,
or (where said) only her own. The victim is a third address (127.0.0.7) that must receive
nothing from the cluster. Phones behind NAT say they are at 127.0.0.99:5999, where nothing
listens, while really sending from their socket: they must be reached at that socket.
"""

from __future__ import annotations

import json
import queue
import socket
import time
from collections.abc import Iterator

import pytest

from tests.e2e.blf_watch import Watcher
from tests.e2e.conftest import DOMAIN, KS, blfctl, phone
from tests.sipua import Message, UserAgent

MALLORY_ADDRESS = "127.0.0.5"
VICTIM_ADDRESS = "127.0.0.7"
NAT_SENT_BY = "127.0.0.99:5999"


@pytest.fixture
def victim() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((VICTIM_ADDRESS, 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def received_anything(sock: socket.socket, seconds: float) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(sock.recvfrom(65535)[0])
        except TimeoutError:
            continue
    return got


def mallory(phones: list[UserAgent], instance: str = "ks1", creds: tuple[str, str] | None = None) -> UserAgent:
    user, password = creds or ("mallory", "guess")
    ua = UserAgent(user, DOMAIN if creds else "evil.org", password, KS[instance], bind=MALLORY_ADDRESS)
    phones.append(ua)
    return ua


def victim_uri(sock: socket.socket) -> str:
    return f"sip:victim@{VICTIM_ADDRESS}:{sock.getsockname()[1]}"


def test_in_dialog_relay_tricks_are_refused_and_reach_nobody(lab, phones, victim):
    attacker = mallory(phones)
    target = victim_uri(victim)
    port = victim.getsockname()[1]
    ks1 = "127.0.0.1:5071"
    tricks = {
        "our route": (target, [f"<sip:{ks1};lr>"]),
        "our route then a foreign host": (target, [f"<sip:{ks1};lr>", f"<sip:{VICTIM_ADDRESS}:{port};lr>"]),
        "the target itself": (target, [f"<sip:{VICTIM_ADDRESS}:{port};lr>"]),
        "strict routing": (f"sip:{ks1}", [f"<{target}>"]),
        "forged dialog token": (
            target, [f"<sip:{ks1};lr;ftag=abc;blf=0123456789abcdef0123;tf=udp:{VICTIM_ADDRESS}:{port};cf=udp:x:1>"]
        ),
        "forged flow route": (target, [f"<sip:{ks1};lr;flow=udp:{VICTIM_ADDRESS}:{port};fsig=0123456789abcdef0123>"]),
        "no route at all": (target, []),
    }
    for name, (uri, routes) in tricks.items():
        for method in ("INVITE", "MESSAGE", "OPTIONS", "BYE"):
            headers = {"Route": ", ".join(routes)} if routes else {}
            response = attacker.request(
                method, uri, headers, to=target, to_tag="dlg123", from_tag="abc", auth=False, timeout=3
            )
            assert response.status in (403, 404, 481), f"{name}/{method}: {response.first_line}"
    assert received_anything(victim, 1.0) == [], "the cluster relayed to the victim"


def test_initial_requests_with_a_foreign_route_are_not_relayed(lab, phones, victim):
    attacker = mallory(phones)
    target = victim_uri(victim)
    for method in ("INVITE", "MESSAGE", "OPTIONS"):
        response = attacker.request(
            method, target, {"Route": f"<sip:127.0.0.1:5071;lr>, <{target};lr>"}, auth=False, timeout=3
        )
        assert response.status in (403, 404, 405), f"{method}: {response.first_line}"
    assert received_anything(victim, 1.0) == []


def _call(caller: UserAgent, callee_user: str, headers: dict[str, str] | None = None) -> Message:
    response = caller.request("INVITE", f"sip:{callee_user}@{DOMAIN}", headers or {}, timeout=8)
    assert response.status == 200, response.first_line
    return response


def _in_dialog(caller: UserAgent, answer: Message, method: str, uri: str) -> Message:
    """A request in the dialog `answer` set up, along its Record-Route set (reversed)."""
    routes = list(reversed(answer.all("record-route")))
    return caller.request(
        method, uri, {"Route": ", ".join(routes)}, to=answer.header("to", "").split(";")[0].strip("<> "),
        call_id=answer.header("call-id"), from_tag=answer.tag("from"), to_tag=answer.tag("to"), auth=False,
    )


def test_a_real_dialog_cannot_be_bent_towards_a_third_party(account, phones, victim):
    """Mallory, with an account of her own, sets up a real call and then sends in-dialog
    requests whose Request-URI names the victim: they go to her callee, never elsewhere."""
    boris = account("boris")
    boris_phone = phone(phones, boris, "ks2")
    assert boris_phone.register(300).status == 200
    attacker = mallory(phones, "ks1", account("mallory"))
    answer = _call(attacker, boris[0])
    assert answer.all("record-route"), "the call is record-routed"
    message = _in_dialog(attacker, answer, "MESSAGE", victim_uri(victim))
    assert message.status == 200, message.first_line
    boris_phone.wait_request("MESSAGE", 3)
    assert _in_dialog(attacker, answer, "BYE", victim_uri(victim)).status == 200
    assert received_anything(victim, 1.0) == []


def test_initial_invite_loses_the_route_naming_us(account, phones):
    alice, boris = account("alice"), account("boris")
    boris_phone = phone(phones, boris, "ks2")
    assert boris_phone.register(300).status == 200
    alice_phone = phone(phones, alice, "ks1")
    answer = _call(alice_phone, boris[0], {"Route": "<sip:127.0.0.1:5071;lr>"})
    invite = boris_phone.wait_request("INVITE", 3)
    assert invite.all("route") == [], f"our Route was forwarded: {invite.all('route')}"
    assert _in_dialog(alice_phone, answer, "BYE", f"sip:{boris[0]}@{DOMAIN}").status == 200


def _legs(user: str) -> list[dict[str, str]]:
    shown = json.loads(blfctl("show", f"{user}@{DOMAIN}", "--json").stdout)
    return list(shown["legs"])


def test_a_relay_that_fails_at_once_gets_one_final_response_and_leaves_no_lamp(account, phones):
    alice, boris = account("alice"), account("boris")
    # TLS is not served by the lab: the relay to this contact fails before anything is sent.
    response = phone(phones, boris, "ks1").register(300, contact=f"<sip:{boris[0]}@127.0.0.1:5999;transport=tls>")
    assert response.status == 200
    alice_phone = phone(phones, alice, "ks1")
    answer = alice_phone.request("INVITE", f"sip:{boris[0]}@{DOMAIN}", timeout=8)
    assert answer.status >= 400, answer.first_line
    # A second final response would come within tm's retransmission window: take in what
    # arrives for a second, waking on each response rather than sleeping it through.
    finals = []
    quiet_until = time.monotonic() + 1.0
    while (left := quiet_until - time.monotonic()) > 0:
        try:
            late = alice_phone.responses.get(timeout=left)
        except queue.Empty:
            break
        if late.header("call-id") == answer.header("call-id") and late.status >= 200:
            finals.append(late)
    assert all(late.tag("to") == answer.tag("to") for late in finals), "a second, different final response"
    # The call's legs may still be shown for a few seconds as terminated (event "error",
    # RFC 4235 §3.7.1, issue 6) before they leave the store; none may be active.
    legs = _legs(alice[0]) + _legs(boris[0])
    assert all(leg["state"] == "terminated" for leg in legs), f"lamps lit without a call: {legs}"


def _nat_phone(phones: list[UserAgent], creds: tuple[str, str], instance: str) -> UserAgent:
    """A phone behind NAT: it believes it is at NAT_SENT_BY, the lab sees its real socket."""
    ua = phone(phones, creds, instance)
    ua.sent_by = NAT_SENT_BY
    return ua


def test_a_phone_behind_nat_is_called_at_its_source_through_either_instance(account, phones):
    alice, boris = account("alice"), account("boris")
    boris_phone = _nat_phone(phones, boris, "ks2")
    response = boris_phone.register(300, contact=f"<sip:{boris[0]}@{NAT_SENT_BY}>")
    assert response.status == 200, response.first_line
    for instance in ("ks1", "ks2"):
        caller = phone(phones, alice, instance)
        answer = _call(caller, boris[0])
        invite = boris_phone.wait_request("INVITE", 3)
        assert invite.source == KS["ks2"], "the INVITE comes through the instance holding the pinhole"
        assert _in_dialog(caller, answer, "BYE", f"sip:{boris[0]}@{NAT_SENT_BY}").status == 200


def test_a_phone_on_tcp_is_called_through_the_other_instance(account, phones):
    alice, boris = account("alice"), account("boris")
    boris_phone = UserAgent(boris[0], DOMAIN, boris[1], KS["ks1"], transport="tcp")
    phones.append(boris_phone)
    assert boris_phone.register(300).status == 200
    caller = phone(phones, alice, "ks2")
    answer = _call(caller, boris[0])
    boris_phone.wait_request("INVITE", 3)
    assert _in_dialog(caller, answer, "BYE", f"sip:{boris[0]}@127.0.0.1:{boris_phone.port}").status == 200
    boris_phone.wait_request("BYE", 3)


def test_a_watcher_behind_nat_gets_its_notifies_at_its_source_after_refreshing_elsewhere(account, phones):
    boris, catherine = account("boris"), account("catherine")
    nat_contact = f"<sip:{catherine[0]}@{NAT_SENT_BY}>"
    cat_phone = _nat_phone(phones, catherine, "ks1")
    cat = Watcher(cat_phone)
    lamp = cat.subscribe(boris[0], headers={"Contact": nat_contact})
    assert lamp.lamp == "idle"
    assert lamp.notifies[-1].message.source == KS["ks1"]
    cat_phone.proxy = KS["ks2"]  # the refresh reaches the other instance (a new NAT mapping)
    refresh = cat_phone.request(
        "SUBSCRIBE", cat._target(lamp), {"Event": "dialog", "Expires": "600", "Contact": nat_contact},
        to=lamp.uri, call_id=lamp.call_id, from_tag=lamp.from_tag, to_tag=lamp.to_tag,
    )
    assert refresh.status == 200, refresh.first_line
    boris_phone = phone(phones, boris, "ks1")
    assert boris_phone.register(300).status == 200
    alice = phone(phones, account("alice"), "ks1")
    answer = _call(alice, boris[0])
    cat.wait_lamp(lamp, "busy", 5)
    assert lamp.notifies[-1].message.source == KS["ks2"], "the NOTIFY follows the watcher's newest flow"
    assert _in_dialog(alice, answer, "BYE", f"sip:{boris[0]}@{DOMAIN}").status == 200
    cat.wait_lamp(lamp, "idle", 5)


def test_a_phone_behind_nat_without_rport_gets_its_answers_at_its_source(account, phones):
    """Its Via names an address where nothing listens and has no rport parameter."""
    boris = account("boris")
    ua = _nat_phone(phones, boris, "ks1")
    ua.rport = False
    response = ua.register(300, contact=f"<sip:{boris[0]}@{NAT_SENT_BY}>")
    assert response.status == 200, response.first_line
