"""The pure rules for a shared store (statestore/domain/contention.py): lost races, slow
answers, stale ownership."""

from __future__ import annotations

import pytest

from statestore.domain import contention
from statestore.domain.contention import (
    RACE_BUDGET_SECONDS,
    RACE_PAUSE_CAP_SECONDS,
    ownership_current,
    probe_timeout,
    race_budget_left,
    race_pause,
    recent_round_trip,
    request_timeout,
    store_is_slow,
)


@pytest.mark.parametrize(("attempt", "draw", "pause"), [
    (1, 0.0, 0.0),
    (1, 0.5, 0.002),
    (2, 1.0, 0.008),
    (3, 0.25, 0.004),
    (5, 1.0, RACE_PAUSE_CAP_SECONDS),  # 0.064 capped
    (40, 0.5, RACE_PAUSE_CAP_SECONDS / 2),  # no overflow however long the fight
    (2, 7.0, 0.008),  # a draw out of range is clamped
])
def test_a_lost_race_waits_a_jittered_exponentially_growing_pause(attempt: int, draw: float, pause: float) -> None:
    assert race_pause(attempt, draw) == pytest.approx(pause)


def test_races_are_retried_within_a_budget() -> None:
    assert race_budget_left(100.0, 100.0 + RACE_BUDGET_SECONDS - 0.01)
    assert not race_budget_left(100.0, 100.0 + RACE_BUDGET_SECONDS)


@pytest.mark.parametrize(("measured_at", "seconds", "now", "recent"), [
    (100.0, 0.3, 100.5, 0.3),
    (100.0, 0.3, 100.0 + contention.ROUND_TRIP_MEMORY_SECONDS, None),  # too old to go by
    (100.0, 0.3, 99.0, None),  # from another clock (a restart): ignored
])
def test_a_round_trip_counts_while_recent(measured_at: float, seconds: float, now: float, recent: float | None) -> None:
    assert recent_round_trip(measured_at, seconds, now) == recent


@pytest.mark.parametrize(("round_trip", "slow"), [(None, False), (0.003, False), (0.1, True), (0.6, True)])
def test_a_store_is_slow_from_100_ms_a_round_trip(round_trip: float | None, slow: bool) -> None:
    assert store_is_slow(round_trip) is slow


@pytest.mark.parametrize(("base", "round_trip", "timeout"), [
    (0.5, None, 0.5),  # nothing measured: BLF_STORE_TIMEOUT
    (0.5, 0.003, 0.5),  # fast: BLF_STORE_TIMEOUT
    (0.5, 0.09, 0.5),  # not slow
    (0.5, 0.3, 1.4),  # 300 ms: BLF_STORE_TIMEOUT plus three round trips
    (0.5, 0.6, 2.3),  # 600 ms, above BLF_STORE_TIMEOUT: still answered, waited for
    (0.5, 5.0, contention.REQUEST_TIMEOUT_CAP_SECONDS),  # at most the cap
    (4.0, 0.6, 4.0),  # never below what the operator set
])
def test_requests_wait_longer_for_a_slow_store(base: float, round_trip: float | None, timeout: float) -> None:
    assert request_timeout(base, round_trip) == pytest.approx(timeout)


@pytest.mark.parametrize(("request_timeout_s", "ttl", "probe"), [
    (0.5, 6, 2.0),  # a third of the TTL: the lease still renews in time
    (0.5, 30, 3.0),  # six request timeouts
    (0.5, 1, 0.5),  # never below a request's
])
def test_the_lease_probe_waits_longer_than_a_request(request_timeout_s: float, ttl: int, probe: float) -> None:
    assert probe_timeout(request_timeout_s, ttl) == pytest.approx(probe)


@pytest.mark.parametrize(("confirmed_at", "now", "current"), [
    (None, 100.0, False),  # never confirmed: not ours yet
    (100.0, 100.0, True),
    (100.0, 103.9, True),
    (100.0, 104.0, False),  # the lease (TTL 4) may have expired: another instance may own it now
    (100.0, 112.0, False),  # thawed after a 12 s freeze
    (100.0, 99.0, False),  # a confirmation from the future: not trusted
])
def test_ownership_holds_only_while_the_lease_was_confirmed_within_its_ttl(
    confirmed_at: float | None, now: float, current: bool
) -> None:
    assert ownership_current(confirmed_at, now, 4) is current
