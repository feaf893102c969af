"""Only real unavailability of the store is StoreUnavailable (a 503); every other store
error is a bug that keeps its type and traceback (issue 6, "a seam for zones")."""

from __future__ import annotations

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
import pytest

from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import EtcdStore, unavailability


class FakeRpcError(grpc.RpcError):
    """What a gRPC call raises, with the status etcd (or the channel) gave."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(f"status {code.name}")
        self._code, self._details = code, details or f"fake {code.name}"

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


UNAVAILABLE = [
    FakeRpcError(grpc.StatusCode.UNAVAILABLE),
    FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED),
    # A follower that could not forward a LeaseKeepAlive to its leader in time.
    FakeRpcError(grpc.StatusCode.UNKNOWN, "context deadline exceeded"),
    etcd3.exceptions.ConnectionFailedError(),
    etcd3.exceptions.ConnectionTimeoutError(),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("timed out"),
    ValueError("Cannot invoke RPC on closed channel!"),
    # Read again: what was asked for at that revision is gone (a paged snapshot, a watch).
    etcd3.exceptions.RevisionCompactedError(7),
    FakeRpcError(grpc.StatusCode.OUT_OF_RANGE, "mvcc: required revision has been compacted"),
]
BUGS = [
    FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT),
    FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED),  # a response over gRPC's 4 MB
    FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION),
    FakeRpcError(grpc.StatusCode.PERMISSION_DENIED),
    FakeRpcError(grpc.StatusCode.OUT_OF_RANGE),
    FakeRpcError(grpc.StatusCode.UNKNOWN),
    etcd3.exceptions.InternalServerError(),
    ValueError("not a subscription record"),
    KeyError("sub_id"),
    TypeError("unexpected keyword"),
]


def guarded(exc: Exception) -> None:
    store = EtcdStore("127.0.0.1:1")  # never connected: the guard alone is under test
    with store._guard():
        raise exc


@pytest.mark.parametrize("exc", UNAVAILABLE, ids=lambda exc: type(exc).__name__ + ":" + str(exc)[:20])
def test_unavailability_is_store_unavailable(exc: Exception) -> None:
    assert unavailability(exc)
    with pytest.raises(StoreUnavailable) as caught:
        guarded(exc)
    assert caught.value.__cause__ is exc


@pytest.mark.parametrize("exc", BUGS, ids=lambda exc: type(exc).__name__ + ":" + str(exc)[:20])
def test_other_errors_keep_their_type_and_traceback(exc: Exception) -> None:
    assert not unavailability(exc)
    with pytest.raises(type(exc)) as caught:
        guarded(exc)
    assert caught.value is exc
    assert not isinstance(caught.value, StoreUnavailable)


def test_store_unavailable_passes_through() -> None:
    original = StoreUnavailable("store marked down")
    with pytest.raises(StoreUnavailable) as caught:
        guarded(original)
    assert caught.value is original


class _Answers:
    """One member's lease stub: LeaseKeepAlive answers with `items`, or fails with `error`
    on its first item, as a gRPC stream does."""

    def __init__(self, error: Exception | None, items: list[str]) -> None:
        self.error, self.items = error, items

    def LeaseKeepAlive(self, requests: object) -> object:  # noqa: N802 - gRPC's name
        def stream() -> object:
            if self.error is not None:
                raise self.error
            yield from self.items

        return stream()


class _Client:
    def __init__(self, leasestub: _Answers) -> None:
        self.leasestub = leasestub


@pytest.mark.parametrize(
    ("error", "moves"),
    [
        (FakeRpcError(grpc.StatusCode.UNAVAILABLE), True),
        (FakeRpcError(grpc.StatusCode.UNKNOWN, "context deadline exceeded"), True),
        (FakeRpcError(grpc.StatusCode.UNKNOWN, "some bug"), False),
    ],
    ids=["unavailable", "forward-timeout", "unknown"],
)
def test_a_keepalive_a_follower_could_not_forward_is_sent_to_the_next_member(error: Exception, moves: bool) -> None:
    from statestore.etcd_failover import Members

    members = Members("127.0.0.1:1,127.0.0.1:2", 1.0, [])
    members.members[0]._client = _Client(_Answers(error, []))
    members.members[1]._client = _Client(_Answers(None, ["refreshed"]))
    if not moves:
        with pytest.raises(type(error)):
            members.call("leasestub", "LeaseKeepAlive", (iter(["request"]),), {})
        assert members.current is members.members[0]
        return
    assert list(members.call("leasestub", "LeaseKeepAlive", (iter(["request"]),), {})) == ["refreshed"]
    assert members.current is members.members[1]
