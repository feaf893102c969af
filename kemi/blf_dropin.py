"""The drop-in's steps: what our code does inside an operator's native configuration.

kamailio/blf.cfg loads this Python as a library and the operator's routes call it with
`python_exec` (docs/dropin.md). Each step here is built from the same functions as our full
routing (kemi/blf_kemi.py `route`): the same SUBSCRIBE/PUBLISH handlers, the same digest,
the same call tracking, the same registrar; only the routing of calls stays the operator's.
"""

from __future__ import annotations

import KSR  # type: ignore[import-not-found]
from blf_calls import (
    authenticated_call,
    current_parties,
    on_call_ended,
    on_invite_reply,
    plan_callee_branches,
    start_tracking,
)
from blf_context import Context
from blf_directory import directory, request_identities
from blf_publish import handle_publish
from blf_register import record_register
from blf_routing import initial_routes, relay_to_flow, route_branch
from blf_sip import header, list_header, pv
from blf_subscribe import handle_in_dialog_subscribe, handle_initial_subscribe

from statestore.domain.dropin import DropinFacts, DropinStep, dropin_step
from statestore.domain.errors import SipError
from statestore.domain.routing import RouteEntry, parse_route


def _facts(ctx: Context) -> DropinFacts:
    routes = [parse_route(value) for value in list_header("Route")]
    return DropinFacts(
        method=pv("$rm"),
        in_dialog=KSR.siputils.has_totag() > 0,
        event=header("Event"),
        served=directory(ctx).get(pv("$rd")) is not None,
        to_us=KSR.is_myself_ruri() > 0,
        routed_on=any(not _mine(entry) for entry in routes),
        flow_routed=bool(routes) and routes[0] is not None and _mine(routes[0]) and "flow" in routes[0].params,
    )


def _mine(entry: RouteEntry | None) -> bool:
    return entry is not None and KSR.is_myself(entry.uri) > 0


def request(ctx: Context) -> bool:
    """From the operator's request_route: True when we have answered the request (the
    operator's route then ends), False when its routing goes on (for a call we track too)."""
    step = dropin_step(_facts(ctx))
    if step is DropinStep.PASS:
        return False
    if step is DropinStep.TRACK_CALL:
        call = authenticated_call(ctx)
        if call is None:
            return True  # challenged (407), or a retransmission its transaction answers
        start_tracking(*call)
        return False
    if step is DropinStep.RECORD_REGISTER:
        # Challenged (401) or a retransmission: answered. Recorded: the operator saves it.
        return record_register(ctx) is None
    if step is DropinStep.RELAY_TO_FLOW:
        # Another instance's call (or MESSAGE) to a phone whose flow we hold: relayed there
        # as in the full mode, not tracked again (the sending instance tracks it).
        flow = initial_routes(ctx, pv("$rm"))
        if flow is None:
            raise SipError(403, "Forbidden - Invalid Flow Route")
        relay_to_flow(ctx, flow)
        return True
    if KSR.tm.t_check_trans() == 0:
        return True  # a retransmission the transaction layer has answered
    if step is DropinStep.SUBSCRIBE:
        handle_initial_subscribe(ctx)
    elif step is DropinStep.RESUBSCRIBE:
        handle_in_dialog_subscribe(ctx)
    else:
        handle_publish(ctx)
    return True


def in_dialog(ctx: Context) -> None:
    """From the operator's in-dialog branch, after its loose_route(): a BYE ends the call's
    legs (the dialog module has matched the dialog through its Record-Route)."""
    if pv("$rm") == "BYE":
        KSR.dialog.dlg_manage()
        on_call_ended(ctx)


def _initial_invite(method: str, to_tag: str) -> bool:
    """An initial INVITE's transaction (not a re-INVITE's, an UPDATE's, a SUBSCRIBE's the
    operator relays): only those start, answer or end a call."""
    return method == "INVITE" and not to_tag


def reply(ctx: Context) -> None:
    """From the operator's onreply_route of relayed requests: 18x and 2xx of a call (the
    message is the reply; its request is the transaction's)."""
    if _initial_invite(pv("$T_req($rm)"), pv("$T_req($tt)")):
        on_invite_reply(ctx)


def failure(ctx: Context) -> None:
    """From the operator's failure_route: the call's INVITE has failed (its legs end). The
    message there is the transaction's request."""
    if _initial_invite(pv("$rm"), pv("$tt")):
        on_call_ended(ctx)


# The native branch route (kamailio/blf.cfg) that blf_lookup's branches run in.
BRANCH_ROUTE = "blf_branch"


def lookup(ctx: Context) -> bool:
    """From the top of the operator's route[LOCATION]: for a call we track whose callee has
    live bindings in the cluster's registrar, set the INVITE's branches exactly as the full
    mode does (a phone on a connection or behind NAT through the instance holding its flow)
    and return True (the operator relays); False lets its own lookup("location") run."""
    parties = current_parties() if pv("$rm") == "INVITE" and not pv("$tt") else None
    if parties is None or callee_now(ctx, parties.caller) != parties.callee:
        return False  # not a call we track, or the operator's routing has sent it elsewhere since
    try:
        return plan_callee_branches(ctx, parties.callee, BRANCH_ROUTE) > 0
    except SipError:
        return False  # no live binding anywhere: the operator's lookup answers


def callee_now(ctx: Context, caller: str) -> str | None:
    """The account the Request-URI names now: the operator's routing may have rewritten it
    after blf_request (a forward, voicemail, a blocked number); None when it names none."""
    try:
        found = request_identities(ctx, caller).callee
    except SipError:
        return None
    return None if found is None else str(found)


def branch(ctx: Context) -> None:
    """blf_lookup's branch route: the branch's flow route. No Record-Route of ours: the
    operator's record_route() has added this instance's."""
    route_branch()
