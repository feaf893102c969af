"""The etcd client: its connection (made on first use, in the process using it), each
request's deadline, and what an error of the client means: `unavailability` tells an
outage (StoreUnavailable, a 503 where a request waits on it) from a bug (its own type and
traceback). The only place the etcd connection is made.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]

from statestore.domain.errors import StoreUnavailable
from statestore.etcd_failover import FAILOVER_CODES, FailoverClient, failover_error, split_endpoint, split_endpoints

# gRPC backs off reconnecting exponentially (to minutes), and shares that back-off between
# channels to the same target: after an etcd outage a fresh client would still fail for
# a long while. Keep retries quick, and each channel's subchannels its own.
# A call made while the channel is reconnecting waits for it (up to its deadline) rather
# than failing at once.
_WAIT_FOR_READY = {
    "methodConfig": [
        {
            "name": [{"service": f"etcdserverpb.{name}"} for name in ("KV", "Lease", "Watch", "Maintenance")],
            "waitForReady": True,
        }
    ]
}
GRPC_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.service_config", json.dumps(_WAIT_FOR_READY)),
]


def _quiet_closed_watchers(previous: Any = threading.excepthook) -> None:
    """etcd3 0.12 cannot stop its watch thread: after `close()` the thread's next call
    on the closed channel raises and the thread ends. gRPC's own thread that follows a
    channel's connectivity (etcd_failover.Member subscribes to it) ends the same way when
    the channel is closed under it. Those ends are expected; keep their tracebacks out of
    the Kamailio log and let every other thread error through."""

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else ""
        if name.startswith("etcd3_watch_") and "Channel closed" in str(args.exc_value):
            return
        if isinstance(args.exc_value, ValueError) and "Cannot monitor channel state: Channel closed" in str(
            args.exc_value
        ):
            return
        previous(args)

    threading.excepthook = hook


_quiet_closed_watchers()


# gRPC status codes that mean etcd cannot answer now (down, unreachable, too slow). Any
# other (INVALID_ARGUMENT, RESOURCE_EXHAUSTED for a response over 4 MB, INTERNAL...) says
# the request or its handling is wrong, and retrying it, here or on another instance,
# cannot help.
# The same codes after which another member of the zone is tried (etcd_failover).
UNAVAILABLE_CODES = FAILOVER_CODES
# What etcd answers every write with while its NOSPACE alarm is raised (RESOURCE_EXHAUSTED).
NOSPACE_ERROR = "database space exceeded"


def compacted(exc: BaseException) -> bool:
    """Whether a watch ended because the revision it was at has been compacted away: it
    cannot be resumed, what it watched must be read again."""
    if isinstance(exc, etcd3.exceptions.RevisionCompactedError):
        return True
    return (
        isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None))
        and exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in str(exc.details())
    )


def unavailability(exc: BaseException) -> bool:
    """Whether an error of the etcd client means etcd is unavailable (not a bug).

    A read at a revision etcd has compacted meanwhile (a paged snapshot, a watch) counts
    too: that state cannot be read any more, the caller reads again (never a request's).
    """
    if isinstance(exc, etcd3.exceptions.ConnectionFailedError | etcd3.exceptions.ConnectionTimeoutError):
        return True  # etcd3's names for UNAVAILABLE and DEADLINE_EXCEEDED
    if isinstance(exc, etcd3.exceptions.WatchTimedOut):
        return True  # no member confirmed a new watch in time (etcd_failover)
    if isinstance(exc, etcd3.exceptions.RevisionCompactedError):
        return True
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in str(exc.details()):
            return True
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and NOSPACE_ERROR in str(exc.details()):
            return True  # the NOSPACE alarm: no write succeeds until `blfctl store maintain`
        return failover_error(exc)  # UNAVAILABLE_CODES, or a member's forward timeout
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    # The channel was closed under the call: another thread of this process found etcd
    # unreachable and closed it (Context.mark_store_down).
    return isinstance(exc, ValueError) and "closed channel" in str(exc)


class EtcdClient:
    """One zone's etcd: the endpoint, the deadline, the client and the error guard."""

    def __init__(self, endpoint: str = "127.0.0.1:2379", timeout: float = 1.0) -> None:
        # One member ("h:p") or a cluster's ("h:p,h:p,h:p"): statestore/etcd_failover.py.
        self.endpoint = endpoint
        self.endpoints = split_endpoints(endpoint)
        self._timeout = timeout
        self._client: Any = None
        self._pool: Any = None

    @property
    def timeout(self) -> float:
        """Each request's deadline in seconds; a change applies to the next request."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = seconds
        if self._client is not None:
            self._client.timeout = seconds  # etcd3 0.12 reads it on every call

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = FailoverClient(self.endpoint, self.timeout, GRPC_OPTIONS, self._pool)
            self._pool = self._client.pool  # kept across close(): which member answered last
        return self._client

    def member_in_use(self) -> str:
        """The member requests go to now (the first one until one fails)."""
        pool = self._client.pool if self._client is not None else self._pool
        return str(pool.current.endpoint) if pool is not None else self.endpoints[0]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except StoreUnavailable:
            raise
        except Exception as exc:
            if not unavailability(exc):
                raise  # a bug, not an outage: no 503 for it, its traceback in the log
            raise StoreUnavailable(f"etcd at {self.endpoint}: {type(exc).__name__}: {exc}", self.endpoint) from exc

    @contextmanager
    def _member(self, endpoint: str, timeout: float) -> Iterator[Any]:
        """A client of one member: maintenance RPCs act on the member that receives them."""
        host, port = split_endpoint(endpoint)
        client = etcd3.client(host=host, port=port, timeout=timeout, grpc_options=GRPC_OPTIONS)
        try:
            yield client
        finally:
            client.close()
