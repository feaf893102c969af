"""Routing at the edge as an attacker with one account and as real phones see it (issue 12,
findings 1, 5, 10, 11 and 12).

Mallory sends from a non-cluster address (127.0.0.5) with an account of her own; the victim
is a third address (127.0.0.7) that must receive nothing from the cluster. Phones on
127.0.0.1 are taken by the instances for their own address (no sender check applies to
them): where the sender check is under test, the legitimate party is on 127.0.0.5 too.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import DOMAIN, KS, blfctl, phone
from tests.sipua import Message, UserAgent

MALLORY_ADDRESS = "127.0.0.5"
VICTIM_ADDRESS = "127.0.0.7"
QUIET = 1.0  # how long a victim is watched for a packet that must not come


class Victim:
    """A third party listening on UDP and TCP at one port: it records every packet and
    every connection the cluster makes to it."""

    def __init__(self) -> None:
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((VICTIM_ADDRESS, 0))
        self.port = self.tcp.getsockname()[1]
        self.tcp.listen(16)
        self.tcp.settimeout(0.05)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((VICTIM_ADDRESS, self.port))
        self.udp.settimeout(0.05)

    def received(self, seconds: float = QUIET) -> list[bytes]:
        """Everything that reached it within `seconds` (a UDP datagram, or a connection)."""
        got: list[bytes] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                got.append(self.udp.recvfrom(65535)[0])
            try:
                connection, _ = self.tcp.accept()
                got.append(b"TCP connection")
                connection.close()
            except TimeoutError:
                pass
        return got

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def victim() -> Iterator[Victim]:
    target = Victim()
    yield target
    target.close()


def mallory(
    phones: list[UserAgent], creds: tuple[str, str], instance: str = "ks1", transport: str = "udp"
) -> UserAgent:
    ua = UserAgent(creds[0], DOMAIN, creds[1], KS[instance], transport=transport, bind=MALLORY_ADDRESS)
    phones.append(ua)
    return ua


def _call(caller: UserAgent, callee_user: str) -> Message:
    response = caller.request("INVITE", f"sip:{callee_user}@{DOMAIN}", timeout=8)
    assert response.status == 200, response.first_line
    return response


def _in_dialog(
    ua: UserAgent, answer: Message, method: str, routes: list[str] | None = None, uri: str = ""
) -> Message:
    """A request in the dialog `answer` set up, along its Record-Route set (reversed) or `routes`."""
    routes = routes if routes is not None else list(reversed(answer.all("record-route")))
    return ua.request(
        method, uri or (answer.header("contact", "") or "").strip("<>"), {"Route": ", ".join(routes)},
        to=(answer.header("to", "") or "").split(";")[0].strip("<> "), call_id=answer.header("call-id"),
        from_tag=answer.tag("from"), to_tag=answer.tag("to"), auth=False, timeout=3,
    )


def _rewritten(entry: str, victim: Victim, extra: str = "") -> str:
    """Our signed entry with its host and port replaced by the victim's (and `extra` appended)."""
    uri = entry.strip().strip("<>")
    host_port, _, params = uri.removeprefix("sip:").partition(";")
    return f"<sip:{VICTIM_ADDRESS}:{victim.port};{params}{extra}>"


def _mallory_calls_boris(account: Any, phones: list[UserAgent]) -> tuple[UserAgent, UserAgent, Message]:
    """Mallory, with an account of her own, calls Boris (registered at ks2): his phone, hers,
    and the call's answer (its Record-Route is what she tampers with)."""
    boris = account("boris")
    boris_phone = phone(phones, boris, "ks2")
    assert boris_phone.register(300).status == 200
    attacker = mallory(phones, account("mallory"))
    answer = _call(attacker, boris[0])
    boris_phone.wait_request("INVITE", 3)
    return boris_phone, attacker, answer


def test_a_rewritten_route_entry_relays_to_nobody(account, phones, victim):
    """Finding 1: Mallory copies the signed entry of her own call and appends it again with the
    victim's host and port (UDP and TCP), or adds maddr: every request is refused, nothing
    reaches the victim, the callee gets nothing either."""
    boris_phone, attacker, answer = _mallory_calls_boris(account, phones)
    ours = list(reversed(answer.all("record-route")))
    assert ours, "the call is record-routed"
    tricks = {
        "victim entry after ours": [*ours, _rewritten(ours[-1], victim)],
        "victim entry over tcp": [*ours, _rewritten(ours[-1], victim, ";transport=tcp")],
        "victim entry first": [_rewritten(ours[0], victim), *ours],
        "our entry with maddr": [ours[0].rstrip(">") + f";maddr={VICTIM_ADDRESS}>", *ours[1:]],
        "our entry on another port": [ours[0].replace("127.0.0.1:5071", "127.0.0.1:5073"), *ours[1:]],
    }
    victim_uri = f"sip:victim@{VICTIM_ADDRESS}:{victim.port}"
    for name, routes in tricks.items():
        for method in ("INVITE", "MESSAGE", "OPTIONS", "INFO"):
            response = _in_dialog(attacker, answer, method, routes, victim_uri)
            assert response.status == 403, f"{name}/{method}: {response.first_line}"
    assert victim.received() == [], "the cluster relayed to the victim"
    assert _requests(boris_phone) == [], "a refused request reached the callee"
    assert _in_dialog(attacker, answer, "BYE").status == 200
    boris_phone.wait_request("BYE", 3)


def test_a_dialogs_routes_die_with_it(account, phones):
    """Finding 1: after the BYE, a re-INVITE, MESSAGE, OPTIONS or INFO along the same route set
    gets 481 and reaches nobody; the BYE's retransmission still gets its 200."""
    boris_phone, attacker, answer = _mallory_calls_boris(account, phones)
    assert _in_dialog(attacker, answer, "MESSAGE").status == 200, "routed while the call lasts"
    boris_phone.wait_request("MESSAGE", 3)
    bye = _bye_bytes(attacker, answer)
    attacker.sock.sendto(bye, attacker.proxy)
    assert _final(attacker, answer, "BYE").status == 200
    boris_phone.wait_request("BYE", 3)
    attacker.sock.sendto(bye, attacker.proxy)  # a retransmission: tm answers it again
    assert _final(attacker, answer, "BYE").status == 200
    for method in ("INVITE", "MESSAGE", "OPTIONS", "INFO", "BYE"):
        response = _in_dialog(attacker, answer, method)
        assert response.status == 481, f"{method} after the BYE: {response.first_line}"
    assert _requests(boris_phone) == [], "a request after the BYE reached the callee"


def _bye_bytes(ua: UserAgent, answer: Message) -> bytes:
    routes = ", ".join(reversed(answer.all("record-route")))
    return ua._build(
        "BYE", (answer.header("contact", "") or "").strip("<>"), {"Route": routes},
        (answer.header("to", "") or "").split(";")[0].strip("<> "), answer.header("call-id") or "",
        answer.tag("from"), answer.tag("to"), 1000, b"", "",
    )


def _final(ua: UserAgent, answer: Message, method: str) -> Message:
    """The next final response to `method` in the dialog of `answer`."""
    deadline = time.monotonic() + 3
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            message = ua.responses.get(timeout=remaining)
        except queue.Empty:
            break
        if message.header("call-id") == answer.header("call-id") and message.method == method and message.status >= 200:
            return message
    raise TimeoutError(f"no final response to {method}")


def _requests(ua: UserAgent) -> list[str]:
    """The methods of the requests `ua` received and no test has taken yet."""
    methods = []
    while not ua.requests.empty():
        methods.append(ua.requests.get_nowait().method)
    return methods


def test_a_neighbour_on_tcp_cannot_end_a_udp_call(account, phones):
    """Finding 5: the caller is on UDP at 127.0.0.5; another device at the same address
    (behind the same NAT) sends the dialog's BYE over TCP: refused, the callee keeps its call."""
    alice, boris = account("alice"), account("boris")
    boris_phone = phone(phones, boris, "ks2")
    assert boris_phone.register(300).status == 200
    caller = mallory(phones, alice)
    answer = _call(caller, boris[0])
    boris_phone.wait_request("INVITE", 3)
    neighbour = mallory(phones, account("neighbour"), transport="tcp")
    for method in ("BYE", "MESSAGE"):
        response = _in_dialog(neighbour, answer, method)
        assert response.status == 403, f"{method} from the neighbour: {response.first_line}"
    with pytest.raises(TimeoutError):
        boris_phone.wait_request("BYE", QUIET)
    assert _in_dialog(caller, answer, "BYE").status == 200, "the caller itself still ends its call"
    boris_phone.wait_request("BYE", 3)


def test_notifies_go_only_to_the_flow_that_subscribed(account, phones, victim):
    """Finding 10: Mallory's SUBSCRIBEs name the victim in their Contact (their Via matches
    her source: no NAT case). Every NOTIFY, first and final, comes back to her; not one
    packet reaches the victim."""
    boris = account("boris")
    attacker = mallory(phones, account("mallory"))
    contact = f"<sip:victim@{VICTIM_ADDRESS}:{victim.port}>"
    for instance in ("ks1", "ks2"):
        attacker.proxy = KS[instance]
        for _ in range(4):
            response = attacker.request(
                "SUBSCRIBE", f"sip:{boris[0]}@{DOMAIN}",
                {"Event": "dialog", "Expires": "60", "Accept": "application/dialog-info+xml", "Contact": contact},
            )
            assert response.status in (200, 202), response.first_line
            notify = _notify_of(attacker, response.header("call-id") or "")
            assert notify.source == KS[instance], "the NOTIFY comes from the instance subscribed to"
    assert victim.received() == [], "NOTIFYs reflected onto the victim"


def _notify_of(ua: UserAgent, call_id: str) -> Message:
    """The first NOTIFY of the subscription `call_id` (those of others are passed over)."""
    deadline = time.monotonic() + 3
    while (remaining := deadline - time.monotonic()) > 0:
        notify = ua.wait_request("NOTIFY", remaining)
        if notify.header("call-id") == call_id:
            return notify
    raise TimeoutError(f"no NOTIFY for {call_id}")


def test_the_ack_of_a_failed_call_is_absorbed_whatever_its_route(account, phones):
    """Finding 11: the callee is busy; the caller's ACK for the 486 carries its outbound
    proxy's Route (RFC 3261 §17.1.1.3): the 486 is not sent again."""
    alice, boris = account("alice"), account("boris")
    boris_phone = phone(phones, boris, "ks2")
    assert boris_phone.register(300).status == 200
    boris_phone.answer_requests = False
    caller = phone(phones, alice, "ks1")
    call_id = f"busy-{time.monotonic_ns()}"
    sent = _invite_answered_busy(caller, boris_phone, boris[0], call_id)
    ack = "\r\n".join([
        f"ACK sip:{boris[0]}@{DOMAIN} SIP/2.0",
        f"Via: {sent.header('via')}",
        "Route: <sip:127.0.0.1:5071;lr>",
        "Max-Forwards: 70",
        f"From: {sent.header('from')}",
        f"To: {sent.header('to')}",
        f"Call-ID: {call_id}",
        f"CSeq: {(sent.header('cseq') or '').split()[0]} ACK",
        "Content-Length: 0", "", "",
    ]).encode()
    caller.sock.sendto(ack, caller.proxy)
    # Unabsorbed, tm sends the 486 again after T1 (0.5 s), then 1 s later, and so on.
    again = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            message = caller.responses.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if message.header("call-id") == call_id and message.status == 486:
            again.append(message)
    assert again == [], f"the 486 was sent {len(again)} more times"


def _invite_answered_busy(caller: UserAgent, callee: UserAgent, callee_user: str, call_id: str) -> Message:
    """The caller's INVITE (authenticated), answered 486 by the callee; the 486 as received."""

    def answer_busy() -> None:
        invite = callee.wait_request("INVITE", 8)
        callee.sock.sendto(callee.response_to(invite, 486, "Busy Here"), invite.source)

    busy = threading.Thread(target=answer_busy, daemon=True)
    busy.start()
    response = caller.request("INVITE", f"sip:{callee_user}@{DOMAIN}", call_id=call_id, timeout=8)
    busy.join(8)
    assert response.status == 486, response.first_line
    return response


def test_a_tcp_phone_behind_a_restarted_instance_gets_480_not_477(account, phones):
    """Finding 12: Boris registered over TCP on ks1; ks1 restarts (his connection dies with it).
    Calls to him are not tried over the dead connection: 480, never Kamailio's 477 text."""
    alice, boris = account("alice"), account("boris")
    boris_phone = UserAgent(boris[0], DOMAIN, boris[1], KS["ks1"], transport="tcp")
    phones.append(boris_phone)
    assert boris_phone.register(300).status == 200
    blfctl("lab", "kill", "ks1")
    blfctl("lab", "start", "ks1")
    for instance in ("ks1", "ks2"):
        caller = phone(phones, alice, instance)
        response = caller.request("INVITE", f"sip:{boris[0]}@{DOMAIN}", timeout=8)
        assert response.status == 480, f"via {instance}: {response.first_line}"
        assert "Unfortunately" not in response.first_line


def test_a_restarted_instance_still_routes_the_dialogs_of_its_previous_run(account, phones):
    """The promise of docs/security.md, kept by the boot in the tracking instance's entry: ks1 tracks the
    call, restarts (its dialog module then knows nothing of it), and still routes the call's
    requests and its BYE (an older boot's route set lives until the dialog timeout)."""
    boris = account("boris")
    boris_phone = phone(phones, boris, "ks2")
    assert boris_phone.register(300).status == 200
    caller = mallory(phones, account("alice"))
    answer = _call(caller, boris[0])
    boris_phone.wait_request("INVITE", 3)
    blfctl("lab", "kill", "ks1")
    blfctl("lab", "start", "ks1")
    message = _in_dialog(caller, answer, "MESSAGE")
    assert message.status == 200, f"a dialog of ks1's previous run: {message.first_line}"
    boris_phone.wait_request("MESSAGE", 3)
    assert _in_dialog(caller, answer, "BYE").status == 200
    boris_phone.wait_request("BYE", 3)


def test_a_tcp_phone_whose_connection_closed_gets_480_not_477(account, phones):
    """Finding 12, the same without a restart: the phone's connection is gone, its binding
    is not (it has not expired). The relay fails at once; the caller hears 480 through
    either instance, never Kamailio's internal reason text."""
    alice, boris = account("alice"), account("boris")
    boris_phone = UserAgent(boris[0], DOMAIN, boris[1], KS["ks1"], transport="tcp")
    assert boris_phone.register(300).status == 200
    boris_phone.close()
    for instance in ("ks1", "ks2"):
        response = phone(phones, alice, instance).request("INVITE", f"sip:{boris[0]}@{DOMAIN}", timeout=8)
        assert response.first_line == "SIP/2.0 480 Temporarily Unavailable", f"via {instance}: {response.first_line}"
