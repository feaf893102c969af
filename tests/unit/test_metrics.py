"""The metric declarations, the rules of their labels and who may scrape (statestore.metrics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from statestore.lab_kamailio import tcp_listen_order
from statestore.metrics import (
    METRICS,
    Access,
    Kind,
    kamailio_config,
    notify_failure_reason,
    package_label,
)

ROOT = Path(__file__).resolve().parents[2]


def test_kamailio_config_is_generated_from_the_declarations():
    assert (ROOT / "kamailio" / "blf-metrics.cfg").read_text() == kamailio_config()


def test_every_declaration_fits_xhttp_prom_and_prometheus_naming():
    names = [metric.name for metric in METRICS]
    assert len(names) == len(set(names))
    for metric in METRICS:
        assert metric.name.startswith("blf_")
        assert len(metric.labels) <= 3  # xhttp_prom 5.6: three label names at most
        assert (metric.name.endswith("_total")) == (metric.kind is Kind.COUNTER)
        assert bool(metric.buckets) == (metric.kind is Kind.HISTOGRAM)
        assert list(metric.buckets) == sorted(set(metric.buckets))
        assert not {"account", "call_id", "user", "address"} & set(metric.labels)


def test_issue_metrics_are_declared():
    assert {m.name for m in METRICS} >= {
        "blf_subscriptions", "blf_notify_sent_total", "blf_notify_failed_total", "blf_notify_latency_seconds",
        "blf_leg_writes_total", "blf_store_up", "blf_store_request_seconds", "blf_registrations",
        "blf_publications", "blf_pike_blocked_total", "blf_auth_failures_total",
    }


def test_modparam_of_a_histogram_with_a_label():
    histogram = next(m for m in METRICS if m.name == "blf_store_request_seconds")
    assert histogram.modparam() == (
        'modparam("xhttp_prom", "prom_histogram", "name=blf_store_request_seconds; label=operation; '
        'buckets=0.001:0.0025:0.005:0.01:0.025:0.05:0.1:0.25:0.5:1:2.5;")'
    )


@pytest.mark.parametrize(("status", "reason"), [
    (0, "send-error"), (408, "timeout"), (302, "3xx"), (481, "4xx"), (489, "4xx"), (500, "5xx"),
    (503, "5xx"), (603, "6xx"), (699, "6xx"),
])
def test_notify_failure_reasons_are_bounded(status, reason):
    assert notify_failure_reason(status) == reason


@pytest.mark.parametrize(("event", "label"), [
    ("dialog", "dialog"), ("Dialog;id=7", "dialog"), ("presence.winfo", "presence.winfo"),
    ("message-summary", "other"), ("alice@example.com", "other"), ("", "other"),
])
def test_package_labels_are_bounded(event, label):
    assert package_label(event) == label


LAB = Access.from_env({"BLF_METRICS_PORT": "9471"})
OFFICE = Access.from_env({"BLF_METRICS_PORT": "9100", "BLF_METRICS_ALLOW": "10.1.0.0/16, 2001:db8::/32"})


LOOP = "127.0.0.1"
INTERNAL = Access.from_env({"BLF_METRICS_PORT": "9470", "BLF_METRICS_ADDRESS": "10.1.0.7",
                            "BLF_METRICS_ALLOW": "10.1.0.0/16"})
NAMED = Access.from_env({"BLF_METRICS_PORT": "9470", "BLF_METRICS_ADDRESS": "ks1.internal"})


@pytest.mark.parametrize(("access", "port", "received", "source", "path", "served"), [
    (LAB, 9471, LOOP, "127.0.0.1", "/metrics", True),
    (LAB, 9471, LOOP, "127.0.0.1", "/metrics?x=1", True),
    (LAB, 9471, LOOP, "127.0.0.5", "/metrics", False),  # another loopback address
    (LAB, 5071, LOOP, "127.0.0.1", "/metrics", False),  # the SIP port
    (LAB, 9471, LOOP, "127.0.0.1", "/", False),
    (LAB, 9471, LOOP, "127.0.0.1", "/metricsx", False),
    (OFFICE, 9100, "10.1.0.1", "10.1.200.3", "/metrics", True),
    (OFFICE, 9100, "2001:db8::1", "[2001:db8::5]", "/metrics", True),
    (OFFICE, 9100, "10.1.0.1", "127.0.0.1", "/metrics", False),
    (OFFICE, 9100, "10.1.0.1", "not-an-address", "/metrics", False),
    (Access.from_env({}), 9471, LOOP, "127.0.0.1", "/metrics", False),  # no metrics port: never served
    (INTERNAL, 9470, "10.1.0.7", "10.1.3.4", "/metrics", True),
    # A SIP socket on another address with the same port number is not the metrics socket.
    (INTERNAL, 9470, "192.0.2.7", "10.1.3.4", "/metrics", False),
    (NAMED, 9470, "192.0.2.7", "127.0.0.1", "/metrics", True),  # a host name: the port decides
])
def test_who_gets_the_metrics(access, port, received, source, path, served):
    assert access.serves(port, received, source, path) is served


def test_sip_on_the_metrics_socket_is_told_apart_by_port_and_address():
    assert LAB.on_metrics_socket(9471, LOOP) and not LAB.on_metrics_socket(5071, LOOP)
    assert INTERNAL.on_metrics_socket(9470, "10.1.0.7") and not INTERNAL.on_metrics_socket(9470, "192.0.2.7")


@pytest.mark.parametrize("env", [{"BLF_METRICS_PORT": "http"}, {"BLF_METRICS_PORT": "70000"},
                                 {"BLF_METRICS_PORT": "9471", "BLF_METRICS_ALLOW": "10.0.0.300/8"}])
def test_bad_settings_are_refused_at_start(env):
    with pytest.raises(ValueError, match="BLF_METRICS"):
        Access.from_env(env)


@pytest.mark.parametrize(("host", "first"), [
    ("127.0.0.1", "tcp:127.0.0.1:9471"),  # all on loopback: Kamailio's default is the last one
    ("198.18.77.1", "tcp:198.18.77.1:5071"),  # otherwise the first one not on loopback
])
def test_the_sip_socket_stays_kamailios_default_tcp_socket(host, first):
    order = tcp_listen_order(host, 5071)
    assert order[1] == first
    assert sorted(order[1::2]) == sorted([f"tcp:{host}:5071", f"tcp:{host}:9471"])
