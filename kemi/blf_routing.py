"""Which requests the cluster routes, and where (statestore.domain.routing decides).

- Flood limit: pike per source address, before anything else touches the request.
- In-dialog requests follow only a route set the cluster issued (HMAC in our Record-Route)
  and go only to the flows recorded when the dialog was set up.
- Initial requests lose the Route entries naming us; any other preloaded Route is refused.
- A phone on a connection or behind NAT is reached through the instance that holds its
  flow (a signed flow route); that instance relays without authenticating the request
  again, since only the cluster can sign one, and only cluster instances may send it.
"""

from __future__ import annotations

import json

import KSR  # type: ignore[import-not-found]
from blf_context import Context, shared_instances
from blf_sip import list_header, pv

from statestore.domain.errors import SipError
from statestore.domain.model import Subscription
from statestore.domain.routing import (
    Address,
    Reach,
    RouteEntry,
    flow_of,
    parse_route,
    reach,
    record_route_params,
    sent_by_its_party,
    valid_dialog_route,
    valid_flow_route,
)

_instances_raw = ""
_instances: dict[str, str] = {}
# Branches of the INVITE being relayed, by (Request-URI, destination): the branch route,
# which tm runs inside t_relay in this same process, adds their Route and Record-Route.
_pending: dict[tuple[str, str], Reach] = {}
_caller_flow = ""


def live_instances(ctx: Context) -> dict[str, str]:
    """Live instances (name -> SIP host:port), as the lease keeper last read them from the
    store into shared memory: no store round trip on the request path."""
    global _instances_raw, _instances
    raw = shared_instances()
    if raw != _instances_raw:
        _instances_raw = raw
        try:
            _instances = {str(name): str(sip) for name, sip in json.loads(raw or "{}").items()}
        except (ValueError, AttributeError):
            _instances = {}
    instances = dict(_instances)
    instances[ctx.settings.instance] = ctx.settings.sip
    return instances


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
    """How this instance reaches a watcher with a NOTIFY: over the flow its SUBSCRIBE came
    on (through the instance holding it), or at its Contact; None to follow its route set."""
    if subscription.route_set:
        return None
    return reach(
        subscription.watcher_contact, subscription.received, subscription.flow_instance, subscription.nat,
        ctx.settings.instance, live_instances(ctx), ctx.settings.secret, subscription.call_id,
    )


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
        if flow is None or len(routes) != 1 or method != "INVITE" or not from_cluster(ctx):
            raise SipError(403, "Forbidden - Invalid Flow Route")
        KSR.hdr.remove("Route")
        return flow
    if not all(_mine(entry) for entry in routes):
        raise SipError(403, "Forbidden - Route Not Allowed")
    KSR.hdr.remove("Route")
    return None


def relay_to_flow(ctx: Context, flow: Address) -> None:
    """Another instance sends an INVITE for a phone whose flow we hold: relay it there,
    record-routed (its in-dialog requests come back through us), without tracking the call
    (the sending instance does that)."""
    _send_to(flow)
    KSR.rr.record_route_params(
        record_route_params(ctx.settings.secret, pv("$ci"), pv("$ft"), str(flow), source_flow())
    )
    relay(ctx)


# --- branches of a call ---------------------------------------------------------------------


def plan_branches(ctx: Context, targets: list[tuple[str, str, str, bool]]) -> int:
    """Set the INVITE's branches, one per (contact, received, holder, nat) that can be
    reached; the number of branches. Their Route and Record-Route are added per branch."""
    global _caller_flow
    _pending.clear()
    _caller_flow = source_flow()
    instances = live_instances(ctx)
    reaches = [
        found
        for contact, received, holder, nat in targets
        if (found := reach(contact, received, holder, nat, ctx.settings.instance, instances,
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
        KSR.tm.t_on_branch("ksr_branch")
    return len(reaches)


def on_branch(ctx: Context) -> None:
    """Branch route: this branch's flow route and Record-Route entry."""
    target = _pending.get((pv("$ru"), pv("$du")))
    flow = target.flow if target is not None else ""
    if target is not None and target.route:
        KSR.hdr.insert(f"Route: {target.route}\r\n")
    KSR.rr.record_route_params(
        record_route_params(ctx.settings.secret, pv("$ci"), pv("$ft"), flow, _caller_flow)
    )


# --- in-dialog requests ----------------------------------------------------------------------


def in_dialog_routes(ctx: Context, method: str) -> tuple[list[RouteEntry], Address | None] | None:
    """Check an in-dialog request's Route set. None: not for relaying (no Route, or only an
    outbound-proxy Route naming us on a request we answer ourselves). Otherwise the route
    entries and the flow to send to when we are the last hop. 403 for anything the cluster
    did not issue."""
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
    secret = ctx.settings.secret
    if not all(valid_dialog_route(entry, secret, call_id, from_tag, to_tag) for entry in routes):
        raise SipError(403, "Forbidden - Not A Dialog Of Ours")
    source = Address.parse(source_flow())
    if source is None or (not from_cluster(ctx) and not sent_by_its_party(top, from_tag, source)):
        raise SipError(403, "Forbidden - Not From A Party Of This Dialog")
    mine = 0
    while mine < len(routes) and _mine(routes[mine]):
        mine += 1
    if mine < len(routes):
        return routes, None  # the next hop is another instance of ours, checked above
    flow = flow_of(top, from_tag)
    if flow is None:
        raise SipError(403, "Forbidden - No Flow For This Dialog")
    return routes, flow


def relay_in_dialog(routes: list[RouteEntry], flow: Address | None) -> None:
    """Point the request along its checked route set: our entries removed, then to the next
    instance on the route, or to the recorded flow when we are the last."""
    if routes and KSR.rr.loose_route() < 0:
        raise SipError(403, "Forbidden - Route Not Allowed")
    if flow is not None:
        _send_to(flow)


def relay(ctx: Context) -> bool:
    """Relay statefully; exactly one final response whatever happens (tm answers a relay
    that fails at once itself). False when the relay failed."""
    if KSR.tm.t_relay() > 0:
        return True
    KSR.warn(f"blf: relaying {pv('$rm')} {pv('$ci')} to {pv('$du') or pv('$ru')} failed at once\n")
    return False
