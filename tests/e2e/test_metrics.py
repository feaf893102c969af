"""Prometheus metrics (issue 15): scraped from both instances while calls run, the counters
move as the traffic says; HTTP from elsewhere than the metrics socket's allowed networks
gets nothing (docs/metrics.md).

Every check is a delta between two scrapes of the real instances (the lab is shared with
other tests): what this test's traffic must have added, polled until a deadline.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable

import pytest

from statestore.prom_text import Sample, parse
from tests.e2e.conftest import DOMAIN, KS, ROOT, blfctl, watched_callee, watcher
from tests.e2e.test_edge_tcp import CLOSE_SLACK, IDLE_SECONDS, PER_ADDRESS_LIMIT, open_idle, wait_closed_by_peer
from tests.sipua import UserAgent

METRICS = {"ks1": ("127.0.0.1", 9471), "ks2": ("127.0.0.1", 9472)}
OUTSIDER = "127.0.0.5"  # not the lab's address: not allowed to scrape (BLF_METRICS_ALLOW)

Scrape = dict[str, list[Sample]]


def exposition(instance: str) -> str:
    host, port = METRICS[instance]
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=3) as answer:
        return str(answer.read().decode())


def scrape() -> Scrape:
    return {name: parse(exposition(name)) for name in METRICS}


def total(scraped: Scrape, name: str, instance: str | None = None, **labels: str) -> float:
    """The sum of the samples named `name` with `labels`, of one instance or all."""
    return sum(
        sample.value
        for found_at, samples in scraped.items() if instance in (None, found_at)
        for sample in samples
        if sample.name == name and all(sample.label(key) == value for key, value in labels.items())
    )


def wait_scraped(done: Callable[[Scrape], bool], timeout: float) -> Scrape:
    """Scrape until `done` holds (the notifier's gauges are refreshed every 5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        scraped = scrape()
        if done(scraped) or time.monotonic() > deadline:
            return scraped
        time.sleep(0.2)


def test_counters_move_as_calls_subscriptions_and_failures_happen(account, phones, sipp):
    alice, boris, catherine, dora = account("alice"), account("boris"), account("catherine"), account("dora")
    before = scrape()
    port, cat, sub = watched_callee(phones, boris, catherine, callee_at="ks2", watcher_at="ks1")
    # A watcher that goes away: its NOTIFYs time out (tm's 408).
    gone = watcher(phones, dora, "ks2")
    gone.subscribe(boris[0])
    gone.ua.close()
    # A phone with a wrong password: its credentials fail once, then it gives up.
    intruder = UserAgent(alice[0], DOMAIN, "not-the-password", KS["ks1"])
    phones.append(intruder)
    assert intruder.register(300).status == 401

    sipp.callee(port, ring_ms=200)
    sipp.call("ks1", alice, boris[0], hold_ms=500)
    cat.wait(sub, lambda s: len(s.notifies) >= 3 and s.lamp == "idle", 10)

    def delta(after: Scrape, name: str, instance: str | None = None, **labels: str) -> float:
        return total(after, name, instance, **labels) - total(before, name, instance, **labels)

    expected: dict[str, Callable[[Scrape], bool]] = {
        # The initial NOTIFYs of two subscriptions, then early, confirmed and terminated.
        "sent": lambda s: delta(s, "blf_notify_sent_total", package="dialog") >= 5,
        "failed": lambda s: delta(s, "blf_notify_failed_total", package="dialog", reason="timeout") >= 1,
        "latency": lambda s: delta(s, "blf_notify_latency_seconds_count") >= 3,
        "latency buckets": lambda s: delta(s, "blf_notify_latency_seconds_bucket", le="+Inf") >= 3,
        "legs": lambda s: delta(s, "blf_leg_writes_total", result="written") >= 2,
        "store requests": lambda s: delta(s, "blf_store_request_seconds_count", operation="Txn") >= 2,
        "auth": lambda s: delta(s, "blf_auth_failures_total", "ks1", reason="wrong-credentials") == 1,
        "subscriptions": lambda s: total(s, "blf_subscriptions", package="dialog") >= 1,
        "registrations": lambda s: total(s, "blf_registrations", "ks1") >= 1,
        "store up": lambda s: total(s, "blf_store_up", zone="z1") == 2,
    }
    after = wait_scraped(lambda s: all(check(s) for check in expected.values()), 15)
    assert [what for what, check in expected.items() if not check(after)] == []
    # The histogram's buckets are cumulative: the +Inf one counts every observation.
    assert total(after, "blf_notify_latency_seconds_bucket", le="+Inf") == total(
        after, "blf_notify_latency_seconds_count")


def http_get(source: str, port: int, path: str = "/metrics") -> bytes:
    """What a GET from `source` to 127.0.0.1:`port` gets within 2 s (b"" if closed or silent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(2)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: blf\r\nUser-Agent: probe\r\n\r\n".encode())
        received = b""
        deadline = time.monotonic() + 2
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def test_http_elsewhere_than_the_metrics_socket_gets_no_metrics(account, phones):
    before = scrape()
    sip_port, metrics_port = KS["ks1"][1], METRICS["ks1"][1]
    assert http_get(OUTSIDER, metrics_port) == b""
    assert http_get(OUTSIDER, sip_port) == b""
    assert http_get("127.0.0.1", sip_port) == b""  # the SIP port never serves HTTP
    assert http_get("127.0.0.1", metrics_port, "/other") == b""
    assert b"blf_" in http_get("127.0.0.1", metrics_port)
    after = scrape()
    refused = total(after, "blf_http_refused_total", "ks1") - total(before, "blf_http_refused_total", "ks1")
    assert refused == 4
    # SIP over TCP still works on the SIP port after those.
    user, password = account("erin")
    over_tcp = UserAgent(user, DOMAIN, password, KS["ks1"], transport="tcp")
    phones.append(over_tcp)
    assert over_tcp.register(60).status == 200


def test_the_metrics_port_holds_no_more_idle_connections_of_one_address_than_a_sip_port(lab):
    """etc/blf-edge.nft limits each address on the metrics ports too, and Kamailio closes
    what sends nothing there as on a SIP port: no address can fill tcp_max_connections."""
    held: list[socket.socket] = []
    try:
        refused = open_idle(OUTSIDER, METRICS["ks1"], PER_ADDRESS_LIMIT + 16, held)
        assert (len(held), refused) == (PER_ADDRESS_LIMIT, 16)
        wait_closed_by_peer(held, IDLE_SECONDS + CLOSE_SLACK)
    finally:
        for sock in held:
            sock.close()


def test_sip_on_the_metrics_socket_is_not_answered(account, phones):
    user, password = account("fred")
    on_metrics = UserAgent(user, DOMAIN, password, ("127.0.0.1", METRICS["ks1"][1]), transport="tcp")
    on_sip = UserAgent(user, DOMAIN, password, KS["ks1"], transport="tcp")
    phones.extend([on_metrics, on_sip])
    assert on_sip.request("OPTIONS", f"sip:{DOMAIN}", timeout=2).status == 200
    with pytest.raises(TimeoutError):
        on_metrics.request("OPTIONS", f"sip:{DOMAIN}", timeout=2)


PROMTOOL = ROOT / ".venv" / "bin" / "promtool"


@pytest.mark.skipif(not PROMTOOL.exists(), reason="promtool not found (make setup extracts it)")
def test_prometheus_reads_what_an_instance_serves():
    """promtool's parser is Prometheus': exit 0, or 3 for lint findings only (no HELP, which
    xhttp_prom 5.6 never prints); a sample it cannot parse is exit 1 with "error while linting"."""
    served = exposition("ks1")
    assert "blf_store_up" in served
    result = subprocess.run([str(PROMTOOL), "check", "metrics"], input=served, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert all(line.endswith("no help text") for line in findings), findings


def test_blfctl_metrics_labels_every_series_with_its_instance():
    result = blfctl("metrics")
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    assert lines and all('instance="ks' in line for line in lines)
    assert 'blf_scrape_up{instance="ks1"} 1' in lines and 'blf_scrape_up{instance="ks2"} 1' in lines
    assert result.stdout.count("# TYPE blf_store_up gauge") == 1
    document = json.loads(blfctl("metrics", "--json").stdout)
    assert document["instances"] == {"ks1": {"up": True, "error": None}, "ks2": {"up": True, "error": None}}
    assert {s["labels"]["instance"] for s in document["samples"] if s["name"] == "blf_store_up"} == {"ks1", "ks2"}
    unreachable = blfctl("metrics", "--instance", "ks1=127.0.0.1:9471", "--instance", "ks9=127.0.0.1:9479",
                         "--timeout", "1", check=False)
    assert unreachable.returncode == 1
    assert 'blf_scrape_up{instance="ks9"} 0' in unreachable.stdout
    assert "ks9 (127.0.0.1:9479) did not answer" in unreachable.stderr
