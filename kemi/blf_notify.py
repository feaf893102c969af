"""Sending NOTIFYs: the notifier process, and a SIP worker answering a fetch, go through here.

Every NOTIFY of a stored subscription is sent by one process, the notifier of the instance
responsible for it, numbered from its record and an ownership epoch without writing the
record (statestore.domain.subscription.notify_numbers): CSeq and version strictly
increase whichever instance sends (RFC 6665 §4.1.2.2, RFC 4235 §4.1), also across
restarts and takeovers.
"""

from __future__ import annotations

from collections.abc import Container

import blf_metrics
import blf_notified
import KSR  # type: ignore[import-not-found]
from blf_context import Context, shared_instances
from blf_routing import watcher_reach
from blf_sip import NotifyDialog, notify_dialog, send_notify

from statestore.domain import packages
from statestore.domain.bodies import PresentityState, Template
from statestore.domain.model import Subscription
from statestore.domain.subscription import event_header, subscription_state


def contact(ctx: Context, transport: str = "udp") -> str:
    """Our Contact: this instance, over the transport the watcher subscribed with."""
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:blf@{ctx.settings.sip}{suffix}>"


def send(
    ctx: Context, subscription: Subscription, state: PresentityState, now: float, reason: str | None,
    template: Template | None = None,
) -> bool:
    """Send the NOTIFY that `subscription` (numbered: its CSeq and version) describes (a SIP
    worker: the first NOTIFY of a subscription, a fetch's only one). False when tm could
    not send it at all (no transaction: out of shared memory, no socket)."""
    return send_numbered(ctx, subscription, subscription.cseq, subscription.version, state, now, reason, template,
                         cache=False)


# The notifier's NotifyDialogs, by subscription id: (the record and the live instances
# they were built from, the dialog). A new record or another set of live instances builds
# it again. Bounded: emptied when full (only the subscriptions of presentities that change
# come back).
_dialogs: dict[str, tuple[Subscription, str, NotifyDialog]] = {}
DIALOG_CACHE = 20_000


def send_numbered(
    ctx: Context, subscription: Subscription, cseq: int, version: int, state: PresentityState, now: float,
    reason: str | None, template: Template | None = None, cache: bool = True,
) -> bool:
    """Send the NOTIFY of the stored record `subscription` numbered `cseq` and `version`;
    `template`, the presentity's body rendered once for all its watchers, when the caller
    has one. False when tm could not send it at all."""
    template = template if template is not None else packages.template_for(subscription, state)
    body = template.fill(subscription.entity, version)
    record = blf_notified.sending(subscription, cseq, version, now)
    sent = send_notify(
        _dialog(ctx, subscription, cache), cseq, subscription_state(subscription, now, reason), body,
        template.content_type,
    ) >= 0
    if sent:
        blf_metrics.notify_sent(subscription.event)
    else:
        blf_notified.unsent(subscription.sub_id, record, now)
        blf_metrics.notify_failed(subscription.event, 0)
    return sent


def forget_dialogs(live: Container[str]) -> int:
    """Drop the cached headers of every subscription not in `live` (the notifier's mirror):
    without it the cache held a few KB per subscription ever NOTIFYed until it filled
    (a steady climb the soak measured). Returns how many were dropped."""
    gone = [sub_id for sub_id in _dialogs if sub_id not in live]
    for sub_id in gone:
        del _dialogs[sub_id]
    return len(gone)


def _dialog(ctx: Context, subscription: Subscription, cache: bool) -> NotifyDialog:
    instances = shared_instances()
    cached = _dialogs.get(subscription.sub_id) if cache else None
    if cached is not None and cached[0] is subscription and cached[1] == instances:
        return cached[2]
    dialog = notify_dialog(
        subscription, event_header(subscription), contact(ctx, subscription.transport),
        watcher_reach(ctx, subscription),
    )
    if cache:
        if len(_dialogs) >= DIALOG_CACHE:
            _dialogs.clear()
        _dialogs[subscription.sub_id] = (subscription, instances, dialog)
    return dialog


# Subscriptions whose NOTIFY 0 a SIP worker of this instance has sent (htable, kamailio.cfg).
FIRST_SENT_TABLE = "blf_first"


def mark_first_sent(sub_id: str) -> None:
    """The SIP worker that created the subscription is done with its NOTIFY 0."""
    KSR.htable.sht_seti(FIRST_SENT_TABLE, sub_id, 1)


def first_sent(sub_id: str) -> bool:
    """Whether a SIP worker said it sent the subscription's NOTIFY 0 (mirror.due)."""
    return KSR.htable.sht_get(FIRST_SENT_TABLE, sub_id) is not None
