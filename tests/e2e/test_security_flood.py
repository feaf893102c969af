"""A flood from one address is cut off before it costs anything; others are served (issue 5, finding 5)."""

from __future__ import annotations

import select
import socket
import threading
import time
import uuid

from tests.e2e.conftest import DOMAIN, KS, phone

FLOOD_ADDRESS = "127.0.0.9"
FLOOD_RATE = 2000  # requests per second, as in the finding
PIKE_DENSITY = 64  # BLF_PIKE_DENSITY: requests per 2 s pike lets through from one address
FLOOD_SECONDS = 3.0


def _subscribe(port: int, index: int) -> bytes:
    call_id = f"flood-{uuid.uuid4().hex}"
    return (
        f"SUBSCRIBE sip:alice@{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {FLOOD_ADDRESS}:{port};branch=z9hG4bK{call_id[6:22]};rport\r\n"
        f"From: <sip:flood@{DOMAIN}>;tag=f{index}\r\nTo: <sip:alice@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:flood@{FLOOD_ADDRESS}:{port}>\r\nEvent: dialog\r\nExpires: 600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _flood(
    target: tuple[str, int], stop: threading.Event, counts: dict[str, int], flooding: threading.Event
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((FLOOD_ADDRESS, 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < FLOOD_SECONDS:
            due = int((time.monotonic() - started) * FLOOD_RATE)
            while counts["sent"] < due:
                sock.sendto(_subscribe(port, counts["sent"]), target)
                counts["sent"] += 1
            if counts["sent"] > 2 * PIKE_DENSITY:
                flooding.set()  # past what pike lets through: the address is blocked by now
            # Take in the answers there are, waiting for one until the next send is due.
            while select.select([sock], [], [], 1 / FLOOD_RATE)[0]:
                sock.recvfrom(65535)
                counts["answered"] += 1
        deadline = time.monotonic() + 1.0
        while (remaining := deadline - time.monotonic()) > 0 and select.select([sock], [], [], remaining)[0]:
            sock.recvfrom(65535)
            counts["answered"] += 1


def test_a_flood_from_one_address_is_dropped_and_others_are_still_served(account, phones):
    alice = account("alice")
    ua = phone(phones, alice, "ks1")
    counts = {"sent": 0, "answered": 0}
    stop, flooding = threading.Event(), threading.Event()
    flooder = threading.Thread(target=_flood, args=(KS["ks1"], stop, counts, flooding), daemon=True)
    flooder.start()
    try:
        assert flooding.wait(5), f"the flood did not start: {counts}"
        slowest = 0.0
        while flooder.is_alive():
            started = time.monotonic()
            response = ua.register(60)
            slowest = max(slowest, time.monotonic() - started)
            assert response.status == 200, response.first_line
            flooder.join(0.2)  # one REGISTER every 0.2 s until the flood ends
    finally:
        stop.set()
        flooder.join(5)
    print(f"flood: {counts}, slowest legitimate REGISTER {slowest * 1000:.0f} ms")
    assert counts["sent"] >= FLOOD_RATE * FLOOD_SECONDS * 0.5, f"the flood was too slow to mean anything: {counts}"
    # pike lets BLF_PIKE_DENSITY (64) requests per 2 s through before it blocks the address.
    assert counts["answered"] <= 200, f"the flood was served: {counts}"
    assert slowest < 1.0, f"a legitimate REGISTER took {slowest:.2f}s during the flood"
