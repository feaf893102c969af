"""A watcher for the tests: subscribes to presentities, for any event package we serve,
and reads what they show (a BLF lamp, a presence status, registrations, watchers).

Every NOTIFY it receives is checked against RFC 6665 and its package's RFC on arrival:
the body validates against the package's schema (BODIES: one entry per package),
`version` is 0 first and then +1 (or jumps forward with CSeq when another notifier takes
over, at a new epoch), CSeq strictly increases, the entity is the URI subscribed to. A
pending subscription's NOTIFY has no body.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from statestore.domain.subscription import EPOCH_STRIDE
from tests.presence_schema import validate_pidf
from tests.schema import validate_dialog_info, validate_reginfo, validate_watcherinfo
from tests.sipua import Message, UserAgent

NS = {"d": "urn:ietf:params:xml:ns:dialog-info"}
PIDF = "urn:ietf:params:xml:ns:pidf"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"


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


def presence_of(body: bytes) -> str:
    """What a presence client shows: on-the-phone, open or closed (any open tuple)."""
    root = etree.fromstring(body)
    if root.find(f".//{{{RPID}}}on-the-phone") is not None:
        return "on-the-phone"
    basics = [basic.text for basic in root.iter(f"{{{PIDF}}}basic")]
    return "open" if "open" in basics else "closed"


def contacts_of(body: bytes) -> str:
    """reginfo: the active contact URIs, sorted and joined (or "none")."""
    root = etree.fromstring(body)
    ns = "{urn:ietf:params:xml:ns:reginfo}"
    uris = sorted(
        contact.findtext(f"{ns}uri") or "" for contact in root.iter(f"{ns}contact") if contact.get("state") == "active"
    )
    return " ".join(uris) or "none"


def watchers_of(body: bytes) -> str:
    """watcherinfo: "watcher=status" of every watcher listed, sorted and joined."""
    root = etree.fromstring(body)
    ns = "{urn:ietf:params:xml:ns:watcherinfo}"
    return " ".join(sorted(f"{w.text}={w.get('status')}" for w in root.iter(f"{ns}watcher"))) or "none"


def _root_entity(root: etree._Element) -> str | None:
    if root.tag == "{urn:ietf:params:xml:ns:reginfo}reginfo":
        registration = root.find("{urn:ietf:params:xml:ns:reginfo}registration")
        return None if registration is None else registration.get("aor")
    if root.tag == "{urn:ietf:params:xml:ns:watcherinfo}watcherinfo":
        listed = root.find("{urn:ietf:params:xml:ns:watcherinfo}watcher-list")
        return None if listed is None else listed.get("resource")
    return root.get("entity")


@dataclass(frozen=True)
class BodyKind:
    """How the tests read one event package's bodies."""

    content_type: str
    validate: Callable[[bytes], object]
    summary: Callable[[bytes], str]
    versioned: bool = True  # a version attribute counted per subscription (not PIDF)


BODIES: dict[str, BodyKind] = {
    "dialog": BodyKind("application/dialog-info+xml", validate_dialog_info, lamp_of),
    "presence": BodyKind("application/pidf+xml", validate_pidf, presence_of, versioned=False),
    "reg": BodyKind("application/reginfo+xml", validate_reginfo, contacts_of),
    "presence.winfo": BodyKind("application/watcherinfo+xml", validate_watcherinfo, watchers_of),
    "dialog.winfo": BodyKind("application/watcherinfo+xml", validate_watcherinfo, watchers_of),
}


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
        event = (headers or {}).get("Event", "dialog")
        package = event.split(";", 1)[0]
        all_headers = {"Event": event, "Expires": str(expires), "Accept": BODIES[package].content_type}
        all_headers.update(headers or {})
        response = self.ua.request("SUBSCRIBE", uri, all_headers, call_id=call_id, from_tag=from_tag)
        assert response.status == 200, response.first_line
        sub = Subscription(presentity_user, uri, call_id, from_tag, response.tag("to"), response, event)
        self.subs[call_id] = sub
        self.wait(sub, lambda s: bool(s.notifies), 5.0)
        return sub

    def refresh(self, sub: Subscription, expires: int) -> Message:
        return self.ua.request(
            "SUBSCRIBE", self._target(sub), {"Event": sub.event, "Expires": str(expires)}, to=sub.uri,
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
        assert message.header("event") == sub.event, "NOTIFY echoes the Event header, id included"
        assert message.tag("to") == sub.from_tag and message.tag("from") == sub.to_tag
        state_header = message.header("subscription-state") or ""
        kind = BODIES[sub.event.split(";", 1)[0]]
        if not message.body:
            # RFC 6665 §4.2.1: a pending subscription's NOTIFY may carry no state.
            assert state_header.startswith(("pending", "terminated")), f"NOTIFY without a body: {state_header}"
            sub.notifies.append(Notified(message, "pending", -1, cseq, state_header, time.monotonic()))
            return
        kind.validate(message.body)
        assert message.header("content-type") == kind.content_type
        root = etree.fromstring(message.body)
        assert _root_entity(root) == sub.uri
        if root.get("state") is not None and sub.event.startswith("dialog") and "winfo" not in sub.event:
            assert root.get("state") == "full"
        version = int(root.get("version")) if kind.versioned else -1
        versioned = [n for n in sub.notifies if n.version >= 0]
        if versioned and kind.versioned:
            last = versioned[-1]
            assert cseq > last.cseq, "NOTIFY CSeq must strictly increase"
            # One sender steps by one (RFC 4235 §4.1); a notifier that took over or
            # restarted numbers from a new ownership epoch: a forward jump to the first
            # number of an epoch (CSeq 1 + k * EPOCH_STRIDE, version = CSeq - 1), with a
            # full document (§4.1 allows it).
            jumped = version == cseq - 1 and (cseq - 1) % EPOCH_STRIDE == 0
            assert version == last.version + 1 or jumped, (
                f"{sub.event} version must grow by one from one sender: {last.version} then {version} "
                f"(CSeq {last.cseq} then {cseq}, {message.header('contact')})"
            )
        elif kind.versioned and not any(n.version == -1 and n.lamp == "pending" for n in sub.notifies):
            assert version == 0, "first NOTIFY of a subscription carries version 0"
        if sub.notifies:
            assert cseq > sub.notifies[-1].cseq, "NOTIFY CSeq must strictly increase"
        summary = kind.summary(message.body)
        sub.notifies.append(Notified(message, summary, version, cseq, state_header, time.monotonic()))

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
