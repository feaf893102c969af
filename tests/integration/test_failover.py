"""Failover between the members of a real 3-member etcd cluster (statestore/etcd_failover.py).

The cluster is private to this module, on free loopback ports. Each test takes members away
(SIGKILL, SIGSTOP) and gives them back before it ends.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.etcd_cluster import ETCD_BINARY, EtcdCluster, Member
from statestore import keys
from statestore.domain.errors import StoreUnavailable
from statestore.domain.model import Account
from statestore.etcd_store import EtcdStore, WatchEvent

START_TIMEOUT = 30.0
TIMEOUT = 0.5


class Cluster(EtcdCluster):
    def __init__(self, root: Path) -> None:
        super().__init__(root, "blf-itest-failover")

    def kill(self, member: Member) -> None:
        assert member.process is not None
        member.process.send_signal(signal.SIGCONT)
        member.process.kill()
        member.process.wait(10)
        member.process = None

    def healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Every member answers and the cluster has a leader (a write on each member)."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            store = EtcdStore(member.client, timeout=1.0)
            try:
                while True:
                    try:
                        store.domains()
                        break
                    except StoreUnavailable:
                        if time.monotonic() > deadline:
                            raise
            finally:
                store.close()

    def leader(self) -> Member:
        store = EtcdStore(self.members[0].client, timeout=2.0)
        try:
            status = store.client.pool.current.client.status()
            leader_id = status.leader.id
        finally:
            store.close()
        for member in self.members:
            probe = EtcdStore(member.client, timeout=2.0)
            try:
                if probe.member_status(member.client).member_id == leader_id:
                    return member
            finally:
                probe.close()
        raise AssertionError("no member is the leader")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not os.path.exists(ETCD_BINARY):
        pytest.fail(f"etcd is not installed at {ETCD_BINARY}: run `make setup`")
    subject = Cluster(tmp_path_factory.mktemp("cluster"))
    for member in subject.members:
        subject.start(member)
    try:
        subject.healthy()
        yield subject
    finally:
        for member in subject.members:
            if member.process is not None:
                subject.kill(member)


@pytest.fixture
def whole(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster with all three members up, before and after the test."""
    cluster.revive()
    cluster.healthy()
    yield cluster
    cluster.revive()
    cluster.healthy()


def account(user: str) -> Account:
    return Account(user=user, domain="failover.example", ha1="0" * 32)


def timed(action: object) -> float:
    started = time.monotonic()
    action()  # type: ignore[operator]
    return time.monotonic() - started


def test_a_killed_member_in_use_is_left_within_an_election(whole: Cluster) -> None:
    """Killed, the member in use costs a request one deadline more; when it was the leader,
    requests fail until the others elect a new one (election timeout 1 s), not after."""
    store = EtcdStore(whole.endpoints, timeout=TIMEOUT)
    try:
        store.add_domain("failover.example")
        in_use = store.member_in_use()
        victim = next(member for member in whole.members if member.client == in_use)
        whole.kill(victim)
        back = timed(lambda: _until_answered(store, 10))
        assert store.member_in_use() != in_use
        after = [timed(lambda: store.get_account("alice@failover.example")) for _ in range(20)]
        assert store.get_account("alice@failover.example") is not None
    finally:
        store.close()
    assert back < 1.0 + 2 * TIMEOUT + 1.0, f"requests were answered again {back:.2f}s after the kill"
    assert max(after) < TIMEOUT, f"requests after the failover took up to {max(after):.2f}s"


def _until_answered(store: EtcdStore, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not _answers(store, "alice"):
        assert time.monotonic() < deadline, f"no answer within {seconds}s"


def test_a_frozen_member_in_use_is_left_after_one_deadline(whole: Cluster) -> None:
    store = EtcdStore(whole.endpoints, timeout=TIMEOUT)
    try:
        store.add_domain("failover.example")
        in_use = store.member_in_use()
        victim = next(member for member in whole.members if member.client == in_use)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGSTOP)
        first = timed(lambda: store.put_account(account("bob")))
        assert store.member_in_use() != in_use
        assert store.get_account("bob@failover.example") is not None
    finally:
        store.close()
    assert first < 2 * TIMEOUT + 1.5, f"the first request after the freeze took {first:.2f}s"


def test_two_members_down_is_unavailable_then_back_without_a_new_client(whole: Cluster) -> None:
    store = EtcdStore(whole.endpoints, timeout=TIMEOUT)
    try:
        store.add_domain("failover.example")
        for member in whole.members[:2]:
            whole.kill(member)
        # The survivor serves until its election timeout (1 s) passes without a leader.
        deadline = time.monotonic() + 10
        while _answers(store):
            assert time.monotonic() < deadline, "the survivor still answers alone"
        refused = timed(lambda: _answers(store))
        assert refused < 3 * TIMEOUT + 0.5, f"refusing took {refused:.2f}s"
        for member in whole.members[:2]:
            whole.start(member)
        whole.healthy()
        store.put_account(account("carol"))
        assert store.get_account("carol@failover.example") is not None
    finally:
        store.close()


def _answers(store: EtcdStore, user: str = "dave") -> bool:
    try:
        store.put_account(account(user))
    except StoreUnavailable:
        return False
    return True


def test_a_lease_outlives_the_member_it_was_granted_on(whole: Cluster) -> None:
    store = EtcdStore(whole.endpoints, timeout=TIMEOUT)
    try:
        lease = store.grant_lease(3)
        in_use = store.member_in_use()
        whole.kill(next(member for member in whole.members if member.client == in_use))
        # A lease keeper's pace: a refresh a second, for longer than the lease's TTL. During
        # the election that may follow the kill, a refresh may fail: not the next one.
        ends = time.monotonic() + 5
        refreshed = 0
        while time.monotonic() < ends:
            try:
                assert store.refresh_lease(lease), "the lease is known to the other members"
                refreshed += 1
            except StoreUnavailable:
                assert refreshed == 0, "a refresh failed after the cluster answered again"
            time.sleep(1)
        assert refreshed >= 3
        store.revoke_lease(lease)
    finally:
        store.close()


def test_a_watch_broken_by_its_member_resumes_on_another_without_missing_or_repeating(whole: Cluster) -> None:
    store = EtcdStore(whole.endpoints, timeout=TIMEOUT)
    events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
    try:
        store.add_domain("failover.example")
        revision = store.revision()
        store.watch(revision + 1, events.put, keys.ACCOUNTS)
        store.put_account(account("w1"))
        seen = [event for event in _events(events, 1)]
        in_use = store.member_in_use()
        whole.kill(next(member for member in whole.members if member.client == in_use))
        broken = events.get(timeout=10)
        assert isinstance(broken, Exception), f"the watch did not break: {broken}"
        writer = EtcdStore(whole.endpoints, timeout=TIMEOUT)
        try:
            for user in ("w2", "w3"):  # written while nobody watches
                writer.put_account(account(user))
        finally:
            writer.close()
        last = max(event.revision for event in seen)
        store.watch(last + 1, events.put, keys.ACCOUNTS)
        assert store.member_in_use() != in_use
        store.put_account(account("w4"))
        seen += _events(events, 3)
    finally:
        store.close()
    users = [event.key.rsplit("/", 1)[-1] for event in seen]
    assert users == [f"w{n}@failover.example" for n in (1, 2, 3, 4)], users


def _events(events: queue.Queue[list[WatchEvent] | Exception], count: int) -> list[WatchEvent]:
    found: list[WatchEvent] = []
    while len(found) < count:
        item = events.get(timeout=10)
        assert not isinstance(item, Exception), f"the watch broke: {item}"
        found += item
    return found


def test_a_lease_is_refreshed_through_another_member_while_the_one_in_use_is_frozen(whole: Cluster) -> None:
    """LeaseKeepAlive is a stream: its request was used up by the frozen member's attempt and
    the other members got none (helper's reproducer): each member gets it afresh now."""
    store = EtcdStore(whole.endpoints, timeout=TIMEOUT)
    try:
        lease = store.grant_lease(3)
        in_use = store.member_in_use()
        victim = next(member for member in whole.members if member.client == in_use)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGSTOP)
        refreshed = [store.refresh_lease(lease) for _ in range(3)]
        assert refreshed == [True, True, True]
        assert store.member_in_use() != in_use
    finally:
        store.close()


def test_watch_ids_stay_unique_across_members_and_a_new_client_starts_where_the_last_answered(
    whole: Cluster,
) -> None:
    store = EtcdStore(whole.endpoints, timeout=TIMEOUT)
    events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
    try:
        store.add_domain("failover.example")
        first = store.watch(store.revision() + 1, events.put, keys.ACCOUNTS)
        in_use = store.member_in_use()
        whole.kill(next(member for member in whole.members if member.client == in_use))
        assert isinstance(events.get(timeout=15), Exception)
        revision = _retrying(store.revision, 10)  # through the election, when it was the leader
        second = store.watch(revision + 1, events.put, keys.ACCOUNTS)
        assert second != first
        store.cancel_watch(first)  # the old one: the new one keeps delivering
        store.put_account(account("w9"))
        assert _events(events, 1)[0].key.endswith("w9@failover.example")
        answered = store.member_in_use()
        store.close()
        assert store.member_in_use() == answered, "a new client starts at the member that answered last"
    finally:
        store.close()


def _retrying(read: Callable[[], int], seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except StoreUnavailable:
            assert time.monotonic() < deadline, f"no answer within {seconds}s"
