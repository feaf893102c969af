"""Prometheus metrics: updating them from any process, and answering the scrape.

The values live in xhttp_prom's shared memory (declared in statestore/metrics.py, loaded by
kamailio/blf-metrics.cfg): an update is one KSR call, no store round trip. KSR is for a
process's main thread only (KAMAILIO-NOTES): etcd request timings made in other threads
are buffered (statestore.store_timing) and reported by `flush_store_timings`, which every
main-thread entry point calls.
"""

from __future__ import annotations

import os

import blf_notified
import KSR  # type: ignore[import-not-found]
from blf_sip import pv

from statestore import store_timing
from statestore.domain.packages import PACKAGES
from statestore.metrics import (
    AUTH_FAILURES,
    HTTP_REFUSED,
    NOTIFY_FAILED,
    NOTIFY_LATENCY,
    NOTIFY_SENT,
    OTHER,
    PIKE_BLOCKED,
    PUBLICATIONS,
    REGISTRATIONS,
    STORE_REQUEST,
    SUBSCRIPTIONS,
    Access,
    AuthFailure,
    Metric,
    notify_failure_reason,
    package_label,
)
from statestore.metrics_census import ChangeTimes, census
from statestore.mirror import Mirror
from statestore.notified import NOTIFIED_PATH

_access: Access | None = None


def access() -> Access:
    global _access  # noqa: PLW0603 - read once per process, after the fork
    if _access is None:
        _access = Access.from_env(os.environ)
    return _access


# xhttp_prom's KEMI functions are named by their number of label values (_l0 to _l3). A
# configuration that does not load it (kamailio/blf-metrics.cfg not included) has no
# KSR.xhttp_prom: every update is then a no-op instead of an error in the caller.
def count(metric: Metric, *labels: str, by: int = 1) -> None:
    prom = getattr(KSR, "xhttp_prom", None)
    if prom is not None:
        getattr(prom, f"counter_inc_l{len(labels)}")(metric.name, by, *labels)


def gauge(metric: Metric, value: float, *labels: str) -> None:
    prom = getattr(KSR, "xhttp_prom", None)
    if prom is not None:
        getattr(prom, f"gauge_set_l{len(labels)}")(metric.name, f"{value:.15g}", *labels)


def observe(metric: Metric, value: float, *labels: str) -> None:
    prom = getattr(KSR, "xhttp_prom", None)
    if prom is not None:
        getattr(prom, f"histogram_observe_l{len(labels)}")(metric.name, f"{value:.6f}", *labels)


def notify_sent(event: str) -> None:
    count(NOTIFY_SENT, package_label(event))


def notify_failed(event: str, status: int) -> None:
    """`status`: the NOTIFY's final response (a local 408 for no answer), 0 when tm could
    not send it."""
    count(NOTIFY_FAILED, package_label(event), notify_failure_reason(status))


def notify_latency(seconds: float) -> None:
    observe(NOTIFY_LATENCY, seconds)


def pike_blocked() -> None:
    count(PIKE_BLOCKED)


def auth_failed(failure: AuthFailure) -> None:
    count(AUTH_FAILURES, failure.value)


def flush_store_timings() -> None:
    """Report the etcd request timings this process's threads recorded."""
    for operation, seconds in store_timing.drain():
        observe(STORE_REQUEST, seconds, operation)


def on_metrics_socket() -> bool:
    """Whether the request came in on the metrics socket (SIP there is dropped unanswered)."""
    return access().on_metrics_socket(int(pv("$Rp") or 0), pv("$Ri"))


def answer_http(instance: str) -> bool:
    """Serve the metrics, or the last NOTIFYs (blf_notified), when this HTTP request may
    have them; False (nothing answered) otherwise: on a SIP port, from a network not
    allowed, for another path."""
    flush_store_timings()
    url = pv("$hu")
    if access().serves(int(pv("$Rp") or 0), pv("$Ri"), pv("$si"), url):
        if url.split("?", 1)[0] == NOTIFIED_PATH:
            blf_notified.answer_http(url, instance)
        else:
            KSR.xhttp_prom.dispatch()
        return True
    count(HTTP_REFUSED)
    return False


class NotifierReport:
    """One zone's notifier's metrics: the census gauges every CENSUS_SECONDS, the latency
    of each NOTIFY a change caused."""

    CENSUS_SECONDS = 5.0

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.changes = ChangeTimes()
        self.next_census = 0.0

    def changed(self, presentities: set[str], now: float) -> None:
        self.changes.seen(presentities, now)

    def sent(self, presentity: str, now: float) -> None:
        latency = self.changes.latency(presentity, now)
        if latency is not None:
            notify_latency(latency)

    def tick(self, mirror: Mirror | None, me: str, now: float) -> None:
        """A new tick: the changes of the last one were acted on; the census when due (and
        the mirror synced)."""
        self.changes.clear()
        if mirror is None or now < self.next_census:
            return
        self.next_census = now + self.CENSUS_SECONDS
        found = census(mirror, me)
        for package in (*PACKAGES, OTHER):
            gauge(SUBSCRIPTIONS, found.subscriptions.get(package, 0), self.zone, package)
        gauge(REGISTRATIONS, found.registrations, self.zone)
        gauge(PUBLICATIONS, found.publications, self.zone)
