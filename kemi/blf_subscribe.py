"""SUBSCRIBE (RFC 6665 §4.2.1): create, refresh, unsubscribe, fetch.

The subscription lives in the store; the 200 is sent before the first NOTIFY.
"""

from __future__ import annotations

import time

import blf_notify
import KSR  # type: ignore[import-not-found]
from blf_auth import authenticate, lookup_account, require_domain
from blf_context import Context
from blf_sip import header, list_header, pv, reply, request_aor, request_domain, uri_of

from statestore.domain import bodies
from statestore.domain.errors import SipError, store_unavailable_error
from statestore.domain.model import Subscription
from statestore.domain.subscription import (
    check_accept,
    event_id,
    event_package,
    granted_expires,
    may_watch,
    next_notify,
    parse_expires,
    refreshed,
    subscription_id,
)

# How often a refresh retries its compare-and-swap against a concurrent notifier.
CAS_ATTEMPTS = 3


def _checked_expires(ctx: Context) -> tuple[str, int]:
    """Checks that need no store: package (489), Accept (406), Expires (400/423)."""
    package = event_package(header("Event"))
    check_accept(list_header("Accept"), package)
    expires = granted_expires(parse_expires(header("Expires")), ctx.subscriptions)
    if ctx.store_down():
        raise store_unavailable_error()
    return package.name, expires


def _transport() -> str:
    protocol = pv("$pr").lower()
    return protocol if protocol in ("tcp", "tls") else "udp"


def handle_initial_subscribe(ctx: Context) -> None:
    event, expires = _checked_expires(ctx)
    require_domain(ctx, request_domain())
    watcher = authenticate(ctx, pv("$fd").lower(), store_required=True)
    if watcher is None:
        return
    presentity = request_aor()
    if lookup_account(ctx, presentity, store_required=True) is None:
        raise SipError(404, "Not Found")
    if not may_watch(watcher, presentity):
        raise SipError(403, "Forbidden")
    watcher_contact = uri_of(pv("$ct"))
    if not watcher_contact:
        raise SipError(400, "Bad Request - Missing Contact")
    now = time.time()
    local_tag = pv("$ltt(s)")
    subscription = Subscription(
        sub_id=subscription_id(pv("$ci"), pv("$ft"), local_tag),
        event=event, presentity=presentity, entity=f"sip:{presentity}", watcher=watcher,
        watcher_contact=watcher_contact, call_id=pv("$ci"), local_tag=local_tag,
        remote_tag=pv("$ft"), local_uri=pv("$tu"), remote_uri=pv("$fu"),
        route_set=tuple(list_header("Record-Route")), expires_at=now + expires,
        owner=ctx.settings.instance, event_id=event_id(header("Event")), transport=_transport(),
    )
    state = blf_notify.load_state(ctx, presentity)
    first = next_notify(subscription, bodies.digest(event, state))
    # A fetch (Expires: 0) stores nothing; a retransmitted SUBSCRIBE finds its subscription
    # created by the first copy, which has sent the NOTIFY already.
    fresh = expires == 0 or ctx.store.create_subscription(first) is not None
    reply(200, "OK", {"Expires": str(expires)}, blf_notify.contact(ctx, first.transport))
    if fresh:
        blf_notify.send(ctx, first, state, now, None if expires else "timeout")


def handle_in_dialog_subscribe(ctx: Context) -> None:
    event, expires = _checked_expires(ctx)
    sub_id = subscription_id(pv("$ci"), pv("$ft"), pv("$tt"))
    for _ in range(CAS_ATTEMPTS):
        found = ctx.store.get_subscription(sub_id)
        if found is None:
            raise SipError(481, "Subscription Does Not Exist")
        subscription, revision = found
        if subscription.event != event:
            raise SipError(489, "Bad Event", {"Allow-Events": subscription.event})
        if _refresh(ctx, subscription, revision, expires):
            return
    raise SipError(500, "Server Internal Error - Concurrent Update", {"Retry-After": "1"})


def _refresh(ctx: Context, subscription: Subscription, revision: int, expires: int) -> bool:
    """Refresh or end the subscription (§4.2.1.2, §4.2.1.4); False if it changed under us."""
    now = time.time()
    state = blf_notify.load_state(ctx, subscription.presentity)
    if expires == 0:
        final = blf_notify.end(ctx, subscription, revision, state)
        if final is None:
            return False
        reply(200, "OK", {"Expires": "0"}, blf_notify.contact(ctx, subscription.transport))
        blf_notify.send(ctx, final, state, now, "timeout")
        return True
    renewed = refreshed(subscription, expires, now, uri_of(pv("$ct")))
    advanced = next_notify(renewed, bodies.digest(subscription.event, state))
    if ctx.store.update_subscription(advanced, revision) is None:
        return False
    reply(200, "OK", {"Expires": str(expires)}, blf_notify.contact(ctx, subscription.transport))
    blf_notify.send(ctx, advanced, state, now, None)
    KSR.dbg(f"blf: refreshed {subscription.sub_id} for {expires}s\n")
    return True
