"""NOTIFY rate control: a subscription's NOTIFYs are at least its package's min_interval
apart; changes in between are merged and the last state is always sent (RFC 3856 §6.10)."""

from __future__ import annotations

from dataclasses import replace

from statestore import codec, keys
from statestore.domain import packages
from statestore.domain.model import LegState
from statestore.domain.packages import PACKAGES
from statestore.mirror import Mirror
from tests.unit.test_mirror import ALICE, LEG, LEG_KEY, NOW, SUB, live, mirror_with, sub_item

# On the phone, then not: both a lamp and a presence status show the difference.
STATES = [LegState.CONFIRMED, LegState.TERMINATED]


def _sent_bodies(mirror: Mirror, now: float) -> list[str]:
    shown = []
    for due in mirror.due("node-a", set(), now) + mirror.due("node-a", {ALICE}, now):
        assert mirror.numbered(due) is not None
        shown.append(due.digest)
    return shown


def _flap(event: str, changes: int = 50, over: float = 1.0) -> tuple[list[tuple[float, str]], str, str]:
    """`changes` leg changes spread over `over` seconds to a presentity watched with
    `event`; the digests of what was sent (with when), of the first and of the last state."""
    sub = replace(SUB, event=event)
    mirror = mirror_with(*live("node-a"), sub_item(sub, 5))
    mirror.epoch = sub.epoch
    for due in mirror.due("node-a", {ALICE}, NOW):  # the subscription's first NOTIFY
        mirror.numbered(due)
    sent: list[tuple[float, str]] = []
    first = last = ""
    start = NOW + 10
    for n in range(changes):
        now = start + over * n / changes
        leg = replace(LEG, version=n + 2, state=STATES[n % 2])
        dirty = mirror.apply(LEG_KEY, codec.encode_leg(leg), 10 + n, now)
        digest = packages.digest_for(sub, mirror.state_of(ALICE, now))
        first, last = first or digest, digest
        for due in mirror.due("node-a", dirty, now):
            assert mirror.numbered(due) is not None
            sent.append((now, due.digest))
    # Time passes without changes: whatever waited goes out.
    for step in range(1, 80):
        now = start + over + step * 0.1
        for due in mirror.due("node-a", set(), now):
            assert mirror.numbered(due) is not None
            sent.append((now, due.digest))
    return sent, first, last


def test_fifty_presence_changes_in_a_second_become_the_first_and_the_last_state() -> None:
    sent, first, last = _flap("presence")
    assert [digest for _, digest in sent] == [first, last]
    assert sent[1][0] - sent[0][0] >= PACKAGES["presence"].min_interval


def test_a_flapping_lamp_is_sent_at_most_once_per_dialog_interval_and_ends_on_the_last_state() -> None:
    sent, _, last = _flap("dialog")
    interval = PACKAGES["dialog"].min_interval
    assert sent[-1][1] == last
    assert all(later - earlier >= interval - 1e-9 for (earlier, _), (later, _) in zip(sent, sent[1:], strict=False))
    assert len(sent) <= 1 / interval + 2


def test_a_refresh_is_notified_at_once_whatever_the_interval() -> None:
    sub = replace(SUB, event="presence")
    mirror = mirror_with(*live("node-a"), sub_item(sub, 5))
    mirror.epoch = sub.epoch
    for due in mirror.due("node-a", {ALICE}, NOW):
        mirror.numbered(due)
    mirror.apply(keys.sub(sub.sub_id), codec.encode_subscription(replace(sub, expires_at=NOW + 900)), 6, NOW + 1)
    assert [due.subscription.sub_id for due in mirror.due("node-a", set(), NOW + 1)] == [sub.sub_id]
