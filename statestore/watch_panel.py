"""The panel of `blfctl watch`: one line per account, pure (records and time passed in).

`Panel` keeps the legs and registrations of the accounts watched, fed by a snapshot and
then by watch events (key, value or None, as statestore.store's WatchEvent), and the time
each lamp took its state; `render` and `line` make the text. The terminal handling (ANSI
redraw or plain lines) is statestore.cli_watch's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from statestore import codec, keys
from statestore.domain.lamp import is_active, lamp_state
from statestore.domain.model import Binding, Leg
from statestore.domain.why import LAMP_WORDS

T = TypeVar("T")
HEADER = ("ACCOUNT", "LAMP", "SINCE", "LEGS", "INSTANCE")
WIDTHS = (32, 8, 8, 4)


@dataclass(frozen=True)
class Row:
    account: str
    lamp: str  # idle / ringing / busy / offline (why.LAMP_WORDS)
    since: float  # when the panel saw the lamp take this state (its start for the first)
    legs: int  # active legs
    instances: tuple[str, ...]  # holding its active legs, else its live registrations

    def cells(self) -> tuple[str, ...]:
        clock = time.strftime("%H:%M:%S", time.gmtime(self.since))
        return self.account, self.lamp, clock, str(self.legs), ",".join(self.instances) or "-"


class Panel:
    """The lamps of `accounts` (which must be account AORs, aliases resolved)."""

    def __init__(self, accounts: Sequence[str], now: float) -> None:
        self.accounts = list(dict.fromkeys(accounts))
        self.legs: dict[str, dict[str, Leg]] = {aor: {} for aor in self.accounts}
        self.bindings: dict[str, dict[str, Binding]] = {aor: {} for aor in self.accounts}
        self.rows: dict[str, Row] = {}
        self.refresh(now)

    def prefixes(self) -> list[str]:
        """What the panel reads and watches: each account's legs and registrations only."""
        return [prefix for aor in self.accounts for prefix in (keys.legs_of(aor), keys.regs_of(aor))]

    def apply(self, items: Iterable[tuple[str, bytes | None]]) -> None:
        for key, value in items:
            parsed = keys.parse(key)
            if parsed is None or parsed.account not in self.legs:
                continue
            if parsed.kind == "legs":
                _put(self.legs[parsed.account], key, None if value is None else codec.decode_leg(value))
            elif parsed.kind == "regs":
                _put(self.bindings[parsed.account], key, None if value is None else codec.decode_binding(value))

    def refresh(self, now: float) -> list[Row]:
        """Recompute every row at `now`; the rows that changed (all of them the first time)."""
        changed = []
        for aor in self.accounts:
            row = self._row(aor, now)
            old = self.rows.get(aor)
            if old is not None and old.lamp == row.lamp:
                row = Row(row.account, row.lamp, old.since, row.legs, row.instances)
            if row != old:
                self.rows[aor] = row
                changed.append(row)
        return changed

    def _row(self, aor: str, now: float) -> Row:
        legs = list(self.legs[aor].values())
        bindings = list(self.bindings[aor].values())
        active = [leg for leg in legs if is_active(leg)]
        holders = [leg.instance for leg in active] or [b.instance for b in bindings if b.expires_at > now]
        lamp = LAMP_WORDS[lamp_state(legs, bindings, now)]
        return Row(aor, lamp, now, len(active), tuple(sorted(set(holders))))


def line(row: Row) -> str:
    cells = row.cells()
    return " ".join(cell.ljust(width) for cell, width in zip(cells, WIDTHS, strict=False)) + " " + cells[-1]


def render(rows: Iterable[Row], now: float, title: str = "blfctl watch") -> list[str]:
    """The whole panel: a title line with the time, the header, one line per account."""
    head = " ".join(cell.ljust(width) for cell, width in zip(HEADER, WIDTHS, strict=False)) + " " + HEADER[-1]
    clock = time.strftime("%H:%M:%S", time.gmtime(now))
    return [f"{title} - {clock} UTC", head, *(line(row) for row in rows)]


def _put(table: dict[str, T], key: str, value: T | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value
