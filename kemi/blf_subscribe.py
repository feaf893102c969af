"""SUBSCRIBE (RFC 6665 §4.2.1): create, refresh, unsubscribe, fetch.

The subscription lives in the store. A SIP worker writes it (create, refresh,
unsubscribe) and answers 200; a new subscription's first NOTIFY (number 0 at this
instance's epoch) is sent here after the 200 (§4.2.1.1), and a fetch's only one. Every
later NOTIFY (state change, refresh, final) is sent by the notifier of the instance
responsible for it, which sees the write through its watch and numbers NOTIFYs without a
write (blf_notify). Every
SUBSCRIBE is authenticated as its watcher, the in-dialog ones too (refresh, target
refresh, unsubscribe): knowing a dialog's Call-ID and tags gives nothing. A new
subscription is admitted within the caps of SubscriptionPolicy and replaces the older
subscriptions of the same device.
"""

from __future__ import annotations

import time
from dataclasses import replace

import blf_notify
import KSR  # type: ignore[import-not-found]
from blf_auth import authenticate, realm_for
from blf_context import Context, StoreHandle, find_subscription, lost_races, shared_epoch, trying_if_store_slow
from blf_directory import directory, realm_candidates, request_identities, require_served_target
from blf_sip import header, list_header, pv, reply, uri_of

from statestore.domain import bodies, packages
from statestore.domain.authorization import Authorization, initial_status
from statestore.domain.errors import SipError, StoreUnavailable, store_unavailable_error
from statestore.domain.identity import NOT_FOUND, check_reach
from statestore.domain.model import Subscription
from statestore.domain.packages import EventPackage, Subscribers, event_package, negotiate
from statestore.domain.profiles import choose_profile, profile_from_record, ua_rules_from_record
from statestore.domain.routing import behind_nat
from statestore.domain.subscription import (
    NO_SUCH_SUBSCRIPTION,
    Reach,
    SubscriptionPolicy,
    admit,
    check_watcher,
    ended,
    event_id,
    granted_expires,
    parse_expires,
    refreshed,
    reindexed,
    subscription_id,
)
from statestore.store import Census, StateStore, SubscribeRead

ONLY_SELF = "Forbidden - Only The Presentity May Watch Its Watchers"


def _expiry(ctx: Context, package: EventPackage) -> SubscriptionPolicy:
    """The package's durations within the operator's (BLF_SUB_MIN/MAX_EXPIRES): the lower
    of the two minimums (a lab shortens it for every package), the lower maximum."""
    operator = ctx.subscriptions
    low = min(package.expiry.min_expires, operator.min_expires)
    high = max(low, min(package.expiry.max_expires, operator.max_expires))
    return replace(operator, min_expires=low, max_expires=high,
                   default_expires=min(max(package.expiry.default_expires, low), high))


def _checked_expires(ctx: Context) -> tuple[EventPackage, str, int]:
    """Checks that need no store: package (489), Accept (406), Expires (400/423)."""
    package = event_package(header("Event"))
    content_type = negotiate(list_header("Accept"), package)
    expires = granted_expires(parse_expires(header("Expires")), _expiry(ctx, package))
    if ctx.zone(pv("$rd")).down():
        raise store_unavailable_error()
    return package, content_type, expires


def _transport() -> str:
    protocol = pv("$pr").lower()
    return protocol if protocol in ("tcp", "tls") else "udp"


def _reach(ctx: Context, contact: str) -> Reach:
    """Where this SUBSCRIBE came from: the watcher is reached there (RFC 3581, RFC 5626).

    $via0(host)/$via0(port) are the top Via's sent-by as Kamailio parsed it; a sent-by
    without a port counts as 5060 (RFC 3261 §18.2.1).
    """
    source_ip, source_port = pv("$si"), int(pv("$sp") or 0)
    via_port = pv("$via0(port)")
    port = int(via_port) if via_port.isdigit() and int(via_port) > 0 else None
    return Reach(
        received=f"{pv('$pr').lower()}:{source_ip}:{source_port}",
        flow_instance=ctx.settings.instance,
        nat=behind_nat(contact, pv("$via0(host)"), port, source_ip, source_port),
    )


def handle_initial_subscribe(ctx: Context) -> None:
    package, content_type, expires = _checked_expires(ctx)
    event = package.name
    require_served_target(ctx)
    watcher = authenticate(ctx, realm_for(ctx, realm_candidates()), store_required=True)
    if watcher is None:
        return
    # Who may watch whom is who could call whom (issue 7 §3), decided with the calls' rule:
    # 404 domain not served, 403 could not call (whether or not the user exists), 404 user.
    found = request_identities(ctx, watcher)
    check_reach(found, directory(ctx))
    presentity, entity = str(found.callee), str(found.entity)
    if package.subscribers is Subscribers.SELF and presentity != watcher:
        raise SipError(403, ONLY_SELF)  # RFC 3857 §5.1: a presentity's own watcher information
    watcher_contact = uri_of(pv("$ct"))
    if not watcher_contact:
        raise SipError(400, "Bad Request - Missing Contact")
    trying_if_store_slow()
    # A subscription lives in its presentity's zone, with the watcher's index entry for it:
    # its notifier is that zone's (a watcher's cap counts its subscriptions per zone).
    zone = ctx.zone(presentity)
    read = _read(ctx, zone, watcher, presentity, package)
    if read.presentity_account is None:
        raise SipError(404, NOT_FOUND)  # removed since the copy said it exists
    status, status_event = "active", "subscribe"
    if package.authorization:
        status, status_event = initial_status(Authorization.from_dict(read.authz), watcher, presentity)
    profile = choose_profile(
        profile_from_record(read.profile), header("User-Agent") or "", ua_rules_from_record(read.ua_profiles)
    )
    now = time.time()
    local_tag = pv("$ltt(t)")  # the To tag tm answers with (SUBSCRIBE is stateful)
    reach = _reach(ctx, watcher_contact)
    subscription = Subscription(
        sub_id=subscription_id(pv("$ci"), pv("$ft"), local_tag),
        event=event, presentity=presentity, entity=entity, watcher=watcher,
        watcher_contact=watcher_contact, call_id=pv("$ci"), local_tag=local_tag,
        remote_tag=pv("$ft"), local_uri=pv("$tu"), remote_uri=pv("$fu"),
        route_set=tuple(list_header("Record-Route")), expires_at=now + expires,
        owner=ctx.settings.instance, event_id=event_id(header("Event")), transport=_transport(),
        received=reach.received, flow_instance=reach.flow_instance, nat=reach.nat,
        cseq=1, version=0, epoch=shared_epoch(zone),
        status=status, status_event=status_event, profile=profile, content_type=content_type,
    )
    watchers = zone.store.subscriptions_to(presentity) if package.reads("subs") else []
    state = bodies.presentity_state(read.legs, read.bindings, read.publications, watchers, now)
    if expires == 0:
        # A fetch stores nothing (§4.4.3): its one NOTIFY, CSeq 1 and version 0, is ours.
        reply(200, "OK", {"Expires": "0"}, blf_notify.contact(ctx, subscription.transport))
        blf_notify.send(ctx, subscription, state, now, "timeout")
        return
    # The first NOTIFY is sent here, after the 200; the notifier numbers on from the
    # record (digest of what it showed included). A retransmitted SUBSCRIBE finds the
    # subscription its first copy created (and NOTIFYed): the same 200 again.
    first = replace(subscription, last_digest=packages.digest_for(subscription, state))
    counted = read.census if read.watcher_account is not None and read.watcher_account.aor == watcher else None
    fresh = _create(ctx, zone.store, first, counted)
    reply(200, "OK", {"Expires": str(expires)}, blf_notify.contact(ctx, first.transport))
    if fresh:
        if not blf_notify.send(ctx, first, state, now, None):
            # Rare (tm out of shared memory): the lamp shows from the next change or refresh.
            KSR.warn(f"blf: first NOTIFY of {first.sub_id} could not be sent\n")
        blf_notify.mark_first_sent(first.sub_id)  # the notifier's NOTIFYs may follow it now


def _read(ctx: Context, zone: StoreHandle, watcher: str, presentity: str, package: EventPackage) -> SubscribeRead:
    """The one store read of an initial SUBSCRIBE (one round trip, one revision): the
    watcher's and the presentity's accounts, the presentity's state (what the package's
    bodies are made of), its authorization, the watcher's profile and the census its
    create is guarded by. Both accounts go to memcached, for calls while neither etcd nor
    the directory copy can answer."""
    if zone.down():
        raise StoreUnavailable("store marked down")
    try:
        read = zone.store.initial_subscribe_read(watcher, presentity, package.inputs)
    except StoreUnavailable:
        zone.mark_down()
        raise
    for account in (read.watcher_account, read.presentity_account):
        if account is not None:
            ctx.cache.put_account(account)
    return read


def _create(ctx: Context, store: StateStore, subscription: Subscription, counted: Census | None = None) -> bool:
    """Store a new subscription within the caps (403 over one), replacing its device's
    older ones; False when it is stored already (a retransmission of its SUBSCRIBE).

    A replaced subscription ends silently, without a final NOTIFY: its device gave up
    its dialog by subscribing anew, so that NOTIFY would only earn a 481; and it would go
    to a Contact the new SUBSCRIBE's sender chose, once per SUBSCRIBE (reflection), or with
    reason=deactivated make a device that keeps both dialogs subscribe again at once
    (RFC 6665 §4.1.3), ping-pong. A refresh of the old dialog gets 481 (§4.1.2.2).

    `counted` is the census read with the SUBSCRIBE's state; every later attempt counts anew.
    """
    # A create counts again after another create of the same watcher (or of the presentity,
    # near its cap) won the race, until ours wins or a cap refuses it (blf_context.lost_races).
    for _ in lost_races():
        census = counted if counted is not None else store.census(subscription.watcher, subscription.presentity)
        counted = None
        admission = admit(subscription, census.entries, census.presentity_count, ctx.subscriptions)
        created = store.create_subscription(subscription, admission.replaced, census, admission.guard_presentity)
        if created is not None:
            for old in admission.replaced:
                KSR.info(f"blf: {subscription.watcher}: subscription {old.sub_id} replaced by {subscription.sub_id}\n")
            return True
        if store.get_subscription(subscription.sub_id) is not None:
            return False
    raise AssertionError("lost_races ends in a win or a 503")  # pragma: no cover


def handle_in_dialog_subscribe(ctx: Context) -> None:
    """Refresh or end a subscription: only its watcher may (481 for anyone else)."""
    package, _, expires = _checked_expires(ctx)
    event = package.name
    # Authenticated before any store read (issue 12, finding 4): a stranger costs no round
    # trip and no shared memory. The realm is chosen as when it subscribed.
    watcher = authenticate(ctx, realm_for(ctx, realm_candidates()), store_required=True)
    if watcher is None:
        return  # challenged, or a retransmission its transaction answers
    sub_id = subscription_id(pv("$ci"), pv("$ft"), pv("$tt"))
    trying_if_store_slow()
    # Its zone is its presentity's: the To URI's domain (ours in the dialog) says which.
    zone, found = find_subscription(ctx, sub_id, pv("$td"))
    if found is None:
        raise SipError(481, NO_SUCH_SUBSCRIPTION)
    store = zone.store
    check_watcher(found[0], watcher)  # someone else's: 481 as well
    reach = _reach(ctx, uri_of(pv("$ct")) or found[0].watcher_contact)
    # A refresh retries its compare-and-swap against a concurrent writer until it wins.
    for _ in lost_races():
        subscription, revision = found
        if subscription.event != event:
            raise SipError(489, "Bad Event", {"Allow-Events": subscription.event})
        if _refresh(ctx, store, subscription, revision, expires, reach):
            return
        found = store.get_subscription(sub_id)
        if found is None:
            raise SipError(481, "Subscription Does Not Exist")


def _refresh(
    ctx: Context, store: StateStore, subscription: Subscription, revision: int, expires: int, reach: Reach
) -> bool:
    """Refresh or end the subscription (§4.2.1.2, §4.2.1.4); False if it changed under us.
    Its notifier sends the NOTIFY that follows (the final one after an unsubscribe)."""
    if subscription.termination_reason:
        # Ended by the store (its presentity was removed): its final NOTIFY is on its way;
        # a refresh must not bring it back (RFC 6665 §4.1.2.2).
        raise SipError(481, "Subscription Does Not Exist")
    now = time.time()
    if expires == 0:
        if store.update_subscription(ended(subscription, now), revision) is None:
            return False
        reply(200, "OK", {"Expires": "0"}, blf_notify.contact(ctx, subscription.transport))
        return True
    renewed = refreshed(subscription, expires, now, uri_of(pv("$ct")), reach)
    if store.update_subscription(renewed, revision, reindexed(subscription, renewed)) is None:
        return False
    reply(200, "OK", {"Expires": str(expires)}, blf_notify.contact(ctx, subscription.transport))
    KSR.dbg(f"blf: refreshed {subscription.sub_id} for {expires}s\n")
    return True
