"""RFC 6665 subscription rules, with the event package as a parameter.

Everything here decides; nothing sends. The Kamailio adapter reads the request into
`SubscribeRequest`, calls these functions, and turns a raised `SipError` into the reply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from statestore.domain import lifecycle
from statestore.domain.errors import SipError
from statestore.domain.model import Subscription, WatcherEntry
from statestore.domain.uri_identity import normalise_uri


@dataclass(frozen=True)
class SubscriptionPolicy:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    # Consecutive NOTIFY timeouts after which a subscription is dropped (RFC 6665 §4.2.2
    # allows removal on the first Timer F expiry; one lost NOTIFY should not drop a lamp).
    max_notify_timeouts: int = 3
    # Caps (RFC 6665 §4.2.1.1 lets a notifier refuse a subscription); 0 means no cap.
    # A receptionist's BLF field is about 200 keys; a person has a few devices.
    max_subs_per_watcher: int = 300
    max_subs_per_pair: int = 4  # per watcher account, presentity and event
    max_subs_per_presentity: int = 500


@dataclass(frozen=True)
class Reach:
    """Where a watcher's SUBSCRIBE came from; its NOTIFYs go back that way.

    `received` is "proto:ip:port", `flow_instance` the instance that holds the connection
    or NAT pinhole, `nat` whether the watcher is behind NAT.
    """

    received: str
    flow_instance: str
    nat: bool


# Every cap answers 403 (RFC 6665 §4.2.1.1, RFC 3261 §21.4.4): it is a policy decision that
# a retry will not change; a 503 would invite the phone to retry or to fail over to the
# other instance, which gives the same answer. The reason phrase says which cap it was.
TOO_MANY_FOR_PAIR = "Forbidden - Too Many Subscriptions To This Presentity"
TOO_MANY_FOR_WATCHER = "Forbidden - Too Many Subscriptions"
TOO_MANY_FOR_PRESENTITY = "Forbidden - Too Many Watchers Of This Presentity"
NO_SUCH_SUBSCRIPTION = "Subscription Does Not Exist"


# RFC 6665 §4.2.2 via RFC 5057 §5: responses to NOTIFY that end the subscription.
TERMINATING_NOTIFY_CODES = frozenset({404, 405, 410, 416, 480, 481, 482, 483, 484, 485, 489, 501, 604})


def event_id(event_header: str | None) -> str:
    """The Event header's id parameter, echoed in every NOTIFY (RFC 6665 §8.2.1)."""
    for param in (event_header or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "id":
            return value.strip()
    return ""


def event_header(subscription: Subscription) -> str:
    return f"{subscription.event};id={subscription.event_id}" if subscription.event_id else subscription.event


def parse_expires(value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()):  # delta-seconds is 1*DIGIT, ASCII only (RFC 3261 §25.1)
        raise SipError(400, "Bad Request - Invalid Expires")
    return int(text)


def granted_expires(requested: int | None, policy: SubscriptionPolicy) -> int:
    """Duration granted (§4.2.1.1): never above the request, 423 below the minimum."""
    if requested is None:
        return min(policy.default_expires, policy.max_expires)
    if requested == 0:
        return 0
    if requested < policy.min_expires:
        raise SipError(423, "Interval Too Brief", {"Min-Expires": str(policy.min_expires)})
    return min(requested, policy.max_expires)


def subscription_id(call_id: str, remote_tag: str, local_tag: str) -> str:
    """Stable id of the dialog usage: Call-ID plus both tags (RFC 6665 §4.1.2.1)."""
    digest = hashlib.sha1(f"{call_id}\x00{remote_tag}\x00{local_tag}".encode()).hexdigest()
    return digest[:24]


def subscription_state(subscription: Subscription, now: float, reason: str | None = None) -> str:
    """Subscription-State header value (§8.2.3): active or pending with the time left,
    or terminated with the reason."""
    if reason is not None:
        return f"terminated;reason={reason}"
    status = "pending" if subscription.status == "pending" else "active"
    return f"{status};expires={subscription.remaining(now)}"


def refreshed(
    subscription: Subscription, expires: int, now: float, contact: str, reach: Reach | None = None
) -> Subscription:
    """The record after an authenticated refresh: a new Contact is a target refresh
    (RFC 6665 §4.1.2.1), and the watcher is now reached where the refresh came from."""
    renewed = replace(
        subscription,
        expires_at=now + expires,
        watcher_contact=contact or subscription.watcher_contact,
        notify_timeouts=0,
    )
    if reach is None:
        return renewed
    return replace(renewed, received=reach.received, flow_instance=reach.flow_instance, nat=reach.nat)


def reindexed(before: Subscription, after: Subscription) -> bool:
    """Whether the watcher index entry of a subscription changes with this update."""
    return WatcherEntry.of(before) != WatcherEntry.of(after)


def check_watcher(subscription: Subscription | None, authenticated: str) -> Subscription:
    """The subscription an in-dialog SUBSCRIBE names, if `authenticated` is its watcher
    (RFC 6665 §5.2: the notifier authenticates in-dialog SUBSCRIBEs as it did the initial
    one). Someone else's subscription answers exactly as a missing one, 481 (§4.1.2.2), so
    the answer tells a stranger nothing of which dialogs exist (issue 12, finding 4)."""
    if subscription is None or authenticated != subscription.watcher:
        raise SipError(481, NO_SUCH_SUBSCRIPTION)
    return subscription


def same_device(entry: WatcherEntry, new: Subscription) -> bool:
    """Whether `entry` is an older subscription of the device now subscribing as `new`:
    same watcher (the index is per watcher), presentity, URI subscribed to (one BLF key
    per alias is one subscription each) and event, and the same Contact URI or the same
    source transport address. An entry from before aliases subscribed to the account."""
    if entry.sub_id == new.sub_id or (entry.presentity, entry.event) != (new.presentity, new.event):
        return False
    if (entry.entity or f"sip:{entry.presentity}") != new.entity:
        return False
    if normalise_uri(entry.contact) == normalise_uri(new.watcher_contact):
        return True
    return bool(new.received) and entry.received == new.received


# Below this distance from the per-presentity cap, concurrent creates for one presentity
# cannot take it over the cap (there are fewer SIP workers in a cluster than this), so the
# create need not be guarded against them: the phones of a whole office subscribing to the
# receptionist at once after a power cut do not retry against each other.
PRESENTITY_GUARD_SLACK = 64


@dataclass(frozen=True)
class Admission:
    """A new subscription within the caps: the older subscriptions of its device that it
    replaces, and whether its create must fail if the presentity's count changed meanwhile
    (the watcher's subscriptions are always guarded: they are few and one phone's)."""

    replaced: tuple[WatcherEntry, ...]
    guard_presentity: bool


def admit(
    new: Subscription, watcher_entries: Sequence[WatcherEntry], presentity_count: int, policy: SubscriptionPolicy
) -> Admission:
    """Admission of `new` over the caps (403 when over one), checked per watcher and
    presentity first (the reflection bound), then per watcher, then per presentity.

    `watcher_entries` are the watcher's stored subscriptions, `presentity_count` how many
    subscriptions the presentity has (of every watcher). Replaced ones do not count.
    """
    others = [entry for entry in watcher_entries if entry.sub_id != new.sub_id]
    replaced = tuple(entry for entry in others if same_device(entry, new))
    kept = [entry for entry in others if entry not in replaced]
    pair = [entry for entry in kept if (entry.presentity, entry.event) == (new.presentity, new.event)]
    if _over(len(pair) + 1, policy.max_subs_per_pair):
        raise SipError(403, TOO_MANY_FOR_PAIR)
    if _over(len(kept) + 1, policy.max_subs_per_watcher):
        raise SipError(403, TOO_MANY_FOR_WATCHER)
    watched = presentity_count - len(replaced) + 1
    if _over(watched, policy.max_subs_per_presentity):
        raise SipError(403, TOO_MANY_FOR_PRESENTITY)
    guard = policy.max_subs_per_presentity > 0 and watched > policy.max_subs_per_presentity - PRESENTITY_GUARD_SLACK
    return Admission(replaced, guard)


def _over(count: int, cap: int) -> bool:
    return cap > 0 and count > cap


# NOTIFY sequencing without a store write per NOTIFY. The record holds the CSeq and
# dialog-info version of its first NOTIFY at an ownership epoch (`cseq`, `version`,
# `epoch`); the one notifier that sends for it counts its NOTIFYs in memory. An epoch is
# a cluster-wide counter bumped by compare-and-swap when a notifier starts and when it
# takes subscriptions over, so a later sender always numbers above an earlier one:
#     CSeq = cseq + (E - epoch) * EPOCH_STRIDE + n,  version = the same offset from `version`
# for the n-th NOTIFY (from 0) a notifier sends at its epoch E. One sender steps by one
# (RFC 4235 §4.1); a new one jumps forward with a full document, which §4.1 allows.
EPOCH_STRIDE = 1 << 16
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: CSeq numbers stay below 2**31


def notify_numbers(subscription: Subscription, epoch: int, sent: int) -> tuple[int, int] | None:
    """(CSeq, version) of the NOTIFY after `sent` others at `epoch`; None past 2**31-1:
    the subscription must end (its watcher subscribes again)."""
    offset = (epoch - subscription.epoch) * EPOCH_STRIDE + sent
    cseq = subscription.cseq + offset
    if offset < 0 or sent >= EPOCH_STRIDE or cseq > MAX_CSEQ:
        return None
    return cseq, subscription.version + offset


def numbered(subscription: Subscription, epoch: int, sent: int) -> Subscription | None:
    """The subscription as its next NOTIFY carries it (CSeq and version filled in)."""
    numbers = notify_numbers(subscription, epoch, sent)
    return None if numbers is None else replace(subscription, cseq=numbers[0], version=numbers[1])


# Subscription-State reasons of a final NOTIFY (RFC 6665 §4.2.2).
REASON_TIMEOUT = "timeout"  # it expired (or was unsubscribed): the watcher may subscribe again
REASON_NORESOURCE = "noresource"  # its presentity no longer exists: do not subscribe again


def ended(subscription: Subscription, now: float, reason: str = "") -> Subscription:
    """The record of an ended subscription, due now; its notifier sends the final NOTIFY
    and removes it, as for an expiry. An unsubscribe (Expires: 0, §4.2.1.4) gives no
    reason (`final_reason`); a removed account `REASON_NORESOURCE`. The move is the
    lifecycle table's (statestore.domain.lifecycle); one already over stays over."""
    event = lifecycle.Event(reason) if reason else lifecycle.Event.TIMEOUT
    try:
        return lifecycle.step(subscription, event, now)
    except lifecycle.NoSuchMove:
        return replace(subscription, expires_at=min(subscription.expires_at, now),
                       termination_reason=subscription.termination_reason or reason)


def final_reason(subscription: Subscription) -> str:
    """The `reason` of the subscription's final NOTIFY: the one it was ended with, else
    timeout (RFC 6665 §4.2.2: an expiry; the watcher may subscribe again)."""
    return subscription.termination_reason or REASON_TIMEOUT


# After the n-th NOTIFY of a subscription timed out (counted in its record by the
# failure route), its notifier sends the current state again this many seconds later;
# at SubscriptionPolicy.max_notify_timeouts the subscription is removed instead.
NOTIFY_RETRY_SECONDS = (2.0, 4.0, 8.0)


def retry_delay(notify_timeouts: int) -> float:
    return NOTIFY_RETRY_SECONDS[min(max(notify_timeouts, 1), len(NOTIFY_RETRY_SECONDS)) - 1]


def is_expired(subscription: Subscription, now: float) -> bool:
    return subscription.expires_at <= now


def ends_subscription(status: int) -> bool:
    return status in TERMINATING_NOTIFY_CODES


def after_notify_timeout(subscription: Subscription, policy: SubscriptionPolicy) -> Subscription | None:
    """The record after one more NOTIFY timed out, or None when it is to be removed.

    Counted since the last refresh: a phone that misses a NOTIFY now and then keeps its
    lamp, one that is gone stops costing retransmissions after a few.
    """
    timeouts = subscription.notify_timeouts + 1
    if timeouts >= policy.max_notify_timeouts:
        return None
    return replace(subscription, notify_timeouts=timeouts)


def responsible_for(name: str, live_instances: Sequence[str]) -> str | None:
    """The live instance chosen for `name` by rendezvous hashing: every instance agrees
    without talking, and only the names of an instance that goes away move."""
    if not live_instances:
        return None
    return max(live_instances, key=lambda instance: hashlib.sha1(f"{name}/{instance}".encode()).hexdigest())


# What an instance that announces no packages serves: the versions before packages were
# announced served BLF only.
LEGACY_PACKAGES = frozenset({"dialog"})


def serving(event: str, serves: Mapping[str, frozenset[str]], live: Sequence[str]) -> list[str]:
    """The live instances that serve `event` (`serves`: the packages each announced): only
    they may be made responsible for its subscriptions (an instance of an older version in
    a rolling upgrade does not)."""
    return [name for name in live if event in serves.get(name, LEGACY_PACKAGES)]


def responsible_instance(subscription: Subscription, live_instances: Sequence[str]) -> str | None:
    """Which live instance sends this subscription's NOTIFYs.

    The instance that accepted it while it lives; otherwise one chosen by rendezvous
    hashing, so that every instance agrees without talking and load spreads.
    """
    if not live_instances:
        return None
    if subscription.owner in live_instances:
        return subscription.owner

    def weight(name: str) -> str:
        return hashlib.sha1(f"{subscription.sub_id}/{name}".encode()).hexdigest()

    return max(live_instances, key=weight)
