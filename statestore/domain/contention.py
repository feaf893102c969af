"""Rules for living with a shared store: lost optimistic races, slow answers, stale ownership.

Pure: the adapters (kemi/blf_context.py, kemi/blf_lease.py, kemi/blf_notifier.py) read the
clock, draw the random numbers and sleep; these functions only decide.
"""

from __future__ import annotations

# A lost compare-and-swap means another writer of the same records won its round: every
# round has a winner, so retrying always ends. The pause before the next attempt is drawn
# uniformly below an exponentially growing ceiling ("full jitter"), so that writers that
# collided once spread out instead of colliding again in lockstep.
RACE_PAUSE_BASE_SECONDS = 0.002
RACE_PAUSE_CAP_SECONDS = 0.05
# How long a request keeps retrying lost races at most: far beyond what any contention
# measured needs (20 parallel REGISTERs of one account settle within ~0.3 s); past it the
# answer is 503 with Retry-After (the store is not keeping up), never a 500.
RACE_BUDGET_SECONDS = 4.0


def race_pause(attempt: int, draw: float) -> float:
    """Seconds to wait after the `attempt`-th lost race (1, 2, ...); `draw` in [0, 1)."""
    ceiling = min(RACE_PAUSE_CAP_SECONDS, RACE_PAUSE_BASE_SECONDS * 2.0 ** min(attempt, 16))
    return max(0.0, min(draw, 1.0)) * ceiling


def race_budget_left(started: float, now: float) -> bool:
    return now - started < RACE_BUDGET_SECONDS


# --- a slow store is not a down store ------------------------------------------------------

# A store whose round trip (as the lease keeper last measured it) took at least this long
# makes the next REGISTER or SUBSCRIBE send `100 Trying` before touching the store: the
# phone's first retransmission comes after T1 = 500 ms (RFC 3261 §17.1.2.2), and a final
# answer after two or three slow round trips would come later than that.
SLOW_STORE_SECONDS = 0.1
# A measurement older than this says nothing (the keeper measures every lease TTL / 3).
ROUND_TRIP_MEMORY_SECONDS = 30.0
# A request to a store measured slow waits BLF_STORE_TIMEOUT (what a healthy store gets for
# its hiccups) plus this many of the measured round trips, up to REQUEST_TIMEOUT_CAP_SECONDS:
# a slow store is used, not given up on.
ROUND_TRIPS_PER_REQUEST = 3.0
REQUEST_TIMEOUT_CAP_SECONDS = 3.0


def recent_round_trip(measured_at: float, seconds: float, now: float) -> float | None:
    """The store's round trip measured at `measured_at`, if that is recent enough to go by."""
    return seconds if 0.0 <= now - measured_at < ROUND_TRIP_MEMORY_SECONDS else None


def store_is_slow(round_trip: float | None) -> bool:
    return round_trip is not None and round_trip >= SLOW_STORE_SECONDS


def request_timeout(base: float, round_trip: float | None) -> float:
    """How long a request waits for the store: `base` (BLF_STORE_TIMEOUT) for a fast store;
    for a slow one `base` plus a few of its recent round trips, at most
    REQUEST_TIMEOUT_CAP_SECONDS (never less than `base`)."""
    if not store_is_slow(round_trip):
        return base
    assert round_trip is not None
    return max(base, min(REQUEST_TIMEOUT_CAP_SECONDS, base + round_trip * ROUND_TRIPS_PER_REQUEST))


# The lease keeper's probe waits this many request timeouts before it calls the store
# down: a store that answers in 0.6 s with a request timeout of 0.5 s is slow, not down.
PROBE_TIMEOUT_FACTOR = 6.0


def probe_timeout(request_timeout: float, lease_ttl: int) -> float:
    """The lease keeper's deadline for its refresh: longer than a request's, and shorter
    than a third of the lease TTL (it must still renew in time when the store answers)."""
    return max(request_timeout, min(request_timeout * PROBE_TIMEOUT_FACTOR, lease_ttl / 3.0))


# --- ownership after a freeze ---------------------------------------------------------------


def ownership_current(confirmed_at: float | None, now: float, lease_ttl: float) -> bool:
    """Whether this instance may still send as the owner of its subscriptions: its lease
    was confirmed alive by etcd less than the lease TTL ago, by the monotonic clock read
    now. An instance that was frozen (SIGSTOP, a VM pause) or cut off for longer may have
    lost its lease, and another instance may have taken its subscriptions over and sent
    NOTIFYs with higher CSeq and version: it must send nothing until it has taken a new
    epoch and read again what it owns (RFC 6665 §4.1.2.2: CSeq strictly increases)."""
    if confirmed_at is None:
        return False
    return 0.0 <= now - confirmed_at < lease_ttl
