"""Reading xhttp_prom's exposition and merging the instances' (statestore.prom_text), and
`blfctl metrics` around it with a fake fetch (statestore.cli_metrics)."""

from __future__ import annotations

import argparse
import json

import pytest

from statestore import cli_metrics
from statestore.prom_text import ExpositionError, Sample, as_json, family, merge, parse

# As Kamailio 5.6's xhttp_prom prints it: labels separated by ", ", values with six
# decimals for gauges and sums, a millisecond timestamp on every line.
KS1 = """\
# User defined metrics
blf_store_up{zone="z1"} 1.000000 1796583877876
blf_notify_sent_total{package="dialog"} 7 1796583877876
blf_notify_failed_total{package="dialog", reason="timeout"} 1 1796583877876
blf_notify_latency_seconds_bucket{le="0.001000"} 2 1796583877876
blf_notify_latency_seconds_bucket{le="+Inf"} 3 1796583877876
blf_notify_latency_seconds_sum 0.004200 1796583877876
blf_notify_latency_seconds_count 3 1796583877876
blf_pike_blocked_total 0 1796583877876
"""
KS2 = 'blf_store_up{zone="z1"} 0.000000 1796583877999\nkamailio_other 5\n'


def test_parse_reads_labels_values_and_drops_timestamps():
    samples = parse(KS1)
    assert samples[2] == Sample("blf_notify_failed_total", (("package", "dialog"), ("reason", "timeout")), 1.0)
    assert samples[4].label("le") == "+Inf"
    assert samples[5] == Sample("blf_notify_latency_seconds_sum", (), 0.0042)
    assert len(samples) == 8


@pytest.mark.parametrize("line", ["blf_x{zone=z1} 1", "blf_x", "blf_x{a=\"b\"} one", "{a=\"b\"} 1"])
def test_parse_refuses_what_is_not_a_sample(line):
    with pytest.raises(ExpositionError):
        parse(line)


@pytest.mark.parametrize(("name", "found"), [
    ("blf_notify_latency_seconds_bucket", "blf_notify_latency_seconds"),
    ("blf_notify_latency_seconds_count", "blf_notify_latency_seconds"),
    ("blf_notify_sent_total", "blf_notify_sent_total"),
    ("blf_subscriptions_count", "blf_subscriptions_count"),  # a gauge is no histogram
])
def test_family(name, found):
    assert family(name) == found


def test_merge_labels_every_series_and_types_each_family_once():
    text = merge({"ks2": parse(KS2), "ks1": parse(KS1)}, {"ks1": True, "ks2": True, "ks3": False})
    lines = text.splitlines()
    assert lines.count("# TYPE blf_store_up gauge") == 1
    assert lines.count("# TYPE blf_notify_latency_seconds histogram") == 1
    up = lines.index("# TYPE blf_store_up gauge")
    assert lines[up + 1:up + 3] == [
        'blf_store_up{instance="ks1",zone="z1"} 1', 'blf_store_up{instance="ks2",zone="z1"} 0',
    ]
    assert 'blf_notify_failed_total{instance="ks1",package="dialog",reason="timeout"} 1' in lines
    assert 'blf_notify_latency_seconds_bucket{instance="ks1",le="+Inf"} 3' in lines
    assert 'blf_notify_latency_seconds_sum{instance="ks1"} 0.0042' in lines
    assert 'kamailio_other{instance="ks2"} 5' in lines  # undeclared: kept, untyped
    assert "# TYPE kamailio_other" not in text
    assert lines[-3:] == ['blf_scrape_up{instance="ks1"} 1', 'blf_scrape_up{instance="ks2"} 1',
                          'blf_scrape_up{instance="ks3"} 0']
    samples = [line for line in lines if not line.startswith("#")]
    assert all(line.count('instance="') == 1 for line in samples)
    assert parse(text)  # what it writes, it reads


def test_as_json():
    document = as_json({"ks1": parse(KS2)}, {"ks1": None, "ks2": "URLError: refused"})
    assert document == {
        "instances": {"ks1": {"up": True, "error": None}, "ks2": {"up": False, "error": "URLError: refused"}},
        "samples": [
            {"name": "blf_store_up", "labels": {"instance": "ks1", "zone": "z1"}, "value": 0.0},
            {"name": "kamailio_other", "labels": {"instance": "ks1"}, "value": 5.0},
        ],
    }


def fake_fetch(address: str, timeout: float) -> str:
    if address.endswith(":9472"):
        raise ConnectionRefusedError("refused")
    return KS1


def args(*instances: str, as_json: bool = False) -> argparse.Namespace:
    return argparse.Namespace(instance=list(instances), json=as_json, timeout=0.5)


def test_cmd_metrics_reports_an_instance_that_does_not_answer(capsys):
    status = cli_metrics.cmd_metrics(args("ks1=127.0.0.1:9471", "ks2=127.0.0.1:9472"), fake_fetch)
    out, err = capsys.readouterr()
    assert status == 1
    assert 'blf_scrape_up{instance="ks2"} 0' in out and 'blf_pike_blocked_total{instance="ks1"} 0' in out
    assert "blfctl metrics: ks2 (127.0.0.1:9472) did not answer: ConnectionRefusedError: refused" in err


def test_cmd_metrics_json_when_every_instance_answers(capsys):
    assert cli_metrics.cmd_metrics(args("ks1=127.0.0.1:9471", as_json=True), fake_fetch) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["instances"] == {"ks1": {"up": True, "error": None}}


def test_cmd_metrics_refuses_a_bad_instance_argument(capsys):
    assert cli_metrics.cmd_metrics(args("ks1"), fake_fetch) == 2
    assert "NAME=HOST:PORT" in capsys.readouterr().err
