"""Failover between the members of one etcd cluster, inside our client adapter.

Debian's etcd3 0.12 speaks to one endpoint (KAMAILIO-NOTES). A zone is three members, so
`BLF_ETCD` lists them ("h:p,h:p,h:p") and this module gives the adapter one client object
that behaves like etcd3's, whose stubs (KV, Lease, Cluster, Maintenance) send each call to
the member in use and, when that member cannot answer, to the next one:

- a member that is down or unreachable answers UNAVAILABLE (at once when its channel is
  known to be failing: such a member is skipped before the call is made);
- a member frozen or partitioned without answering lets the call's deadline pass
  (DEADLINE_EXCEEDED); the call is made again on the next member, so it costs at most one
  deadline more;
- a member cut off from its cluster's majority answers "etcdserver: no leader" at once
  (UNAVAILABLE) because every call carries etcd's `hasleader` metadata (what the Go client's
  `WithRequireLeader` sends): without it such a member would still serve serializable reads
  and hold watches that never deliver.

Each call is tried at most once per member. A write whose deadline passed may have been
applied all the same: every write of ours is either a compare-and-swap (a retry that finds
its own earlier success loses the comparison and says so), a put of the same value, or a
lease grant (a second lease that nobody uses expires on its own).

Watches stay on the member in use when they are created: etcd3's watcher owns one stream.
`hasleader` makes etcd end that stream when its member loses the leader; gRPC keepalive pings
(every 5 s, the least etcd accepts by default) end it when the member stops answering. The
watch's owner then sees the error and watches again from the revision it had reached, on the
member this module moved to (kemi/blf_notifier.py).

The alternative, an `etcd grpc-proxy` on every host, was measured against this one
(docs/operations.md "Failure behaviour"); this is the one in use.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
from etcd3.client import Transactions  # type: ignore[import-untyped]

from statestore import store_timing

# gRPC codes after which another member may answer: this one is down, unreachable, frozen,
# or has no leader.
FAILOVER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# etcd's metadata asking a member to refuse a request while it has no leader.
REQUIRE_LEADER = (("hasleader", "true"),)
# Pings while a call is open (a watch's stream), to find a frozen member under a long-lived
# watch. etcd's defaults (--grpc-keepalive-min-time 5 s, no pings without a stream) close a
# connection that pings more often, or pings with nothing open ("too_many_pings" GOAWAY,
# seen at 5 s): every 10 s, never while idle.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
]
# How etcd3 says a watch could not be created on a member (in time, or at all).
WATCH_FAILURES = (
    etcd3.exceptions.WatchTimedOut, etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.ConnectionTimeoutError,
)
STUBS = ("kvstub", "leasestub", "clusterstub", "maintenancestub")
_FAILING = {grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN}


def split_endpoints(endpoints: str) -> list[str]:
    """"h:p,h:p" -> ["h:p", "h:p"]; spaces and empty items ignored, order kept."""
    members = [part.strip() for part in endpoints.split(",") if part.strip()]
    if not members:
        raise ValueError(f"no etcd endpoint in {endpoints!r}")
    return members


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host or "127.0.0.1", int(port or 2379)


# What a member answers, with gRPC's UNKNOWN, when it could not reach its leader in time for
# a request it forwards (a LeaseKeepAlive on a follower while the leader it knew is gone):
# etcd passes Go's context error through untranslated. Seen in CI right after the member in
# use was killed.
FORWARD_TIMEOUTS = ("context deadline exceeded",)


def failover_error(exc: BaseException) -> bool:
    """Whether another member may answer what this one could not."""
    if not (isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None))):
        return False
    if exc.code() in FAILOVER_CODES:
        return True
    return exc.code() == grpc.StatusCode.UNKNOWN and str(exc.details()) in FORWARD_TIMEOUTS


class Member:
    """One member's etcd3 client, created on first use, and what its channel last said."""

    def __init__(self, endpoint: str, timeout: float, options: Sequence[tuple[str, Any]]) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.options = list(options)
        self._client: Any = None
        self.state: grpc.ChannelConnectivity | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            host, port = split_endpoint(self.endpoint)
            client = etcd3.client(host=host, port=port, timeout=self.timeout, grpc_options=self.options)
            client.metadata = REQUIRE_LEADER
            client.watcher._metadata = REQUIRE_LEADER  # noqa: SLF001 - etcd3 0.12 has no other way in
            client.channel.subscribe(self._seen, try_to_connect=False)
            self._client = client
        return self._client

    def _seen(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state

    def failing(self) -> bool:
        return self.state in _FAILING

    def close(self) -> None:
        if self._client is not None:
            self._client.channel.unsubscribe(self._seen)
            self._client.close()
            self._client = None
            self.state = None


class Members:
    """The members of one cluster and the one in use; thread-safe (the watch thread and a
    worker may fail over at the same time: the first one moves, the second sees it moved)."""

    def __init__(self, endpoints: str, timeout: float, options: Sequence[tuple[str, Any]]) -> None:
        self.members = [Member(endpoint, timeout, options) for endpoint in split_endpoints(endpoints)]
        self._current = 0
        self._lock = threading.Lock()
        self.failovers = 0

    @property
    def current(self) -> Member:
        return self.members[self._current]

    def set_timeout(self, seconds: float) -> None:
        for member in self.members:
            member.timeout = seconds
            if member._client is not None:  # noqa: SLF001 - same module
                member._client.timeout = seconds
                member._client.watcher.timeout = seconds

    def order(self) -> list[Member]:
        """The members to try, the one in use first, then the others in turn; those whose
        channel is failing after the others (still tried: their state may be stale)."""
        start = self._current
        ring = [self.members[(start + step) % len(self.members)] for step in range(len(self.members))]
        return [member for member in ring if not member.failing()] + [member for member in ring if member.failing()]

    def move_from(self, member: Member) -> None:
        with self._lock:
            if self.current is member and len(self.members) > 1:
                self._current = (self.members.index(member) + 1) % len(self.members)
                self.failovers += 1

    def use(self, member: Member) -> None:
        with self._lock:
            if self.current is not member:
                self._current = self.members.index(member)
                self.failovers += 1

    def call(self, stub: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        started = time.monotonic()
        try:
            return self._call(stub, method, args, kwargs)
        finally:
            store_timing.record(method, time.monotonic() - started)

    def _call(self, stub: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # A streaming request (LeaseKeepAlive's `iter([request])`) is used up by the first
        # member tried: each member gets the requests afresh.
        kept = tuple(list(arg) if isinstance(arg, Iterator) else arg for arg in args)
        streamed = [isinstance(arg, Iterator) for arg in args]
        last: BaseException | None = None
        empty = False
        for member in self.order():
            fresh = tuple(iter(arg) if stream else arg for arg, stream in zip(kept, streamed, strict=True))
            try:
                answer = getattr(getattr(member.client, stub), method)(*fresh, **kwargs)
                if isinstance(answer, Iterator):
                    # A streaming answer (LeaseKeepAlive) fails on its first item, not on the
                    # call; one that ends without an item came from a member that could not
                    # forward it (its leader just went): another member may answer.
                    first = next(answer, None)
                    if first is None:
                        empty = True
                        self.move_from(member)
                        continue
                    answer = itertools.chain([first], answer)
            except grpc.RpcError as exc:
                if not failover_error(exc):
                    raise
                last = exc
                self.move_from(member)
                continue
            self.use(member)
            return answer
        if last is not None:
            raise last
        assert empty
        return iter(())

    def close(self) -> None:
        for member in self.members:
            member.close()


class _Stub:
    """Stands for one etcd3 stub of every member: `stub.Range(request, timeout, ...)`."""

    def __init__(self, members: Members, name: str) -> None:
        self._members = members
        self._name = name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._members.call(self._name, method, args, kwargs)

        return call


class FailoverClient(etcd3.Etcd3Client):  # type: ignore[misc]
    """etcd3's client API over several members: every method of etcd3's client goes through
    the stubs above, but the watches, which go to one member's watcher (its stream)."""

    def __init__(
        self, endpoints: str, timeout: float, options: Sequence[tuple[str, Any]], pool: Members | None = None
    ) -> None:
        # Not etcd3's __init__: no channel of its own, the members hold theirs. `pool`: the
        # members of a client closed before, so that this one starts at the member that last
        # answered, not at a dead or frozen first one (one deadline per reconnect).
        self.pool = pool or Members(endpoints, timeout, [*options, *KEEPALIVE_OPTIONS])
        self.pool.set_timeout(timeout)
        self._timeout = timeout
        self.metadata = REQUIRE_LEADER
        self.call_credentials = None
        self.uses_secure_channel = False
        self.transactions = Transactions()
        for stub in STUBS:
            setattr(self, stub, _Stub(self.pool, stub))
        self._watches: dict[int, tuple[Member, int]] = {}
        self._next_watch = 0
        self.closed = False

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = seconds
        self.pool.set_timeout(seconds)

    def add_watch_callback(self, *args: Any, **kwargs: Any) -> int:
        """A watch on the member in use (the first answering one when that one is known to be
        failing; the next one when its creation is not confirmed in time). Its error, when
        the member goes, moves the client off that member before the owner hears of it."""
        callback = kwargs.pop("callback", None) or args[1]
        rest = args[:1] + args[2:]
        last: BaseException | None = None
        for member in self.pool.order():

            def deliver(response: Any, member: Member = member) -> None:
                if isinstance(response, Exception) and not self.closed:
                    self.pool.move_from(member)  # not when our own close() ended the watch
                callback(response)

            try:
                member_watch = int(member.client.add_watch_callback(*rest[:1], deliver, *rest[1:], **kwargs))
            except WATCH_FAILURES as exc:
                last = exc
                self.pool.move_from(member)
                continue
            # Each member numbers its watches from 0: ours are numbered here, across members.
            self._next_watch += 1
            self._watches[self._next_watch] = (member, member_watch)
            self.pool.use(member)
            return self._next_watch
        assert last is not None
        raise last

    def cancel_watch(self, watch_id: int) -> None:
        found = self._watches.pop(watch_id, None)
        if found is not None:
            found[0].client.cancel_watch(found[1])

    def close(self) -> None:
        self.closed = True
        self.pool.close()
