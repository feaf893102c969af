"""Repairing the store from the dialogs an instance really has.

The dialog module is the instance's own truth about its calls. A leg write can be lost
(the store was down when a call ended, or the instance lease expired and took the legs
with it); comparing that truth with the stored legs now and then makes sure no lamp
stays lit for a call that ended, and no live call stays dark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from statestore.domain.legs import CallParties, advance, initial_legs
from statestore.domain.model import Leg, LegState


@dataclass(frozen=True)
class LiveDialog:
    """A dialog the serving instance still holds, in the state its dialog module gives."""

    parties: CallParties
    state: LegState
    to_tag: str = ""
    callee_target: str = ""


@dataclass(frozen=True)
class Repair:
    create: tuple[tuple[Leg, Leg], ...]
    terminate: tuple[Leg, ...]


def expected_legs(dialog: LiveDialog, instance: str, version: int) -> tuple[Leg, Leg]:
    legs = initial_legs(dialog.parties, instance, version)
    if dialog.state is LegState.TRYING:
        return legs
    return advance(legs, dialog.state, version, dialog.to_tag, dialog.callee_target)


def reconcile(
    live: Sequence[LiveDialog], stored: Sequence[Leg], instance: str, version: int, grace: int
) -> Repair:
    """Legs to create for live dialogs missing from the store, and stored legs to end.

    `version` is now on the instance's version clock; legs younger than `grace` are left
    alone, so a call being set up while the dialog list was read is not touched.
    """
    mine = [leg for leg in stored if leg.instance == instance]
    stored_ids = {leg.leg_id for leg in mine}
    create: list[tuple[Leg, Leg]] = []
    expected_ids: set[str] = set()
    for dialog in live:
        if dialog.state is LegState.TERMINATED:
            continue
        legs = expected_legs(dialog, instance, version)
        expected_ids.update(leg.leg_id for leg in legs)
        if not stored_ids.intersection(leg.leg_id for leg in legs):
            create.append(legs)
    stale = tuple(
        leg.moved_to(LegState.TERMINATED, version)
        for leg in mine
        if leg.leg_id not in expected_ids and leg.version < version - grace
    )
    return Repair(tuple(create), stale)
