"""Debian's baresip as a presence client, for the end-to-end tests (tests/e2e/test_baresip.py).

A `real_phone.Baresip` with three more application modules:

- `contact.so` reads `DIR/contacts`; a contact with `;presence=p2p` is one baresip subscribes
  to (`Event: presence`, Expires 600, through its outbound proxy);
- `presence.so` publishes the account's own status (PUBLISH, RFC 3903) every `pubint`
  seconds when the account line has `pubint`, subscribes to the contacts above and shows
  what their NOTIFYs say (`contacts` command, and a log line on each change);
- `ctrl_tcp.so`: commands over TCP on 127.0.0.1 (netstring-framed JSON, one response per
  command): `presence_online`, `presence_offline`, `contacts`.

baresip 1.0.0 (Debian 12) knows four statuses, as `contacts` prints them: Unknown, Online,
Offline, Busy. How it reads a NOTIFY (modules/presence/subscriber.c): no body -> Unknown;
a Content-Type other than application/pidf+xml -> 415 with Accept; otherwise the text of
the first `<basic>` ("open" -> Online, anything else Offline), then `<rpid:away/>` ->
Offline, `<rpid:busy/>` or `<rpid:on-the-phone/>` -> Busy, matched as text (so only with
the `rpid:` prefix).
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

from tests.e2e.real_phone import ANSI, Baresip

STATUSES = ("Unknown", "Online", "Offline", "Busy")
_CONTACT_LINE = re.compile(r"^[ >] +(Unknown|Online|Offline|Busy) .*<([^>]+)>\s*$", re.MULTILINE)


def contacts_file(users: list[str], domain: str) -> str:
    """`DIR/contacts`: each user as a contact baresip subscribes to (`presence=p2p`)."""
    return "".join(f'"{user}" <sip:{user}@{domain}>;presence=p2p\n' for user in users)


def netstring(data: bytes) -> bytes:
    return str(len(data)).encode() + b":" + data + b","


class Control:
    """A connection to baresip's ctrl_tcp: one command at a time, its response back."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        # Made once baresip has said its ctrl_tcp listens (PresencePhone): no retrying.
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.events: list[dict[str, object]] = []

    def _message(self) -> dict[str, object]:
        while True:
            head, colon, rest = self.buffer.partition(b":")
            if colon and len(rest) > int(head):
                length = int(head)
                payload, self.buffer = rest[:length], rest[length + 1:]
                decoded: dict[str, object] = json.loads(payload)
                return decoded
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("baresip closed its control connection")
            self.buffer += chunk

    def command(self, command: str, params: str | None = None) -> str:
        """Run one command; its output (`data`), ANSI colours removed. AssertionError if not ok."""
        token = f"t{time.monotonic_ns()}"
        request: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            request["params"] = params
        self.sock.sendall(netstring(json.dumps(request).encode()))
        while True:
            message = self._message()
            if message.get("response") and message.get("token") == token:
                assert message.get("ok"), f"baresip refused {command!r}: {message}"
                return ANSI.sub("", str(message.get("data", "")))
            self.events.append(message)  # an event (registration, call...) in between

    def close(self) -> None:
        self.sock.close()


class PresencePhone(Baresip):
    """baresip registered through `proxy`, publishing its status every `pubint` seconds (0:
    never), subscribed to the presence of `watching` (users of `domain`)."""

    def __init__(
        self, directory: Path, user: str, domain: str, password: str, proxy: tuple[str, int],
        sip_port: int, ctrl_port: int, transport: str = "tcp", pubint: int = 0,
        watching: tuple[str, ...] = (), lifetime: int = 120,
    ) -> None:
        super().__init__(
            directory, user, domain, password, proxy, sip_port, transport, lifetime,
            extra_config=(
                "module_app\t\tcontact.so",
                "module_app\t\tpresence.so",
                "module_app\t\tctrl_tcp.so",
                f"ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}",
            ),
            account_params=f";pubint={pubint}" if pubint else "",
            contacts=contacts_file(list(watching), domain),
        )
        # ctrl_tcp listens once baresip has loaded its application modules; it says so.
        self.wait_for(f"ctrl_tcp: TCP socket listening on 127.0.0.1:{ctrl_port}", 10.0)
        self.control = Control(ctrl_port)

    def set_online(self) -> None:
        self.control.command("presence_online")

    def set_offline(self) -> None:
        self.control.command("presence_offline")

    def shown(self) -> dict[str, str]:
        """What baresip shows for each contact: {"sip:bob@example.com": "Online", ...}."""
        listed = self.control.command("contacts")
        return {uri: status for status, uri in _CONTACT_LINE.findall(listed)}

    def wait_shown(self, uri: str, status: str, timeout: float = 10.0) -> None:
        """Wait until baresip shows `status` for the contact `uri`: its listing is read again
        each time a NOTIFY reaches it (its SIP trace logs each before baresip handles it, and
        a command is handled after that)."""
        assert status in STATUSES, status
        deadline = time.monotonic() + timeout
        mark = len(self.text())
        while (now := self.shown().get(uri)) != status:
            try:
                mark = self.wait_for("NOTIFY sip:", deadline - time.monotonic(), mark) + 1
            except AssertionError:
                raise AssertionError(
                    f"baresip shows {uri} as {now}, not {status}, after {timeout}s; log {self.log}; "
                    f"its last messages:\n{self.summary()}"
                ) from None

    def wait_published(self, after: int, timeout: float = 10.0) -> int:
        """Wait until a PUBLISH of baresip's past offset `after` is accepted (a 2xx gives it
        a SIP-ETag); that answer's offset in the log."""
        try:
            return self.wait_for("SIP-ETag: ", timeout, after)
        except AssertionError as error:
            refused = ANSI.sub("", self.text()[after:]).splitlines()
            answers = [line for line in refused if "publisher got error response" in line]
            raise AssertionError(f"no PUBLISH of baresip's accepted: {answers or error}; log {self.log}") from None

    def stop(self) -> None:
        self.control.close()
        super().stop()
