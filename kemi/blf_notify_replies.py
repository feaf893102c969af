"""What a watcher's answer to a NOTIFY does to its subscription (RFC 6665 §4.2.2)."""

from __future__ import annotations

import KSR  # type: ignore[import-not-found]
from blf_context import Context
from blf_sip import pv

from statestore.domain.subscription import after_notify_timeout, ends_subscription, subscription_id

LOCAL_TIMEOUT = 408


def on_notify_failure(ctx: Context) -> None:
    status = int(pv("$T_reply_code") or 0)
    # In the failure route the message is our NOTIFY: From tag ours, To tag the watcher's.
    sub_id = subscription_id(pv("$ci"), pv("$tt"), pv("$ft"))
    if ends_subscription(status):
        ctx.store.delete_subscription(sub_id)
        KSR.info(f"blf: watcher answered NOTIFY with {status}: subscription {sub_id} removed\n")
    elif status == LOCAL_TIMEOUT:
        _count_timeout(ctx, sub_id)


def _count_timeout(ctx: Context, sub_id: str) -> None:
    found = ctx.store.get_subscription(sub_id)
    if found is None:
        return
    subscription, revision = found
    counted = after_notify_timeout(subscription, ctx.subscriptions)
    if counted is None:
        ctx.store.delete_subscription(sub_id, revision)
        KSR.info(f"blf: too many NOTIFY timeouts: subscription {sub_id} removed\n")
        return
    ctx.store.update_subscription(counted, revision)
