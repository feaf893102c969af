"""Which requests the cluster routes, and where (statestore.domain.routing decides).

- Flood limit: pike per source address, before anything else touches the request.
- In-dialog requests follow only a route set the cluster issued (HMAC of each entry in our
  Record-Route), only while its dialog lives, only from the flow recorded for their sender,
  and go only to the next live instance of ours or to the flow recorded for the other side.
- Initial requests lose the Route entries naming us; any other preloaded Route is refused.
- A phone on a connection or behind NAT is reached through the instance that holds its
  flow (a signed flow route); that instance relays without authenticating the request
  again, since only the cluster can sign one, and only cluster instances may send it.
"""

from __future__ import annotations

import json
import time

import KSR  # type: ignore[import-not-found]
from blf_context import Context, shared_instances
from blf_sip import list_header, pv

from statestore.domain.errors import SipError
from statestore.domain.model import Subscription
from statestore.domain.routing import (
    Address,
    Reach,
    RouteEntry,
    contact_address,
    flow_gone,
    flow_of,
    parse_route,
    proven_instance,
    reach,
    record_route_params,
    sent_by_its_party,
    tracks_dialog,
    valid_dialog_route,
    valid_flow_route,
)

# This Kamailio's start: the module is imported in mod_init, before the fork, so every
# process of the instance holds the same value. The lease keeper announces it (a binding
# on a connection registered before it names a dead connection); the Record-Route entry
# of a tracked call carries it (BOOT_ID).
BOOT_TIME = time.time()
BOOT_ID = str(int(BOOT_TIME * 1000))

# The dialog module's state of a dialog that has ended ($dlg(state)), and our mark on a
# dialog whose BYE has been relayed.
DLG_STATE_DELETED = 5
ENDED_VAR = "$dlg_var(blf_ended)"

_instances_raw = ""
_instances: dict[str, str] = {}
_boots: dict[str, float] = {}
# Branches of the INVITE being relayed, by (Request-URI, destination): the branch route,
# which tm runs inside t_relay in this same process, adds their Route and Record-Route.
_pending: dict[tuple[str, str], Reach] = {}
_caller_flow = ""
_call_started = 0
# Initial requests relayed to a phone's flow by the instance holding it: a call, and a
# MESSAGE, which makes no dialog and so is not record-routed.
RELAYED_TO_FLOWS = frozenset({"INVITE", "MESSAGE"})


def live_instances(ctx: Context) -> dict[str, str]:
    """Live instances (name -> SIP host:port), as the lease keeper last read them from the
    store into shared memory: no store round trip on the request path."""
    _load_instances()
    instances = dict(_instances)
    instances[ctx.settings.instance] = ctx.settings.sip
    return instances


def instance_boots(ctx: Context) -> dict[str, float]:
    """When each live instance last started (the lease keeper shares it with the SIP address)."""
    _load_instances()
    boots = dict(_boots)
    boots[ctx.settings.instance] = BOOT_TIME
    return boots


def _load_instances() -> None:
    """Parse the shared instances once per change: {name: {"sip": ..., "boot": ...}}
    (or {name: sip}, as written before the boot was shared)."""
    global _instances_raw, _instances, _boots
    raw = shared_instances()
    if raw == _instances_raw:
        return
    _instances_raw = raw
    instances: dict[str, str] = {}
    boots: dict[str, float] = {}
    try:
        for name, info in json.loads(raw or "{}").items():
            if isinstance(info, dict):
                instances[str(name)] = str(info.get("sip", ""))
                if isinstance(info.get("boot"), (int, float)):
                    boots[str(name)] = float(info["boot"])
            else:
                instances[str(name)] = str(info)
    except (ValueError, AttributeError):
        instances, boots = {}, {}
    _instances, _boots = instances, boots


def from_cluster(ctx: Context) -> bool:
    """The request comes from one of the cluster's instances (its own address included)."""
    if KSR.is_myself_srcip() > 0:
        return True
    source = pv("$si")
    return any(sip.rpartition(":")[0].strip("[]") == source for sip in live_instances(ctx).values())


def flooding(ctx: Context) -> bool:
    """pike's verdict on the source address; cluster instances are never limited."""
    return not from_cluster(ctx) and KSR.pike.pike_check_req() < 0


def watcher_reach(ctx: Context, subscription: Subscription) -> Reach | None:
    """How this instance reaches a watcher with a NOTIFY: always over the flow its SUBSCRIBE
    (or its last authenticated refresh) came from, through the instance holding it, never at
    an address only its Contact or Route names (a watcher naming a victim there reflects
    NOTIFYs onto itself only). A flow whose holder is gone is tried from here. None for a
    record without a flow (written before flows were recorded): its route set or Contact."""
    source = Address.parse(subscription.received)
    if source is None:
        return None
    direct = Reach(subscription.watcher_contact, dst=source.sip_uri())
    if not (source.connection_oriented or subscription.nat):
        return direct  # a UDP phone not behind NAT takes its NOTIFYs from any instance
    found = reach(
        subscription.watcher_contact, subscription.received, subscription.flow_instance, subscription.nat,
        ctx.settings.instance, live_instances(ctx), ctx.settings.secret, subscription.call_id,
    )
    return found if found is not None else direct


def source_flow() -> str:
    return f"{pv('$pr').lower()}:{pv('$si')}:{pv('$sp')}"


def _routes() -> list[RouteEntry]:
    entries = [parse_route(value) for value in list_header("Route")]
    if any(entry is None for entry in entries):
        raise SipError(400, "Bad Request - Invalid Route")
    return [entry for entry in entries if entry is not None]


def _mine(entry: RouteEntry) -> bool:
    return int(KSR.is_myself(entry.uri)) > 0


def _send_to(flow: Address) -> None:
    KSR.pv.sets("$du", flow.sip_uri())


# --- initial requests ------------------------------------------------------------------------


def initial_routes(ctx: Context, method: str) -> Address | None:
    """Check the Route set of an initial request. Entries naming us are removed (RFC 3261
    §16.4); a signed flow route from another instance gives the flow to relay to; any other
    Route is refused: the cluster routes initial requests only to its own accounts."""
    routes = _routes()
    if not routes:
        return None
    top = routes[0]
    if "flow" in top.params and _mine(top):
        flow = valid_flow_route(top, ctx.settings.secret, pv("$ci"))
        if flow is None or len(routes) != 1 or method not in RELAYED_TO_FLOWS or not from_cluster(ctx):
            raise SipError(403, "Forbidden - Invalid Flow Route")
        KSR.hdr.remove("Route")
        return flow
    if not all(_mine(entry) for entry in routes):
        raise SipError(403, "Forbidden - Route Not Allowed")
    KSR.hdr.remove("Route")
    return None


def relay_to_flow(ctx: Context, flow: Address) -> None:
    """Another instance sends an INVITE (or a MESSAGE) for a phone whose flow we hold: relay
    it there, an INVITE record-routed (its in-dialog requests come back through us), without
    tracking the call (the sending instance does that)."""
    _send_to(flow)
    if pv("$rm") == "INVITE":
        KSR.rr.record_route_params(
            record_route_params(
                ctx.settings.secret, ctx.settings.sip, pv("$ci"), pv("$ft"), str(flow), source_flow(), int(time.time()),
                transports=(pv("$pr"), flow.proto),
            )
        )
    relay(ctx)


# --- branches of a call ---------------------------------------------------------------------


def plan_branches(
    ctx: Context, targets: list[tuple[str, str, str, bool, float]], branch_route: str = "ksr_branch"
) -> int:
    """Set the INVITE's branches, one per (contact, received, holder, nat, registered_at)
    that can be reached (not over a connection that died with its holder's previous run);
    the number of branches. Their Route and Record-Route are added per branch, in
    `branch_route` (the drop-in's native one adds the Route only)."""
    global _caller_flow, _call_started
    _pending.clear()
    _caller_flow = source_flow()
    _call_started = int(time.time())
    instances, boots = live_instances(ctx), instance_boots(ctx)
    reaches = [
        found
        for contact, received, holder, nat, registered_at in targets
        if not flow_gone(received, registered_at, boots.get(holder or ctx.settings.instance))
        and (found := reach(contact, received, holder, nat, ctx.settings.instance, instances,
                            ctx.settings.secret, pv("$ci"))) is not None
    ]
    for index, target in enumerate(reversed(reaches)):
        KSR.pv.sets("$ru", target.ruri)
        if target.dst:
            KSR.pv.sets("$du", target.dst)
        else:
            KSR.resetdsturi()
        _pending[(target.ruri, target.dst)] = target
        if index < len(reaches) - 1:
            KSR.corex.append_branch()
    if reaches:
        KSR.tm.t_on_branch(branch_route)
    return len(reaches)


def route_branch() -> str:
    """This branch's flow route (to the instance holding the phone's flow), if it has one;
    the flow."""
    target = _pending.get((pv("$ru"), pv("$du")))
    if target is not None and target.route:
        KSR.hdr.insert(f"Route: {target.route}\r\n")
    return target.flow if target is not None else ""


def on_branch(ctx: Context) -> None:
    """Branch route: this branch's flow route and Record-Route entry (this instance tracks
    the call: its entry carries the boot)."""
    flow = route_branch()
    if pv("$rm") != "INVITE":
        return  # a MESSAGE makes no dialog: nothing to record-route (RFC 3428)
    outbound = contact_address(pv("$du") or pv("$ru"))
    KSR.rr.record_route_params(
        record_route_params(
            ctx.settings.secret, ctx.settings.sip, pv("$ci"), pv("$ft"), flow, _caller_flow, _call_started, BOOT_ID,
            transports=(pv("$pr"), outbound.proto if outbound is not None else "udp"),
        )
    )


# --- in-dialog requests ----------------------------------------------------------------------


def in_dialog_routes(ctx: Context, method: str) -> tuple[list[RouteEntry], Address | None] | None:
    """Check an in-dialog request's Route set. None: not for relaying (no Route, or only an
    outbound-proxy Route naming us on a request we answer ourselves). Otherwise the route
    entries and the flow to send to when we are the last hop. 403 for anything the cluster
    did not issue: every entry signed for its own host:port, the hop after ours a live
    instance of ours or the recorded flow."""
    routes = _routes()
    if not routes:
        return None
    top = routes[0]
    if not _mine(top):
        raise SipError(403, "Forbidden - Route Not Allowed")
    call_id, from_tag, to_tag = pv("$ci"), pv("$ft"), pv("$tt")
    if "flow" in top.params:
        flow = valid_flow_route(top, ctx.settings.secret, call_id)
        if flow is None or len(routes) != 1 or not from_cluster(ctx):
            raise SipError(403, "Forbidden - Invalid Flow Route")
        KSR.hdr.remove("Route")
        return [], flow
    if "blf" not in top.params:
        if method == "SUBSCRIBE" and all(_mine(entry) for entry in routes):
            KSR.hdr.remove("Route")
            return None
        raise SipError(403, "Forbidden - Route Not Allowed")
    secret, now = ctx.settings.secret, time.time()
    if not all(valid_dialog_route(entry, secret, call_id, from_tag, to_tag, now) for entry in routes):
        raise SipError(403, "Forbidden - Not A Dialog Of Ours")
    source = Address.parse(source_flow())
    if source is None or (not from_cluster(ctx) and not sent_by_its_party(top, from_tag, source)):
        raise SipError(403, "Forbidden - Not From A Party Of This Dialog")
    mine = 0
    while mine < len(routes) and _mine(routes[mine]):
        mine += 1
    if mine < len(routes):
        if not proven_instance(routes[mine], live_instances(ctx)):
            raise SipError(403, "Forbidden - Route Not Allowed")
        return routes, None  # the next hop is a live instance of ours, its entry signed
    flow = flow_of(top, from_tag)
    if flow is None:
        raise SipError(403, "Forbidden - No Flow For This Dialog")
    return routes, flow


def tracked_here(routes: list[RouteEntry]) -> bool:
    """Whether this instance tracks the dialog in this boot (its entry carries the boot):
    its dialog module must then hold the dialog for the request to be routed."""
    return any(tracks_dialog(entry, BOOT_ID) and _mine(entry) for entry in routes)


def _dialog_ended(method: str) -> bool:
    """After dlg_manage(): whether the request's dialog has ended. It is gone from the
    dialog module, or has seen its BYE (an ended dialog stays known, in state 5 "deleted",
    until its BYE's transaction is gone): a BYE is let through once, and its
    retransmissions are answered by tm before they get here."""
    if KSR.dialog.is_known_dlg() < 0 or pv(ENDED_VAR):
        return True
    state = pv("$dlg(state)")
    return method != "BYE" and state.isdigit() and int(state) >= DLG_STATE_DELETED


def relay_in_dialog(routes: list[RouteEntry], flow: Address | None) -> None:
    """Point the request along its checked route set: our entries removed, then to the next
    instance on the route, or to the recorded flow when we are the last. The dialog module
    follows every request but the ACK; a dialog this instance tracks in this boot must not
    have ended: after the BYE its routes are dead (481; an ACK, which nothing answers, is
    let through)."""
    method = pv("$rm")
    # A party's own asserted identity is not passed on in the dialog either (a re-INVITE or
    # UPDATE naming a third account): only the initial request's, which we assert (blf_calls).
    KSR.hdr.remove("P-Asserted-Identity")
    KSR.hdr.remove("P-Preferred-Identity")
    if routes and KSR.rr.loose_route() < 0:
        raise SipError(403, "Forbidden - Route Not Allowed")
    if routes and method != "ACK":
        KSR.dialog.dlg_manage()
        if tracked_here(routes):
            if _dialog_ended(method):
                raise SipError(481, "Call/Transaction Does Not Exist")
            if method == "BYE":
                KSR.pv.sets(ENDED_VAR, "1")
    if flow is not None:
        _send_to(flow)


def relay(ctx: Context) -> bool:
    """Relay statefully; exactly one final response whatever happens. A relay that fails
    at once (nothing could be sent: a dead connection, an unserved transport) is answered
    480 here, not with tm's internal reason text. False when the relay failed."""
    KSR.tm.t_set_disable_internal_reply(1)
    if KSR.tm.t_relay() > 0:
        return True
    KSR.warn(f"blf: relaying {pv('$rm')} {pv('$ci')} to {pv('$du') or pv('$ru')} failed at once\n")
    if KSR.tm.t_reply(480, "Temporarily Unavailable") < 0:
        KSR.sl.send_reply(480, "Temporarily Unavailable")
    return False
