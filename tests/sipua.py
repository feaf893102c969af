"""A small SIP user agent over UDP for the tests: a watcher phone on the wire.

It speaks to the real Kamailio instances: sends requests (answering digest challenges,
RFC 2617 with qop=auth), receives NOTIFYs and answers them with a chosen status.
"""

from __future__ import annotations

import hashlib
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

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


def _digest(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    realm, nonce = params["realm"], params["nonce"]
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    fields = f'username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5'
    if "auth" in params.get("qop", "").split(","):
        cnonce, nc = uuid.uuid4().hex[:16], "00000001"
        response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        fields += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    if "opaque" in params:
        fields += f', opaque="{params["opaque"]}"'
    return f"Digest {fields}, response=\"{response}\""


class UserAgent:
    """One phone: an account, a UDP port, and a proxy it sends everything to."""

    def __init__(self, user: str, domain: str, password: str, proxy: tuple[str, int]) -> None:
        self.user, self.domain, self.password, self.proxy = user, domain, password, proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        # The address the phone says it sends from (top Via sent-by); a test may make it
        # differ from the socket's, as a phone behind NAT does.
        self.sent_by = f"127.0.0.1:{self.port}"
        self.responses: queue.Queue[Message] = queue.Queue()
        self.requests: queue.Queue[Message] = queue.Queue()
        self.notify_status = 200
        self.answer_requests = True
        self.drop_notifies = 0  # how many next NOTIFYs to leave unanswered (retransmissions too)
        self._dropped: set[str] = set()
        self._cseq = 0
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.port}>"

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
        lines = [f"SIP/2.0 {status} {reason}"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            for value in request.all(name):
                if name == "to" and "tag=" not in value:
                    value += f";tag={to_tag or uuid.uuid4().hex[:8]}"
                lines.append(f"{name.title()}: {value}")
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    def next_cseq(self) -> int:
        self._cseq += 1
        return self._cseq

    def request(
        self, method: str, uri: str, headers: dict[str, str] | None = None, *, to: str | None = None,
        call_id: str | None = None, from_tag: str | None = None, to_tag: str = "", body: bytes = b"",
        auth: bool = True, timeout: float = 5.0, raw_extra: str = "",
    ) -> Message:
        """Send a request and return its final response (after one digest round if asked)."""
        call_id = call_id or uuid.uuid4().hex
        from_tag = from_tag or uuid.uuid4().hex[:10]
        authorization = ""
        for _ in range(2):
            cseq = self.next_cseq()
            message = self._build(method, uri, headers or {}, to or uri, call_id, from_tag, to_tag, cseq,
                                  body, authorization + raw_extra)
            self.sock.sendto(message, self.proxy)
            response = self.wait_response(call_id, cseq, timeout)
            if response.status in (401, 407) and auth and not authorization:
                name = "www-authenticate" if response.status == 401 else "proxy-authenticate"
                header = "Authorization" if response.status == 401 else "Proxy-Authorization"
                value = _digest(response.header(name) or "", method, uri, self.user, self.password)
                authorization = f"{header}: {value}\r\n"
                continue
            return response
        return response

    def _build(self, method: str, uri: str, headers: dict[str, str], to: str, call_id: str, from_tag: str,
               to_tag: str, cseq: int, body: bytes, extra: str) -> bytes:
        branch = "z9hG4bK" + uuid.uuid4().hex[:16]
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.sent_by};branch={branch};rport",
            f"From: <{self.aor}>;tag={from_tag}",
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

    def wait_request(self, method: str = "NOTIFY", timeout: float = 5.0) -> Message:
        return _take(self.requests, lambda message: message.method == method, timeout, method)

    def register(self, expires: int = 300, contact: str = "") -> Message:
        """REGISTER this phone's contact, or `contact` (where another UA listens)."""
        headers = {"Expires": str(expires), "Contact": contact or self.contact}
        call_id = f"reg-{self.port}-{hashlib.md5(contact.encode()).hexdigest()[:8]}"
        return self.request("REGISTER", f"sip:{self.domain}", headers, to=self.aor, call_id=call_id)


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
