"""The notifier's snapshot on a real etcd (issue 6, finding 3): paged, so that it holds
beyond gRPC's 4 MB answer limit, read at one revision, scoped to the prefixes the mirror
reads; a watch from a compacted revision fails (the notifier then reads again)."""

from __future__ import annotations

import queue
import time

import etcd3  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
import pytest

from statestore import codec, keys
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Subscription
from statestore.etcd_store import EtcdStore, WatchEvent, split_endpoint
from statestore.mirror import Mirror

ALICE = "alice@example.com"
GRPC_LIMIT = 4 * 1024 * 1024
BATCH = 100  # puts per transaction (etcd's default --max-txn-ops is 128)


def subscription(n: int) -> Subscription:
    watcher = f"w{n % 100}@example.com"
    presentity = f"u{n // 100}@example.com"
    return Subscription(
        sub_id=f"{n:024d}", event="dialog", presentity=presentity, entity=f"sip:{presentity}",
        watcher=watcher, watcher_contact=f"sip:{watcher.replace('@', '-')}@192.0.2.{n % 250}:5060;transport=udp",
        call_id=f"{n:08d}-a1b2c3d4e5f6a7b8c9d0@192.0.2.1", local_tag=f"lt{n:012d}", remote_tag=f"rt{n:012d}",
        local_uri=f"sip:{presentity}", remote_uri=f"sip:{watcher}",
        route_set=("<sip:192.0.2.9;lr;ftag=abcdefgh;blf=0123456789abcdef0123456789abcdef>",),
        expires_at=time.time() + 3600, owner="ks1", received=f"udp:192.0.2.{n % 250}:5060", flow_instance="ks1",
    )


def client_of(store: EtcdStore) -> etcd3.Etcd3Client:
    host, port = split_endpoint(store.endpoint)
    return etcd3.client(host=host, port=port, timeout=30)


def write_subscriptions(store: EtcdStore, count: int) -> int:
    """`count` subscription records written in batches; their total size in bytes."""
    client = client_of(store)
    size = 0
    try:
        for start in range(0, count, BATCH):
            puts = []
            for n in range(start, min(start + BATCH, count)):
                value = codec.encode_subscription(subscription(n))
                size += len(value)
                puts.append(client.transactions.put(keys.sub(f"{n:024d}"), value))
            client.transaction(compare=[], success=puts, failure=[])
    finally:
        client.close()
    return size


def test_a_snapshot_beyond_grpcs_4_mb_is_read_in_pages_at_one_revision(store: EtcdStore) -> None:
    size = write_subscriptions(store, 10_000)
    assert size > GRPC_LIMIT
    # Unpaged, one answer would carry every record: gRPC refuses it (the old notifier's loop).
    # That is a bug of the request, not an outage: it is not turned into StoreUnavailable.
    with pytest.raises(grpc.RpcError) as refused:
        store.snapshot(keys.SUBS, page=0)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    store.client.put(keys.leg(ALICE, "ks1", "x"), b"{}")
    revision, items = store.snapshot(Mirror.prefixes(), page=700)
    assert [kv.key for kv in items if kv.key.startswith(keys.SUBS)] == [keys.sub(f"{n:024d}") for n in range(10_000)]
    assert [kv.key for kv in items if kv.key.startswith(keys.LEGS)] == [keys.leg(ALICE, "ks1", "x")]
    assert revision == max(kv.mod_revision for kv in items)
    mirror = Mirror()
    mirror.load((kv.key, kv.value, kv.mod_revision) for kv in items)
    assert len(mirror.subs) == 10_000 and len(mirror.by_presentity) == 100


def test_pages_after_the_first_are_read_at_its_revision(store: EtcdStore) -> None:
    write_subscriptions(store, 30)
    original = store._range_page
    seen: list[int] = []

    def page_then_write(start: bytes, end: bytes, limit: int, revision: int) -> object:
        response = original(start, end, limit, revision)
        seen.append(revision)
        if len(seen) == 1:  # between the first page and the next, the store moves on
            store.client.put(keys.sub(f"{29:024d}"), b"changed")
            store.client.put(keys.sub("z" * 24), b"new")
        return response

    store._range_page = page_then_write  # type: ignore[method-assign]
    revision, items = store.snapshot(keys.SUBS, page=10)
    assert seen[0] == 0 and set(seen[1:]) == {revision}
    assert len(items) == 30 and b"changed" not in {kv.value for kv in items}


def test_the_snapshot_and_watch_scope_leave_out_the_index_and_accounts() -> None:
    """What event package bodies are made of (legs, registrations, publications), the
    subscriptions, the instances and `blfctl reset`'s requests: never the index, the
    directory or authorizations."""
    assert set(Mirror.prefixes()) == {keys.INSTANCES, keys.SUBS, keys.LEGS, keys.REGS, keys.PUBS, keys.RESET}


def test_a_watch_from_a_compacted_revision_fails_so_the_notifier_reads_again(store: EtcdStore) -> None:
    revision, _ = store.snapshot(Mirror.prefixes())
    for n in range(3):
        store.client.put(keys.leg(ALICE, "ks1", f"leg-{n}"), b"{}")
    current, _ = store.snapshot(keys.LEGS)
    store.client.compact(current)
    events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
    try:
        store.watch_prefixes(revision + 1, events.put, Mirror.prefixes())
        # etcd accepts the watch, then cancels it: the callback gets the error (the notifier
        # takes any exception from its queue as "resync").
        assert isinstance(events.get(timeout=5), etcd3.exceptions.RevisionCompactedError)
    except StoreUnavailable as exc:  # or the create itself is refused
        assert "ompacted" in str(exc)  # noqa: PT017
    store.close()
    events = queue.Queue()
    # Read again: a fresh snapshot and a watch from after it work.
    again, items = store.snapshot(Mirror.prefixes())
    assert len(items) == 3
    ids = store.watch_prefixes(again + 1, events.put, Mirror.prefixes())
    store.client.put(keys.sub("s" * 24), codec.encode_subscription(subscription(1)))
    store.client.put(keys.watcher_sub(ALICE, "s" * 24), b"{}")  # not watched
    store.client.put(keys.leg(ALICE, "ks1", "leg-9"), b"{}")
    got: list[str] = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        item = events.get(timeout=5)
        assert not isinstance(item, Exception)
        got += [event.key for event in item]
    assert got == [keys.sub("s" * 24), keys.leg(ALICE, "ks1", "leg-9")]
    for watch_id in ids:
        store.cancel_watch(watch_id)
