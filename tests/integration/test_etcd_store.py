"""EtcdStore against a real etcd: the guarantees the KEMI modules and the notifier rely on."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from bench.etcd_cluster import free_ports
from statestore import keys
from statestore.domain.errors import StoreUnavailable
from statestore.domain.legbook import WriteOutcome
from statestore.domain.legs import CallParties, advance, initial_legs
from statestore.domain.model import Binding, Leg, LegState, Subscription
from statestore.etcd_store import REGISTRATION_GRACE_SECONDS, EtcdStore, WatchEvent
from statestore.mirror import Mirror

pytestmark = [
    pytest.mark.integration,
    # python-etcd3 0.12 cannot stop its watch thread: once EtcdStore.close() closes the channel,
    # the thread retries Watch on it and dies with "Cannot invoke RPC: Channel closed!". That
    # happens in the store fixture's teardown, sometimes after the next test has started.
    pytest.mark.filterwarnings(
        r"ignore:Exception in thread etcd3_watch_[\s\S]*Cannot invoke RPC. Channel closed"
        r":pytest.PytestUnhandledThreadExceptionWarning"
    ),
]

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
LONG_TTL = 60


# --- helpers ----------------------------------------------------------------------------------


def call(caller: str = ALICE, callee: str = BOB, instance: str = "ks1") -> tuple[Leg, Leg]:
    """Both legs of a fresh call in `trying`, version 1."""
    call_id = f"{uuid.uuid4().hex}@itest"
    parties = CallParties(
        call_id=call_id, from_tag=uuid.uuid4().hex[:8], caller=caller, callee=callee,
        caller_display="Caller", callee_display="Callee", caller_target=f"sip:{caller}",
    )
    return initial_legs(parties, instance, version=1)


def moved(legs: tuple[Leg, Leg], state: LegState, version: int) -> tuple[Leg, Leg]:
    to_tag = "" if state in (LegState.TRYING, LegState.PROCEEDING) else "callee-tag"
    return advance(legs, state, version, to_tag=to_tag, callee_target="sip:callee@127.0.0.1:5099")


def subscription(sub_id: str | None = None, presentity: str = BOB, **changes: Any) -> Subscription:
    sub_id = sub_id or uuid.uuid4().hex
    base = Subscription(
        sub_id=sub_id, event="dialog", presentity=presentity, entity=f"sip:{presentity}",
        watcher=ALICE, watcher_contact="sip:alice@127.0.0.1:5090", call_id=f"{sub_id}@itest",
        local_tag="to-tag", remote_tag="from-tag", local_uri=f"sip:{presentity}",
        remote_uri=f"sip:{ALICE}", route_set=("<sip:127.0.0.1:5099;lr>",),
        expires_at=time.time() + 3600, owner="ks1", accept=("application/dialog-info+xml",),
    )
    return replace(base, **changes)


def binding(aor: str = BOB, contact: str = "sip:bob@127.0.0.1:5092", seconds: int = 60) -> Binding:
    return Binding(
        account=aor, contact=contact, expires_at=time.time() + seconds,
        call_id=f"{uuid.uuid4().hex}@itest", cseq=1, instance="ks1",
    )


def by_key(legs: list[Leg]) -> dict[str, Leg]:
    return {keys.leg(leg.account, leg.instance, leg.leg_id): leg for leg in legs}


def lease_of(store: EtcdStore, key: str) -> int:
    _, meta = store.client.get(key)
    assert meta is not None, f"{key} is not stored"
    return int(meta.lease_id)


def stored(store: EtcdStore, legs: tuple[Leg, Leg]) -> tuple[list[Leg], list[Leg]]:
    return store.legs_of(legs[0].account), store.legs_of(legs[1].account)


class Collector:
    """A watch callback: the watch thread queues each batch, the test thread waits on the queue.

    Only the test thread reads the queue and `events`/`errors`, so they need no lock.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
        self.events: list[WatchEvent] = []
        self.errors: list[Exception] = []

    def __call__(self, batch: list[WatchEvent] | Exception) -> None:
        self._queue.put(batch)

    def _take(self, timeout: float) -> list[WatchEvent] | None:
        """Wait up to timeout for the next batch, keep it and return its events; None if none came."""
        try:
            batch = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if isinstance(batch, Exception):
            self.errors.append(batch)
            return []
        self.events.extend(batch)
        return batch

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Take batches as they arrive until predicate holds; fail after timeout seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self._take(deadline - time.monotonic()) is None:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; "
                    f"saw {[(e.key, e.value is None, e.revision) for e in self.events]}, errors {self.errors}"
                )

    def quiet(self, timeout: float) -> list[WatchEvent | Exception]:
        """Wait up to timeout for a change; what arrived (empty when the store stayed unchanged)."""
        errors_before = len(self.errors)
        got = self._take(timeout)
        return [*(got or []), *self.errors[errors_before:]]

    def deleted(self) -> set[str]:
        return {event.key for event in self.events if event.value is None}

    def reached(self, revision: int) -> bool:
        return any(event.revision >= revision for event in self.events)

    def wait_for_deletes(self, wanted: set[str], timeout: float, what: str) -> None:
        self.wait_for(lambda: wanted <= self.deleted(), timeout, what)

    def wait_for_revision(self, revision: int, timeout: float = 10) -> None:
        self.wait_for(lambda: self.reached(revision), timeout, f"watch events up to revision {revision}")


@contextmanager
def watching(store: EtcdStore, prefix: str = keys.ROOT) -> Iterator[tuple[int, Collector]]:
    """Watch prefix from just after a snapshot: every later change reaches the collector."""
    revision, _ = store.snapshot()
    collector = Collector()
    watch_id = store.watch(revision + 1, collector, prefix)
    try:
        yield revision, collector
    finally:
        store.cancel_watch(watch_id)


def leg_keys(legs: tuple[Leg, ...]) -> set[str]:
    return {keys.leg(leg.account, leg.instance, leg.leg_id) for leg in legs}


def mirror_of(store: EtcdStore) -> tuple[int, Mirror]:
    revision, items = store.snapshot()
    mirror = Mirror()
    mirror.load((kv.key, kv.value, kv.mod_revision) for kv in items)
    return revision, mirror


def assert_mirrors_equal(actual: Mirror, expected: Mirror) -> None:
    assert actual.legs == expected.legs
    assert actual.bindings == expected.bindings
    assert actual.subs == expected.subs
    assert actual.instances == expected.instances


# --- call legs --------------------------------------------------------------------------------


def test_create_writes_both_legs_under_the_lease(store: EtcdStore) -> None:
    legs = call()
    lease = store.grant_lease(LONG_TTL)

    assert store.write_legs(legs, lease, create=True) is WriteOutcome.WRITTEN

    assert stored(store, legs) == ([legs[0]], [legs[1]])
    for leg in legs:
        assert lease_of(store, keys.leg(leg.account, leg.instance, leg.leg_id)) == lease
    store.revoke_lease(lease)
    assert stored(store, legs) == ([], [])


def test_second_create_of_the_same_legs_is_refused_and_changes_nothing(store: EtcdStore) -> None:
    legs = call()
    lease = store.grant_lease(LONG_TTL)
    assert store.write_legs(legs, lease, create=True) is WriteOutcome.WRITTEN

    assert store.write_legs(moved(legs, LegState.CONFIRMED, 5), lease, create=True) is WriteOutcome.EXISTS
    assert stored(store, legs) == ([legs[0]], [legs[1]])


def test_create_is_all_or_nothing_when_one_leg_exists(store: EtcdStore) -> None:
    legs = call()
    lease = store.grant_lease(LONG_TTL)
    assert store.write_legs(legs[:1], lease, create=True) is WriteOutcome.WRITTEN

    assert store.write_legs(legs, lease, create=True) is WriteOutcome.EXISTS
    assert stored(store, legs) == ([legs[0]], [])


def test_a_later_state_wins(store: EtcdStore) -> None:
    legs = call()
    lease = store.grant_lease(LONG_TTL)
    store.write_legs(legs, lease, create=True)

    early = moved(legs, LegState.EARLY, 2)
    assert store.write_legs(early, lease, create=False) is WriteOutcome.WRITTEN
    assert stored(store, legs) == ([early[0]], [early[1]])

    confirmed = moved(early, LegState.CONFIRMED, 3)
    assert store.write_legs(confirmed, lease, create=False) is WriteOutcome.WRITTEN
    assert stored(store, legs) == ([confirmed[0]], [confirmed[1]])


def test_an_earlier_state_loses_whatever_its_counter_or_clock(store: EtcdStore) -> None:
    # Issue 6, finding 4: the 180 processed after the 200 (and written with a later
    # timestamp, or a larger counter) left the legs `early` for the rest of the call.
    legs = call()
    lease = store.grant_lease(LONG_TTL)
    store.write_legs(legs, lease, create=True)
    confirmed = moved(legs, LegState.CONFIRMED, 3)
    store.write_legs(confirmed, lease, create=False)

    for state, version in [(LegState.EARLY, 4), (LegState.EARLY, 2), (LegState.PROCEEDING, 10**9)]:
        assert store.write_legs(moved(legs, state, version), lease, create=False) is WriteOutcome.STALE
    assert store.write_legs(confirmed, lease, create=False) is WriteOutcome.STALE, "a retried write is harmless"
    assert stored(store, legs) == ([confirmed[0]], [confirmed[1]])


def test_write_counters_order_numerically_within_a_state(store: EtcdStore) -> None:
    legs = call()
    lease = store.grant_lease(LONG_TTL)
    store.write_legs(moved(legs, LegState.EARLY, 9), lease, create=True)

    ten = moved(legs, LegState.EARLY, 10)
    assert store.write_legs(ten, lease, create=False) is WriteOutcome.WRITTEN
    assert store.write_legs(moved(legs, LegState.EARLY, 9), lease, create=False) is WriteOutcome.STALE
    assert stored(store, legs) == ([ten[0]], [ten[1]])


def test_terminated_legs_stay_under_their_short_lease_then_go_without_a_request(store: EtcdStore) -> None:
    legs = call()
    lease = store.grant_lease(LONG_TTL)
    store.write_legs(legs, lease, create=True)
    ending_lease = store.grant_lease(2)
    ended = moved(legs, LegState.TERMINATED, 4)

    with watching(store) as (_, collector):
        assert store.write_legs(ended, ending_lease, create=False) is WriteOutcome.WRITTEN
        assert stored(store, legs) == ([ended[0]], [ended[1]])
        assert store.legs_on(lease) == {}, "no longer the instance's live legs"
        collector.wait_for_deletes(leg_keys(legs), timeout=15, what="terminated legs to expire")
    assert stored(store, legs) == ([], [])


def test_nothing_relights_an_ended_call(store: EtcdStore) -> None:
    legs = call()
    lease = store.grant_lease(LONG_TTL)
    store.write_legs(legs, lease, create=True)
    store.write_legs(moved(legs, LegState.TERMINATED, 4), lease, create=False)

    for state, version in [(LegState.EARLY, 2), (LegState.CONFIRMED, 3), (LegState.CONFIRMED, 6)]:
        assert store.write_legs(moved(legs, state, version), lease, create=False) is WriteOutcome.STALE
    store.delete_legs(sorted(leg_keys(legs)))
    # Gone (as its lease ends): an update never creates; the writer is told.
    assert store.write_legs(moved(legs, LegState.CONFIRMED, 7), lease, create=False) is WriteOutcome.MISSING
    assert stored(store, legs) == ([], [])


def test_legs_on_a_lease_are_the_instance_legs_and_only_those(store: EtcdStore) -> None:
    mine, theirs = store.grant_lease(LONG_TTL), store.grant_lease(LONG_TTL)
    first, second = call(instance="ks1"), call(CAROL, ALICE, instance="ks1")
    other = call(instance="ks2")
    store.write_legs(first, mine, create=True)
    store.write_legs(second, mine, create=True)
    store.write_legs(other, theirs, create=True)
    store.announce_instance("ks1", {"sip": "x"}, mine)

    assert store.legs_on(mine) == {
        leg.leg_id: keys.leg(leg.account, leg.instance, leg.leg_id) for leg in (*first, *second)
    }


def test_legs_of_returns_every_leg_of_that_account_and_only_its_own(store: EtcdStore) -> None:
    lease = store.grant_lease(LONG_TTL)
    first = call(ALICE, BOB, instance="ks1")
    second = call(CAROL, ALICE, instance="ks2")
    lookalike = call("alice@example.com.evil", "bob@example.comx", instance="ks1")
    for legs in (first, second, lookalike):
        assert store.write_legs(legs, lease, create=True) is WriteOutcome.WRITTEN

    assert by_key(store.legs_of(ALICE)) == by_key([first[0], second[1]])
    assert by_key(store.legs_of(BOB)) == by_key([first[1]])
    assert by_key(store.legs_of(CAROL)) == by_key([second[0]])
    assert store.legs_of("nobody@example.com") == []


# --- leases -----------------------------------------------------------------------------------


def test_legs_disappear_when_their_lease_is_not_refreshed(store: EtcdStore) -> None:
    legs = call()
    with watching(store) as (_, collector):
        lease = store.grant_lease(1)  # etcd rounds this up to its minimum TTL (2 s by default)
        store.write_legs(legs, lease, create=True)
        assert stored(store, legs) == ([legs[0]], [legs[1]])

        collector.wait_for_deletes(leg_keys(legs), timeout=15, what="legs to expire")
    assert collector.errors == []
    assert stored(store, legs) == ([], [])


def test_refresh_lease_keeps_legs_alive_past_the_ttl(store: EtcdStore) -> None:
    legs = call()
    ttl = 2
    lease = store.grant_lease(ttl)
    store.write_legs(legs, lease, create=True)

    with watching(store) as (_, collector):  # from after the legs were written: nothing may change
        until = time.monotonic() + ttl + 1.5
        while time.monotonic() < until:
            assert store.refresh_lease(lease) is True
            assert stored(store, legs) == ([legs[0]], [legs[1]])
            # Refresh cadence, well inside the TTL: wait for a change to the legs, which must not come.
            assert collector.quiet(0.4) == [], "the legs changed while their lease was kept alive"
        assert store.refresh_lease(lease) is True
        assert stored(store, legs) == ([legs[0]], [legs[1]])


def test_refresh_lease_on_an_expired_lease_returns_false(store: EtcdStore) -> None:
    legs = call()
    with watching(store) as (_, collector):
        lease = store.grant_lease(1)
        store.write_legs(legs, lease, create=True)
        collector.wait_for_deletes(leg_keys(legs), timeout=15, what="lease to expire")
    assert stored(store, legs) == ([], [])

    assert store.refresh_lease(lease) is False


def test_refresh_lease_on_a_revoked_lease_returns_false(store: EtcdStore) -> None:
    lease = store.grant_lease(LONG_TTL)
    assert store.refresh_lease(lease) is True
    store.revoke_lease(lease)

    assert store.refresh_lease(lease) is False


# --- registrations ----------------------------------------------------------------------------


def test_apply_bindings_writes_bindings_that_expire_with_their_own_lease(store: EtcdStore) -> None:
    short, long = binding(contact="sip:bob@127.0.0.1:5092", seconds=1), binding(contact="sip:bob@10.0.0.2")
    with watching(store) as (_, collector):
        store.apply_bindings([("short", short, 1), ("long", long, LONG_TTL)], [], BOB)
        written = time.monotonic()

        assert sorted(store.bindings_of(BOB), key=lambda b: b.contact) == sorted(
            [short, long], key=lambda b: b.contact
        )
        short_lease, long_lease = lease_of(store, keys.reg(BOB, "short")), lease_of(store, keys.reg(BOB, "long"))
        assert short_lease != long_lease
        assert store.client.get_lease_info(short_lease).grantedTTL == 1 + REGISTRATION_GRACE_SECONDS
        assert store.client.get_lease_info(long_lease).grantedTTL == LONG_TTL + REGISTRATION_GRACE_SECONDS

        collector.wait_for_deletes({keys.reg(BOB, "short")}, timeout=15, what="the short binding to expire")
        # Not before its expiry plus the grace period (less a little slack for the clocks).
        assert time.monotonic() - written >= 1 + REGISTRATION_GRACE_SECONDS - 0.5
    assert collector.deleted() == {keys.reg(BOB, "short")}
    assert store.bindings_of(BOB) == [long]


def test_apply_bindings_removals_delete_and_upserts_replace(store: EtcdStore) -> None:
    first, second = binding(contact="sip:bob@10.0.0.1"), binding(contact="sip:bob@10.0.0.2")
    store.apply_bindings([("b1", first, LONG_TTL), ("b2", second, LONG_TTL)], [], BOB)
    store.apply_bindings([], [], ALICE)

    refreshed = binding(contact="sip:bob@10.0.0.2", seconds=120)
    store.apply_bindings([("b2", refreshed, 120)], ["b1", "never-there"], BOB)

    assert store.bindings_of(BOB) == [refreshed]
    store.apply_bindings([], ["b2"], BOB)
    assert store.bindings_of(BOB) == []
    assert store.range(keys.REGS) == []


# --- subscriptions ----------------------------------------------------------------------------


def test_create_subscription_returns_its_revision_and_refuses_a_duplicate(store: EtcdStore) -> None:
    sub = subscription()

    revision = store.create_subscription(sub)

    assert isinstance(revision, int) and revision > 0
    assert store.get_subscription(sub.sub_id) == (sub, revision)
    assert store.create_subscription(subscription(sub.sub_id, cseq=9)) is None
    assert store.get_subscription(sub.sub_id) == (sub, revision)


def test_get_subscription_returns_the_subscription_and_its_revision(store: EtcdStore) -> None:
    sub = subscription()
    assert store.get_subscription(sub.sub_id) is None
    revision = store.create_subscription(sub)

    assert store.get_subscription(sub.sub_id) == (sub, revision)
    assert store.subscriptions() == [sub]


def test_update_subscription_with_the_revision_read_returns_a_higher_revision(store: EtcdStore) -> None:
    sub = subscription()
    revision = store.create_subscription(sub)
    assert revision is not None
    newer = subscription(sub.sub_id, cseq=2, last_digest="abc")

    new_revision = store.update_subscription(newer, revision)

    assert new_revision is not None and new_revision > revision
    assert store.get_subscription(sub.sub_id) == (newer, new_revision)


def test_update_subscription_with_a_stale_revision_returns_none(store: EtcdStore) -> None:
    sub = subscription()
    stale = store.create_subscription(sub)
    assert stale is not None
    winner = subscription(sub.sub_id, cseq=2)
    current = store.update_subscription(winner, stale)
    assert current is not None

    assert store.update_subscription(subscription(sub.sub_id, cseq=3), stale) is None
    assert store.get_subscription(sub.sub_id) == (winner, current)


def test_update_subscription_does_not_create_a_deleted_one(store: EtcdStore) -> None:
    sub = subscription()
    revision = store.create_subscription(sub)
    assert revision is not None
    assert store.delete_subscription(sub, revision) is True

    assert store.update_subscription(sub, revision) is None
    assert store.get_subscription(sub.sub_id) is None


def test_delete_subscription_with_a_stale_revision_fails_and_with_the_current_one_succeeds(
    store: EtcdStore,
) -> None:
    sub = subscription()
    stale = store.create_subscription(sub)
    assert stale is not None
    current = store.update_subscription(subscription(sub.sub_id, cseq=2), stale)
    assert current is not None

    assert store.delete_subscription(sub, stale) is False
    assert store.get_subscription(sub.sub_id) is not None
    assert store.delete_subscription(sub, current) is True
    assert store.get_subscription(sub.sub_id) is None


def test_delete_subscription_without_a_revision_deletes_unconditionally(store: EtcdStore) -> None:
    sub = subscription()
    store.create_subscription(sub)

    assert store.delete_subscription(sub) is True
    assert store.get_subscription(sub.sub_id) is None


# --- watch and mirror -------------------------------------------------------------------------


def test_watch_from_a_snapshot_delivers_later_puts_and_deletes_and_a_mirror_follows(
    store: EtcdStore,
) -> None:
    lease = store.grant_lease(LONG_TTL)
    before = call(ALICE, BOB)
    store.write_legs(before, lease, create=True)
    old_sub = subscription(presentity=BOB)
    old_revision = store.create_subscription(old_sub)
    assert old_revision is not None

    revision, mirror = mirror_of(store)
    collector = Collector()
    watch_id = store.watch(revision + 1, collector)
    try:
        store.announce_instance("ks1", {"name": "ks1"}, lease)
        after = call(CAROL, ALICE)
        store.write_legs(after, lease, create=True)
        store.write_legs(moved(after, LegState.CONFIRMED, 3), lease, create=False)
        store.delete_legs(sorted(leg_keys(before)))
        store.apply_bindings([("b1", binding(aor=CAROL), LONG_TTL)], [], CAROL)
        new_sub = subscription(presentity=CAROL)
        new_revision = store.create_subscription(new_sub)
        assert new_revision is not None
        assert store.update_subscription(subscription(new_sub.sub_id, presentity=CAROL, cseq=2), new_revision)
        assert store.delete_subscription(old_sub, old_revision)
        final, _ = store.snapshot()

        collector.wait_for_revision(final)
        events = collector.events
        assert collector.errors == []
        assert all(event.revision > revision for event in events), "an event from before the snapshot"
        assert [event.revision for event in events] == sorted(event.revision for event in events)

        deleted = {event.key for event in events if event.value is None}
        put = {event.key for event in events if event.value is not None}
        assert deleted == {keys.leg(leg.account, leg.instance, leg.leg_id) for leg in before} | {
            keys.sub(old_sub.sub_id), keys.watcher_sub(ALICE, old_sub.sub_id), keys.presentity_sub(BOB, old_sub.sub_id),
        }
        assert put == {keys.leg(leg.account, leg.instance, leg.leg_id) for leg in after} | {
            keys.instance("ks1"), keys.reg(CAROL, "b1"), keys.sub(new_sub.sub_id),
            keys.watcher_sub(ALICE, new_sub.sub_id), keys.presentity_sub(CAROL, new_sub.sub_id),
        }

        for event in events:
            mirror.apply(event.key, event.value, event.revision)
        _, expected = mirror_of(store)
        assert_mirrors_equal(mirror, expected)
        assert mirror.instances == {"ks1"}
        assert set(mirror.legs) == {CAROL, ALICE}
        assert mirror.state_of(ALICE) == expected.state_of(ALICE)
    finally:
        store.cancel_watch(watch_id)


def test_watch_delivers_lease_expiry_as_deletes_and_a_mirror_follows(store: EtcdStore) -> None:
    revision, mirror = mirror_of(store)
    collector = Collector()
    watch_id = store.watch(revision + 1, collector)
    try:
        short_lease = store.grant_lease(1)
        store.announce_instance("ks2", {"name": "ks2"}, short_lease)
        legs = call(ALICE, BOB, instance="ks2")
        store.write_legs(legs, short_lease, create=True)
        store.apply_bindings(
            [("gone", binding(aor=BOB, seconds=1), 1), ("kept", binding(aor=BOB, contact="sip:b@k"), LONG_TTL)],
            [], BOB,
        )
        expiring = {keys.instance("ks2"), keys.reg(BOB, "gone")} | {
            keys.leg(leg.account, leg.instance, leg.leg_id) for leg in legs
        }

        collector.wait_for_deletes(expiring, timeout=20, what="lease-expiry deletes")
        final, _ = store.snapshot()
        collector.wait_for_revision(final)
        assert collector.errors == []

        for event in collector.events:
            mirror.apply(event.key, event.value, event.revision)
        _, expected = mirror_of(store)
        assert_mirrors_equal(mirror, expected)
        assert mirror.legs == {} and mirror.instances == set()
        assert [b.contact for b in mirror.bindings[BOB].values()] == ["sip:b@k"]
    finally:
        store.cancel_watch(watch_id)


# --- etcd unreachable -------------------------------------------------------------------------


@pytest.fixture
def unreachable() -> Iterator[EtcdStore]:
    (port,) = free_ports(1)  # bound then closed: nothing listens there
    store = EtcdStore(f"127.0.0.1:{port}", timeout=0.3)
    yield store
    store.close()


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda s: s.get_account(ALICE), id="get_account"),
        pytest.param(lambda s: s.write_legs(call(), 1, create=True), id="write_legs"),
        pytest.param(lambda s: s.snapshot(), id="snapshot"),
    ],
)
def test_an_unreachable_etcd_raises_store_unavailable_promptly(
    unreachable: EtcdStore, operation: Callable[[EtcdStore], object]
) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        operation(unreachable)
    assert time.monotonic() - started < 3


def test_blfctl_account_add_provisions_the_account_and_its_domain(etcd_endpoint, store):
    from statestore.cli import main
    from statestore.cli_directory import ha1

    assert main(["--etcd", etcd_endpoint, "account", "add", "zoe@New.Example", "--password", "pw-secret"]) == 0
    assert store.domain_exists("new.example")
    account = store.get_account("zoe@new.example")
    assert account is not None and account.ha1 == ha1("zoe", "new.example", "pw-secret")
    assert main(["--etcd", etcd_endpoint, "show", "zoe@new.example", "--json"]) == 0


def test_several_calls_are_written_in_one_request_each_under_its_own_guards(store: EtcdStore) -> None:
    """A flush of the leg writer: one request, every call its own nested transaction, so
    that one call's lost guard neither blocks nor is hidden by the others'."""
    lease = store.grant_lease(LONG_TTL)
    taken, fresh, later, gone = (call(f"caller{n}@example.com", f"callee{n}@example.com") for n in range(4))
    store.write_legs(taken, lease, create=True)
    store.write_legs(later, lease, create=True)
    confirmed = moved(later, LegState.CONFIRMED, 5)
    store.write_legs(confirmed, lease, create=False)
    outcomes = store.write_calls([
        (taken, lease, True),  # exists: refused, not written
        (fresh, lease, True),  # written
        (moved(later, LegState.EARLY, 2), lease, False),  # the store has a later state
        (moved(gone, LegState.EARLY, 2), lease, False),  # never created
    ])
    assert outcomes == [WriteOutcome.EXISTS, WriteOutcome.WRITTEN, WriteOutcome.STALE, WriteOutcome.MISSING]
    assert stored(store, fresh) == ([fresh[0]], [fresh[1]])
    assert stored(store, later) == ([confirmed[0]], [confirmed[1]])
    assert stored(store, gone) == ([], [])
    many = [call(f"c{n}@example.com", f"d{n}@example.com") for n in range(150)]  # over one request's worth
    assert store.write_calls([(legs, lease, True) for legs in many]) == [WriteOutcome.WRITTEN] * 150
    assert all(stored(store, legs) == ([legs[0]], [legs[1]]) for legs in many)
