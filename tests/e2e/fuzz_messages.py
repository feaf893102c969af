"""Seeded generator of malformed and hostile SIP messages, and a sender spreading them over sources.

Message `n` of seed `s` is made from its own `random.Random(f"{s}:{n}")`: any one message can be
made again alone (`message(seed, n, ...)`, or `python -m tests.e2e.fuzz_messages --seed S --show N`).

Every message starts as a valid request of a method the instances handle (REGISTER, SUBSCRIBE,
INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, MESSAGE, and a few they do not: PUBLISH, REFER, INFO,
UPDATE, PRACK), or as an unsolicited response, or as one of the relay tricks of issue 5 (an
in-dialog request with a To-tag and a Route naming an instance, then a third party; strict
routing; a Route to ourselves then a foreign host) and issue 12 (a real dialog's signed entry
copied with the third party's host and port, over UDP or TCP, or with maddr; a real dialog's
route set used again after its BYE). Then one to three mutations spoil it: huge
headers, bad Content-Length, Expires, Event, CSeq, Max-Forwards, Via, digest fields in
Authorization / Proxy-Authorization, garbage bytes, non-UTF-8, NUL, truncation, header folding,
compact forms, hundreds of Vias, Routes, Record-Routes and Contacts, duplicated or missing
mandatory headers, XML bombs...

Identities are recognisable: every Call-ID, From user, tag and Contact user contains "fuzz", and
every Contact, Route target and third party is `sink` (an address the test listens on and no valid
traffic uses), or a victim account's registered contact; so anything the fuzz input creates in
the store, or any request an instance relays for it, can be told from the valid traffic's.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import random
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MARK = "fuzz"
CRLF = "\r\n"
METHODS = ("REGISTER", "SUBSCRIBE", "PUBLISH", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "NOTIFY", "MESSAGE")
OTHER_METHODS = ("REFER", "INFO", "UPDATE", "PRACK", "FOO", "invite", "")
COMPACT = {"Call-ID": "i", "From": "f", "To": "t", "Contact": "m", "Via": "v", "Content-Length": "l",
           "Content-Type": "c", "Event": "o", "Supported": "k", "Subject": "s", "Refer-To": "r"}
NONCE_PLACEHOLDER = "@@NONCE@@"


@dataclass(frozen=True)
class RoutedDialog:
    """A real dialog of the lab the fuzz may name: its Call-ID, tags and route set (as its
    caller sends it, our signed Record-Route entries), and whether its BYE was sent."""

    call_id: str
    from_tag: str
    to_tag: str
    routes: tuple[str, ...]
    ended: bool = False


@dataclass(frozen=True)
class Target:
    """Where the fuzz goes and who it names."""

    instances: tuple[tuple[str, int], ...]  # (host, port) of every instance
    sink: tuple[str, int]  # a third party: nothing should ever be relayed there
    domain: str = "example.com"
    victims: tuple[str, ...] = ()  # users of real accounts the fuzz may name (never authenticated)
    dialogs: tuple[RoutedDialog, ...] = ()  # real route sets for the issue 12 tricks


@dataclass
class Draft:
    method: str
    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    content_length: str | None = None  # None: the right one
    response: bool = False

    def set(self, name: str, value: str) -> None:
        for i, (key, _) in enumerate(self.headers):
            if key.lower() == name.lower():
                self.headers[i] = (key, value)
                return
        self.headers.append((name, value))

    def get(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def drop(self, name: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]

    def render(self) -> bytes:
        lines = [self.start] + [f"{k}: {v}" if k else v for k, v in self.headers]
        length = str(len(self.body)) if self.content_length is None else self.content_length
        if length != "-":
            lines.append(f"Content-Length: {length}")
        return (CRLF.join(lines) + CRLF + CRLF).encode("utf-8", "surrogateescape") + self.body


@dataclass
class Ctx:
    rng: random.Random
    n: int
    seed: int
    target: Target
    transport: str  # "UDP" or "TCP"
    source: tuple[str, int]

    def tag(self) -> str:
        return f"{MARK}{self.n}x{self.rng.randrange(1 << 30):x}"

    def user(self) -> str:
        return f"{MARK}{self.n}"

    @property
    def sink_uri(self) -> str:
        host, port = self.target.sink
        return f"sip:{MARK}sink{self.n}@{host}:{port}"

    def instance(self) -> tuple[str, int]:
        return self.rng.choice(self.target.instances)

    def someone(self) -> str:
        """A user the request is for: a victim account, a fuzz user, an unknown one."""
        pool = list(self.target.victims) + [self.user(), f"{MARK}-nobody", "alice", "*", ""]
        return self.rng.choice(pool)


# --- valid starting points ---------------------------------------------------------------------


def base(ctx: Ctx, method: str, in_dialog: bool = False) -> Draft:
    rng, domain = ctx.rng, ctx.target.domain
    host, port = ctx.source
    to_user = ctx.someone()
    ruri = f"sip:{domain}" if method == "REGISTER" else f"sip:{to_user}@{domain}"
    from_domain = rng.choice([domain, domain, "evil.org"])
    from_user = ctx.user()
    to_uri = f"sip:{from_user}@{domain}" if method == "REGISTER" else f"sip:{to_user}@{domain}"
    to = f"<{to_uri}>" + (f";tag={ctx.tag()}" if in_dialog else "")
    cseq = rng.choice([1, 2, 101, 4711])
    cseq_method = "INVITE" if method in ("ACK", "CANCEL") and rng.random() < 0.5 else method
    headers = [
        ("Via", f"SIP/2.0/{ctx.transport} {host}:{port};branch=z9hG4bK{ctx.tag()};rport"),
        ("Max-Forwards", "70"),
        ("From", f'"{MARK} {ctx.n}" <sip:{from_user}@{from_domain}>;tag={ctx.tag()}'),
        ("To", to),
        ("Call-ID", f"{MARK}-{ctx.seed}-{ctx.n}@{host}"),
        ("CSeq", f"{cseq} {cseq_method if method in ('ACK', 'CANCEL') else method}"),
    ]
    if method != "ACK" and method != "CANCEL":
        headers.append(("Contact", f"<{ctx.sink_uri}{';transport=tcp' if ctx.transport == 'TCP' else ''}>"))
    body = b""
    if method == "REGISTER":
        headers.append(("Expires", rng.choice(["60", "3600", "0", "300"])))
    elif method == "SUBSCRIBE":
        headers += [("Event", rng.choice(["dialog", "presence", "dialog;sla", "message-summary", "reg",
                                          "presence.winfo", "dialog.winfo"])),
                    ("Expires", rng.choice(["600", "0", "3600", "60"])),
                    ("Accept", rng.choice(["application/dialog-info+xml", "application/pidf+xml", "*/*"]))]
    elif method in ("INVITE", "UPDATE") or (method == "ACK" and rng.random() < 0.3):
        body = sdp(ctx).encode()
        headers.append(("Content-Type", "application/sdp"))
    elif method == "NOTIFY":
        headers += [("Event", "dialog"), ("Subscription-State", rng.choice(["active;expires=60", "terminated"])),
                    ("Content-Type", "application/dialog-info+xml")]
        body = dialog_info(ctx).encode()
    elif method == "MESSAGE":
        headers.append(("Content-Type", "text/plain"))
        body = f"{MARK} message {ctx.n}".encode()
    elif method == "PUBLISH":
        event = rng.choice(["presence", "presence", "dialog", "reg"])
        headers += [("Event", event), ("Expires", rng.choice(["60", "0", "3600", "1"]))]
        if rng.random() < 0.3:
            headers.append(("SIP-If-Match", rng.choice([ctx.tag(), "", "0" * 64])))
        if event == "presence":
            headers.append(("Content-Type", "application/pidf+xml"))
            body = pidf(ctx).encode()
        else:
            headers.append(("Content-Type", "application/dialog-info+xml"))
            body = dialog_info(ctx).encode()
    elif method == "REFER":
        headers.append(("Refer-To", f"<{ctx.sink_uri}>"))
    return Draft(method, f"{method} {ruri} SIP/2.0", headers, body)


def sdp(ctx: Ctx) -> str:
    host = ctx.source[0]
    return CRLF.join([
        "v=0", f"o={MARK} {ctx.n} 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        "m=audio 4000 RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000", "",
    ])


def dialog_info(ctx: Ctx) -> str:
    return (
        '<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" '
        f'state="full" entity="sip:{ctx.user()}@{ctx.target.domain}"><dialog id="{MARK}{ctx.n}">'
        "<state>confirmed</state></dialog></dialog-info>"
    )


def pidf(ctx: Ctx) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="sip:{ctx.user()}@{ctx.target.domain}"><tuple id="{MARK}{ctx.n}"><status><basic>'
        f'{ctx.rng.choice(["open", "closed"])}</basic></status></tuple></presence>'
    )


# Hostile PIDF documents (issue 13 "Bad input"): each is refused with a 4xx, nothing fetched.
HOSTILE_PIDF = (
    '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status><basic>&x;'
    "</basic></status></tuple></presence>",
    '<?xml version="1.0"?><!DOCTYPE p SYSTEM "http://127.0.0.1:9/x.dtd">'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"/>',
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b"><tuple id="t"><status>'
    + "<x>" * 200 + "</x>" * 200 + "<basic>open</basic></status></tuple></presence>",
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">'
    + '<tuple id="t"><status><basic>open</basic></status><note>' + "A" * 40000 + "</note></tuple></presence>",
)


def relay_trick(ctx: Ctx) -> Draft:
    """Issue 5 finding 1: an in-dialog request with a Route set naming an instance, for a third party."""
    rng = ctx.rng
    method = rng.choice(["INVITE", "MESSAGE", "OPTIONS", "BYE", "NOTIFY", "SUBSCRIBE", "REFER", "ACK", "INFO"])
    draft = base(ctx, method, in_dialog=True)
    host, port = ctx.instance()
    other = ctx.instance()
    sink_host, sink_port = ctx.target.sink
    lr_self = f"<sip:{host}:{port};lr>"
    trick = rng.randrange(9)
    if trick >= 7:
        return route_rewrite(ctx, draft) if trick == 7 else after_bye(ctx, draft)
    if trick == 0:  # plain loose route through us to the sink
        draft.start = f"{method} {ctx.sink_uri} SIP/2.0"
        draft.headers.insert(1, ("Route", lr_self))
    elif trick == 1:  # route to ourselves, then a foreign host
        draft.start = f"{method} sip:{ctx.user()}@{ctx.target.domain} SIP/2.0"
        draft.headers.insert(1, ("Route", f"{lr_self}, <sip:{sink_host}:{sink_port};lr>"))
    elif trick == 2:  # strict routing: R-URI is us (no lr), the last Route the third party
        draft.start = f"{method} sip:{host}:{port} SIP/2.0"
        draft.headers.insert(1, ("Route", f"<{ctx.sink_uri}>"))
    elif trick == 3:  # via the other instance
        draft.start = f"{method} {ctx.sink_uri} SIP/2.0"
        draft.headers.insert(1, ("Route", f"{lr_self}, <sip:{other[0]}:{other[1]};lr>"))
    elif trick == 4:  # a forged Record-Route-like entry with made-up parameters
        forged = f"<sip:{host}:{port};lr;ftag={ctx.tag()};did={MARK}.{rng.randrange(99999)};blf={MARK}{'a' * 32}>"
        draft.start = f"{method} {ctx.sink_uri} SIP/2.0"
        draft.headers.insert(1, ("Route", forged))
    elif trick == 5:  # no Route at all, To-tag, target a victim or the sink
        draft.start = f"{method} {rng.choice([ctx.sink_uri, 'sip:' + ctx.someone() + '@' + ctx.target.domain])} SIP/2.0"
    else:  # R-URI naming ourselves with a user, Route to the sink
        draft.start = f"{method} sip:{ctx.someone()}@{host}:{port} SIP/2.0"
        draft.headers.insert(1, ("Route", f"<sip:{sink_host}:{sink_port};lr>, {lr_self}"))
    return draft


def _in_dialog_of(ctx: Ctx, draft: Draft, dialog: RoutedDialog, routes: list[str]) -> Draft:
    """`draft` made a request of `dialog` (its Call-ID and tags) along `routes`, for the sink."""
    draft.start = f"{draft.method} {ctx.sink_uri} SIP/2.0"
    draft.set("Call-ID", dialog.call_id)
    draft.set("From", f'"{MARK} {ctx.n}" <sip:{ctx.user()}@{ctx.target.domain}>;tag={dialog.from_tag}')
    draft.set("To", f"<sip:{ctx.someone()}@{ctx.target.domain}>;tag={dialog.to_tag}")
    draft.drop("Route")
    draft.headers.insert(1, ("Route", ", ".join(routes)))
    return draft


def _moved(entry: str, host: str, port: int, extra: str = "") -> str:
    """A Route entry with its host and port replaced (and `extra` parameters appended)."""
    _, _, params = entry.strip().strip("<>").removeprefix("sip:").partition(";")
    return f"<sip:{host}:{port};{params}{extra}>"


def route_rewrite(ctx: Ctx, draft: Draft) -> Draft:
    """Issue 12 finding 1: a signed entry of a real dialog (or a made-up one when the target
    has none) copied with the sink's host and port after ours, over TCP, with maddr, or
    naming the other instance."""
    rng = ctx.rng
    sink_host, sink_port = ctx.target.sink
    live = [d for d in ctx.target.dialogs if not d.ended] or list(ctx.target.dialogs)
    host, port = ctx.instance()
    dialog = rng.choice(live) if live else RoutedDialog(
        f"{MARK}-{ctx.seed}-{ctx.n}", ctx.tag(), ctx.tag(),
        (f"<sip:{host}:{port};lr;ftag={ctx.tag()};blf={'0' * 20};tf=udp:{sink_host}:{sink_port};"
         f"cf=udp:{sink_host}:{sink_port};st={int(time.time())}>",),
    )
    routes = list(dialog.routes)
    variant = rng.randrange(5)
    if variant == 0:
        routes.append(_moved(routes[-1], sink_host, sink_port))
    elif variant == 1:
        routes.append(_moved(routes[-1], sink_host, sink_port, ";transport=tcp"))
    elif variant == 2:
        routes[0] = routes[0].rstrip().rstrip(">") + f";maddr={sink_host}>"
    elif variant == 3:
        other = ctx.instance()
        routes.append(_moved(routes[-1], other[0], other[1]))
        routes.append(_moved(routes[-1], sink_host, sink_port))
    else:
        routes = [_moved(routes[0], sink_host, sink_port), *routes]
    return _in_dialog_of(ctx, draft, dialog, routes)


def after_bye(ctx: Ctx, draft: Draft) -> Draft:
    """Issue 12 finding 1: a real dialog's own route set, unchanged, after its BYE."""
    ended = [d for d in ctx.target.dialogs if d.ended]
    if not ended:
        return route_rewrite(ctx, draft)
    dialog = ctx.rng.choice(ended)
    return _in_dialog_of(ctx, draft, dialog, list(dialog.routes))


def response(ctx: Ctx) -> Draft:
    rng = ctx.rng
    status = rng.choice([100, 180, 183, 200, 202, 401, 407, 481, 487, 500, 603, 999, 0])
    draft = base(ctx, rng.choice(METHODS))
    cseq_method = rng.choice(["NOTIFY", "INVITE", "BYE", "OPTIONS", "SUBSCRIBE"])
    draft.set("CSeq", f"{rng.randrange(1, 10)} {cseq_method}")
    draft.set("To", draft.get("To") + f";tag={ctx.tag()}")
    host, port = ctx.instance()
    draft.set("Via", f"SIP/2.0/{ctx.transport} {host}:{port};branch=z9hG4bK{ctx.tag()}")
    draft.start = f"SIP/2.0 {status} {rng.choice(['OK', 'Ringing', '', 'x' * 300])}"
    draft.response = True
    return draft


# --- mutations of a draft ----------------------------------------------------------------------


def huge_header(ctx: Ctx, d: Draft) -> None:
    size = ctx.rng.choice([1000, 8192, 20000, 60000 if ctx.transport == "UDP" else 70000])
    name = ctx.rng.choice(["Subject", "User-Agent", "X-Fuzz", "From", "Contact", "Call-ID", "Via", "Authorization"])
    if name in ("From", "Contact"):
        d.set(name, f'"{"A" * size}" <sip:{ctx.user()}@{ctx.target.domain}>;tag={ctx.tag()}')
    elif name == "Call-ID":
        d.set(name, f"{MARK}-{'c' * size}")
    elif name == "Via":
        d.set(name, d.get("Via") + ";x=" + "v" * size)
    else:
        d.headers.append((name, ctx.rng.choice("aZ9%;,<\"") * size))


def bad_content_length(ctx: Ctx, d: Draft) -> None:
    n = len(d.body)
    d.content_length = ctx.rng.choice([
        "-1", "abc", "", "99999999999999999999", str(n + 10), str(max(n - 5, 0)), "4294967296",
        f"{n}, {n}", f"{n}\r\nContent-Length: {n + 100}", " " + str(n), "0x10", "-",
    ])
    if ctx.rng.random() < 0.3 and not d.body:
        d.body = b"x" * ctx.rng.choice([1, 100, 5000])


def bad_expires(ctx: Ctx, d: Draft) -> None:
    value = ctx.rng.choice(["-1", "abc", "", "99999999999999999999", "4294967296", "2147483648", "1e3", "0x20",
                            "60, 60", "3600;foo", " ", "０", "60.5"])
    d.set("Expires", value)
    if ctx.rng.random() < 0.3:
        d.set("Contact", d.get("Contact") + f";expires={ctx.rng.choice(['-5', 'x', '18446744073709551616', ''])}")


def bad_event(ctx: Ctx, d: Draft) -> None:
    d.set("Event", ctx.rng.choice([
        "", "dialog;id=", "dialog;;;", "unknown-package", "dialog;id=" + "x" * 5000, "Dialog", "dialog, presence",
        "dialog;sla;ma", "dialog\x00", "dialog;id=\"unterminated", "presence.winfo", "*", "dialog;id=1;id=2",
    ]))


def bad_digest(ctx: Ctx, d: Draft) -> None:
    rng = ctx.rng
    user = rng.choice(list(ctx.target.victims) + [ctx.user(), "", '"', "a" * 3000])
    nonce = rng.choice([
        NONCE_PLACEHOLDER, NONCE_PLACEHOLDER, "", "x" * 2000, base64.b64encode(rng.randbytes(24)).decode(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "-_-_", "\xff\xfe",
    ])
    fields = {
        "username": f'"{user}"', "realm": rng.choice(['"example.com"', '"evil.org"', '""', "example.com"]),
        "nonce": f'"{nonce}"', "uri": rng.choice([f'"{d.start.split(" ")[1] if " " in d.start else ""}"',
                                                  '"sip:evil.org"', '""']),
        "response": rng.choice([f'"{rng.randbytes(16).hex()}"', f'"{rng.randbytes(32).hex()}"', '"zz"', '""',
                                '"' + "0" * 5000 + '"']),
        "algorithm": rng.choice(["MD5", "SHA-256", "MD5-sess", "SHA-512-256", "SHA-256-sess", "md5", "", "FOO"]),
        "qop": rng.choice(["auth", "auth-int", '"auth"', "auth,auth-int", "", "x"]),
        "nc": rng.choice(["00000001", "ffffffff", "zzzzzzzz", "-1", "0", "1" * 40, "", "00000000"]),
        "cnonce": rng.choice(['"abc"', '""', '"' + "c" * 3000 + '"', "abc"]),
        "opaque": rng.choice(['"x"', '""']),
    }
    keys = [k for k in fields if rng.random() < 0.85]
    if rng.random() < 0.2:
        keys += rng.choices(list(fields), k=3)  # duplicated parameters
    value = "Digest " + ", ".join(f"{k}={fields[k]}" for k in keys)
    value = rng.choice([value, value, value[: rng.randrange(len(value) + 1)], "Basic Zm9vOmJhcg==", "Digest",
                        "Digest ,,,,", value.replace('"', "", 1), value + ", " + value, "NTLM abc"])
    name = rng.choice(["Authorization", "Proxy-Authorization"])
    for _ in range(rng.choice([1, 1, 1, 2, 30])):
        d.headers.append((name, value))


def many(ctx: Ctx, d: Draft) -> None:
    rng = ctx.rng
    count = rng.choice([20, 70, 200, 500])
    name = rng.choice(["Via", "Route", "Record-Route", "Contact", "Path", "Supported", "Proxy-Require"])
    sink_host, sink_port = ctx.target.sink
    for i in range(count):
        if name == "Via":
            d.headers.append(("Via", f"SIP/2.0/UDP 127.0.9.8:{1000 + i};branch=z9hG4bK{MARK}{i}"))
        elif name in ("Route", "Record-Route", "Path"):
            host, port = rng.choice([ctx.instance(), (sink_host, sink_port)])
            d.headers.insert(1, (name, f"<sip:{host}:{port};lr>"))
        elif name == "Contact":
            d.headers.append(("Contact", f"<sip:{MARK}{i}@{sink_host}:{sink_port}>;expires={rng.randrange(100000)}"))
        else:
            d.headers.append((name, f"{MARK}{i}"))


def folding(ctx: Ctx, d: Draft) -> None:
    for i, (key, value) in enumerate(d.headers):
        if ctx.rng.random() < 0.5 and " " in value:
            head, _, tail = value.partition(" ")
            d.headers[i] = (key, head + ctx.rng.choice(["\r\n ", "\r\n\t", "\r\n  \t ", "\r\n"]) + tail)


def compact(ctx: Ctx, d: Draft) -> None:
    d.headers = [(COMPACT.get(k, k) if ctx.rng.random() < 0.8 else k.lower(), v) for k, v in d.headers]
    if ctx.rng.random() < 0.5:
        d.headers = [(k.upper() + ctx.rng.choice(["", " ", "\t"]), " " + v) for k, v in d.headers]


def bad_mandatory(ctx: Ctx, d: Draft) -> None:
    rng = ctx.rng
    name = rng.choice(["Via", "From", "To", "Call-ID", "CSeq", "Max-Forwards", "Contact"])
    action = rng.randrange(3)
    if action == 0:
        d.drop(name)
    elif action == 1:
        d.headers.append((name, d.get(name).replace(MARK, MARK + "dup") or f"{MARK}-dup"))
    else:
        d.set(name, rng.choice(["", "<", "<sip:>", "sip:@", '"unterminated <sip:a@b>', "<sip:a@b;tag=>",
                                "-1 INVITE", "99999999999999999999 INVITE", "1 OTHER", "abc", "SIP/2.0/XYZ h",
                                "SIP/2.0/UDP [::1:5060;branch=x", "SIP/2.0/UDP 127.0.0.1:70000", "<tel:+1>",
                                "<sips:x@y>", "<urn:x>", "*", ";;;", "<sip:a@b>;tag=x;tag=y"]))


def bad_start(ctx: Ctx, d: Draft) -> None:
    rng = ctx.rng
    method = rng.choice(list(METHODS) + list(OTHER_METHODS))
    uri = rng.choice([f"sip:{ctx.someone()}@{ctx.target.domain}", "sip:", "*", "tel:+15550100", "sips:a@b",
                      "http://x/", "sip:[::1", f"sip:{'%00' * 10}@x", "sip:a@b:99999", "", "sip:a@b;lr;lr;lr",
                      f"sip:{'u' * 5000}@{ctx.target.domain}", "<sip:a@b>", "sip:a@b?Route=%3Csip:x%3E"])
    version = rng.choice(["SIP/2.0", "SIP/2.0", "SIP/3.0", "HTTP/1.1", "SIP/2", "", "sip/2.0"])
    d.start = rng.choice([f"{method} {uri} {version}", f"{method}  {uri}  {version}", f"{method} {uri}",
                          f"{method}\t{uri}\t{version}", "GET / HTTP/1.1", "PRI * HTTP/2.0"])


def bad_values(ctx: Ctx, d: Draft) -> None:
    rng = ctx.rng
    name, value = rng.choice([
        ("Max-Forwards", rng.choice(["0", "-1", "abc", "256", "99999999999"])),
        ("CSeq", rng.choice(["0 REGISTER", "4294967296 INVITE", f"1 {d.method}x", "1", "one INVITE"])),
        ("Content-Type", rng.choice(["", "application/sdp;;", "multipart/mixed;boundary=", "text/" + "x" * 2000])),
        ("Accept", rng.choice(["", "*/*", "application/dialog-info+xml;q=x", "x" * 3000])),
        ("Require", rng.choice(["foo", "100rel, timer, path, outbound", ""])),
        ("Subscription-State", rng.choice(["", "active;expires=-1", "terminated;reason=", "bogus"])),
        ("Contact", rng.choice([
            "*", f"<{ctx.sink_uri}>;+sip.instance=\"<urn:uuid:{MARK}>\";reg-id=abc",
            f"<{ctx.sink_uri}>;q=abc", f"<{ctx.sink_uri}>;q=7", f"<{ctx.sink_uri}>;expires=1;expires=2",
            f"<{ctx.sink_uri}>;+sip.instance=\"{'<' * 500}\"", f"{ctx.sink_uri}, *", "<sip:127.0.0.1:5071>",
        ])),
        ("Session-Expires", rng.choice(["0", "-1", "x"])),
        ("Replaces", f"{MARK};to-tag=;from-tag="),
        ("Refer-To", rng.choice(["", f"<{ctx.sink_uri}?Route=x>", "<sip:127.0.0.1:5072;lr>"])),
    ])
    d.set(name, value)


def bad_body(ctx: Ctx, d: Draft) -> None:
    rng = ctx.rng
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">' for i in range(9))
        + ']><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info">&lol8;</dialog-info>'
    )
    d.body = rng.choice([
        bomb.encode(), rng.choice(HOSTILE_PIDF).encode(),
        rng.randbytes(rng.randrange(1, 3000)), b"v=0\r\nm=audio 99999999 RTP/AVP x\r\n" * 10,
        b"<" * 5000, b"\x00" * 100, "é€😀".encode() * 100, b"\xff\xfe\xfd" * 50,
    ])
    d.set("Content-Type", rng.choice(
        ["application/dialog-info+xml", "application/pidf+xml", "application/sdp", "text/plain", "x/y"]
    ))


def non_utf8(ctx: Ctx, d: Draft) -> None:
    rng = ctx.rng
    i = rng.randrange(len(d.headers))
    key, value = d.headers[i]
    junk = rng.choice(["\udcff\udcfe", "\udcc3(", "\x00", "\udce0\udc80", "\u202e", "\ufeff", "é", "\udc80" * 50])
    cut = rng.randrange(len(value) + 1)
    d.headers[i] = (key, value[:cut] + junk + value[cut:])
    if rng.random() < 0.3:
        d.start = d.start.replace(" sip:", " sip:\udcff", 1)


DRAFT_MUTATIONS: tuple[Callable[[Ctx, Draft], None], ...] = (
    huge_header, bad_content_length, bad_expires, bad_event, bad_digest, bad_digest, many, folding, compact,
    bad_mandatory, bad_start, bad_values, bad_values, bad_body, non_utf8,
)


# --- mutations of the bytes --------------------------------------------------------------------


def spoil_bytes(ctx: Ctx, data: bytes) -> bytes:
    rng = ctx.rng
    kind = rng.randrange(10)
    if kind == 0:  # truncated
        return data[: rng.randrange(len(data) + 1)]
    if kind == 1:  # flipped bytes
        out = bytearray(data)
        for _ in range(rng.choice([1, 3, 20])):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 2:  # garbage inserted
        at = rng.randrange(len(data) + 1)
        return data[:at] + rng.randbytes(rng.randrange(1, 200)) + data[at:]
    if kind == 3:  # bare LF line ends, or bare CR
        return data.replace(b"\r\n", rng.choice([b"\n", b"\r"]))
    if kind == 4:  # no blank line at the end of the headers
        return data.replace(b"\r\n\r\n", b"\r\n", 1)
    if kind == 5:  # pure garbage
        return rng.randbytes(rng.randrange(1, 1500))
    if kind == 6:  # nothing, or keep-alives
        return rng.choice([b"", b"\r\n", b"\r\n\r\n", b" ", b"\x00"])
    if kind == 7:  # two messages glued together
        return data + data
    if kind == 8:  # a NUL in the middle
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"\x00" + data[at:]
    return b"\xef\xbb\xbf" + data  # a byte order mark first


def message(seed: int, n: int, target: Target, transport: str, source: tuple[str, int]) -> bytes:
    """Message number `n` of the run `seed`: the same bytes every time."""
    rng = random.Random(f"{seed}:{n}")
    ctx = Ctx(rng, n, seed, target, transport, source)
    kind = rng.random()
    if kind < 0.22:
        draft = relay_trick(ctx)
    elif kind < 0.28:
        draft = response(ctx)
    elif kind < 0.31:
        draft = base(ctx, rng.choice(OTHER_METHODS[:5]))
    else:
        draft = base(ctx, rng.choice(METHODS), in_dialog=rng.random() < 0.3)
    for mutate in rng.sample(DRAFT_MUTATIONS, k=rng.choice([0, 1, 1, 1, 2, 2, 3])):
        mutate(ctx, draft)
    data = draft.render()
    if rng.random() < 0.3:
        data = spoil_bytes(ctx, data)
    if transport == "UDP":
        data = data[:65000]
    return data


# --- sending -----------------------------------------------------------------------------------


def fuzz_sources(count: int, first_octet: int = 1) -> list[str]:
    """`count` loopback source addresses 127.X.Y.Z outside 127.0.0.0/24 (where valid traffic is)."""
    out = []
    for i in range(count):
        out.append(f"127.{first_octet}.{1 + i // 250}.{1 + i % 250}")
    return out


@dataclass
class Sent:
    n: int
    transport: str
    source: tuple[str, int]
    destination: tuple[str, int]
    data: bytes
    at: float


@dataclass
class Stats:
    sent: int = 0
    udp: int = 0
    tcp: int = 0
    tcp_connections: int = 0
    responses: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    nonces: list[str] = field(default_factory=list)
    log: list[Sent] = field(default_factory=list)


class Sender:
    """Sends the fuzz over UDP and TCP from many loopback addresses, paced, and reads what comes back.

    Each source address sends at most `per_source_per_2s` messages in any 2 s (pike's window), so a
    per-address flood limit never hides the fuzz from the code under test.
    """

    def __init__(self, seed: int, target: Target, sources: list[str], tcp_share: float = 0.3,
                 per_source_per_2s: int = 8, keep_log: bool = True) -> None:
        self.seed, self.target, self.sources, self.tcp_share = seed, target, sources, tcp_share
        self.per_source_per_2s = per_source_per_2s
        self.keep_log = keep_log
        self.stats = Stats()
        self.selector = selectors.DefaultSelector()
        self.udp: dict[str, socket.socket] = {}
        self.tcp_open: list[tuple[float, socket.socket]] = []
        self.recent: dict[str, list[float]] = {}

    def _udp_socket(self, address: str) -> socket.socket:
        sock = self.udp.get(address)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((address, 0))
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, "udp")
            self.udp[address] = sock
        return sock

    def _source(self, n: int, now: float) -> str:
        """A source address with room in its 2 s window (round robin from message n)."""
        count = len(self.sources)
        for k in range(count):
            address = self.sources[(n + k) % count]
            window = [t for t in self.recent.get(address, []) if now - t < 2.2]
            if len(window) < self.per_source_per_2s:
                window.append(now)
                self.recent[address] = window
                return address
        raise RuntimeError("every fuzz source address is at its rate limit: add sources or slow down")

    def send(self, n: int) -> None:
        rng = random.Random(f"route:{self.seed}:{n}")
        now = time.monotonic()
        address = self._source(n, now)
        destination = rng.choice(self.target.instances)
        if rng.random() < self.tcp_share:
            self._send_tcp(n, address, destination, now)
        else:
            sock = self._udp_socket(address)
            source = sock.getsockname()
            data = self._fill(message(self.seed, n, self.target, "UDP", source))[:65000]
            with contextlib.suppress(OSError):
                sock.sendto(data, destination)
            self._record(n, "UDP", source, destination, data, now)
            self.stats.udp += 1
        self.stats.sent += 1

    def _send_tcp(self, n: int, address: str, destination: tuple[str, int], now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, 0))
        source = sock.getsockname()
        data = self._fill(message(self.seed, n, self.target, "TCP", source))
        sock.settimeout(1.0)
        try:
            sock.connect(destination)
            sock.sendall(data)
        except OSError:
            sock.close()
            self._record(n, "TCP", source, destination, data, now)
            return
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, "tcp")
        self.tcp_open.append((now, sock))
        self.stats.tcp += 1
        self.stats.tcp_connections += 1
        self._record(n, "TCP", source, destination, data, now)

    def _fill(self, data: bytes) -> bytes:
        nonce = self.stats.nonces[-1] if self.stats.nonces else "AAAAAGsOmCEDa3Mxp6nobGS1tOwbviqBGA8t1ka5"
        return data.replace(NONCE_PLACEHOLDER.encode(), nonce.encode())

    def _record(self, n: int, transport: str, source: tuple[str, int], destination: tuple[str, int],
                data: bytes, now: float) -> None:
        if self.keep_log:
            self.stats.log.append(Sent(n, transport, source, destination, data, now))

    def pump(self, timeout: float = 0.0) -> None:
        """Read whatever came back; close TCP connections older than 1 s."""
        for key, _ in self.selector.select(timeout):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(65535)
            except OSError:
                data = b""
            if not data and key.data == "tcp":
                self._close(sock)
                continue
            self._take(data)
        now = time.monotonic()
        while self.tcp_open and now - self.tcp_open[0][0] > 1.0:
            self._close(self.tcp_open[0][1])

    def _close(self, sock: socket.socket) -> None:
        self.tcp_open = [(t, s) for t, s in self.tcp_open if s is not sock]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(sock)
        sock.close()

    def _take(self, data: bytes) -> None:
        for part in data.split(b"SIP/2.0 ")[1:]:
            code = part[:3]
            if code.isdigit():
                self.stats.responses += 1
                self.stats.statuses[int(code)] = self.stats.statuses.get(int(code), 0) + 1
        marker = b'nonce="'
        at = data.find(marker)
        if at >= 0:
            end = data.find(b'"', at + len(marker))
            if end > 0 and len(self.stats.nonces) < 1000:
                self.stats.nonces.append(data[at + len(marker): end].decode(errors="replace"))

    def run(
        self, count: int, seconds: float, between: Callable[[], None] | None = None,
        sent: Callable[[int], None] | None = None,
    ) -> Stats:
        """Send messages 0..count-1 evenly over about `seconds`; `between` is called about every
        0.2 s, `sent` with the number of each message once it is sent."""
        start = time.monotonic()
        last_hook = start
        for n in range(count):
            due = start + seconds * n / count
            while True:
                now = time.monotonic()
                if now >= due:
                    break
                self.pump(min(due - now, 0.05))
            self.send(n)
            if sent is not None:
                sent(n)
            if n % 16 == 0:
                self.pump(0)
            if between is not None and time.monotonic() - last_hook > 0.2:
                between()
                last_hook = time.monotonic()
        end = time.monotonic() + 1.2
        while time.monotonic() < end:
            self.pump(0.05)
        return self.stats

    def close(self) -> None:
        for _, sock in list(self.tcp_open):
            self._close(sock)
        for sock in self.udp.values():
            self.selector.unregister(sock)
            sock.close()
        self.udp.clear()
        self.selector.close()


def replay_one(sent: Sent, settle: float = 0.3) -> None:
    """Send one recorded message again, from the same address, and let it be handled: wait
    up to `settle` seconds for the server's answer on that socket (many get none)."""
    if sent.transport == "UDP":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((sent.source[0], 0))
            with contextlib.suppress(OSError):  # socket.timeout included
                sock.sendto(sent.data, sent.destination)
                sock.settimeout(settle)
                sock.recvfrom(65535)
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((sent.source[0], 0))
        sock.settimeout(1.0)
        try:
            sock.connect(sent.destination)
            sock.sendall(sent.data)
            sock.settimeout(settle)
            sock.recv(65535)  # an answer, the server closing, or the timeout
        except OSError:
            pass


def generate(seed: int, count: int, target: Target, transport: str = "UDP") -> Iterator[bytes]:
    for n in range(count):
        yield message(seed, n, target, transport, ("127.1.1.1", 40000))


def main() -> None:
    parser = argparse.ArgumentParser(description="Show fuzz messages, or send a saved one again.")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--show", type=int, nargs="+", default=[0])
    parser.add_argument("--transport", default="UDP")
    parser.add_argument("--replay", help="a saved message (.sip) to send once")
    parser.add_argument("--to", default="127.0.0.1:5071", help="host:port to --replay to")
    args = parser.parse_args()
    if args.replay:
        host, _, port = args.to.rpartition(":")
        with open(args.replay, "rb") as saved:
            data = saved.read()
        replay_one(Sent(0, args.transport.upper(), ("127.3.0.1", 0), (host, int(port)), data, 0.0), settle=0.5)
        return
    target = Target((("127.0.0.1", 5071), ("127.0.0.1", 5072)), ("127.0.9.9", 5999), victims=("victim",))
    for n in args.show:
        data = message(args.seed, n, target, args.transport, ("127.1.1.1", 40000))
        print(f"--- message {n} ({len(data)} bytes)")
        print(data[:3000].decode(errors="backslashreplace"))


if __name__ == "__main__":
    main()
