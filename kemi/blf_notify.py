"""Sending NOTIFYs: the notifier process, and a SIP worker answering a fetch, go through here.

Every NOTIFY of a stored subscription is sent by one process, the notifier of the instance
responsible for it, numbered from its record and an ownership epoch without writing the
record (statestore.domain.subscription.notify_numbers): CSeq and version strictly
increase whichever instance sends (RFC 6665 §4.1.2.2, RFC 4235 §4.1), also across
restarts and takeovers.
"""

from __future__ import annotations

from blf_context import Context
from blf_routing import watcher_reach
from blf_sip import send_notify

from statestore.domain import bodies
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Subscription
from statestore.domain.subscription import PACKAGES, event_header, subscription_state


def contact(ctx: Context, transport: str = "udp") -> str:
    """Our Contact: this instance, over the transport the watcher subscribed with."""
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:blf@{ctx.settings.sip}{suffix}>"


def load_state(ctx: Context, presentity: str) -> PresentityState:
    return bodies.presentity_state(ctx.store.legs_of(presentity), ctx.store.bindings_of(presentity))


def send(
    ctx: Context, subscription: Subscription, state: PresentityState, now: float, reason: str | None,
    template: bodies.Template | None = None,
) -> bool:
    """Send the NOTIFY that `subscription` (numbered: its CSeq and version) describes; `template`, the
    presentity's body rendered once for all its watchers, when the caller has one. False when
    tm could not send it at all (no transaction: out of shared memory, no socket)."""
    template = template if template is not None else bodies.Template(subscription.event, state)
    body = template.fill(subscription.entity, subscription.version)
    return send_notify(
        subscription,
        subscription_state(subscription, now, reason),
        event_header(subscription),
        PACKAGES[subscription.event].content_type,
        body,
        contact(ctx, subscription.transport),
        watcher_reach(ctx, subscription),
    ) >= 0
