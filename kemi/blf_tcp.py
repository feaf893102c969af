"""TCP connections at the edge: an authenticated phone keeps its connection.

Kamailio closes a connection idle for BLF_TCP_IDLE_SECONDS (kamailio.cfg); `hold_flow`
raises the lifetime of the connection an authenticated request came on
(statestore/domain/edge.py says how long), with tcpops' `tcp_set_connection_lifetime`.
Called once a request's sender is authenticated (blf_auth.authenticate).
"""

from __future__ import annotations

import KSR  # type: ignore[import-not-found]
from blf_context import Context
from blf_sip import pv

from statestore.domain.edge import authenticated_lifetime


def hold_flow(ctx: Context) -> None:
    """Let the connection this authenticated request came on stay idle as long as the phone's
    longest registration or subscription; nothing for UDP."""
    longest = max(ctx.registrar.max_expires, ctx.subscriptions.max_expires)
    lifetime = authenticated_lifetime(pv("$pr"), longest)
    if lifetime is None:
        return
    if KSR.tcpops.tcp_set_connection_lifetime(lifetime) < 0:
        # The connection closed meanwhile: the phone reconnects and authenticates again.
        KSR.info(f"blf: no connection to hold for {pv('$rm')} from {pv('$si')}:{pv('$sp')}\n")
