"""Sending NOTIFYs: every sender (SIP worker or notifier process) goes through here.

The subscription record in the store is advanced by compare-and-swap before the NOTIFY
leaves, so CSeq and version strictly increase whichever instance sends (RFC 6665 §4.1.2.2,
RFC 4235 §4.1), also across restarts and takeovers.
"""

from __future__ import annotations

from blf_context import Context
from blf_routing import watcher_reach
from blf_sip import send_notify

from statestore.domain import bodies
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Subscription
from statestore.domain.subscription import PACKAGES, event_header, next_notify, subscription_state


def contact(ctx: Context, transport: str = "udp") -> str:
    """Our Contact: this instance, over the transport the watcher subscribed with."""
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:blf@{ctx.settings.sip}{suffix}>"


def load_state(ctx: Context, presentity: str) -> PresentityState:
    return bodies.presentity_state(ctx.store.legs_of(presentity), ctx.store.bindings_of(presentity))


def send(
    ctx: Context, subscription: Subscription, state: PresentityState, now: float, reason: str | None,
    template: bodies.Template | None = None,
) -> None:
    """Send the NOTIFY that `subscription` (already advanced) describes; `template`, the
    presentity's body rendered once for all its watchers, when the caller has one."""
    template = template if template is not None else bodies.Template(subscription.event, state)
    body = template.fill(subscription.entity, subscription.version)
    send_notify(
        subscription,
        subscription_state(subscription, now, reason),
        event_header(subscription),
        PACKAGES[subscription.event].content_type,
        body,
        contact(ctx, subscription.transport),
        watcher_reach(ctx, subscription),
    )


def notify_if_changed(
    ctx: Context, subscription: Subscription, revision: int, state: PresentityState, now: float,
    template: bodies.Template | None = None,
) -> tuple[Subscription, int] | None:
    """NOTIFY when what the watcher sees changed; the advanced record, or None."""
    digest = bodies.digest(subscription.event, state)
    if digest == subscription.last_digest:
        return None
    advanced = next_notify(subscription, digest)
    new_revision = ctx.store.update_subscription(advanced, revision)
    if new_revision is None:
        return None
    send(ctx, advanced, state, now, None, template)
    return advanced, new_revision


def end(
    ctx: Context, subscription: Subscription, revision: int | None, state: PresentityState
) -> Subscription | None:
    """Remove the subscription; the record its final NOTIFY describes, or None if it changed.

    The caller sends that NOTIFY with `send(..., reason)` once it has answered any request.
    """
    advanced = next_notify(subscription, bodies.digest(subscription.event, state))
    if not ctx.store.delete_subscription(subscription, revision):
        return None
    return advanced
