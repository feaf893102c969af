"""Reading and answering SIP messages through KSR: the only place that knows its calls."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import KSR  # type: ignore[import-not-found]

from statestore.domain.contact import parse_contacts, split_header_list
from statestore.domain.errors import SipError
from statestore.domain.model import Subscription
from statestore.domain.routing import Reach

# NUL and the other control characters no SIP header may carry (RFC 3261 §25.1); HTAB,
# CR and LF are allowed. One regex search: this runs for every value read, floods included.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _get(name: str) -> object:
    """A pseudo-variable's value. Bytes that are not UTF-8, and NUL or other control
    characters (which no SIP header may carry, RFC 3261 §25.1), make the request a 400:
    nothing hostile gets past here into the routing logic or a KSR call."""
    try:
        value = KSR.pv.get(name)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SipError(400, "Bad Request - Invalid Characters") from exc
    if isinstance(value, str) and _CONTROL.search(value):
        raise SipError(400, "Bad Request - Invalid Characters")
    return value


def pv(name: str) -> str:
    value = _get(name)
    return "" if value is None else str(value)


def header(name: str) -> str | None:
    value = _get(f"$hdr({name})")
    return None if value is None else str(value)


def headers(name: str) -> list[str]:
    """The value of every occurrence of a header, in order (see list_header to split them)."""
    count = _get(f"$hdrc({name})") or 0
    values: list[str] = []
    for index in range(int(str(count))):
        value = _get(f"$(hdr({name})[{index}])")
        if value is not None:
            values.append(str(value))
    return values


def list_header(name: str) -> list[str]:
    return [item for value in headers(name) for item in split_header_list(value)]


def reply(status: int, reason: str, extra: Mapping[str, str] | None = None, contact: str = "") -> None:
    for name, value in (extra or {}).items():
        KSR.hdr.append_to_reply(f"{name}: {value}\r\n")
    if contact:
        KSR.hdr.append_to_reply(f"Contact: {contact}\r\n")
    KSR.sl.send_reply(status, reason)


def reply_error(error: SipError) -> None:
    reply(error.status, error.reason, error.headers)


# tm's t_newtran when the script made this message's transaction already (E_SCRIPT).
_TRANSACTION_IN_PROCESS = -10


def stateful() -> bool:
    """Make the request a transaction (RFC 3261 §17.2.2), once its sender is authenticated:
    a transaction costs shared memory, so nobody gets one before (issue 12, finding 2).

    True: the transaction is new (or this message's already), carry on; every answer from
    here goes through it (sl's send_reply is stateful when a transaction exists) and tm
    absorbs every retransmission. False: the request is a retransmission of one whose
    transaction another worker just made (tm 5.6 t_newtran: lookup and insert under one
    hash lock); tm has sent that transaction's last answer again: answer nothing more."""
    created = int(KSR.tm.t_newtran())
    if created == 0:
        return False
    if created < 0 and created != _TRANSACTION_IN_PROCESS:
        raise SipError(500, "Server Internal Error", {"Retry-After": "5"})
    return True


def source() -> str:
    """Where the request came from, as fail2ban and operators read it: proto:ip:port."""
    return f"{_plain('$pr').lower()}:{_plain('$si')}:{_plain('$sp')}"


def refused(status: int, reason: str) -> None:
    """The one line logged for every refused request (docs/security.md): its method,
    source and answer, e.g. `blf: refused SUBSCRIBE from udp:192.0.2.7:5060: 403 Forbidden`."""
    KSR.notice(f"blf: refused {_plain('$rm')} from {source()}: {status} {reason}\n")


def _plain(name: str) -> str:
    """A pseudo-variable for a log line; never raises (the line is written whatever came)."""
    try:
        value = KSR.pv.get(name)
    except (UnicodeDecodeError, ValueError):
        return "?"
    return "" if value is None else "".join(c if " " <= c < "\x7f" else "?" for c in str(value))


@dataclass(frozen=True)
class NotifyDialog:
    """What every NOTIFY of one subscription record shares: its Request-URI, next hop and
    the headers before CSeq. Built once per record (blf_notify caches it), so a NOTIFY
    costs only its CSeq, Subscription-State and body."""

    ruri: str
    nexthop: str
    head: str


def notify_dialog(subscription: Subscription, event: str, contact: str, reach: Reach | None = None) -> NotifyDialog:
    """RFC 6665 §4.2.2 in-dialog NOTIFY. With `reach` (every record that has a flow), to the
    flow the SUBSCRIBE or its last refresh came from, never to an address only its Contact or
    Record-Route names; the route set stays in the Route headers (or a flow route alone, when
    another instance holds the flow). Without, along the route set, loose routing: the first
    route is the next hop, all of them go in Route headers."""
    routes = [reach.route] if reach is not None and reach.route else list(subscription.route_set)
    lines = [
        f"From: <{subscription.local_uri}>;tag={subscription.local_tag}",
        f"To: <{subscription.remote_uri}>;tag={subscription.remote_tag}",
        f"Call-ID: {subscription.call_id}",
        f"Contact: {contact}",
        *(f"Route: {route}" for route in routes),
        "Max-Forwards: 70",
        f"Event: {event}",
    ]
    nexthop = uri_of(subscription.route_set[0]) if subscription.route_set else ""
    if reach is not None:
        nexthop = reach.dst
    return NotifyDialog(subscription.watcher_contact, nexthop, "\r\n".join(lines) + "\r\n")


def send_notify(dialog: NotifyDialog, cseq: int, state_header: str, body: bytes, content_type: str) -> int:
    """Send one NOTIFY of `dialog` through tm (a transaction of its own); tm's result,
    negative when it could not send it at all. No body, no Content-Type (a pending
    subscription's NOTIFY, RFC 6665 §4.2.1)."""
    typed = f"Content-Type: {content_type}\r\n" if body else ""
    headers = f"{dialog.head}CSeq: {cseq} NOTIFY\r\nSubscription-State: {state_header}\r\n{typed}"
    return int(KSR.tm.t_uac_send("NOTIFY", dialog.ruri, dialog.nexthop, "", headers, body.decode()))


def uri_of(contact: str) -> str:
    """The URI of a name-addr (Contact, Route); empty when there is none or it does not parse."""
    if not contact:
        return ""
    try:
        specs = parse_contacts([contact])
    except SipError:
        return ""
    return specs[0].uri if isinstance(specs, list) and specs else ""
