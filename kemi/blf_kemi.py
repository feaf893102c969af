"""KEMI entry point of a clustered BLF instance (app_python3, Kamailio 5.6).

Routing is a short pipeline of early-returning steps; every SipError raised below is
answered in exactly one place, `_answering`.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Protocol

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_VENV_SITE = os.environ.get(
    "BLF_SITE_PACKAGES",
    os.path.join(_ROOT, ".venv", "lib", f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages"),
)
# The venv goes first so that Debian's dist-packages do not shadow it (KAMAILIO-NOTES).
for _path in (_HERE, _ROOT, _VENV_SITE):
    if _path not in sys.path[:3]:
        sys.path.insert(0, _path)

import blf_dropin
import blf_notified
import KSR  # type: ignore[import-not-found]
from blf_calls import handle_initial_invite, handle_message, on_call_ended, on_invite_failure, on_invite_reply
from blf_context import Context, context
from blf_directory_keeper import Keeper as DirectoryKeeper
from blf_lease import Keepers, LeaseKeeper
from blf_legs import LegWriter
from blf_metrics import answer_http, flush_store_timings, on_metrics_socket, pike_blocked
from blf_notifier import Notifier
from blf_notify_replies import on_notify_failure
from blf_publish import handle_publish
from blf_register import handle_register
from blf_routing import flooding, in_dialog_routes, initial_routes, on_branch, relay, relay_in_dialog, relay_to_flow
from blf_settings import Settings
from blf_sip import pv, refused, reply, reply_error
from blf_subscribe import handle_in_dialog_subscribe, handle_initial_subscribe

from statestore import store_timing
from statestore.domain.errors import SipError, StoreUnavailable, store_unavailable_error
from statestore.domain.packages import allow_events
from statestore.metrics import Access

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, MESSAGE"


def _answering(step: Callable[[Context], None]) -> int:
    """The one boundary that turns errors into SIP replies; no traceback reaches a phone."""
    ctx = context()
    try:
        step(ctx)
    except SipError as error:
        refused(error.status, error.reason)
        reply_error(error)
    except StoreUnavailable as exc:
        ctx.mark_unavailable(exc)
        unavailable = store_unavailable_error()
        refused(unavailable.status, f"{unavailable.reason} - store unavailable: {exc}")
        reply_error(unavailable)
    except Exception:  # noqa: BLE001 - the phone gets a 500, the log the traceback
        KSR.err(f"blf: {pv('$rm')} failed: {traceback.format_exc()}\n")
        reply(500, "Server Internal Error", {"Retry-After": "5"})
    flush_store_timings()
    return 1


# How long tm waits for a NOTIFY's final response: kamailio/kamailio.cfg's fr_timer.
NOTIFY_TIMEOUT_MS = 4000


def _logging(step: Callable[[Context], None]) -> int:
    """For callbacks that have no request to answer (replies, failures, timers)."""
    try:
        step(context())
    except SipError as error:  # a hostile reply or request: one line, no traceback
        KSR.notice(f"blf: callback refused {pv('$rm')} from {pv('$si')}: {error}\n")
    except Exception:  # noqa: BLE001 - a callback must never raise into Kamailio
        KSR.err(f"blf: callback failed: {traceback.format_exc()}\n")
    flush_store_timings()
    return 1


def route(ctx: Context) -> None:
    if flooding(ctx):
        pike_blocked()
        return  # dropped unanswered: an answer would only feed the flood
    if on_metrics_socket():
        return  # the metrics socket answers HTTP only (blf_metrics)
    # Answer where the request came from (RFC 3581), whatever its Via says: phones behind
    # NAT that do not ask for rport get their responses too.
    KSR.force_rport()
    if KSR.maxfwd.process_maxfwd(10) < 0:
        raise SipError(483, "Too Many Hops")
    if KSR.sanity.sanity_check(17895, 7) < 0:
        refused(400, "Bad Request - sanity check failed")
        return  # sanity has answered 400 already
    method = pv("$rm")
    if KSR.siputils.has_totag() > 0:
        route_in_dialog(ctx, method)
        return
    if method == "CANCEL":
        if KSR.tm.t_check_trans() > 0:
            KSR.tm.t_relay()
        return
    if method == "ACK":
        KSR.tm.t_check_trans()
        return
    if KSR.tm.t_check_trans() == 0:
        return  # a retransmission the transaction layer has answered
    flow = initial_routes(ctx, method)
    if flow is not None:
        relay_to_flow(ctx, flow)
        return
    route_initial(ctx, method)


def route_initial(ctx: Context, method: str) -> None:
    # Nothing here makes a transaction: a request is challenged statelessly, and its
    # handler makes the transaction once the sender is authenticated (blf_auth.authenticate,
    # blf_sip.stateful), so an unauthenticated flood costs no shared memory.
    if method == "REGISTER":
        handle_register(ctx)
    elif method == "SUBSCRIBE":
        handle_initial_subscribe(ctx)
    elif method == "PUBLISH":
        handle_publish(ctx)
    elif method == "INVITE":
        handle_initial_invite(ctx)
    elif method == "MESSAGE":
        handle_message(ctx)
    elif method == "OPTIONS":
        reply(200, "OK", {"Allow": ALLOW, "Allow-Events": allow_events(), "Accept": "application/sdp"})
    else:
        raise SipError(405, "Method Not Allowed", {"Allow": ALLOW})


def route_in_dialog(ctx: Context, method: str) -> None:
    if method == "ACK":
        # The ACK of a negative final response belongs to its INVITE transaction, whatever
        # its Route (a phone with an outbound proxy puts one there, RFC 3261 §17.1.1.3):
        # tm absorbs it (0) and stops retransmitting the response. The ACK of a 2xx is a
        # request of its own and follows the dialog's route set.
        matched = KSR.tm.t_check_trans()
        if matched == 0:
            return
        if not KSR.hdr.is_present("Route") > 0:
            if matched > 0:
                KSR.tm.t_relay()
            return
    checked = in_dialog_routes(ctx, method)
    if checked is None:
        if method == "SUBSCRIBE":
            if KSR.tm.t_check_trans() == 0:
                return  # a retransmission the transaction layer has answered
            handle_in_dialog_subscribe(ctx)  # stateful once authenticated
            return
        raise SipError(481, "Call/Transaction Does Not Exist")
    routes, flow = checked
    if method == "ACK":
        relay_in_dialog(routes, flow)
        KSR.tm.t_relay()
        return
    if KSR.tm.t_check_trans() == 0:
        return  # a retransmission the transaction layer has answered
    relay_in_dialog(routes, flow)  # the dialog module follows it; 481 once the dialog has ended
    if method == "BYE":
        on_call_ended(ctx)
    relay(ctx)


def _warm_up(ctx: Context) -> None:
    """Connect this SIP worker to etcd now (after the fork), not on its first call:
    a cold gRPC channel costs the first leg write about 8 ms."""
    for zone in ctx.stores.values():
        try:
            zone.store.instances()
        except StoreUnavailable as exc:
            KSR.warn(f"blf: etcd of zone {zone.zone} not reachable at start-up: {exc}\n")


def _http(ctx: Context) -> None:
    """An HTTP request: the metrics, or no answer at all (pike still counts its source,
    when the configuration loads pike: a drop-in's may not)."""
    if not answer_http(ctx.settings.instance) and hasattr(KSR, "pike") and flooding(ctx):
        pike_blocked()


class _Ticking(Protocol):
    def tick(self) -> None: ...


def _ticking(process: _Ticking) -> Callable[[Context], None]:
    """A step for _logging: one tick of one zone's keeper or notifier."""
    return lambda ctx: process.tick()


class kamailio:
    def __init__(self) -> None:
        # One of each per zone served, ticked in turn by their process (the leg writer
        # serves every zone itself).
        self.notifiers: list[Notifier] = []
        self.leases: Keepers | None = None
        self.legs: LegWriter | None = None
        self.directories: list[DirectoryKeeper] = []

    def child_init(self, rank: int) -> int:
        store_timing.enabled = True  # this process reports its etcd requests (blf_metrics)
        if rank > 0:
            _warm_up(context())
        return 0

    def ksr_request_route(self, msg: object) -> int:
        return _answering(route)

    def ksr_reply_route(self, msg: object) -> int:
        return 1

    def ksr_onsend_route(self, msg: object) -> int:
        return 1

    def ksr_invite_reply(self, msg: object) -> int:
        return _logging(on_invite_reply)

    def ksr_branch(self, msg: object) -> int:
        return _logging(on_branch)

    def ksr_invite_failure(self, msg: object) -> int:
        return _logging(on_invite_failure)

    # --- drop-in entry points: python_exec from an operator's native configuration
    # (kamailio/blf.cfg, docs/dropin.md). A cfg function returning 0 ends the route. ---

    def blf_request(self, msg: object) -> int:
        """0 when we have answered the request (its route ends), 1 when the operator's
        routing goes on."""
        answered = True

        def step(ctx: Context) -> None:
            nonlocal answered
            answered = blf_dropin.request(ctx)

        _answering(step)
        return 0 if answered else 1

    def blf_notify_timer(self, msg: object) -> int:
        """From the drop-in's event_route[tm:local-request], for our NOTIFYs: give up on an
        unanswered one after NOTIFY_TIMEOUT_MS as the full mode does (its fr_timer), not
        after the operator's fr_timer (the stock 30 s), so that it is sent again in seconds."""
        KSR.tm.t_set_fr(0, NOTIFY_TIMEOUT_MS)
        return 1

    def blf_lookup(self, msg: object) -> int:
        """1 when the call's branches are set from the cluster's registrar (the operator
        relays), -1 (false in a native `if`; 0 would end the route) when its lookup runs."""
        found = False

        def step(ctx: Context) -> None:
            nonlocal found
            found = blf_dropin.lookup(ctx)

        _logging(step)
        return 1 if found else -1

    def blf_branch(self, msg: object) -> int:
        return _logging(blf_dropin.branch)

    def blf_in_dialog(self, msg: object) -> int:
        return _logging(blf_dropin.in_dialog)

    def blf_reply(self, msg: object) -> int:
        return _logging(blf_dropin.reply)

    def blf_failure(self, msg: object) -> int:
        return _logging(blf_dropin.failure)

    def ksr_tm_event(self, msg: object, evname: str) -> int:
        if evname == "tm:local-request" and pv("$rm") == "NOTIFY":
            KSR.tm.t_on_reply("ksr_notify_reply")
            KSR.tm.t_on_failure("ksr_notify_failure")
        return 1

    def ksr_notify_reply(self, msg: object) -> int:
        """A response to one of our NOTIFYs: its final status is recorded (blf_notified)."""
        return _logging(lambda ctx: blf_notified.on_reply())

    def ksr_xhttp_event(self, msg: object, evname: str = "") -> int:
        """xhttp's callback (kamailio/blf-metrics.cfg); a native config calls it from its
        event_route[xhttp:request] with python_exec("ksr_xhttp_event"), where 0 ends the
        route: a request on the metrics socket is ours (answered or not), any other goes on
        to the configuration's own HTTP handling (1)."""
        _logging(_http)
        return 0 if on_metrics_socket() else 1

    def ksr_notify_failure(self, msg: object) -> int:
        # Recorded apart: what ends or counts the subscription runs whatever the record does.
        _logging(lambda ctx: blf_notified.on_local_failure())
        return _logging(on_notify_failure)

    def ksr_notifier_tick(self, msg: object, evname: str = "") -> int:
        if not self.notifiers:
            zones = list(context().stores.values())
            for zone in zones:
                zone.holds_watches = True
            self.notifiers = [Notifier(context(), zone, 1.0 / len(zones)) for zone in zones]
        for notifier in self.notifiers:
            _logging(_ticking(notifier))
        return 1

    def ksr_lease_tick(self, msg: object, evname: str = "") -> int:
        if self.leases is None:
            self.leases = Keepers([LeaseKeeper(context(), zone=zone) for zone in context().stores.values()])
        return _logging(_ticking(self.leases))

    def ksr_legs_tick(self, msg: object, evname: str = "") -> int:
        if self.legs is None:
            self.legs = LegWriter(context())
        return _logging(lambda ctx: self.legs.tick() if self.legs else None)

    def ksr_directory_tick(self, msg: object, evname: str = "") -> int:
        if not self.directories:
            for zone in context().stores.values():
                zone.holds_watches = True
                self.directories.append(DirectoryKeeper(context(), zone))
        for directory_keeper in self.directories:
            _logging(_ticking(directory_keeper))
        return 1


def mod_init() -> kamailio:
    # Settings are checked before Kamailio forks: a missing or bad one (BLF_INSTANCE,
    # BLF_AUTH_SECRET, a number that is not one) aborts start-up here, with its reason.
    Settings.from_env()
    Access.from_env(os.environ)
    return kamailio()
