"""INVITE (and MESSAGE) routing and first-party call tracking (issue 2, "Calls").

Routing never depends on the store being up: contacts and credentials fall back to the
cache, and the call's legs are not written here at all. Each change of a call (INVITE,
18x, 2xx, failure, BYE) is handed to the instance's leg writer through a queue in
shared memory (mqueue) and the SIP worker carries on: a slow or stopped store never
delays a 100, 180 or 200 (kemi/blf_legs.py writes them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import blf_wakeup
import KSR  # type: ignore[import-not-found]
from blf_auth import authenticate, realm_for
from blf_context import Context, shared_round_trip
from blf_directory import directory, realm_candidates, request_identities, require_served_target
from blf_routing import plan_branches, relay
from blf_sip import header, pv, uri_of

from statestore import codec
from statestore.domain.contention import store_is_slow
from statestore.domain.errors import SipError, StoreUnavailable
from statestore.domain.identity import asserted_identity, check_reach, withheld
from statestore.domain.legs import (
    CallParties,
    Ending,
    LegChange,
    ending_of_bye,
    ending_of_failure,
    state_for_response,
)
from statestore.domain.model import Binding, LegState, TerminationEvent
from statestore.domain.registrar import call_targets

PARTIES_VAR = "$dlg_var(blf)"
# The queue from the SIP workers to the leg writer (kamailio.cfg, mqueue).
LEG_QUEUE = "blf_legs"
# tm's "477 Unfortunately error on sending to next hop occurred" (nothing could be sent).
SEND_FAILED = 477


def authenticated_call(ctx: Context, trying: bool = True) -> tuple[str, str] | None:
    """The caller (authenticated by our digest, never the From header) and the callee of an
    initial INVITE (or a MESSAGE); None when it was challenged (or a retransmission its
    transaction answers). Both modes start a call here."""
    require_served_target(ctx)
    caller = authenticate(ctx, realm_for(ctx, realm_candidates()), store_required=False)
    if caller is None:
        return None
    # Identity is the digest's: an identity the phone asserts itself (RFC 3325) is not passed
    # on, or one account could show itself to the callee as another (a callee trusts what
    # comes from its registrar).
    KSR.hdr.remove("P-Asserted-Identity")
    KSR.hdr.remove("P-Preferred-Identity")
    # In its place, the identity the digest verified (RFC 3325 §9.1): a phone that shows the
    # asserted identity shows the account, whatever From and display name the caller chose.
    asserted = asserted_identity(caller, withheld(pv("$fU"), pv("$fd"), header("Privacy") or ""))
    if asserted is not None:
        KSR.hdr.append(f"P-Asserted-Identity: {asserted}\r\n")
    if trying:
        # The transaction exists from here (blf_auth.authenticate; t_relay reuses it): a 100
        # now stops the phone's retransmissions whatever the store does next (RFC 3261 §17.2.1).
        KSR.tm.t_reply(100, "Trying")
    found = request_identities(ctx, caller)
    check_reach(found, directory(ctx))  # 404 domain, 403 could not call, 404 user: as for SUBSCRIBE
    return caller, str(found.callee)


def _branches_to_callee(ctx: Context, trying: bool) -> tuple[str, str] | None:
    """authenticated_call, then one branch per reachable contact of the callee (480 with
    none): the same rules for an INVITE and a MESSAGE in our own routing."""
    call = authenticated_call(ctx, trying)
    if call is None:
        return None
    if not plan_callee_branches(ctx, call[1]):
        raise SipError(480, "Temporarily Unavailable")
    return call


def plan_callee_branches(ctx: Context, callee: str, branch_route: str = "ksr_branch") -> int:
    """One branch per reachable live binding of the callee in the cluster's registrar, as
    blf_routing.plan_branches sets them (480 when it has no live binding); their number."""
    targets = _targets(ctx, callee)
    return plan_branches(
        ctx, [(b.contact, b.received, b.instance, b.nat, b.registered_at) for b in targets], branch_route
    )


def handle_message(ctx: Context) -> None:
    """MESSAGE (RFC 3428) between accounts: who may send it to whom is decided exactly as for
    an INVITE; relayed statefully to every contact of the callee (the first 2xx wins), with
    no dialog and no call legs: a MESSAGE is not a call."""
    if _branches_to_callee(ctx, trying=False) is not None:
        relay(ctx)


def handle_initial_invite(ctx: Context) -> None:
    call = _branches_to_callee(ctx, trying=True)
    if call is None:
        return
    caller, callee = call
    parties = start_tracking(caller, callee)
    report(parties, LegChange(LegState.TRYING))  # we relay it now
    KSR.tm.t_on_reply("ksr_invite_reply")
    KSR.tm.t_on_failure("ksr_invite_failure")
    if not relay(ctx):
        # The failure route does not run for a relay that failed at once: end the legs here.
        report(parties, LegChange(LegState.TERMINATED, ending=Ending(TerminationEvent.ERROR)))


def start_tracking(caller: str, callee: str) -> CallParties:
    """Follow the call in the dialog module, its parties kept with the dialog. Its first
    leg change is reported once it is relayed: at once by our routing, from its first
    response in drop-in mode (whose routing may answer the INVITE itself instead)."""
    parties = CallParties(
        call_id=pv("$ci"), from_tag=pv("$ft"), caller=caller, callee=callee,
        caller_display=pv("$fn").strip('"'), callee_display=pv("$tn").strip('"'),
        caller_target=uri_of(pv("$ct")),
        caller_withheld=withheld(pv("$fU"), pv("$fd"), header("Privacy") or ""),
    )
    KSR.dialog.dlg_manage()
    KSR.pv.sets(PARTIES_VAR, json.dumps(asdict(parties)))
    return parties


def _targets(ctx: Context, callee: str) -> list[Binding]:
    live = call_targets(_bindings(ctx, callee), time.time())
    if live:
        return live
    raise SipError(480, "Temporarily Unavailable")


def _bindings(ctx: Context, callee: str) -> list[Binding]:
    """The callee's bindings without waiting on etcd: from the shared-memory copy the
    directory keeper follows through its watch (3-4 µs, cluster-wide, within milliseconds
    of etcd), else from memcached, which every REGISTER writes before its 200 (a binding
    the watch has not brought yet, or a copy that cannot say). etcd is asked only when
    neither has any and the copy is not known current, and not while the store is down
    or measured slow: a slow or stalled store never delays a call."""
    copied = directory(ctx).bindings(callee)
    if copied:
        return copied
    cached = ctx.cache.get_bindings(callee)
    zone = ctx.zone(callee)
    if cached or copied is not None or zone.down() or store_is_slow(shared_round_trip(time.monotonic(), zone)):
        return cached
    try:
        return zone.store.bindings_of(callee)
    except StoreUnavailable:
        zone.mark_down()
        return []


def on_invite_failure(ctx: Context) -> None:
    """Our own routing's failure route of an INVITE: the call has ended."""
    if int(pv("$T_reply_code") or 0) == SEND_FAILED:
        # tm's own answer when no branch could be sent to (a dead connection): its reason
        # text is Kamailio's internal one. The caller hears the callee is not reachable now.
        KSR.tm.t_reply(480, "Temporarily Unavailable")
    on_call_ended(ctx)


def current_parties() -> CallParties | None:
    raw = KSR.pv.get(PARTIES_VAR)
    return None if not raw else CallParties(**json.loads(raw))


def on_invite_reply(ctx: Context) -> None:
    parties = current_parties()
    state = state_for_response(int(pv("$rs") or 0), pv("$tt"))
    # Failures end the call in the failure route, which knows the winning response.
    if parties is not None and state is not None and state is not LegState.TERMINATED:
        report(parties, LegChange(state, pv("$tt"), uri_of(pv("$ct"))))


def on_call_ended(ctx: Context) -> None:
    """A BYE of the call, or the INVITE's failure route (RFC 4235 §3.7.1 event, code)."""
    parties = current_parties()
    if parties is None:
        return
    if pv("$rm") == "BYE":
        ending = ending_of_bye(sent_by_caller=pv("$ft") == parties.from_tag)
    else:
        ending = ending_of_failure(
            int(pv("$T_reply_code") or 0), KSR.tm.t_is_canceled() > 0, KSR.tm.t_branch_timeout() > 0
        )
    report(parties, LegChange(LegState.TERMINATED, ending=ending))


def report(parties: CallParties, change: LegChange) -> None:
    """Hand a change of the call to the leg writer; never waits on the store."""
    if KSR.mqueue.mq_add(LEG_QUEUE, parties.call_id, codec.encode_change(parties, change)) < 0:
        KSR.warn(f"blf: change of call {parties.call_id} to {change.state} not queued\n")
        return
    blf_wakeup.wake()
