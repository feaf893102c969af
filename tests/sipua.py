"""A small SIP user agent over UDP for the tests: a watcher phone on the wire.

It speaks to the real Kamailio instances: sends requests (answering digest challenges,
RFC 7616 with qop=auth, SHA-256 or MD5), receives NOTIFYs and answers them with a chosen status.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

COMPACT = {"i": "call-id", "f": "from", "t": "to", "m": "contact", "v": "via", "l": "content-length",
           "c": "content-type", "o": "event", "k": "supported", "e": "content-encoding"}


@dataclass
class Message:
    first_line: str
    headers: list[tuple[str, str]]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)
    source: tuple[str, int] = ("", 0)

    @classmethod
    def parse(cls, data: bytes) -> Message:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers.append((COMPACT.get(key, key), value.strip()))
        message = cls(lines[0], headers, body)
        length = message.header("content-length")
        if length is not None and length.isdigit():
            message.body = body[: int(length)]
        return message

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.first_line.split(" ", 2)[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        return self.first_line.split(" ", 1)[0] if not self.is_response else self.header("cseq", "").split()[-1]

    def header(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return default

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def tag(self, name: str) -> str:
        match = re.search(r";\s*tag=([^;>\s]+)", self.header(name, "") or "")
        return match.group(1) if match else ""


DIGEST_HASHES = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
_PARAM = re.compile(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def challenge_params(value: str) -> dict[str, str]:
    """The parameters of one WWW-/Proxy-Authenticate value (quoted strings unquoted)."""
    return {name.lower(): quoted if quoted or not bare else bare for name, quoted, bare in _PARAM.findall(value)}


def pick_challenge(values: list[str], supported: tuple[str, ...]) -> dict[str, str] | None:
    """Like a phone: the first Digest challenge whose algorithm it supports (RFC 7616 §3.7)."""
    for value in values:
        if not value.strip().lower().startswith("digest"):
            continue
        params = challenge_params(value)
        if params.get("algorithm", "MD5").upper() in supported:
            return params
    return None


def digest_credentials(
    challenge: dict[str, str], method: str, uri: str, user: str, password: str, nc: int = 1, cnonce: str = ""
) -> str:
    """Credentials answering `challenge` (RFC 7616 §3.4, qop=auth; RFC 2069 without qop)."""
    realm, nonce = challenge["realm"], challenge["nonce"]
    algorithm = challenge.get("algorithm", "MD5").upper()
    h = DIGEST_HASHES[algorithm]

    def hex_of(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1, ha2 = hex_of(f"{user}:{realm}:{password}"), hex_of(f"{method}:{uri}")
    fields = f'username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm={algorithm}'
    if "auth" in [q.strip() for q in challenge.get("qop", "").split(",")]:
        cnonce, count = cnonce or uuid.uuid4().hex[:16], f"{nc:08x}"
        response = hex_of(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        fields += f', qop=auth, nc={count}, cnonce="{cnonce}"'
    else:
        response = hex_of(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in challenge:
        fields += f', opaque="{challenge["opaque"]}"'
    return f'Digest {fields}, response="{response}"'


class HasHeaders(Protocol):
    def all(self, name: str) -> list[str]: ...


def response_bytes(
    request: HasHeaders, status: int, reason: str, contact: str, to_tag: str = "", dialog: bool = False
) -> bytes:
    """A response to `request` (RFC 3261 §8.2.6); one that sets up a dialog copies the
    Record-Route and has a Contact (§12.1.1). The tests' phones and the benchmark's share it."""
    lines = [f"SIP/2.0 {status} {reason}"]
    for name in ("via", "from", "to", "call-id", "cseq", *(("record-route",) if dialog else ())):
        for value in request.all(name):
            if name == "to" and "tag=" not in value:
                value += f";tag={to_tag or uuid.uuid4().hex[:8]}"
            lines.append(f"{name.title()}: {value}")
    if dialog:
        lines.append(f"Contact: {contact}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class UserAgent:
    """One phone: an account, a UDP port, and a proxy it sends everything to."""

    def __init__(
        self, user: str, domain: str, password: str, proxy: tuple[str, int], transport: str = "udp",
        bind: str = "127.0.0.1",
    ) -> None:
        self.user, self.domain, self.password, self.proxy = user, domain, password, proxy
        self.transport = transport
        self.sock: socket.socket | StreamSocket
        if transport == "tcp":
            # Like a phone on TCP: one connection to its proxy, from an ephemeral port it
            # does not listen on; everything for it must come back over that connection.
            self.sock = StreamSocket(proxy, bind)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((bind, 0))
        self.host = bind
        self.port = self.sock.getsockname()[1]
        # The address the phone says it sends from (top Via sent-by); a test may make it
        # differ from the socket's, as a phone behind NAT does.
        self.sent_by = f"{bind}:{self.port}"
        self.rport = True  # ask for responses at the source port (RFC 3581), as most phones do
        self.responses: queue.Queue[Message] = queue.Queue()
        self.requests: queue.Queue[Message] = queue.Queue()
        self.notify_status = 200
        self.answer_requests = True
        self.drop_notifies = 0  # how many next NOTIFYs to leave unanswered (retransmissions too)
        self._dropped: set[str] = set()
        self._cseq = 0
        # Digest, like a phone: the algorithms it speaks in its order of preference, the last
        # challenge (reused for later requests when reuse_nonce is set, with nc counting up),
        # and every credentials header line it sent (tests replay them).
        self.algorithms: tuple[str, ...] = ("SHA-256", "MD5")
        self.reuse_nonce = False
        self.challenge: dict[str, str] | None = None
        # The From URI when a test writes another one (rewritten, anonymous): None is the account's.
        self.from_uri: str | None = None
        self.nonce_counts: dict[str, int] = {}
        self.sent_credentials: list[str] = []
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{self.user}@{self.host}:{self.port}{suffix}>"

    def close(self) -> None:
        self._running = False
        self.sock.close()

    def _receive(self) -> None:
        while self._running:
            try:
                data, source = self.sock.recvfrom(65535)
            except OSError:
                return
            if not data.strip():
                continue
            message = Message.parse(data)
            message.source = source
            if message.is_response:
                self.responses.put(message)
                continue
            if message.method == "NOTIFY" and self._dropping(message):
                self.requests.put(message)
                continue
            if self.answer_requests:
                status = self.notify_status if message.method == "NOTIFY" else 200
                # Responses go back where the request came from (RFC 3261 §18.2.2).
                try:
                    self.sock.sendto(self.response_to(message, status), source)
                except OSError:
                    return  # closed while answering: the phone is gone
            self.requests.put(message)

    def _dropping(self, message: Message) -> bool:
        cseq = message.header("cseq") or ""
        if cseq in self._dropped:
            return True
        if self.drop_notifies > 0:
            self.drop_notifies -= 1
            self._dropped.add(cseq)
            return True
        return False

    def response_to(self, request: Message, status: int, reason: str = "OK", to_tag: str = "") -> bytes:
        dialog = request.method in ("INVITE", "SUBSCRIBE") and 100 < status < 300
        return response_bytes(request, status, reason, self.contact, to_tag, dialog)

    def next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    def request(
        self, method: str, uri: str, headers: dict[str, str] | None = None, *, to: str | None = None,
        call_id: str | None = None, from_tag: str | None = None, to_tag: str = "", body: bytes = b"",
        auth: bool = True, timeout: float = 5.0, raw_extra: str = "",
    ) -> Message:
        """Send a request and return its final response, answering a digest challenge once
        (and once more if the answer is a stale=true challenge, RFC 7616 §3.3)."""
        call_id = call_id or uuid.uuid4().hex
        from_tag = from_tag or uuid.uuid4().hex[:10]
        authorization = self._credentials_line(method, uri) if auth and self.reuse_nonce and self.challenge else ""
        stale_retried = False
        for _ in range(3):
            cseq = self.next_cseq()
            message = self._build(method, uri, headers or {}, to or uri, call_id, from_tag, to_tag, cseq,
                                  body, authorization + raw_extra)
            self.sock.sendto(message, self.proxy)
            response = self.wait_response(call_id, cseq, timeout)
            if response.status not in (401, 407) or not auth:
                return response
            name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
            challenge = pick_challenge(response.all(name), self.algorithms)
            stale = challenge is not None and challenge.get("stale", "").lower() == "true"
            if challenge is None or (authorization and (not stale or stale_retried)):
                return response
            stale_retried = bool(authorization)
            self.challenge = challenge
            authorization = self._credentials_line(method, uri, response.status)
        return response

    def _credentials_line(self, method: str, uri: str, status: int | None = None) -> str:
        """A credentials header for the held challenge with the nonce's next nonce count:
        Authorization answers a 401 (a UAS: REGISTER, SUBSCRIBE), Proxy-Authorization a 407
        (a proxy: INVITE), RFC 3261 §22.3; sent before any challenge, the method decides."""
        assert self.challenge is not None
        nonce = self.challenge["nonce"]
        self.nonce_counts[nonce] = self.nonce_counts.get(nonce, 0) + 1
        value = digest_credentials(self.challenge, method, uri, self.user, self.password, self.nonce_counts[nonce])
        uas = status == 401 if status is not None else method in ("REGISTER", "SUBSCRIBE", "PUBLISH")
        line = f"{'Authorization' if uas else 'Proxy-Authorization'}: {value}\r\n"
        self.sent_credentials.append(line)
        return line

    def _build(self, method: str, uri: str, headers: dict[str, str], to: str, call_id: str, from_tag: str,
               to_tag: str, cseq: int, body: bytes, extra: str) -> bytes:
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.sent_by};branch={branch}" + (";rport" if self.rport else ""),
            f"From: <{self.from_uri or self.aor}>;tag={from_tag}",
            f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            "Max-Forwards: 70",
        ]
        if "Contact" not in headers:
            lines.append(f"Contact: {self.contact}")
        # An empty value leaves the header out (a REGISTER query has no Contact).
        lines += [f"{name}: {value}" for name, value in headers.items() if value != ""]
        text = "\r\n".join(lines) + "\r\n" + extra + f"Content-Length: {len(body)}\r\n\r\n"
        return text.encode() + body

    def wait_response(self, call_id: str, cseq: int, timeout: float) -> Message:
        def final_answer(message: Message) -> bool:
            number = int((message.header("cseq") or "0").split()[0])
            return message.header("call-id") == call_id and number == cseq and message.status >= 200

        return _take(self.responses, final_answer, timeout, f"final response to CSeq {cseq} of {call_id}")

    def wait_provisional(self, call_id: str, cseq: int, status: int, timeout: float) -> Message:
        """The provisional response `status` (100, 180, ...) to CSeq `cseq` of `call_id`."""
        def wanted(message: Message) -> bool:
            number = int((message.header("cseq") or "0").split()[0])
            return message.header("call-id") == call_id and number == cseq and message.status == status

        return _take(self.responses, wanted, timeout, f"{status} to CSeq {cseq} of {call_id}")

    def wait_request(self, method: str = "NOTIFY", timeout: float = 5.0) -> Message:
        return _take(self.requests, lambda message: message.method == method, timeout, method)

    def register(self, expires: int = 300, contact: str = "") -> Message:
        """REGISTER this phone's contact, or `contact` (where another UA listens)."""
        headers = {"Expires": str(expires), "Contact": contact or self.contact}
        call_id = f"reg-{self.port}-{hashlib.md5(contact.encode()).hexdigest()[:8]}"
        return self.request("REGISTER", f"sip:{self.domain}", headers, to=self.aor, call_id=call_id)


class StreamSocket:
    """A TCP connection with the datagram calls UserAgent uses (sendto, recvfrom): each
    recvfrom returns one whole SIP message, framed by Content-Length (RFC 3261 §18.3)."""

    def __init__(self, peer: tuple[str, int], bind: str = "127.0.0.1") -> None:
        self.peer = peer
        self._sock = socket.create_connection(peer, timeout=5, source_address=(bind, 0))
        self._sock.settimeout(None)
        self._buffer = b""

    def getsockname(self) -> tuple[str, int]:
        name = self._sock.getsockname()
        return str(name[0]), int(name[1])

    def sendto(self, data: bytes, address: object = None) -> int:
        self._sock.sendall(data)
        return len(data)

    def recvfrom(self, size: int = 65535) -> tuple[bytes, tuple[str, int]]:
        while True:
            self._buffer = self._buffer.lstrip(b"\r\n")  # keepalives (RFC 5626 §4.4.1)
            head, separator, rest = self._buffer.partition(b"\r\n\r\n")
            if separator:
                match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
                length = int(match.group(1)) if match else 0
                if len(rest) >= length:
                    self._buffer = rest[length:]
                    return head + separator + rest[:length], self.peer
            chunk = self._sock.recv(size)
            if not chunk:
                raise OSError("connection closed")
            self._buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _take(source: queue.Queue[Message], wanted: Callable[[Message], bool], timeout: float, what: str) -> Message:
    """The first message from `source` that is `wanted`, others dropped; TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            message = source.get(timeout=max(remaining, 0.0)) if remaining > 0 else source.get_nowait()
        except queue.Empty:
            raise TimeoutError(f"no {what} within {timeout}s") from None
        if wanted(message):
            return message
