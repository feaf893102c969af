"""Repairing the store from the dialogs an instance really has.

The dialog module is the instance's own truth about its calls. A leg write can be lost
(a change dropped on the way to the writer, the instance lease expired while the store
was unreachable and took the legs with it, a BYE never seen); comparing that truth with
the leg writer's book and with the legs the store holds on this instance's lease (and
only those: no read of the cluster's legs) now and then makes sure no lamp stays lit
for a call that ended, and no live call stays dark.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from statestore.domain.legbook import LegBook
from statestore.domain.legs import CallParties, LegChange, initial_legs, settle
from statestore.domain.model import Leg, LegState


@dataclass(frozen=True)
class LiveDialog:
    """A dialog the serving instance still holds, in the state its dialog module gives."""

    parties: CallParties
    state: LegState
    to_tag: str = ""
    callee_target: str = ""

    @property
    def change(self) -> LegChange:
        return LegChange(self.state, self.to_tag, self.callee_target)


def expected_legs(dialog: LiveDialog, instance: str) -> tuple[Leg, Leg]:
    return settle(initial_legs(dialog.parties, instance), [dialog.change])


def reconcile(
    book: LegBook, live: Sequence[LiveDialog], stored: Collection[str], now: float, grace: float
) -> list[str]:
    """Bring the book in line with the live dialogs and the leg ids stored on this
    instance's lease; the stored leg ids no call of the book knows, to delete.

    A live call missing from the store is written again (in its current state, which
    the dialog may also move forward); a call of the book without a live dialog ends.
    Calls that changed within `grace` seconds are left alone: the dialog list and the
    store may not show them yet.
    """
    live_calls = set()
    for dialog in live:
        if dialog.state is LegState.TERMINATED:
            continue
        live_calls.add(dialog.parties.key)
        record = book.calls.get(dialog.parties.key)
        if record is None:
            book.restore(dialog.parties, expected_legs(dialog, book.instance), now)
            continue
        if now - record.changed_at < grace:
            continue
        book.take(dialog.parties, dialog.change, now)
        if record.stored is not None and not {leg.leg_id for leg in record.stored} <= set(stored):
            book.restore(dialog.parties, record.legs, now)
    for record in list(book.live()):
        if record.parties.key not in live_calls and now - record.changed_at >= grace:
            book.take(record.parties, LegChange(LegState.TERMINATED), now)
    return sorted(set(stored) - book.leg_ids())
