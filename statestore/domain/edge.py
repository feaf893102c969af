"""TCP connections at the edge (issue 12, finding 3): how long an idle connection may live.

Kamailio closes a TCP connection that carries nothing for `tcp_connection_lifetime` seconds
(BLF_TCP_IDLE_SECONDS, 10: kamailio/kamailio.cfg), from its accept on. A phone that
authenticated on its connection keeps it idle between refreshes and is reached over it
(docs/phones.md), so an authenticated request raises that connection's lifetime to outlast
the longest registration or subscription the phone can be granted: its next refresh arrives
on it and raises it again. A connection that never authenticates keeps the short lifetime.
"""

from __future__ import annotations

# Transports whose requests arrive on a connection Kamailio keeps ($pr, lower case).
CONNECTION_TRANSPORTS = frozenset({"tcp", "tls", "ws", "wss"})
# Beyond the longest expiry: a phone refreshes before its expiry, this covers a late one
# (retransmissions, a challenge round) without cutting its connection.
REFRESH_MARGIN_SECONDS = 60


def authenticated_lifetime(transport: str, longest_expiry: int) -> int | None:
    """Seconds a connection that carried an authenticated request may stay idle, or None
    when the request did not come on a connection (UDP, SCTP: nothing to hold).

    `longest_expiry`: the longest registration or subscription this instance grants (s)."""
    if transport.lower() not in CONNECTION_TRANSPORTS:
        return None
    if longest_expiry < 0:
        raise ValueError(f"an expiry is never negative: {longest_expiry}")
    return longest_expiry + REFRESH_MARGIN_SECONDS
