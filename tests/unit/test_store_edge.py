"""The store at the edge, in kemi/ against a fake KSR (issue 12, findings 6, 7, 8, 15):
lost races retried, a slow store measured and waited for, a notifier whose lease lapsed
sends nothing until it has a new epoch, a directory copy that lags asks the store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from statestore import codec, keys
from statestore.domain.errors import SipError, StoreUnavailable
from statestore.domain.model import Binding
from statestore.etcd import EtcdStore
from statestore.memory import MemoryStore
from tests.fakeksr import FakeContext, FakeKSR, back_htables, install
from tests.unit import test_directory_copy as copy
from tests.unit import test_notifier as notifier_lab


@pytest.fixture
def ksr() -> Iterator[FakeKSR]:
    fake = install()
    back_htables(fake)
    yield fake


# --- lost races (finding 7) ------------------------------------------------------------------


def test_a_lost_race_is_tried_again_after_a_jittered_pause_until_it_wins(ksr: FakeKSR) -> None:
    import blf_context

    clock, pauses = [0.0], []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    attempts = []
    for attempt in blf_context.lost_races(clock=lambda: clock[0], sleep=sleep, draw=lambda: 0.5):
        attempts.append(attempt)
        if attempt == 5:  # the sixth attempt wins
            break
    assert attempts == [0, 1, 2, 3, 4, 5]
    assert pauses == pytest.approx([0.002, 0.004, 0.008, 0.016, 0.025])


def test_races_lost_past_the_budget_are_a_503_with_retry_after_never_a_500(ksr: FakeKSR) -> None:
    import blf_context

    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += 1.0  # a store so contended that every round takes a second

    with pytest.raises(SipError) as refused:
        for _ in blf_context.lost_races(clock=lambda: clock[0], sleep=sleep, draw=lambda: 1.0):
            pass
    assert (refused.value.status, "Retry-After" in refused.value.headers) == (503, True)


# --- a slow store (finding 8) -----------------------------------------------------------------


def test_100_trying_goes_out_before_the_store_only_when_it_was_slow_lately(
    ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blf_context

    monkeypatch.setattr(blf_context.time, "monotonic", lambda: 1000.0)
    assert not blf_context.trying_if_store_slow()  # nothing measured
    blf_context.share_round_trip(999.0, 0.004)
    assert not blf_context.trying_if_store_slow()
    blf_context.share_round_trip(999.0, 0.31)
    assert blf_context.trying_if_store_slow()
    assert ksr.calls_of("sl.send_reply") == [(100, "Trying")]
    blf_context.share_round_trip(900.0, 0.31)  # 100 s ago: says nothing any more
    assert not blf_context.trying_if_store_slow()


def test_requests_wait_for_a_store_measured_slow_instead_of_giving_up_on_it(
    ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blf_context

    monkeypatch.setattr(blf_context.time, "monotonic", lambda: 1000.0)
    store = EtcdStore("127.0.0.1:1", timeout=0.5)
    handle = blf_context.StoreHandle("", store)
    assert handle.store.timeout == 0.5
    blf_context.share_round_trip(999.5, 0.6)  # above BLF_STORE_TIMEOUT, and answering
    assert handle.store.timeout == pytest.approx(2.3)
    blf_context.share_round_trip(999.9, 0.002)
    assert handle.store.timeout == 0.5


class SlowStore(MemoryStore):
    """The shared in-memory store, each lease refresh taking `round_trip` of the test's clock."""

    def __init__(self, clock: list[float], round_trip: float) -> None:
        super().__init__()
        self.clock, self.round_trip = clock, round_trip

    def refresh_lease(self, lease_id: int) -> bool:
        self.clock[0] += self.round_trip
        return super().refresh_lease(lease_id)


def test_the_lease_keeper_shares_the_round_trip_and_when_etcd_confirmed_the_lease(
    ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blf_context
    import blf_lease

    clock = [100.0]
    store = SlowStore(clock, 0.6)
    keeper = blf_lease.LeaseKeeper(FakeContext(store), clock=lambda: clock[0], store=store)  # type: ignore[arg-type]
    keeper.tick()  # grants
    clock[0] += 10
    keeper.tick()  # refreshes: 0.6 s, slower than BLF_STORE_TIMEOUT, and answered
    assert blf_context.shared_lease_confirmed() == (1, pytest.approx(110.0))
    assert blf_context.shared_round_trip(clock[0]) == pytest.approx(0.6)
    assert "store slow, round trip 0.600s" in ksr.logged("warn")
    assert not keeper.ctx.store_down(), "slow but answering is not down"
    store.round_trip = 0.003
    clock[0] += 10
    keeper.tick()
    assert "store fast again" in ksr.logged("info")


# --- a notifier whose lease lapsed (finding 6) --------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    import blf_notifier

    monkeypatch.setattr(blf_notifier.time, "monotonic", lambda: now[0])
    return now


def test_a_notifier_whose_lease_lapsed_sends_nothing_until_a_new_epoch_and_a_fresh_read(
    ksr: FakeKSR, clock: list[float]
) -> None:
    import blf_context

    blf_context.share_lease_confirmed(7, clock[0])
    notifier, store = notifier_lab.lab(ksr)
    notifier.tick()  # epoch 2, synced, the subscription's state sent
    assert notifier_lab.cseqs(ksr) == [65537]
    ksr.calls.clear()
    # Frozen 12 s (SIGSTOP): the lease (TTL 6) may have expired; another instance may have
    # taken over. On thaw the watch hands over a change made meanwhile.
    clock[0] += 12
    assert store.watching()
    store.write_key(keys.leg(notifier_lab.ALICE, "ks1", "leg-1"), codec.encode_leg(notifier_lab.LEG))
    notifier.tick()
    assert notifier_lab.cseqs(ksr) == [], "nothing sent on a lease that may be gone"
    assert "not confirmed for 12.0s" in ksr.logged("warn")
    snapshots = store.snapshots
    # The lease keeper found the lease expired and took a new one: a new epoch, a fresh read,
    # and numbers from the new epoch (above any other instance's), not on from the old ones.
    blf_context.share_lease_confirmed(8, clock[0])
    notifier.tick()
    assert store.snapshots == snapshots + 1
    assert notifier_lab.cseqs(ksr) == [2 * 65536 + 1]


def test_a_notifier_stops_between_two_notifies_when_its_lease_goes_unconfirmed(
    ksr: FakeKSR, clock: list[float]
) -> None:
    import blf_context

    blf_context.share_lease_confirmed(7, clock[0])
    notifier, _ = notifier_lab.lab(ksr)
    notifier.tick()
    assert notifier._may_send(clock[0] + 5.9)
    assert not notifier._may_send(clock[0] + 6.0)
    blf_context.share_lease_confirmed(8, clock[0])
    assert not notifier._may_send(clock[0]), "another lease than the one it read its subscriptions under"


# --- a directory copy that lags (finding 15) ------------------------------------------------------


def _copy(ksr: FakeKSR) -> tuple[Any, Any, copy.Store]:
    return copy.setup(ksr)


def test_an_account_created_while_the_copy_resyncs_is_asked_of_the_store_not_refused(ksr: FakeKSR) -> None:
    """The flaky 401 of issue 12 (finding 15): after an etcd outage the keeper's watch broke
    and its resync was retried each second; an account created meanwhile was missing from
    the copy, which answered "no such account" (401 for correct credentials)."""
    keeper, view, store = _copy(ksr)
    keeper.tick()
    assert store.watching()
    store.break_watches(RuntimeError("etcd gone"))
    store.fail = True
    keeper.tick()  # watch broken; resync fails: the copy stays as it was
    store.fail = False
    store.write_key(keys.account("dora@acme.example"), codec.encode({**copy.ALICE.to_dict(), "user": "dora"}))
    store.calls.clear()
    found = view.account_record("dora@acme.example", store_required=True)
    assert found is not None and found.aor == "dora@acme.example"
    assert store.calls == ["get_account dora@acme.example"]
    assert view.account("acme.example", "alice") == copy.ALICE.aor  # what the copy has is served


def test_a_miss_in_a_lagging_copy_the_store_cannot_answer_is_a_503_then_the_copy_stands(ksr: FakeKSR) -> None:
    class Unreachable(copy.Store):
        def get_account(self, aor: str) -> Any:
            self.calls.append(f"get_account {aor}")
            raise StoreUnavailable("etcd down")

    store = Unreachable(copy.directory_items())
    ctx = FakeContext(store, cache=copy.Cache())
    import blf_directory
    import blf_directory_keeper

    keeper, view = blf_directory_keeper.Keeper(ctx), blf_directory.SharedDirectory(ctx)  # type: ignore[arg-type]
    keeper.tick()
    assert store.watching()
    store.break_watches(RuntimeError("etcd gone"))
    keeper.tick()
    with pytest.raises(StoreUnavailable):  # answered 503, not 401
        view.account_record("dora@acme.example", store_required=True)
    assert ctx.down, "the store is flagged down for the instance's other requests"
    store.calls.clear()
    # Known down: the copy is all there is; calls keep being routed from it, REGISTER and
    # SUBSCRIBE get 503 before any lookup.
    assert view.account_record("dora@acme.example") is None
    assert view.account("acme.example", "alice") == copy.ALICE.aor
    assert store.calls == []


def test_a_domain_missing_from_a_lagging_copy_is_not_asked_of_the_store(ksr: FakeKSR) -> None:
    """Domains are looked up before any challenge: a flood of made-up From domains while
    the copy resyncs must not become store reads (only accounts, read after a valid
    nonce of ours, are asked)."""
    keeper, view, store = _copy(ksr)
    keeper.tick()
    assert store.watching()
    store.break_watches(RuntimeError("etcd gone"))
    store.fail = True
    keeper.tick()
    store.fail = False
    store.calls.clear()
    assert view.get("made-up.example") is None
    assert view.get("acme.example") is not None  # what the copy has is served
    assert store.calls == []


def test_a_miss_in_a_current_copy_is_final_and_costs_no_store_read(ksr: FakeKSR) -> None:
    keeper, view, store = _copy(ksr)
    keeper.tick()
    store.calls.clear()
    assert view.account_record("nobody@acme.example", store_required=True) is None
    assert store.calls == []


def _binding(contact: str, expires_at: float) -> Binding:
    return Binding(account=copy.ALICE.aor, contact=contact, expires_at=expires_at, call_id="c", cseq=1, instance="ks2")


def test_the_copy_holds_every_accounts_bindings_for_calls_without_a_store_read(ksr: FakeKSR) -> None:
    items = copy.directory_items()
    one, two = _binding("sip:alice@192.0.2.1", 2000.0), _binding("sip:alice@192.0.2.2", 2000.0)
    items[keys.reg(copy.ALICE.aor, "b1")] = codec.encode_binding(one)
    keeper, view, store = copy.setup(ksr, items)
    assert view.bindings(copy.ALICE.aor) is None  # not loaded: the copy cannot say
    keeper.tick()
    assert view.bindings(copy.ALICE.aor) == [one]
    assert view.bindings("nobody@acme.example") == []  # current: none
    assert store.watching()
    store.write_key(keys.reg(copy.ALICE.aor, "b2"), codec.encode_binding(two))
    keeper.tick()
    assert sorted(b.contact for b in view.bindings(copy.ALICE.aor)) == [one.contact, two.contact]
    store.delete_key(keys.reg(copy.ALICE.aor, "b1"))
    store.delete_key(keys.reg(copy.ALICE.aor, "b2"))
    keeper.tick()
    assert view.bindings(copy.ALICE.aor) == []
    store.break_watches(RuntimeError("watch broken"))
    store.fail = True
    keeper.tick()
    assert view.bindings(copy.ALICE.aor) is None, "a copy not known current cannot say there are none"


def test_a_call_takes_its_callees_bindings_from_the_copy_then_memcached_never_a_slow_store(
    ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch
) -> None:
    import blf_calls
    import blf_context

    monkeypatch.setattr(blf_calls.time, "monotonic", lambda: 1000.0)
    cached = _binding("sip:alice@192.0.2.9", 2000.0)

    class Cache(copy.Cache):
        def get_bindings(self, aor: str) -> list[Binding]:
            return [cached] if aor == copy.ALICE.aor else []

    class Store(copy.Store):
        def bindings_of(self, aor: str) -> list[Binding]:
            self.calls.append(f"bindings_of {aor}")
            return super().bindings_of(aor)

    store = Store(copy.directory_items())
    ctx = FakeContext(store, cache=Cache())
    import blf_directory

    monkeypatch.setattr(blf_directory, "_directory", blf_directory.SharedDirectory(ctx))  # type: ignore[arg-type]
    assert blf_calls._bindings(ctx, copy.ALICE.aor) == [cached]  # type: ignore[arg-type]
    assert blf_calls._bindings(ctx, "nobody@acme.example") == []  # type: ignore[arg-type]
    assert store.calls == ["bindings_of nobody@acme.example"], "a copy that cannot say: the store, once"
    store.calls.clear()
    blf_context.share_round_trip(999.0, 0.3)
    assert blf_calls._bindings(ctx, "nobody@acme.example") == []  # type: ignore[arg-type]
    assert store.calls == [], "never a store read while the store is slow"
