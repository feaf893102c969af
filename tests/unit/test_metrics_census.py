"""What the notifier reports from its mirror (statestore.metrics_census), and the Kamailio
side of the metrics with the fake KSR (kemi/blf_metrics.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from statestore import codec, keys, store_timing
from statestore.domain.model import Binding
from statestore.domain.packages import PACKAGES
from statestore.metrics_census import ChangeTimes, census
from statestore.mirror import Mirror
from tests.factories import subscription
from tests.fakeksr import FakeKSR, install


def instance(name: str) -> tuple[str, bytes, int]:
    return keys.instance(name), codec.encode({"host": "10.0.0.1", "packages": sorted(PACKAGES)}), 1


def mirror_of(*subs, live=("ks1", "ks2"), bindings=0) -> Mirror:
    mirror = Mirror()
    items = [instance(name) for name in live]
    items += [(keys.sub(s.sub_id), codec.encode_subscription(s), 2) for s in subs]
    items += [
        (keys.reg("alice@example.com", f"b{n}"),
         codec.encode_binding(Binding("alice@example.com", f"sip:alice@10.0.0.{n}", 2e9, f"r{n}", 1)), 3)
        for n in range(bindings)
    ]
    mirror.load(items)
    return mirror


def test_census_counts_what_this_instance_is_responsible_for_by_package():
    mine = [subscription(owner="ks1"), subscription(owner="ks1"), subscription(owner="ks1", event="presence")]
    theirs = [subscription(owner="ks2")]
    found = census(mirror_of(*mine, *theirs, bindings=2), "ks1")
    assert found.subscriptions == {"dialog": 2, "presence": 1}
    assert found.registrations == 2
    assert found.publications == 0
    assert census(mirror_of(*mine, *theirs), "ks2").subscriptions == {"dialog": 1}


def test_census_shares_out_the_subscriptions_of_an_instance_that_is_gone():
    orphans = [subscription(owner="ks3") for _ in range(20)]
    mirror = mirror_of(*orphans)
    ks1, ks2 = census(mirror, "ks1").subscriptions, census(mirror, "ks2").subscriptions
    assert ks1.get("dialog", 0) + ks2.get("dialog", 0) == 20
    assert ks1 and ks2  # rendezvous spreads them


def test_change_times_measure_from_the_first_change_of_a_tick():
    changes = ChangeTimes()
    changes.seen({"alice"}, 10.0)
    changes.seen({"alice", "bob"}, 10.5)  # alice's NOTIFY shows both changes: from the first
    assert changes.latency("alice", 10.75) == 0.75
    assert changes.latency("bob", 10.75) == 0.25
    assert changes.latency("carol", 10.75) is None  # a refresh, no change: not measured
    changes.clear()
    assert changes.latency("alice", 11.0) is None


@pytest.fixture
def ksr(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKSR]:
    fake = install()
    import blf_metrics

    monkeypatch.setenv("BLF_METRICS_PORT", "9471")
    monkeypatch.setattr(blf_metrics, "_access", None)
    yield fake


def test_updates_are_one_xhttp_prom_call_each(ksr):
    import blf_metrics

    blf_metrics.notify_failed("dialog;id=1", 481)
    blf_metrics.notify_sent("message-summary")
    blf_metrics.notify_latency(0.0025)
    assert ksr.calls_of("xhttp_prom.counter_inc_l2") == [("blf_notify_failed_total", 1, "dialog", "4xx")]
    assert ksr.calls_of("xhttp_prom.counter_inc_l1") == [("blf_notify_sent_total", 1, "other")]
    assert ksr.calls_of("xhttp_prom.histogram_observe_l0") == [("blf_notify_latency_seconds", "0.002500")]


def test_without_xhttp_prom_loaded_updates_do_nothing(ksr, monkeypatch):
    """A drop-in configuration that does not include kamailio/blf-metrics.cfg has no
    KSR.xhttp_prom: the callers (lease keeper, notifier, SIP workers) must not fail."""
    import blf_metrics

    monkeypatch.delattr(ksr, "xhttp_prom")
    blf_metrics.notify_failed("dialog", 408)
    blf_metrics.gauge(blf_metrics.SUBSCRIPTIONS, 3.0, "z1", "dialog")
    blf_metrics.notify_latency(0.001)
    assert ksr.calls_of("xhttp_prom.counter_inc_l2") == []


def test_store_timings_of_other_threads_are_reported_by_the_main_thread(ksr, monkeypatch):
    import blf_metrics

    monkeypatch.setattr(store_timing, "enabled", True)
    store_timing.drain()
    store_timing.record("Range", 0.0012)
    store_timing.record("Txn", 0.003)
    assert ksr.calls_of("xhttp_prom.histogram_observe_l1") == []
    blf_metrics.flush_store_timings()
    assert ksr.calls_of("xhttp_prom.histogram_observe_l1") == [
        ("blf_store_request_seconds", "0.001200", "Range"), ("blf_store_request_seconds", "0.003000", "Txn"),
    ]
    assert store_timing.drain() == []


@pytest.mark.parametrize(("port", "source", "path", "served"), [
    ("9471", "127.0.0.1", "/metrics", True),
    ("5071", "127.0.0.1", "/metrics", False),
    ("9471", "127.0.0.5", "/metrics", False),
])
def test_http_is_answered_only_on_the_metrics_socket_from_an_allowed_source(ksr, port, source, path, served):
    import blf_metrics

    ksr.pvs.update({"$Rp": port, "$si": source, "$hu": path})
    assert blf_metrics.answer_http("ks1") is served
    assert bool(ksr.calls_of("xhttp_prom.dispatch")) is served
    assert bool(ksr.calls_of("xhttp_prom.counter_inc_l0")) is not served  # blf_http_refused_total


def test_notifier_report_sets_every_package_gauge_of_its_zone(ksr):
    import blf_metrics

    report = blf_metrics.NotifierReport("z1")
    mirror = mirror_of(subscription(owner="ks1"))
    report.tick(mirror, "ks1", 100.0)
    gauges = {call[2:]: call[1] for call in ksr.calls_of("xhttp_prom.gauge_set_l2")}
    assert gauges[("z1", "dialog")] == "1"
    assert gauges[("z1", "presence")] == "0"
    assert set(gauges) == {("z1", name) for name in (*PACKAGES, "other")}
    ksr.reset()
    report.tick(mirror, "ks1", 101.0)  # within CENSUS_SECONDS: nothing again
    assert ksr.calls_of("xhttp_prom.gauge_set_l2") == []
    report.changed({"alice@example.com"}, 101.0)
    report.sent("alice@example.com", 101.004)
    assert ksr.calls_of("xhttp_prom.histogram_observe_l0") == [("blf_notify_latency_seconds", "0.004000")]
