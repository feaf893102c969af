"""How long each etcd request took, kept until a Kamailio process's main thread reports it.

The etcd client runs in the thread that calls it: a SIP worker's main thread, but also the
lease keeper's probe threads and the watch threads. KSR may be called only from the main
thread (KAMAILIO-NOTES), so every timing goes into this buffer (a deque: appending is safe
from any thread) and the main thread drains it into blf_store_request_seconds
(kemi/blf_metrics.py). Bounded: when nobody drains it, the oldest timings are dropped.
"""

from __future__ import annotations

from collections import deque

CAPACITY = 4096

_timings: deque[tuple[str, float]] = deque(maxlen=CAPACITY)
# Off until a process that reports them turns it on (Kamailio's; not blfctl or the tests).
enabled = False


def record(operation: str, seconds: float) -> None:
    """One request: the etcd RPC's name (`Range`, `Txn`...) and its duration."""
    if enabled:
        _timings.append((operation, seconds))


def drain() -> list[tuple[str, float]]:
    """The timings recorded since the last drain, oldest first."""
    taken = []
    while _timings:
        try:
            taken.append(_timings.popleft())
        except IndexError:  # another thread drained meanwhile
            break
    return taken
