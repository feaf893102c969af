"""A BLF watcher for the tests: subscribes to presentities and reads their lamps.

Every NOTIFY it receives is checked against RFC 6665 and RFC 4235 on arrival: the body
validates against the schema, `version` is 0 first and then +1 (or jumps forward with
CSeq when another notifier takes over, at a new epoch), CSeq strictly increases,
entity is the URI subscribed to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lxml import etree

from statestore.domain.subscription import EPOCH_STRIDE
from tests.schema import validate_dialog_info
from tests.sipua import Message, UserAgent

NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}


def lamp_of(body: bytes) -> str:
    """What a phone's BLF key shows for a dialog-info body: idle, early (flashing) or busy."""
    root = etree.fromstring(body)
    states = [
        (dialog.get("direction"), dialog.findtext("d:state", namespaces=NS))
        for dialog in root.findall("d:dialog", NS)
    ]
    active = [(direction, state) for direction, state in states if state != "terminated"]
    if any(state == "confirmed" or direction == "initiator" for direction, state in active):
        return "busy"
    if active:
        return "early"
    return "idle"


@dataclass
class Notified:
    message: Message
    lamp: str
    version: int
    cseq: int
    state_header: str
    at: float


@dataclass
class Subscription:
    presentity: str
    uri: str
    call_id: str
    from_tag: str
    to_tag: str
    response: Message
    event: str = "dialog"
    notifies: list[Notified] = field(default_factory=list)

    @property
    def lamps(self) -> list[str]:
        """Distinct consecutive lamp states seen so far."""
        seen: list[str] = []
        for notified in self.notifies:
            if not seen or seen[-1] != notified.lamp:
                seen.append(notified.lamp)
        return seen

    @property
    def lamp(self) -> str:
        return self.notifies[-1].lamp if self.notifies else "unknown"


class Watcher:
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.subs: dict[str, Subscription] = {}

    def subscribe(
        self, presentity_user: str, expires: int = 600, headers: dict[str, str] | None = None
    ) -> Subscription:
        uri = f"sip:{presentity_user}@{self.ua.domain}"
        call_id = f"sub-{presentity_user}-{time.monotonic_ns()}"
        from_tag = f"w{time.monotonic_ns() % 10**9}"
        all_headers = {"Event": "dialog", "Expires": str(expires), "Accept": "application/dialog-info+xml"}
        all_headers.update(headers or {})
        response = self.ua.request("SUBSCRIBE", uri, all_headers, call_id=call_id, from_tag=from_tag)
        assert response.status == 200, response.first_line
        sub = Subscription(presentity_user, uri, call_id, from_tag, response.tag("to"), response, all_headers["Event"])
        self.subs[call_id] = sub
        self.wait(sub, lambda s: bool(s.notifies), 5.0)
        return sub

    def refresh(self, sub: Subscription, expires: int) -> Message:
        return self.ua.request(
            "SUBSCRIBE", self._target(sub), {"Event": "dialog", "Expires": str(expires)}, to=sub.uri,
            call_id=sub.call_id, from_tag=sub.from_tag, to_tag=sub.to_tag,
        )

    def _target(self, sub: Subscription) -> str:
        contact = sub.response.header("contact") or ""
        if sub.notifies:
            contact = sub.notifies[-1].message.header("contact") or contact
        return contact.strip("<>").split(">")[0]

    def pump(self, timeout: float) -> None:
        """Take in the NOTIFYs that arrive within `timeout` seconds (at least one wait)."""
        try:
            message = self.ua.wait_request("NOTIFY", timeout)
        except TimeoutError:
            return
        self._take(message)

    def _take(self, message: Message) -> None:
        sub = self.subs.get(message.header("call-id") or "")
        assert sub is not None, f"NOTIFY for an unknown subscription: {message.first_line}"
        cseq = int((message.header("cseq") or "0").split()[0])
        if any(n.cseq == cseq for n in sub.notifies):
            return  # a retransmission of a NOTIFY already taken in
        validate_dialog_info(message.body)
        root = etree.fromstring(message.body)
        version = int(root.get("version"))
        assert root.get("entity") == sub.uri
        assert root.get("state") == "full"
        assert message.header("event") == sub.event, "NOTIFY echoes the Event header, id included"
        assert message.header("content-type") == "application/dialog-info+xml"
        assert message.tag("to") == sub.from_tag and message.tag("from") == sub.to_tag
        if sub.notifies:
            last = sub.notifies[-1]
            assert cseq > last.cseq, "NOTIFY CSeq must strictly increase"
            # One sender steps by one (RFC 4235 §4.1); a notifier that took over or
            # restarted numbers from a new ownership epoch: a forward jump to the first
            # number of an epoch (CSeq 1 + k * EPOCH_STRIDE, version = CSeq - 1), with a
            # full document (§4.1 allows it).
            jumped = version == cseq - 1 and (cseq - 1) % EPOCH_STRIDE == 0
            assert version == last.version + 1 or jumped, (
                f"dialog-info version must grow by one from one sender: {last.version} then {version} "
                f"(CSeq {last.cseq} then {cseq}, {message.header('contact')})"
            )
        else:
            assert version == 0, "first NOTIFY of a subscription carries version 0"
        state_header = message.header("subscription-state") or ""
        sub.notifies.append(Notified(message, lamp_of(message.body), version, cseq, state_header, time.monotonic()))

    def wait(self, sub: Subscription, predicate: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(sub):  # type: ignore[operator]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{sub.presentity}: condition not met in {timeout}s; lamps {sub.lamps}, "
                    f"states {[n.state_header for n in sub.notifies]}"
                )
            self.pump(min(remaining, 0.5))

    def wait_lamp(self, sub: Subscription, lamp: str, timeout: float = 10.0) -> None:
        self.wait(sub, lambda s: s.lamp == lamp, timeout)

    def wait_terminated(self, sub: Subscription, timeout: float = 10.0) -> Notified:
        self.wait(sub, lambda s: s.notifies[-1].state_header.startswith("terminated"), timeout)
        return sub.notifies[-1]
