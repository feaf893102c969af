"""How the legs of a call move with the SIP messages of the INVITE transaction (RFC 4235 §3.7.1)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from statestore.domain.model import Direction, Leg, LegState, Party


@dataclass(frozen=True)
class CallParties:
    """What the serving instance knows of a call when it routes the INVITE."""

    call_id: str
    from_tag: str
    caller: str  # account of the authenticated caller, user@domain
    callee: str  # account the request URI resolved to, user@domain
    caller_display: str
    callee_display: str
    caller_target: str  # Contact of the INVITE


def leg_id(call_id: str, from_tag: str, direction: Direction) -> str:
    digest = hashlib.sha1(f"{call_id}\x00{from_tag}\x00{direction.value}".encode()).hexdigest()
    return digest[:16]


def sip_uri(account: str) -> str:
    return f"sip:{account}"


def initial_legs(parties: CallParties, instance: str, version: int) -> tuple[Leg, Leg]:
    """Both legs in `trying` as the INVITE is forwarded: the caller's and the callee's."""
    caller = Party(sip_uri(parties.caller), parties.caller_display, parties.caller_target)
    callee = Party(sip_uri(parties.callee), parties.callee_display, "")
    outgoing = Leg(
        account=parties.caller, instance=instance,
        leg_id=leg_id(parties.call_id, parties.from_tag, Direction.INITIATOR),
        version=version, state=LegState.TRYING, direction=Direction.INITIATOR,
        call_id=parties.call_id, local_tag=parties.from_tag, remote_tag="",
        local=caller, remote=callee,
    )
    incoming = Leg(
        account=parties.callee, instance=instance,
        leg_id=leg_id(parties.call_id, parties.from_tag, Direction.RECIPIENT),
        version=version, state=LegState.TRYING, direction=Direction.RECIPIENT,
        call_id=parties.call_id, local_tag="", remote_tag=parties.from_tag,
        local=callee, remote=caller,
    )
    return outgoing, incoming


def state_for_response(status: int, to_tag: str) -> LegState | None:
    """State a response to the INVITE puts the legs in; None when it changes nothing."""
    if status < 101:
        return None
    if status < 200:
        return LegState.EARLY if to_tag else LegState.PROCEEDING
    if status < 300:
        return LegState.CONFIRMED
    return LegState.TERMINATED


def advance(legs: tuple[Leg, Leg], state: LegState, version: int, to_tag: str, callee_target: str) -> tuple[Leg, Leg]:
    """Both legs after a response or a BYE; the callee's tag and target fill in once known."""
    outgoing, incoming = legs
    outgoing = outgoing.moved_to(state, version, remote_tag=to_tag)
    incoming = incoming.moved_to(state, version)
    if to_tag:
        incoming = replace(incoming, local_tag=to_tag)
    if callee_target:
        outgoing = replace(outgoing, remote=replace(outgoing.remote, target=callee_target))
        incoming = replace(incoming, local=replace(incoming.local, target=callee_target))
    return outgoing, incoming
