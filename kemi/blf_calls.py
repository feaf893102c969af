"""INVITE routing and first-party call tracking (issue 2, "Calls").

Routing never depends on the store being up: contacts and credentials fall back to the
cache and a leg that cannot be written is skipped, never a reason to fail the call.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import KSR  # type: ignore[import-not-found]
from blf_auth import authenticate, lookup_account
from blf_context import Context, shared_lease_id
from blf_routing import plan_branches, relay
from blf_sip import pv, request_aor, uri_of

from statestore.domain.errors import SipError, StoreUnavailable
from statestore.domain.legs import CallParties, advance, initial_legs, state_for_response
from statestore.domain.model import Binding, LegState
from statestore.domain.registrar import call_targets

PARTIES_VAR = "$dlg_var(blf)"


def handle_initial_invite(ctx: Context) -> None:
    caller = authenticate(ctx, pv("$fd").lower(), store_required=False)
    if caller is None:
        return
    callee = request_aor()
    targets = _targets(ctx, callee)
    branches = plan_branches(ctx, [(b.contact, b.received, b.instance, b.nat) for b in targets])
    if not branches:
        raise SipError(480, "Temporarily Unavailable")
    parties = CallParties(
        call_id=pv("$ci"), from_tag=pv("$ft"), caller=caller, callee=callee,
        caller_display=pv("$fn").strip('"'), callee_display=pv("$tn").strip('"'),
        caller_target=uri_of(pv("$ct")),
    )
    KSR.dialog.dlg_manage()
    KSR.pv.sets(PARTIES_VAR, json.dumps(asdict(parties)))
    track(ctx, parties, LegState.TRYING)
    KSR.tm.t_on_reply("ksr_invite_reply")
    KSR.tm.t_on_failure("ksr_invite_failure")
    if not relay(ctx):
        # The failure route does not run for a relay that failed at once: end the legs here.
        on_call_ended(ctx)


def _targets(ctx: Context, callee: str) -> list[Binding]:
    live = call_targets(_bindings(ctx, callee), time.time())
    if live:
        return live
    if lookup_account(ctx, callee, store_required=False) is None:
        raise SipError(404, "Not Found")
    raise SipError(480, "Temporarily Unavailable")


def _bindings(ctx: Context, callee: str) -> list[Binding]:
    if not ctx.store_down():
        try:
            return ctx.store.bindings_of(callee)
        except StoreUnavailable:
            ctx.mark_store_down()
    return ctx.cache.get_bindings(callee)


def current_parties() -> CallParties | None:
    raw = KSR.pv.get(PARTIES_VAR)
    return None if not raw else CallParties(**json.loads(raw))


def on_invite_reply(ctx: Context) -> None:
    parties = current_parties()
    state = state_for_response(int(pv("$rs") or 0), pv("$tt"))
    if parties is not None and state is not None and state is not LegState.TERMINATED:
        track(ctx, parties, state, pv("$tt"), uri_of(pv("$ct")))


def on_call_ended(ctx: Context) -> None:
    parties = current_parties()
    if parties is not None:
        track(ctx, parties, LegState.TERMINATED)


def track(ctx: Context, parties: CallParties, state: LegState, to_tag: str = "", target: str = "") -> None:
    """Write both legs of the call in their new state, ordered by this instance's clock."""
    lease = shared_lease_id()
    # A call that ends is always tried, even while the store is flagged down: a missed end
    # would leave a lamp lit until the next reconciliation.
    if not lease or (ctx.store_down() and state is not LegState.TERMINATED):
        return
    version = time.time_ns()
    legs = initial_legs(parties, ctx.settings.instance, version)
    try:
        if state is LegState.TRYING:
            ctx.store.create_legs(legs, lease)
        else:
            ctx.store.update_legs(advance(legs, state, version, to_tag, target), lease)
    except StoreUnavailable as exc:
        ctx.mark_store_down()
        KSR.warn(f"blf: call legs of {parties.call_id} not written: {exc}\n")
