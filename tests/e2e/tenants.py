"""Multi-domain helpers for the issue 7 end-to-end tests, on the session's two-instance lab.

Each test makes its own domains (`t-<hex>.example`, so tests never share rules), accounts
with aliases, phones and watchers in a given domain, and places calls from a test phone
(a UserAgent, so that From, PAI and display name can be anything) to a ringing sipp callee.
conftest.py's `lab`, `phones` and `sipp` fixtures do the rest.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from tests.e2e.blf_watch import Subscription, Watcher
from tests.e2e.conftest import KS, QUIET_SECONDS, Sipp, blfctl, free_port
from tests.sipua import Message, UserAgent

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass(frozen=True)
class Tenant:
    """An account of a test domain: `user@domain`, its password and aliases."""

    user: str
    domain: str
    password: str
    aliases: tuple[str, ...] = ()

    @property
    def aor(self) -> str:
        return f"{self.user}@{self.domain}"

    def uri(self, user: str | None = None) -> str:
        """`sip:<user>@<domain>`: the account's URI, or the one of another user (an alias) there."""
        return f"sip:{user or self.user}@{self.domain}"


def unique_domain() -> str:
    return f"t-{uuid.uuid4().hex[:10]}.example"


def add_domain(
    may_call: tuple[str, ...] = (), accept_from: tuple[str, ...] | None = None, strip_plus: bool = False,
    name: str | None = None,
) -> str:
    """A new served domain (unique name unless given) with its rules; its name."""
    name = name or unique_domain()
    args = ["domain", "add", name]
    if may_call:
        args += ["--may-call", *may_call]
    if accept_from is not None:
        args += ["--accept-from", *accept_from]
    if strip_plus:
        args.append("--strip-plus")
    blfctl(*args)
    return name


def set_domain(name: str, may_call: tuple[str, ...] = (), accept_from: tuple[str, ...] | None = None) -> None:
    args = ["domain", "set", name, "--may-call", *may_call]
    if accept_from is not None:
        args += ["--accept-from", *accept_from]
    blfctl(*args)


def add_account(domain: str, name: str, aliases: tuple[str, ...] = ()) -> Tenant:
    """A fresh account `name-<hex>@domain` with `aliases` (taken as given: tests make them unique
    per domain, and each test has its own domains)."""
    user = f"{name}-{uuid.uuid4().hex[:6]}"
    password = f"{user}-pw"
    args = ["account", "add", f"{user}@{domain}", "--password", password]
    if aliases:
        args += ["--alias", *aliases]
    blfctl(*args)
    return Tenant(user, domain, password, aliases)


def add_alias(account: Tenant, *aliases: str) -> None:
    blfctl("alias", "add", account.aor, *aliases)


def remove_alias(domain: str, alias: str) -> None:
    blfctl("alias", "remove", f"{alias}@{domain}")


class TenantPhone(UserAgent):
    """A test phone that can also put a display name in its From (`display`), as PBXs rewrite it."""

    display = ""

    def _build(self, method: str, uri: str, headers: dict[str, str], to: str, call_id: str, from_tag: str,
               to_tag: str, cseq: int, body: bytes, extra: str) -> bytes:
        message = super()._build(method, uri, headers, to, call_id, from_tag, to_tag, cseq, body, extra)
        if not self.display:
            return message
        return message.replace(b"\r\nFrom: <", f'\r\nFrom: "{self.display}" <'.encode(), 1)


def tenant_phone(
    phones: list[UserAgent], account: Tenant, instance: str, password: str | None = None, bind: str = "127.0.0.1",
    user: str | None = None,
) -> TenantPhone:
    """A phone of `account` (its domain in From, its user and password for digest) on `instance`;
    `user` and `password` replace the account's in the credentials (and From)."""
    ua = TenantPhone(user or account.user, account.domain, password or account.password, KS[instance], bind=bind)
    phones.append(ua)
    return ua


def shown(aor: str) -> dict[str, object]:
    """`blfctl show AOR --json`: the account's state, registrations, legs, subscriptions."""
    return dict(json.loads(blfctl("show", aor, "--json").stdout))


def tenant_watcher(phones: list[UserAgent], account: Tenant, instance: str) -> Watcher:
    return Watcher(tenant_phone(phones, account, instance))


def subscribe_headers(expires: int = 600) -> dict[str, str]:
    return {"Event": "dialog", "Expires": str(expires), "Accept": "application/dialog-info+xml"}


def try_subscribe(
    watcher: Watcher, uri: str, expires: int = 600, to: str | None = None, raw_extra: str = "",
    entity: str | None = None,
) -> tuple[Message, Subscription | None]:
    """A SUBSCRIBE from `watcher` to any URI; on a 200 the subscription is kept by the
    watcher (its NOTIFYs checked, `entity` expected in them: the URI by default) and its
    first NOTIFY waited for. The final response and the subscription (None unless 200)."""
    call_id = f"sub-{uuid.uuid4().hex[:12]}"
    from_tag = f"w{uuid.uuid4().hex[:8]}"
    response = watcher.ua.request(
        "SUBSCRIBE", uri, subscribe_headers(expires), to=to, call_id=call_id, from_tag=from_tag,
        raw_extra=raw_extra,
    )
    if response.status != 200:
        return response, None
    sub = Subscription(uri, entity or uri, call_id, from_tag, response.tag("to"), response)
    watcher.subs[call_id] = sub
    if expires > 0:
        watcher.wait(sub, lambda s: bool(s.notifies), 5.0)
    return response, sub


def watch(watcher: Watcher, uri: str, entity: str | None = None) -> Subscription:
    """A subscription that must be accepted, with its first NOTIFY in."""
    response, sub = try_subscribe(watcher, uri, entity=entity)
    assert response.status == 200 and sub is not None, f"SUBSCRIBE {uri}: {response.first_line}"
    return sub


def quiet(watcher: Watcher, sub: Subscription, seconds: float = QUIET_SECONDS) -> bool:
    """True when `sub` gets no NOTIFY within `seconds` (others of the watcher are taken in)."""
    before = len(sub.notifies)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watcher.pump(min(0.25, max(0.0, deadline - time.monotonic())))
        if len(sub.notifies) > before:
            return False
    return True


def registered_callee(
    phones: list[UserAgent], sipp: Sipp, account: Tenant, instance: str = "ks2", ring_ms: int = 800
) -> int:
    """`account` registers (through `instance`) a contact where a sipp callee rings for `ring_ms`
    then answers; the port."""
    port = free_port()
    ua = tenant_phone(phones, account, instance)
    response = ua.register(300, contact=f"<sip:{account.user}@127.0.0.1:{port}>")
    assert response.status == 200, response.first_line
    sipp.callee(port, ring_ms=ring_ms)
    return port


def invite(
    ua: UserAgent, uri: str, headers: dict[str, str] | None = None, raw_extra: str = "", to: str | None = None,
    timeout: float = 10.0,
) -> Message:
    """An INVITE with an SDP offer (credentials on a 407); its final response, ACKed when 2xx.
    (Non-2xx finals are ACKed by the transaction layer of the proxy's side: RFC 3261 §17.1.1.3
    says the client ACKs them too; the tests' UA leaves that to the retransmission timers.)"""
    all_headers = {"Content-Type": "application/sdp", **(headers or {})}
    call_id = uuid.uuid4().hex
    response = ua.request("INVITE", uri, all_headers, to=to, call_id=call_id, body=SDP, raw_extra=raw_extra,
                          timeout=timeout)
    if 200 <= response.status < 300:
        ack(ua, response)
    return response


def _dialog_route(answer: Message) -> tuple[str, str]:
    """The remote target and Route header of the dialog a 2xx set up (RFC 3261 §12.1.2)."""
    target = (answer.header("contact") or "").strip().strip("<>").split(">")[0]
    routes = list(reversed(answer.all("record-route")))
    return target, ", ".join(routes)


def ack(ua: UserAgent, answer: Message) -> None:
    target, route = _dialog_route(answer)
    cseq = (answer.header("cseq") or "1").split()[0]
    lines = [
        f"ACK {target} SIP/2.0",
        f"Via: SIP/2.0/UDP {ua.sent_by};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
        f"From: {answer.header('from')}",
        f"To: {answer.header('to')}",
        f"Call-ID: {answer.header('call-id')}",
        f"CSeq: {cseq} ACK",
        "Max-Forwards: 70",
        *([f"Route: {route}"] if route else []),
        "Content-Length: 0",
        "",
        "",
    ]
    ua.sock.sendto("\r\n".join(lines).encode(), ua.proxy)


def hang_up(ua: UserAgent, answer: Message) -> Message:
    """BYE in the dialog `answer` (a 2xx to an INVITE of `ua`) set up."""
    target, route = _dialog_route(answer)
    to = (answer.header("to") or "").split(";")[0].strip().strip("<>")
    return ua.request(
        "BYE", target, {"Route": route} if route else {}, to=to, call_id=answer.header("call-id"),
        from_tag=answer.tag("from"), to_tag=answer.tag("to"), auth=False,
    )


def expect_lamps(watcher: Watcher, sub: Subscription, lamps: list[str], timeout: float = 10.0) -> None:
    """Wait until `sub` has shown `lamps` in order (the first being its state before the call)."""
    watcher.wait(sub, lambda s: len(s.lamps) >= len(lamps), timeout)
    assert sub.lamps == lamps, f"{sub.uri}: lamps {sub.lamps}, expected {lamps}"
