"""Which requests the drop-in takes from an operator's own routing (docs/dropin.md).

In drop-in mode the operator's native configuration routes every request; our entry point
(`python_exec("blf_request")`, called from its request_route) takes only what BLF must answer
or observe, and hands everything else back untouched:

- SUBSCRIBE and PUBLISH for an event package we serve, to a domain of our directory (a
  SUBSCRIBE also to the server's own address): we answer them (the operator's routing
  never sees them);
- an initial INVITE to a domain of our directory: we authenticate the caller (our digest,
  against our directory) and start tracking the call, then the operator's routing relays it;
- an initial INVITE or MESSAGE with a flow Route of ours (another instance's call to a phone
  whose connection or NAT binding this instance holds): relayed there as in the full mode;
- a REGISTER to a domain of our directory: we authenticate it (our digest) and record its
  bindings in the cluster's registrar (what the `reg` and `presence` packages show), then
  the operator's registrar saves it and answers;
- everything else (OPTIONS, MESSAGE, in-dialog requests, other packages, other domains)
  goes back to the operator's routing. A BYE is observed later, from the line the
  operator adds after its own loose_route (`python_exec("blf_in_dialog")`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from statestore.domain.packages import PACKAGES


class DropinStep(enum.Enum):
    """What the drop-in entry point does with a request."""

    SUBSCRIBE = "subscribe"  # an initial SUBSCRIBE we answer
    RESUBSCRIBE = "resubscribe"  # a refresh or end of one of our subscriptions (in dialog)
    PUBLISH = "publish"  # a PUBLISH we answer
    RELAY_TO_FLOW = "relay-to-flow"  # another instance's call to a phone whose flow we hold
    TRACK_CALL = "track-call"  # authenticate the caller, track the call, then the operator relays
    RECORD_REGISTER = "record-register"  # authenticate, record the bindings, then the operator saves
    PASS = "pass"  # the operator's routing handles it, we do not look at it


@dataclass(frozen=True)
class DropinFacts:
    """What the adapter reads of a request before deciding."""

    method: str
    in_dialog: bool  # it has a To tag
    event: str | None  # the Event header (SUBSCRIBE, PUBLISH)
    served: bool  # the Request-URI's domain is one of our directory's
    routed_on: bool = False  # a Route entry names a hop other than this instance
    to_us: bool = False  # the Request-URI names this server itself (its address or an alias)
    flow_routed: bool = False  # the top Route names this instance with a flow (another instance's relay)


def _package(event: str | None) -> str:
    return (event or "").split(";", 1)[0].strip().lower()


def dropin_step(facts: DropinFacts) -> DropinStep:
    """The one decision of the drop-in entry point (see the module's docstring)."""
    method = facts.method.upper()
    if method == "SUBSCRIBE" and _package(facts.event) in PACKAGES:
        if facts.in_dialog:
            # Our own subscription dialogs have no route set beyond us (we answered them
            # before the operator's record_route()); one routed on is a dialog the
            # operator relayed elsewhere.
            return DropinStep.PASS if facts.routed_on else DropinStep.RESUBSCRIBE
        # The server's own address names the watcher's domain, as in the full mode
        # (identity.resolve decides after authentication).
        return DropinStep.SUBSCRIBE if facts.served or facts.to_us else DropinStep.PASS
    if method == "PUBLISH" and not facts.in_dialog and facts.served:
        package = PACKAGES.get(_package(facts.event))
        if package is not None and package.publishing is not None:
            return DropinStep.PUBLISH
        return DropinStep.PASS
    if method in ("INVITE", "MESSAGE") and not facts.in_dialog and facts.flow_routed:
        return DropinStep.RELAY_TO_FLOW
    if method == "INVITE" and not facts.in_dialog and facts.served:
        return DropinStep.TRACK_CALL
    if method == "REGISTER" and facts.served:
        return DropinStep.RECORD_REGISTER
    return DropinStep.PASS
