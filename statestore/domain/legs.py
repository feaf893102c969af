"""How the legs of a call move with the SIP messages of the INVITE transaction (RFC 4235 §3.7.1).

Every transition of a leg is in one table, `TRANSITIONS`. A change the table does not
list changes nothing: a 180 processed after the 200 (forking, reordered UDP, two
workers), a second 18x of a forked call, anything after the end. Stored values are
ordered by the state's place in the FSM and then by a counter of the call's writes
(`order_of`), never by a clock: a clock step cannot reorder them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace

from statestore.domain.model import Direction, Leg, LegState, Party, TerminationEvent

# RFC 4235 §3.7.1: the dialog FSM. trying -> proceeding (1xx without a To tag) -> early
# (1xx with a tag) -> confirmed (2xx) -> terminated (failure, CANCEL, BYE, timeout);
# any state may skip ahead, none goes back, terminated is final.
TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.TRYING: frozenset({LegState.PROCEEDING, LegState.EARLY, LegState.CONFIRMED, LegState.TERMINATED}),
    LegState.PROCEEDING: frozenset({LegState.EARLY, LegState.CONFIRMED, LegState.TERMINATED}),
    LegState.EARLY: frozenset({LegState.CONFIRMED, LegState.TERMINATED}),
    LegState.CONFIRMED: frozenset({LegState.TERMINATED}),
    LegState.TERMINATED: frozenset(),
}

# The place of each state in the FSM: the first digit of a stored leg's order.
RANK: dict[LegState, int] = {
    LegState.TRYING: 0,
    LegState.PROCEEDING: 1,
    LegState.EARLY: 2,
    LegState.CONFIRMED: 3,
    LegState.TERMINATED: 4,
}
SEQUENCE_WIDTH = 10

# The other side's view of a BYE; every other event reads the same from both sides.
_SEEN_FROM_THE_OTHER_SIDE = {
    TerminationEvent.LOCAL_BYE: TerminationEvent.REMOTE_BYE,
    TerminationEvent.REMOTE_BYE: TerminationEvent.LOCAL_BYE,
}


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
    # The caller withheld its identity (RFC 3323: anonymous From, or Privacy: id/user/header):
    # the callee's watchers see an anonymous party, not the account that authenticated.
    caller_withheld: bool = False

    @property
    def key(self) -> str:
        """One call of this instance: its Call-ID and the caller's tag."""
        return f"{self.call_id}\x00{self.from_tag}"


@dataclass(frozen=True)
class Ending:
    """Why a call ended, seen from the caller's leg (RFC 4235 §3.7.1 `event`, `code`)."""

    event: TerminationEvent | None
    code: int = 0


@dataclass(frozen=True)
class LegChange:
    """What one SIP message tells of a call: the state it puts the legs in, and what it
    reveals of the callee (tag of the answering branch, its Contact) or of the end."""

    state: LegState
    to_tag: str = ""
    callee_target: str = ""
    ending: Ending | None = None


def leg_id(call_id: str, from_tag: str, direction: Direction) -> str:
    digest = hashlib.sha1(f"{call_id}\x00{from_tag}\x00{direction.value}".encode()).hexdigest()
    return digest[:16]


def sip_uri(account: str) -> str:
    return f"sip:{account}"


def order_of(leg: Leg) -> str:
    """Sorts like the leg's place in its history: state rank first, then write counter.

    The store compares these as bytes (codec), so only a later state, or a later write
    of the same state, replaces a stored leg.
    """
    return f"{RANK[leg.state]}.{leg.version:0{SEQUENCE_WIDTH}d}"


def can_move(current: LegState, new: LegState) -> bool:
    return new in TRANSITIONS[current]


# What the callee's watchers see of a caller that withheld its identity (RFC 3323 §4.1.1.3).
ANONYMOUS = Party("sip:anonymous@anonymous.invalid", "Anonymous", "")


def initial_legs(parties: CallParties, instance: str, version: int = 0) -> tuple[Leg, Leg]:
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
        local=callee, remote=ANONYMOUS if parties.caller_withheld else caller,
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


def ending_of_failure(code: int, cancelled: bool, timed_out: bool) -> Ending:
    """The end of a call that got no 2xx: CANCELed by the caller, no answer in time, or
    refused by the callee with `code` (RFC 4235 §3.7.1)."""
    if cancelled:
        return Ending(TerminationEvent.CANCELLED, code or 487)
    if timed_out:
        return Ending(TerminationEvent.TIMEOUT, code if code >= 300 else 0)
    if code >= 300:
        return Ending(TerminationEvent.REJECTED, code)
    return Ending(TerminationEvent.ERROR)


def ending_of_bye(sent_by_caller: bool) -> Ending:
    return Ending(TerminationEvent.LOCAL_BYE if sent_by_caller else TerminationEvent.REMOTE_BYE)


def advance(legs: tuple[Leg, Leg], state: LegState, version: int, to_tag: str, callee_target: str) -> tuple[Leg, Leg]:
    """Both legs after a response or a BYE; the callee's tag and target fill in once known.

    No rule is checked here: `apply_change` consults the transition table first.
    """
    outgoing, incoming = legs
    outgoing = outgoing.moved_to(state, version, remote_tag=to_tag)
    incoming = incoming.moved_to(state, version)
    if to_tag:
        incoming = replace(incoming, local_tag=to_tag)
    if callee_target:
        outgoing = replace(outgoing, remote=replace(outgoing.remote, target=callee_target))
        incoming = replace(incoming, local=replace(incoming.local, target=callee_target))
    return outgoing, incoming


def apply_change(legs: tuple[Leg, Leg], change: LegChange) -> tuple[Leg, Leg] | None:
    """Both legs after `change`, or None when the transition table does not allow it."""
    if not can_move(legs[0].state, change.state):
        return None
    outgoing, incoming = advance(legs, change.state, legs[0].version + 1, change.to_tag, change.callee_target)
    if change.state is LegState.TERMINATED and change.ending is not None:
        ending = change.ending
        theirs = _SEEN_FROM_THE_OTHER_SIDE.get(ending.event, ending.event) if ending.event else None
        outgoing = replace(outgoing, event=ending.event, code=ending.code)
        incoming = replace(incoming, event=theirs, code=ending.code)
    return outgoing, incoming


def settle(legs: tuple[Leg, Leg], changes: Iterable[LegChange]) -> tuple[Leg, Leg]:
    """The legs after every change, in the order given; disallowed ones are skipped."""
    for change in changes:
        legs = apply_change(legs, change) or legs
    return legs
