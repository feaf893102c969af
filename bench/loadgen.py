"""The load client of `make bench`: many SIP phones over UDP in one asyncio loop.

It registers callees, subscribes watchers (Event: dialog) to them, places calls
(INVITE -> 180 -> 200 after 200 ms -> ACK -> BYE 500 ms later) and timestamps, for every
watcher, the NOTIFY that first shows each state change of each call:
  early      from the callee sending 180 Ringing
  confirmed  from the callee sending 200 OK
  terminated from the caller sending BYE (a dialog shown terminated, or no longer listed)
A change no watcher NOTIFY showed within MISS_AFTER seconds is a missed NOTIFY.

The same client drives both systems (ours, Kamailio's native presence): it only needs a
proxy address per phone, a domain (or one per account: `domain_of`) and the accounts'
passwords. Digest is RFC 7616 MD5 with qop=auth; a phone reuses its nonce with a strictly
increasing nc (the BLF instances accept a nonce only at the instance that issued it, so a
phone always talks to the same proxy) and answers a fresh challenge when a request is
refused with one.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.sipua import challenge_params, digest_credentials, response_bytes

T1 = 0.5
MISS_AFTER = 5.0
RANK = {"trying": 0, "proceeding": 0, "early": 1, "confirmed": 2, "terminated": 3}
KINDS = ("early", "confirmed", "terminated")

_HEADER = re.compile(rb"^([A-Za-z-]+)[ \t]*:[ \t]*(.*?)\r?$", re.M)
_COMPACT = {b"i": b"call-id", b"f": b"from", b"t": b"to", b"m": b"contact", b"v": b"via", b"l": b"content-length",
            b"c": b"content-type", b"o": b"event"}
_DIALOG = re.compile(rb"<(?:\w+:)?dialog\s([^>]*)>(.*?)</(?:\w+:)?dialog>", re.S)
_CALL_ID_ATTR = re.compile(rb'call-id="([^"]*)"')
_STATE = re.compile(rb"<(?:\w+:)?state[^>]*>\s*([A-Za-z]+)\s*<")


class Msg:
    """A parsed SIP message: just what the client needs."""

    __slots__ = ("first", "headers", "body", "source", "at")

    def __init__(self, data: bytes, source: tuple[str, int], at: float) -> None:
        head, _, body = data.partition(b"\r\n\r\n")
        first, _, rest = head.partition(b"\r\n")
        self.first = first.decode(errors="replace")
        self.headers: dict[bytes, list[str]] = {}
        for name, value in _HEADER.findall(rest):
            key = name.lower()
            key = _COMPACT.get(key, key)
            self.headers.setdefault(key, []).append(value.decode(errors="replace"))
        self.body = body
        self.source = source
        self.at = at

    @property
    def is_response(self) -> bool:
        return self.first.startswith("SIP/2.0")

    @property
    def status(self) -> int:
        return int(self.first.split(" ", 2)[1])

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0]

    def h(self, name: str, default: str = "") -> str:
        values = self.headers.get(name.encode())
        return values[0] if values else default

    def all(self, name: str) -> list[str]:
        return self.headers.get(name.encode(), [])

    def cseq(self) -> tuple[int, str]:
        number, _, method = self.h("cseq").partition(" ")
        return int(number or 0), method.strip()

    def to_tag(self) -> str:
        match = re.search(r";\s*tag=([^;>\s]+)", self.h("to"))
        return match.group(1) if match else ""


def dialog_states(body: bytes) -> dict[str, str]:
    """call-id -> state of every <dialog> in a dialog-info document (lower case)."""
    states: dict[str, str] = {}
    for attrs, inner in _DIALOG.findall(body):
        call = _CALL_ID_ATTR.search(attrs)
        state = _STATE.search(inner)
        if call and state:
            states[call.group(1).decode()] = state.group(1).decode().lower()
    return states


@dataclass
class Stats:
    """Counters of one phase, shared by all phones."""

    sent: int = 0
    received: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Phone(asyncio.DatagramProtocol):
    """One account on one UDP socket, talking to one proxy."""

    def __init__(self, client: Client, user: str, password: str, proxy: tuple[str, int]) -> None:
        self.client, self.user, self.password, self.proxy = client, user, password, proxy
        self.domain = client.domain_for(user)
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.cseq = itertools.count(1)
        self.challenge: dict[str, str] | None = None
        self.auth_headers: dict[str, str] = {}
        self.nc = 0
        self.pending: dict[tuple[str, int, str], asyncio.Future[Msg]] = {}
        self.provisional: dict[tuple[str, int, str], asyncio.Event] = {}
        self.on_request: Callable[[Phone, Msg], None] | None = None

    # --- transport -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        at = time.monotonic()
        if not data.strip():
            return
        try:
            msg = Msg(data, addr, at)
            if msg.is_response:
                number, method = msg.cseq()
                key = (msg.h("call-id"), number, method)
                if msg.status < 200:
                    if key in self.provisional:
                        self.provisional[key].set()
                    return
                future = self.pending.get(key)
                if future is not None and not future.done():
                    future.set_result(msg)
                elif method == "INVITE" and 200 <= msg.status < 300:
                    self.client.on_late_invite_ok(self, msg)
                return
            if self.on_request is not None:
                self.on_request(self, msg)
        except Exception:  # noqa: BLE001 - a message we cannot read is counted, not fatal
            self.client.stats.error("unparsable")

    def error_received(self, exc: Exception) -> None:
        self.client.stats.error(type(exc).__name__)

    def send(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to or self.proxy)
        self.client.stats.sent += 1

    # --- building ------------------------------------------------------------------------

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.port}>"

    def build(self, method: str, uri: str, call_id: str, cseq: int, from_tag: str, to: str, to_tag: str = "",
              extra: list[str] | None = None, branch: str = "", body: bytes = b"") -> bytes:
        branch = branch or "z9hG4bK" + uuid.uuid4().hex[:16]
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <{self.aor}>;tag={from_tag}",
            f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            "Max-Forwards: 70",
            f"Contact: {self.contact}",
            *(extra or []),
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + body

    def response(self, request: Msg, status: int, reason: str, to_tag: str = "", dialog: bool = False) -> bytes:
        return response_bytes(request, status, reason, self.contact, to_tag, dialog)

    def _auth_line(self, method: str, uri: str, header: str) -> str:
        assert self.challenge is not None
        self.nc += 1
        return f"{header}: {digest_credentials(self.challenge, method, uri, self.user, self.password, self.nc)}"

    # --- transactions ------------------------------------------------------------------

    async def transaction(self, method: str, uri: str, call_id: str, cseq: int, data: bytes,
                          timeout: float = 8.0, to: tuple[str, int] | None = None) -> Msg | None:
        """Send a request, retransmitting (T1 doubling, RFC 3261 §17.1) until its final answer."""
        key = (call_id, cseq, method)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self.pending[key] = future
        got_provisional = asyncio.Event()
        if method == "INVITE":
            self.provisional[key] = got_provisional
        self.send(data, to)
        deadline, interval = loop.time() + timeout, T1
        try:
            while True:
                wait = min(interval, deadline - loop.time())
                if wait <= 0:
                    self.client.stats.timeouts += 1
                    return None
                try:
                    return await asyncio.wait_for(asyncio.shield(future), wait)
                except TimeoutError:
                    if not got_provisional.is_set():
                        self.send(data, to)
                        self.client.stats.retransmissions += 1
                    interval = min(interval * 2, 4.0)
        finally:
            self.pending.pop(key, None)
            self.provisional.pop(key, None)

    async def request(self, method: str, uri: str, to: str, extra: list[str] | None = None,
                      call_id: str = "", from_tag: str = "", body: bytes = b"") -> tuple[Msg | None, str, str, int]:
        """An out-of-dialog request with digest: (final response, call-id, from-tag, cseq)."""
        call_id = call_id or uuid.uuid4().hex
        from_tag = from_tag or uuid.uuid4().hex[:10]
        for attempt in range(3):
            # Authorization answers a 401, Proxy-Authorization a 407 (RFC 3261 §22.3): ours
            # challenges SUBSCRIBE with 401, native presence with 407; each method is answered
            # the way it was last challenged.
            header = self.auth_headers.get(method, "Authorization" if method == "REGISTER" else "Proxy-Authorization")
            auth = [self._auth_line(method, uri, header)] if self.challenge else []
            cseq = next(self.cseq)
            branch = "z9hG4bK" + uuid.uuid4().hex[:16]
            data = self.build(method, uri, call_id, cseq, from_tag, to, extra=(extra or []) + auth, branch=branch,
                              body=body)
            answer = await self.transaction(method, uri, call_id, cseq, data)
            if answer is None or answer.status not in (401, 407):
                return answer, call_id, from_tag, cseq
            if method == "INVITE":
                self.send(self._ack_for_failure(uri, call_id, cseq, from_tag, to, answer.to_tag(), branch))
            name = "www-authenticate" if answer.status == 401 else "proxy-authenticate"
            self.auth_headers[method] = "Authorization" if answer.status == 401 else "Proxy-Authorization"
            values = [v for v in answer.all(name) if "md5" in v.lower() or "algorithm" not in v.lower()]
            if not values:
                return answer, call_id, from_tag, cseq
            self.challenge, self.nc = challenge_params(values[0]), 0
            if attempt:
                self.client.stats.error(f"{method} re-challenged")
        return answer, call_id, from_tag, cseq

    def _ack_for_failure(self, uri: str, call_id: str, cseq: int, from_tag: str, to: str, to_tag: str,
                         branch: str) -> bytes:
        """The ACK of a non-2xx final answer to an INVITE: same branch, hop by hop (§17.1.1.3)."""
        lines = [
            f"ACK {uri} SIP/2.0", f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <{self.aor}>;tag={from_tag}", f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}", f"CSeq: {cseq} ACK", "Max-Forwards: 70", "Content-Length: 0", "", "",
        ]
        return "\r\n".join(lines).encode()


@dataclass
class Call:
    number: int
    presentity: str
    call_id: str = ""
    t: dict[str, float] = field(default_factory=dict)  # kind -> monotonic time of the causing event
    seen: dict[str, dict[int, float]] = field(default_factory=dict)  # kind -> watcher -> latency
    answered: bool = False
    failed: str = ""
    done: bool = False


class Client:
    """The whole load: callees, watchers, callers, and the latency bookkeeping."""

    def __init__(self, domain: str, password_of: Callable[[str], str],
                 domain_of: Mapping[str, str] | None = None) -> None:
        self.domain = domain
        self.password_of = password_of
        self.domain_of = dict(domain_of or {})  # user -> domain, where not `domain` (bench.run --zones)
        self.stats = Stats()
        self.phones: list[Phone] = []
        self.watchers_of: dict[str, set[int]] = {}  # presentity -> watcher ids subscribed
        self.calls_of: dict[str, list[Call]] = {}  # presentity -> its recent calls
        self.call_by_id: dict[str, Call] = {}
        self.notifies = 0
        self.initial_notifies = 0
        self.dialogs: dict[str, tuple[Phone, Msg]] = {}
        self._acks: dict[str, asyncio.Event] = {}  # call-id -> ACK of our 200 arrived
        self._acks_sent: dict[str, tuple[bytes, tuple[str, int]]] = {}  # call-id -> our ACK, next hop

    def domain_for(self, user: str) -> str:
        return self.domain_of.get(user, self.domain)

    async def phone(self, user: str, proxy: tuple[str, int]) -> Phone:
        loop = asyncio.get_running_loop()
        phone = Phone(self, user, self.password_of(user), proxy)
        await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
        self.phones.append(phone)
        return phone

    def close(self) -> None:
        for phone in self.phones:
            if phone.transport is not None:
                phone.transport.close()

    # --- registration and subscription --------------------------------------------------

    async def register(self, phone: Phone, expires: int = 3600) -> bool:
        answer, *_ = await phone.request("REGISTER", f"sip:{phone.domain}", phone.aor,
                                         [f"Expires: {expires}"])
        if answer is None or answer.status != 200:
            self.stats.error(f"REGISTER {answer.status if answer else 'timeout'}")
            return False
        return True

    async def subscribe(self, phone: Phone, watcher_id: int, presentity: str, expires: int = 3600) -> bool:
        uri = f"sip:{presentity}@{self.domain_for(presentity)}"
        answer, *_ = await phone.request("SUBSCRIBE", uri, uri, [
            "Event: dialog", "Accept: application/dialog-info+xml", f"Expires: {expires}"])
        if answer is None or answer.status not in (200, 202):
            self.stats.error(f"SUBSCRIBE {answer.status if answer else 'timeout'}")
            return False
        self.watchers_of.setdefault(presentity, set()).add(watcher_id)
        return True

    # --- incoming requests -------------------------------------------------------------

    def watcher_request(self, watcher_id: int) -> Callable[[Phone, Msg], None]:
        seen: set[tuple[str, str]] = set()

        def handle(phone: Phone, msg: Msg) -> None:
            phone.send(phone.response(msg, 200, "OK"), msg.source)
            if msg.method != "NOTIFY":
                return
            key = (msg.h("call-id"), msg.h("cseq"))
            if key in seen:
                return  # a retransmission: answered again, counted once
            seen.add(key)
            self.notifies += 1
            match = re.search(r"sip:([^@>;]+)@", msg.all("from")[0] if msg.all("from") else "")
            if match is None:
                return
            self.on_notify(watcher_id, match.group(1), msg)

        return handle

    def on_notify(self, watcher_id: int, presentity: str, msg: Msg) -> None:
        calls = self.calls_of.get(presentity)
        if not calls:
            self.initial_notifies += 1
            return
        states = dialog_states(msg.body)
        for call in calls:
            if call.done:
                continue
            shown = states.get(call.call_id)
            for kind in KINDS:
                at = call.t.get(kind)
                if at is None or msg.at < at:
                    continue
                by_watcher = call.seen.setdefault(kind, {})
                if watcher_id in by_watcher:
                    continue
                if shown is not None:
                    rank = RANK.get(shown, -1)
                else:
                    # Gone from the document after the BYE: the dialog is over (full state).
                    rank = 3 if "terminated" in call.t and msg.at >= call.t["terminated"] else -1
                if rank >= RANK[kind]:
                    by_watcher[watcher_id] = msg.at - at

    def callee_request(self, phone: Phone, msg: Msg) -> None:
        method = msg.method
        if method == "INVITE":
            call_id = msg.h("call-id")
            if call_id in self.dialogs:  # retransmission: our 180 is on its way
                return
            tag = uuid.uuid4().hex[:10]
            self.dialogs[call_id] = (phone, msg)
            call = self.call_by_id.get(call_id)
            phone.send(phone.response(msg, 180, "Ringing", tag, dialog=True), msg.source)
            if call is not None:
                call.t["early"] = time.monotonic()
            asyncio.get_running_loop().create_task(self._answer(phone, msg, tag, call))
        elif method == "ACK":
            acked = self._acks.get(msg.h("call-id"))
            if acked is not None:
                acked.set()
        elif method == "BYE":
            phone.send(phone.response(msg, 200, "OK"), msg.source)
            self.dialogs.pop(msg.h("call-id"), None)
        elif method == "CANCEL":
            phone.send(phone.response(msg, 200, "OK"), msg.source)
        else:
            phone.send(phone.response(msg, 200, "OK"), msg.source)

    async def _answer(self, phone: Phone, invite: Msg, tag: str, call: Call | None) -> None:
        await asyncio.sleep(0.2)
        ok = phone.response(invite, 200, "OK", tag, dialog=True)
        acked = asyncio.Event()
        self._acks[invite.h("call-id")] = acked
        phone.send(ok, invite.source)
        if call is not None:
            call.t["confirmed"] = time.monotonic()
        interval = T1
        try:
            for _ in range(6):  # 200 retransmitted until the ACK (RFC 3261 §13.3.1.4)
                try:
                    await asyncio.wait_for(acked.wait(), interval)
                    return
                except TimeoutError:
                    phone.send(ok, invite.source)
                    self.stats.retransmissions += 1
                    interval = min(interval * 2, 4.0)
        finally:
            self._acks.pop(invite.h("call-id"), None)

    def on_late_invite_ok(self, phone: Phone, msg: Msg) -> None:
        """A retransmitted 200 to an INVITE already answered: ACK it again."""
        ack = self._acks_sent.get(msg.h("call-id"))
        if ack is not None:
            phone.send(ack[0], ack[1])

    # --- calls -------------------------------------------------------------------------

    async def call(self, caller: Phone, call: Call) -> None:
        uri = f"sip:{call.presentity}@{self.domain_for(call.presentity)}"
        call.call_id = uuid.uuid4().hex
        self.call_by_id[call.call_id] = call
        self.calls_of.setdefault(call.presentity, []).append(call)
        answer, call_id, from_tag, cseq = await caller.request(
            "INVITE", uri, uri, ["Content-Type: application/sdp"], call_id=call.call_id)
        if answer is None or not 200 <= answer.status < 300:
            call.failed = f"INVITE {answer.status if answer else 'timeout'}"
            self.stats.error(call.failed)
            return
        call.answered = True
        to_tag = answer.to_tag()
        # Route set: the 200's Record-Route, reversed (RFC 3261 §12.1.2); target: its Contact.
        routes: list[str] = []
        for value in answer.all("record-route"):
            routes += [part.strip() for part in value.split(",") if part.strip()]
        routes.reverse()
        contact = re.search(r"<([^>]+)>", answer.h("contact"))
        target = contact.group(1) if contact else uri
        extra = [f"Route: {', '.join(routes)}"] if routes else []
        nexthop = _address(routes[0] if routes else target, caller.proxy)
        ack = caller.build("ACK", target, call_id, cseq, from_tag, uri, to_tag, extra=extra)
        self._acks_sent[call_id] = (ack, nexthop)
        caller.send(ack, nexthop)
        await asyncio.sleep(0.5)
        bye_cseq = next(caller.cseq)
        bye = caller.build("BYE", target, call_id, bye_cseq, from_tag, uri, to_tag, extra=extra)
        call.t["terminated"] = time.monotonic()
        answer = await caller.transaction("BYE", target, call_id, bye_cseq, bye, to=nexthop)
        self._acks_sent.pop(call_id, None)
        if answer is None or answer.status != 200:
            self.stats.error(f"BYE {answer.status if answer else 'timeout'}")


def _address(uri: str, default: tuple[str, int]) -> tuple[str, int]:
    match = re.search(r"sip:(?:[^@;>]+@)?([0-9.]+)(?::(\d+))?", uri)
    if not match:
        return default
    return match.group(1), int(match.group(2) or 5060)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def summarize(calls: list[Call], watchers_of: dict[str, set[int]]) -> dict[str, Any]:
    """Latency figures (ms) and misses over a set of calls, for every (state change, watcher)."""
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {kind: [] for kind in KINDS}
    missed = 0
    for call in calls:
        if not call.answered:
            continue
        for kind in KINDS:
            if kind not in call.t:
                continue
            seen = call.seen.get(kind, {})
            for watcher in watchers_of.get(call.presentity, ()):
                latency = seen.get(watcher)
                if latency is None or latency > MISS_AFTER:
                    missed += 1
                else:
                    latencies.append(latency * 1000)
                    by_kind[kind].append(latency * 1000)
    return {
        "samples": len(latencies),
        "missed": missed,
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "by_kind": {kind: {"p50_ms": round(percentile(v, 0.5), 2), "p99_ms": round(percentile(v, 0.99), 2)}
                    for kind, v in by_kind.items() if v},
    }
