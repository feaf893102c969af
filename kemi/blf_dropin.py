"""The drop-in's steps: what our code does inside an operator's native configuration.

kamailio/blf.cfg loads this Python as a library and the operator's routes call it with
`python_exec` (docs/dropin.md). Each step here is built from the same functions as our full
routing (kemi/blf_kemi.py `route`): the same SUBSCRIBE/PUBLISH handlers, the same digest,
the same call tracking, the same registrar; only the routing of calls stays the operator's.
"""

from __future__ import annotations

import KSR  # type: ignore[import-not-found]
from blf_calls import authenticated_call, on_call_ended, on_invite_reply, start_tracking
from blf_context import Context
from blf_directory import directory
from blf_publish import handle_publish
from blf_register import record_register
from blf_sip import header, list_header, pv
from blf_subscribe import handle_in_dialog_subscribe, handle_initial_subscribe

from statestore.domain.dropin import DropinFacts, DropinStep, dropin_step
from statestore.domain.routing import parse_route


def _facts(ctx: Context) -> DropinFacts:
    return DropinFacts(
        method=pv("$rm"),
        in_dialog=KSR.siputils.has_totag() > 0,
        event=header("Event"),
        served=directory(ctx).get(pv("$rd")) is not None,
        routed_on=any(
            entry is None or KSR.is_myself(entry.uri) <= 0 for entry in map(parse_route, list_header("Route"))
        ),
    )


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
