"""What a watcher's answer to a NOTIFY does to its subscription (RFC 6665 §4.2.2).

Runs in a failure route, often in a timer process (a 408 is Kamailio's own timeout): it
never waits on a store known to be down and never raises; an answer it cannot record
during an outage is lost, and the subscription ends by expiry or by the next answer.
"""

from __future__ import annotations

import KSR  # type: ignore[import-not-found]
from blf_context import Context, find_subscription
from blf_metrics import notify_failed
from blf_sip import pv

from statestore.domain.errors import StoreUnavailable
from statestore.domain.subscription import after_notify_timeout, ends_subscription, subscription_id

LOCAL_TIMEOUT = 408


def on_notify_failure(ctx: Context) -> None:
    status = int(pv("$T_reply_code") or 0)
    notify_failed(pv("$hdr(Event)") or "", status or LOCAL_TIMEOUT)
    if not ends_subscription(status) and status != LOCAL_TIMEOUT:
        return
    # In the failure route the message is our NOTIFY: From tag ours, To tag the watcher's.
    sub_id = subscription_id(pv("$ci"), pv("$tt"), pv("$ft"))
    zone = ctx.zone(pv("$fd"))  # our From: the presentity's URI, whose zone holds the subscription
    if zone.down():
        KSR.info(f"blf: NOTIFY for {sub_id} answered {status}; store down, not recorded\n")
        return
    try:
        if ends_subscription(status):
            _remove(ctx, sub_id, status)
        else:
            _count_timeout(ctx, sub_id)
    except StoreUnavailable as exc:
        ctx.mark_unavailable(exc)
        KSR.warn(f"blf: NOTIFY for {sub_id} answered {status}; store unavailable, not recorded: {exc}\n")


def _remove(ctx: Context, sub_id: str, status: int) -> None:
    zone, found = find_subscription(ctx, sub_id, pv("$fd"))
    if found is None:
        return
    # Unconditional: a refresh racing with this answer does not bring the watcher back.
    zone.store.delete_subscription(found[0])
    KSR.info(f"blf: watcher answered NOTIFY with {status}: subscription {sub_id} removed\n")


def _count_timeout(ctx: Context, sub_id: str) -> None:
    zone, found = find_subscription(ctx, sub_id, pv("$fd"))
    if found is None:
        return
    subscription, revision = found
    counted = after_notify_timeout(subscription, ctx.subscriptions)
    if counted is None:
        zone.store.delete_subscription(subscription, revision)
        KSR.info(f"blf: too many NOTIFY timeouts: subscription {sub_id} removed\n")
        return
    zone.store.update_subscription(counted, revision)
