"""The panel of `blfctl watch` (statestore.watch_panel): rows from records and events,
each lamp's "since", and the text."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statestore import codec, keys
from statestore.domain.model import Binding, Direction, Leg, LegState, Party
from statestore.watch_panel import Panel, Row, line, render

NOW = 1_000_000.0  # 13:46:40 UTC
ALICE, BOB = "alice@example.com", "bob@example.com"
LEG = Leg(
    account=ALICE, instance="ks2", leg_id="l1", version=1, state=LegState.EARLY, direction=Direction.RECIPIENT,
    call_id="c1", local_tag="", remote_tag="ft", local=Party("sip:alice@example.com"), remote=Party("sip:bob@x"),
)
LEG_KEY = keys.leg(ALICE, "ks2", "l1")
REG = Binding(ALICE, "sip:alice@10.0.0.1", NOW + 60, "r", 1, instance="ks1")
REG_KEY = keys.reg(ALICE, "b1")


def leg_in(state: LegState) -> tuple[str, bytes]:
    return LEG_KEY, codec.encode_leg(replace(LEG, state=state))


@pytest.mark.parametrize(("items", "lamp", "legs", "instances"), [
    ([], "offline", 0, ()),
    ([(REG_KEY, codec.encode_binding(REG))], "idle", 0, ("ks1",)),
    ([(REG_KEY, codec.encode_binding(REG)), leg_in(LegState.EARLY)], "ringing", 1, ("ks2",)),
    ([leg_in(LegState.CONFIRMED)], "busy", 1, ("ks2",)),
    ([(REG_KEY, codec.encode_binding(REG)), leg_in(LegState.TERMINATED)], "idle", 0, ("ks1",)),
    ([(REG_KEY, codec.encode_binding(replace(REG, expires_at=NOW - 1)))], "offline", 0, ()),
    ([leg_in(LegState.CONFIRMED), (LEG_KEY, None)], "offline", 0, ()),
])
def test_a_row_per_account_from_its_legs_and_registrations(items, lamp, legs, instances) -> None:
    panel = Panel([ALICE], NOW)
    panel.apply(items)
    panel.refresh(NOW)
    assert panel.rows[ALICE] == Row(ALICE, lamp, NOW, legs, instances)


def test_only_the_watched_accounts_keys_count_and_the_prefixes_are_theirs() -> None:
    panel = Panel([ALICE, BOB, ALICE], NOW)
    assert panel.prefixes() == [keys.legs_of(ALICE), keys.regs_of(ALICE), keys.legs_of(BOB), keys.regs_of(BOB)]
    panel.apply([(keys.leg("carol@example.com", "ks1", "x"), codec.encode_leg(LEG)), (keys.sub("s"), b"{}")])
    assert panel.refresh(NOW) == []


def test_refresh_returns_the_rows_that_changed_and_since_moves_only_with_the_lamp() -> None:
    panel = Panel([ALICE, BOB], NOW)
    assert [row.account for row in panel.rows.values()] == [ALICE, BOB]
    panel.apply([(REG_KEY, codec.encode_binding(REG))])
    (idle,) = panel.refresh(NOW + 1)
    assert (idle.lamp, idle.since) == ("idle", NOW + 1)
    panel.apply([(REG_KEY, codec.encode_binding(replace(REG, instance="ks2")))])
    (moved,) = panel.refresh(NOW + 2)
    assert (moved.lamp, moved.since, moved.instances) == ("idle", NOW + 1, ("ks2",))
    assert panel.refresh(NOW + 3) == []
    (offline,) = panel.refresh(NOW + 61)  # the registration expired without an event
    assert (offline.lamp, offline.since) == ("offline", NOW + 61)


def test_the_text_of_the_panel() -> None:
    rows = [Row(ALICE, "ringing", NOW, 1, ("ks1", "ks2")), Row(BOB, "offline", NOW, 0, ())]
    assert render(rows, NOW + 5) == [
        "blfctl watch - 13:46:45 UTC",
        "ACCOUNT                          LAMP     SINCE    LEGS INSTANCE",
        "alice@example.com                ringing  13:46:40 1    ks1,ks2",
        "bob@example.com                  offline  13:46:40 0    -",
    ]
    assert line(rows[1]) == render(rows, NOW)[3]
