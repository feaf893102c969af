"""Why is this lamp red: the integrated state of one account over every instance."""

from __future__ import annotations

from collections.abc import Iterable

from statestore.domain.model import Binding, Direction, LampState, Leg, LegState

_SETUP = frozenset({LegState.TRYING, LegState.PROCEEDING, LegState.EARLY})


def is_active(leg: Leg) -> bool:
    return leg.state is not LegState.TERMINATED


def lamp_state(legs: Iterable[Leg], bindings: Iterable[Binding], now: float) -> LampState:
    """Integrated state of an account from all its call legs and registrations.

    busy: a confirmed leg, or a call the account is placing (an initiator leg still being
    set up: the caller is on the phone, so the lamp is red while the other side rings);
    early: a call ringing at the account (recipient leg in trying/proceeding/early) and
    nothing busy; idle: registered somewhere, no active leg; terminated: neither.
    """
    active = [leg for leg in legs if is_active(leg)]
    if any(_is_busy(leg) for leg in active):
        return LampState.BUSY
    if any(leg.state in _SETUP for leg in active):
        return LampState.EARLY
    if any(binding.expires_at > now for binding in bindings):
        return LampState.IDLE
    return LampState.TERMINATED


def _is_busy(leg: Leg) -> bool:
    if leg.state is LegState.CONFIRMED:
        return True
    return leg.direction is Direction.INITIATOR and leg.state in _SETUP
