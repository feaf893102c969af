"""Whether a registered phone is shown as behind NAT (`blfctl show`).

A phone is behind NAT when it is reached somewhere else than where its Contact says.
On UDP that is the address and the port: a NAT rewrites both, and the phone's replies
come from the port it listens on. On a connection (TCP, TLS, WS, WSS) the source port is
an ephemeral port that never equals the Contact's listening port, so only the address
tells: a TCP phone on its own public address is not behind NAT.
"""

from __future__ import annotations

from statestore.domain.routing import uri_hostport

CONNECTION_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss", "sctp"})
DEFAULT_PORTS = {"tls": 5061, "wss": 443, "ws": 80}


def reached_behind_nat(contact: str, received: str, recorded: bool) -> bool:
    """From the binding's Contact URI and `received` ("proto:ip:port", where its REGISTER
    came from); `recorded` (the flag the registrar stored) when `received` is unknown."""
    proto, sep, rest = received.partition(":")
    source_ip, colon, source_port = rest.rpartition(":")
    if not sep or not colon or not source_port.isdigit():
        return recorded
    proto = proto.lower()
    host, port = uri_hostport(contact)
    if not host:
        return recorded
    if source_ip.strip("[]").lower() != host:
        return True
    if proto in CONNECTION_TRANSPORTS:
        return False
    return int(source_port) != (port or DEFAULT_PORTS.get(proto, 5060))
