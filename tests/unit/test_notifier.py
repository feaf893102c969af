"""The notifier process (kemi/blf_notifier.py) against a fake KSR and the in-memory store:
what it sends through tm, and what it does when tm or the store refuse."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest

from statestore import codec, keys
from statestore.domain.errors import Contended
from statestore.domain.model import Direction, Leg, LegState, Party, Subscription
from statestore.domain.subscription import SubscriptionPolicy
from statestore.memory import MemoryStore
from statestore.store import KeyValue, WatchCallback
from tests.fakeksr import FakeContext, FakeKSR, FakeSettings, install

ALICE = "alice@example.com"
# Taken when the module is collected, which can be many minutes before its tests run (the
# e2e and bench tests run first in `make test`): the records expire days later, not minutes.
NOW = time.time()
DAY = 86400
SUB = Subscription(
    sub_id="sub-1", event="dialog", presentity=ALICE, entity=f"sip:{ALICE}",
    watcher="bob@example.com", watcher_contact="sip:bob@192.0.2.20:5060", call_id="sub-call",
    local_tag="lt", remote_tag="rt", local_uri=f"sip:{ALICE}", remote_uri="sip:bob@example.com",
    route_set=(), expires_at=NOW + DAY, owner="ks1", cseq=1, version=0, epoch=1,
    received="udp:192.0.2.20:5060", flow_instance="ks1",
)
LEG = Leg(
    account=ALICE, instance="ks1", leg_id="leg-1", version=1, state=LegState.EARLY,
    direction=Direction.RECIPIENT, call_id="call-1", local_tag="", remote_tag="ftag",
    local=Party(f"sip:{ALICE}"), remote=Party("sip:carol@example.com"),
)


class NotifierStore(MemoryStore):
    """The shared in-memory store, recording snapshots (resyncs) and watches, and failing
    snapshots when told."""

    def __init__(self, items: list[tuple[str, bytes]]) -> None:
        super().__init__(items)
        self.snapshot_error: Exception | None = None
        self.snapshots = 0
        self.watched: list[tuple[str, int]] = []
        self.cancelled: list[int] = []

    def snapshot(self, prefix: str | Sequence[str] = keys.ROOT, page: int = 0) -> tuple[int, list[KeyValue]]:
        self.snapshots += 1
        if self.snapshot_error is not None:
            raise self.snapshot_error
        return super().snapshot(prefix, page)

    def watch_prefixes(self, start_revision: int, callback: WatchCallback, prefixes: Sequence[str]) -> list[int]:
        self.watched += [(prefix, start_revision) for prefix in prefixes]
        return super().watch_prefixes(start_revision, callback, prefixes)

    def cancel_watch(self, watch_id: int) -> None:
        self.cancelled.append(watch_id)
        super().cancel_watch(watch_id)


class Settings(FakeSettings):
    sip = "192.0.2.1:5060"


@pytest.fixture
def ksr(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKSR]:
    fake = install()
    import blf_notifier

    # The instance lease confirmed just now, whatever the test's clock says (the lapse
    # tests in test_notifier_ownership.py move it).
    monkeypatch.setattr(blf_notifier, "shared_lease_confirmed", lambda zone=None: (1, blf_notifier.time.monotonic()))
    yield fake


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The notifier's monotonic clock, moved by the test."""
    now = [1000.0]
    import blf_notifier

    monkeypatch.setattr(blf_notifier.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(blf_notifier.time, "time", lambda: 1_700_000_000.0 + now[0])
    return now


def lab(ksr: FakeKSR, *legs: Leg, store_type: type[NotifierStore] = NotifierStore) -> tuple[Any, Any]:
    import blf_notifier

    ksr.pvs["$shv(blf_instances)"] = '{"ks1": "192.0.2.1:5060"}'
    store = store_type([
        (keys.EPOCH, b"1"),
        (keys.instance("ks1"), codec.encode({"sip": "192.0.2.1:5060"})),
        (keys.sub(SUB.sub_id), codec.encode_subscription(SUB)),
        *((keys.leg(leg.account, leg.instance, leg.leg_id), codec.encode_leg(leg)) for leg in legs),
    ])
    return blf_notifier.Notifier(FakeContext(store, Settings(), subscriptions=SubscriptionPolicy())), store  # type: ignore[arg-type]


def hundred_watched(store: MemoryStore) -> list[Subscription]:
    """100 more presentities in the store, each watched once (p000 ... p099)."""
    many = [replace(SUB, sub_id=f"sub-{n:03}", presentity=f"p{n:03}@example.com") for n in range(100)]
    for subscription in many:
        store.write_key(keys.sub(subscription.sub_id), codec.encode_subscription(subscription))
    return many


def cseqs(ksr: FakeKSR) -> list[int]:
    """The CSeq of every NOTIFY sent through tm, in order."""
    found = []
    for method, _ruri, _nexthop, _socket, headers, _body in ksr.calls_of("tm.t_uac_send"):
        assert method == "NOTIFY"
        match = re.search(r"^CSeq: (\d+) NOTIFY\r$", headers, re.MULTILINE)
        assert match, headers
        found.append(int(match.group(1)))
    return found


def test_a_notify_tm_refuses_goes_out_a_second_later_with_the_same_cseq(ksr: FakeKSR, clock: list[float]) -> None:
    notifier, store = lab(ksr)
    notifier.tick()  # the first tick takes an epoch, syncs and NOTIFYs what it took over
    sent = cseqs(ksr)
    assert len(sent) == 1
    ksr.calls.clear()
    ksr.answers["tm.t_uac_send"] = -1  # e.g. tm out of shared memory
    clock[0] += 1.0  # past the dialog package's min_interval
    assert store.watching()
    store.write_key(keys.leg(ALICE, "ks1", "leg-1"), codec.encode_leg(LEG))
    notifier.tick()
    refused = cseqs(ksr)
    assert refused == [sent[0] + 1]
    assert "could not send 1 NOTIFYs" in ksr.logged("warn")
    ksr.calls.clear()
    ksr.answers.pop("tm.t_uac_send")
    clock[0] += 0.5
    notifier.tick()
    assert cseqs(ksr) == []  # not before its second
    clock[0] += 0.6
    notifier.tick()
    assert cseqs(ksr) == refused  # the same number: the watcher sees CSeq step by one


@pytest.mark.parametrize(("reason", "header"), [("", "timeout"), ("noresource", "noresource")])
def test_an_ended_subscription_gets_its_final_notify_with_the_reason_it_was_ended_with(
    ksr: FakeKSR, clock: list[float], reason: str, header: str
) -> None:
    notifier, store = lab(ksr)
    notifier.tick()
    ksr.calls.clear()
    assert store.watching()
    ended = replace(SUB, expires_at=time.time(), termination_reason=reason)  # unsubscribe / account removed
    store.write_key(keys.sub(SUB.sub_id), codec.encode_subscription(ended))
    notifier.tick()
    [(_method, _ruri, _nexthop, _socket, headers, _body)] = ksr.calls_of("tm.t_uac_send")
    assert f"Subscription-State: terminated;reason={header}\r" in headers
    assert SUB.sub_id not in notifier.mirror.subs


def test_a_resync_that_fails_on_a_bug_backs_off_instead_of_retrying_every_tick(
    ksr: FakeKSR, clock: list[float]
) -> None:
    notifier, store = lab(ksr)
    store.snapshot_error = ValueError("a record this version cannot load")
    for _ in range(100):  # a tick a millisecond, for 0.1 s
        notifier.tick()
        clock[0] += 0.001
    assert store.snapshots == 1
    assert ksr.logged("err").count("resync failed (a bug)") == 1
    clock[0] += 2.0
    notifier.tick()
    assert store.snapshots == 2  # then after 4 s, 8 s, ... at most a minute
    store.snapshot_error = None
    clock[0] += 4.0
    notifier.tick()
    assert store.snapshots == 3 and notifier.synced


def test_the_notify_headers_follow_a_new_record_of_the_subscription(ksr: FakeKSR, clock: list[float]) -> None:
    notifier, store = lab(ksr)
    notifier.tick()
    ksr.calls.clear()
    # A refresh from elsewhere (a target refresh, RFC 6665 §4.1.2.1): due, to its new Contact.
    moved = replace(
        SUB, watcher_contact="sip:bob@192.0.2.30:5062", received="udp:192.0.2.30:5062", expires_at=NOW + DAY + 300
    )
    assert store.watching()
    store.write_key(keys.sub(SUB.sub_id), codec.encode_subscription(moved))
    notifier.tick()
    [(method, ruri, _nexthop, _socket, headers, _body)] = ksr.calls_of("tm.t_uac_send")
    assert ruri == "sip:bob@192.0.2.30:5062"
    assert "Subscription-State: active;expires=" in headers


def test_after_a_resync_live_changes_go_before_the_backlog_of_every_watcher(
    ksr: FakeKSR, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted instance NOTIFYs every subscription it holds (it cannot know what its
    previous run sent), a tick's budget at a time; a call placed meanwhile is not queued
    behind them."""
    import blf_notifier

    monkeypatch.setattr(blf_notifier, "NOTIFY_BUDGET", 10)
    monkeypatch.setattr(blf_notifier, "BACKLOG_CHUNK", 4)
    notifier, store = lab(ksr)
    many = hundred_watched(store)
    notifier.tick()
    first = len(ksr.calls_of("tm.t_uac_send"))
    assert 0 < first <= 10 + 4  # a budget's worth (and the rest of a chunk), not all 101
    ksr.calls.clear()
    last = many[-1]
    leg = replace(LEG, account=last.presentity)
    assert store.watching()
    store.write_key(keys.leg(last.presentity, "ks1", "leg-1"), codec.encode_leg(leg))
    notifier.tick()
    [first_sent, *_] = ksr.calls_of("tm.t_uac_send")
    assert first_sent[1] == last.watcher_contact and "call-1" in first_sent[5]  # the live call, first
    for _ in range(20):
        notifier.tick()
    assert not notifier.backlog  # and the backlog drains, a budget per tick


def test_after_a_resync_presentities_on_a_call_are_looked_at_first(
    ksr: FakeKSR, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    import blf_notifier

    monkeypatch.setattr(blf_notifier, "NOTIFY_BUDGET", 10)
    monkeypatch.setattr(blf_notifier, "BACKLOG_CHUNK", 4)
    notifier, store = lab(ksr)
    many = hundred_watched(store)
    on_call = many[-1]  # last in name order; its call began while the notifier was away
    leg = replace(LEG, account=on_call.presentity)
    store.write_key(keys.leg(on_call.presentity, "ks1", "leg-1"), codec.encode_leg(leg))
    notifier.tick()
    assert any("call-1" in body for *_, body in ksr.calls_of("tm.t_uac_send"))


def test_an_epoch_lost_to_other_notifiers_is_tried_again_soon_and_is_no_outage(
    ksr: FakeKSR, clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier, store = lab(ksr)
    losses = [Contended("lost 20 times")]

    def next_epoch() -> int:
        if losses:
            raise losses.pop()
        return NotifierStore.next_epoch(store)

    monkeypatch.setattr(store, "next_epoch", next_epoch)
    notifier.tick()
    assert store.snapshots == 0 and "store unavailable" not in ksr.logged()
    clock[0] += 0.3
    notifier.tick()
    assert notifier.synced and cseqs(ksr)


def test_the_notify_headers_of_a_subscription_that_is_gone_are_dropped(ksr: FakeKSR, clock: list[float]) -> None:
    """The soak saw the notifier grow ~2 KB per subscription ever made: its header cache."""
    import blf_notifier
    import blf_notify

    notifier, store = lab(ksr)
    notifier.tick()
    assert SUB.sub_id in blf_notify._dialogs
    assert store.watching()
    store.delete_key(keys.sub(SUB.sub_id))  # unsubscribed elsewhere, or expired
    clock[0] += blf_notifier.PRUNE_SECONDS
    notifier.tick()
    assert SUB.sub_id not in blf_notify._dialogs


def test_a_broken_watch_resumes_each_prefix_after_its_last_revision_without_a_snapshot(
    ksr: FakeKSR, clock: list[float]
) -> None:
    notifier, store = lab(ksr)
    notifier.tick()
    assert store.snapshots == 1 and store.watching()
    snapshot_revision = store.watched[0][1] - 1
    legs = keys.LEGS
    written = store.write_key(keys.leg(ALICE, "ks1", "leg-1"), codec.encode_leg(LEG))
    notifier.tick()
    store.break_watches(ConnectionError("its member was killed"))  # etcd_failover moves to another member
    watched_before = len(store.watched)
    notifier.tick()  # takes the error
    clock[0] += 1.0
    notifier.tick()  # resumes
    assert store.snapshots == 1, "resumed, not read again"
    resumed = dict(store.watched[watched_before:])
    assert resumed[legs] == written + 1
    assert all(revision == snapshot_revision + 1 for prefix, revision in resumed.items() if prefix != legs)
    assert len(store.cancelled) >= 1, "the broken watches are cancelled first"
    assert "watch resumed after revision" in ksr.logged("info")


def test_a_watch_ended_by_a_compaction_reads_a_snapshot_again(ksr: FakeKSR, clock: list[float]) -> None:
    import etcd3  # type: ignore[import-untyped]

    notifier, store = lab(ksr)
    notifier.tick()
    assert store.watching()
    store.break_watches(etcd3.exceptions.RevisionCompactedError(60))
    notifier.tick()  # takes the error
    clock[0] += 1.0
    notifier.tick()  # reads again
    assert store.snapshots == 2
