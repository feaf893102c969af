"""The leg writer's memory of the calls it serves: what each call's legs are, what the
store holds of them, and which writes are due.

SIP workers never write legs to the store: they hand each change of a call over (kemi
blf_calls), and one writer process per instance folds the changes of a call into its
legs with the transition table (legs.apply_change), whatever order they come in, and
writes the result. Changes that arrive together become one write: a call's INVITE is
held up to `hold` seconds so that its first 18x joins it, which makes an answered call
three writes (INVITE with 180, 200, end). Pure: time is passed in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from statestore.domain.legs import CallParties, LegChange, apply_change, initial_legs
from statestore.domain.model import Leg, LegState

# How long an ended call is remembered, so that a late reply (a 180 processed after the
# BYE) cannot bring it back: 64*T1, the longest an INVITE transaction lives (RFC 3261 §17).
ENDED_MEMORY_SECONDS = 32.0


class WriteOutcome(enum.Enum):
    """What the store did with a LegWrite."""

    WRITTEN = "written"
    EXISTS = "exists"  # a create found legs of the call stored already
    STALE = "stale"  # the store holds a later state (or this very write, retried)
    MISSING = "missing"  # an update found the legs gone (their lease expired)


@dataclass
class CallRecord:
    parties: CallParties
    legs: tuple[Leg, Leg]
    stored: tuple[Leg, Leg] | None  # what the store holds, as far as this writer knows
    first_seen: float
    changed_at: float


@dataclass(frozen=True)
class LegWrite:
    """Both legs of one call to write; `create` when the store holds none of them."""

    call: str
    legs: tuple[Leg, Leg]
    create: bool

    @property
    def ended(self) -> bool:
        return self.legs[0].state is LegState.TERMINATED


class LegBook:
    def __init__(self, instance: str, hold: float) -> None:
        self.instance = instance
        self.hold = hold
        self.calls: dict[str, CallRecord] = {}
        # Calls whose legs differ from what the store holds: each tick looks at these
        # only, not at every call in progress.
        self.pending: set[str] = set()

    def take(self, parties: CallParties, change: LegChange, now: float) -> bool:
        """Fold one change of a call in; False when the transition table refuses it."""
        record = self.calls.get(parties.key)
        if record is None:
            record = CallRecord(parties, initial_legs(parties, self.instance), None, now, now)
            self.calls[parties.key] = record
            self.pending.add(parties.key)
            if change.state is LegState.TRYING:
                return True
        moved = apply_change(record.legs, change)
        if moved is None:
            return False
        record.legs, record.changed_at = moved, now
        self.pending.add(parties.key)
        return True

    def restore(self, parties: CallParties, legs: tuple[Leg, Leg], now: float) -> None:
        """A live call the store lacks (reconciliation): written again as it is now."""
        record = self.calls.get(parties.key)
        if record is None:
            self.calls[parties.key] = CallRecord(parties, legs, None, now, now)
        else:
            record.stored = None
        self.pending.add(parties.key)

    def due(self, now: float) -> list[LegWrite]:
        """Writes to make now: every call whose legs differ from what the store holds,
        except a new call still in `trying` within its hold."""
        writes = []
        for key in sorted(self.pending):
            record = self.calls[key]
            if record.legs == record.stored:
                self.pending.discard(key)
                continue
            new = record.stored is None and record.legs[0].state is LegState.TRYING
            if new and now - record.first_seen < self.hold:
                continue
            writes.append(LegWrite(key, record.legs, record.stored is None))
        return writes

    def next_due(self) -> float | None:
        """When the earliest held call falls due (None: nothing held)."""
        records = (self.calls[key] for key in self.pending)
        held = [r.first_seen + self.hold for r in records if r.stored is None]
        return min(held) if held else None

    def written(self, write: LegWrite) -> None:
        """The store holds `write.legs` now (or something later: a retry after a write
        that was applied but not confirmed)."""
        record = self.calls.get(write.call)
        if record is not None:
            record.stored = write.legs
            if record.legs == record.stored:
                self.pending.discard(write.call)

    def missing(self, write: LegWrite) -> None:
        """The store lost the call's legs (its lease expired): create them again."""
        record = self.calls.get(write.call)
        if record is not None:
            record.stored = None
            self.pending.add(write.call)

    def lease_lost(self) -> None:
        """Every leg on the old instance lease is gone: calls not ended are written again."""
        for key, record in self.calls.items():
            if record.legs[0].state is not LegState.TERMINATED:
                record.stored = None
                self.pending.add(key)

    def forget_ended(self, now: float) -> None:
        done = [
            key for key, record in self.calls.items()
            if record.legs[0].state is LegState.TERMINATED and record.legs == record.stored
            and now - record.changed_at > ENDED_MEMORY_SECONDS
        ]
        for key in done:
            del self.calls[key]
            self.pending.discard(key)

    def live(self) -> Iterator[CallRecord]:
        """Calls not ended."""
        return (record for record in self.calls.values() if record.legs[0].state is not LegState.TERMINATED)

    def leg_ids(self) -> set[str]:
        return {leg.leg_id for record in self.calls.values() for leg in record.legs}
