"""TCP connections at the edge (issue 12, finding 3): one address cannot exhaust them.

An attacker at 127.0.0.5 (not a cluster address) opens 2,100 TCP connections to ks1 and
sends nothing. Before: Kamailio accepted them up to its global tcp_max_connections (2,048),
every new TCP phone was refused, and the idle connections lived 120 s. Now the firewall the
lab applies (etc/blf-edge.nft) lets one address hold 64, Kamailio closes a connection that
carried nothing after BLF_TCP_IDLE_SECONDS (10), and a phone that authenticated on its
connection keeps it idle (kemi/blf_tcp.py) and is called over it from the other instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import DOMAIN, KS, free_port
from tests.e2e.conftest import kamcmd as run_kamcmd
from tests.e2e.real_phone import Baresip, available
from tests.sipua import UserAgent

ATTACKER = "127.0.0.5"
PHONE = "127.0.0.6"
ATTEMPTS = 2_100
PER_ADDRESS_LIMIT = 64  # etc/blf-edge.nft
IDLE_SECONDS = 10  # kamailio.cfg's BLF_TCP_IDLE_SECONDS default
# statestore/domain/edge.py: the longest registration or subscription (3600 s) plus 60 s.
AUTHENTICATED_LIFETIME = 3660
# Kamailio's TCP main process runs its connection timers when it wakes, at least every 5 s
# (TCP_MAIN_SELECT_TIMEOUT): an idle connection is closed 10-15 s after its last byte.
CLOSE_SLACK = 6.0


def _var() -> Path:
    return Path(os.environ["BLF_VAR"])


def kamcmd(instance: str, command: str) -> str:
    return run_kamcmd(instance, command).stdout


def tcp_opened(instance: str) -> int:
    """Kamailio's own count of open TCP connections (kamcmd core.tcp_info)."""
    line = next(line for line in kamcmd(instance, "core.tcp_info").splitlines() if "opened_connections:" in line)
    return int(line.split(":", 1)[1])


def tcp_lifetimes(instance: str) -> dict[tuple[str, int], int]:
    """The lifetime (s) Kamailio gives each open TCP connection, by its source address (core.tcp_list)."""
    lifetimes: dict[tuple[str, int], int] = {}
    for block in kamcmd(instance, "core.tcp_list").split("}"):
        fields = dict(line.strip().split(": ", 1) for line in block.splitlines() if ": " in line)
        if "src_ip" in fields:
            lifetimes[(fields["src_ip"], int(fields["src_port"]))] = int(fields["lifetime"])
    return lifetimes


@pytest.fixture
def many_files() -> Iterator[None]:
    """Room for 2,100 sockets in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ATTEMPTS + 1_000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def idle_connections(lab: dict[str, tuple[str, int]], many_files: None) -> Iterator[list[socket.socket]]:
    """The connections the attacker got out of ATTEMPTS; all closed when the test ends."""
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


def open_idle(source: str, peer: tuple[str, int], attempts: int, held: list[socket.socket]) -> int:
    """Open `attempts` connections from `source` that send nothing; those accepted go to
    `held`. Returns how many were refused (reset, or not completed within 2 s)."""
    refused = 0
    for _ in range(attempts):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((source, 0))
        sock.settimeout(2.0)
        try:
            sock.connect(peer)
        except OSError:
            sock.close()
            refused += 1
            continue
        held.append(sock)
    return refused


def wait_closed_by_peer(socks: list[socket.socket], timeout: float) -> list[float]:
    """Wait until the server has closed every one of `socks` (EOF or reset); the
    time.monotonic() at which each was seen closed. TimeoutError naming how many stayed open."""
    deadline = time.monotonic() + timeout
    live = set(socks)
    closed: list[float] = []
    for sock in live:
        sock.setblocking(False)
    while live:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{len(live)} of {len(socks)} connections still open after {timeout:.0f}s")
        readable, _, _ = select.select(list(live), [], [], remaining)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                live.discard(sock)
                closed.append(time.monotonic())
    return closed


def test_one_address_holding_2100_idle_connections_locks_out_no_tcp_phone(account, phones, idle_connections):
    status = json.loads((_var() / "lab.json").read_text()).get("edge_firewall", {})
    assert status.get("applied"), f"the lab did not apply etc/blf-edge.nft: {status.get('report')}"
    opened_at = time.monotonic()
    refused = open_idle(ATTACKER, KS["ks1"], ATTEMPTS, idle_connections)
    all_opened_at = time.monotonic()
    held = len(idle_connections)
    kamailio_count = tcp_opened("ks1")
    print(f"attacker: {held} held, {refused} refused in {all_opened_at - opened_at:.2f}s; "
          f"ks1 core.tcp_info opened_connections={kamailio_count}")
    assert held <= PER_ADDRESS_LIMIT, f"one address holds {held} connections"
    assert kamailio_count <= PER_ADDRESS_LIMIT + 4, kamailio_count

    # While the attacker holds its connections: a new TCP phone from another address, and
    # one from the cluster's own address (exempt from the limit), register.
    boris, alice = account("boris"), account("alice")
    boris_phone = UserAgent(boris[0], DOMAIN, boris[1], KS["ks1"], transport="tcp", bind=PHONE)
    phones.append(boris_phone)
    assert boris_phone.register(300).status == 200
    local_phone = UserAgent(alice[0], DOMAIN, alice[1], KS["ks1"], transport="tcp")
    phones.append(local_phone)
    assert local_phone.register(300).status == 200

    # Connections that send nothing are closed by Kamailio (tcp_connection_lifetime).
    closed = wait_closed_by_peer(idle_connections, IDLE_SECONDS + CLOSE_SLACK)
    print(f"attacker's connections closed {min(closed) - all_opened_at:.1f}-{max(closed) - opened_at:.1f}s "
          f"after they were opened; ks1 opened_connections={tcp_opened('ks1')}")


def test_an_authenticated_tcp_phone_keeps_its_idle_connection_and_is_called_over_it(account, phones):
    boris, alice = account("boris"), account("alice")
    boris_phone = UserAgent(boris[0], DOMAIN, boris[1], KS["ks1"], transport="tcp", bind=PHONE)
    phones.append(boris_phone)
    assert boris_phone.register(300).status == 200
    with unauthenticated_connection(PHONE) as probe:
        lifetimes = tcp_lifetimes("ks1")
        print(f"ks1 core.tcp_list lifetimes: boris {lifetimes.get((PHONE, boris_phone.port))}s, "
              f"unauthenticated {lifetimes.get(probe.getsockname())}s")
        assert lifetimes.get(probe.getsockname()) == IDLE_SECONDS
        assert lifetimes.get((PHONE, boris_phone.port)) == AUTHENTICATED_LIFETIME
        wait_outlived(probe)
    # Boris has been idle longer than the probe: his connection is still open and a call
    # from the other instance reaches him over it (he listens nowhere else).
    caller = UserAgent(alice[0], DOMAIN, alice[1], KS["ks2"])
    phones.append(caller)
    answer = caller.request("INVITE", f"sip:{boris[0]}@{DOMAIN}", timeout=8)
    assert answer.status == 200, answer.first_line
    boris_phone.wait_request("INVITE", 3)


def test_a_real_tcp_phone_left_idle_is_still_called_over_its_connection(account, sipp):
    """Debian's baresip, registered over TCP at ks1, idle longer than an unauthenticated
    connection may be, answers a call through ks2 on the connection it registered on."""
    if not available():
        pytest.fail("baresip is not installed: run `make setup` (Debian package baresip-core)")
    pat, carl = account("pat"), account("carl")
    phone = Baresip(_var() / "phones" / pat[0], pat[0], DOMAIN, pat[1], KS["ks1"], free_port(), "tcp")
    try:
        phone.wait_registered(10)
        host, port = phone.flow().rsplit(":", 1)
        with unauthenticated_connection(PHONE) as probe:
            lifetime = tcp_lifetimes("ks1").get((host, int(port)))
            print(f"baresip's connection: lifetime {lifetime}s")
            assert lifetime == AUTHENTICATED_LIFETIME
            wait_outlived(probe)
        caller = sipp.call("ks2", carl, pat[0], hold_ms=500)
        phone.wait_for("call: answering call", 10)
        assert caller.wait(timeout=15) == 0, f"sipp caller failed; phone log {phone.log}"
        invites = phone.received("INVITE")
        assert invites and all(m.destination == phone.flow() for m in invites), invites
        registers = [m for m in phone.trace() if m.first_line.startswith("REGISTER ")]
        assert all(m.source == phone.flow() for m in registers), f"a new connection was opened: {registers}"
    finally:
        phone.stop()


@contextlib.contextmanager
def unauthenticated_connection(source: str) -> Iterator[socket.socket]:
    """A connection to ks1 from `source` that carried one request, unauthenticated (OPTIONS
    needs no credentials): the clock for "idle that long" (a connection that carried a request
    is kept 5 s by its reader before its idle lifetime starts)."""
    probe = socket.create_connection(KS["ks1"], timeout=5, source_address=(source, 0))
    try:
        probe.sendall(options_request(probe.getsockname()[1]))
        assert probe.recv(65535).startswith(b"SIP/2.0 200 "), "OPTIONS answered"
        yield probe
    finally:
        probe.close()


def wait_outlived(probe: socket.socket) -> None:
    """Wait until Kamailio closes `probe` (reader hold 5 s, idle lifetime, timer granularity)."""
    answered_at = time.monotonic()
    closed = wait_closed_by_peer([probe], 5 + IDLE_SECONDS + CLOSE_SLACK)
    print(f"unauthenticated connection closed {closed[0] - answered_at:.1f}s after its answer")


def options_request(local_port: int) -> bytes:
    return (
        f"OPTIONS sip:{KS['ks1'][0]}:{KS['ks1'][1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {PHONE}:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        f"From: <sip:probe@{PHONE}>;tag={uuid.uuid4().hex[:8]}\r\nTo: <sip:{KS['ks1'][0]}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
