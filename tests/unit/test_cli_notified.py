"""blfctl's side of the last NOTIFYs (statestore/cli_notified.py, `why`'s text) and of the
instances `blfctl metrics` finds in the store (statestore/cli_metrics.py), with fetches and
stores faked."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytest

from statestore import cli_inspect, cli_metrics
from statestore.cli_notified import last_notifies
from statestore.domain.errors import StoreUnavailable
from statestore.domain.notified import LastNotify, NotifyUnknown
from statestore.metrics import announced_address
from statestore.notified import MAX_IDS, parse_query

ADDRESSES = {"ks1": "127.0.0.1:9471", "ks2": "127.0.0.1:9472", "ks3": None}


class Instances:
    """Fake metrics sockets: each answers from its table, ks2 refuses connections."""

    def __init__(self, down: frozenset[str] = frozenset({"127.0.0.1:9472"})) -> None:
        self.asked: list[tuple[str, list[str]]] = []
        self.down = down

    def __call__(self, address: str, path: str, timeout: float) -> str:
        ids = parse_query(path)
        self.asked.append((address, ids))
        if address in self.down:
            raise ConnectionRefusedError("refused")
        notified = {sub_id: None if sub_id.startswith("0") else
                    {"version": 4, "cseq": 65541, "sent_at": 1_765_000_000.5, "answer": 200} for sub_id in ids}
        return json.dumps({"instance": address, "notified": notified})


def test_each_responsible_instance_is_asked_once_for_its_subscriptions() -> None:
    fetch = Instances()
    found = last_notifies([("a1", "ks1"), ("01", "ks1"), ("b2", "ks2"), ("c3", "ks3"), ("d4", None)], ADDRESSES,
                          fetch=fetch)
    assert sorted(fetch.asked) == [("127.0.0.1:9471", ["a1", "01"]), ("127.0.0.1:9472", ["b2"])]
    assert found == {
        "a1": LastNotify(4, 65541, 1_765_000_000.5, "ks1", 200),
        "01": NotifyUnknown("none recorded by ks1"),
        "b2": NotifyUnknown("instance ks2 unreachable"),
        "c3": NotifyUnknown("ks3 announces no metrics socket"),
        "d4": NotifyUnknown("no live instance sends its NOTIFYs"),
    }


def test_many_subscriptions_go_in_requests_of_at_most_max_ids() -> None:
    fetch = Instances()
    ids = [f"a{n:x}" for n in range(MAX_IDS * 2 + 1)]
    found = last_notifies([(sub_id, "ks1") for sub_id in ids], ADDRESSES, fetch=fetch)
    assert sorted(len(asked) for _, asked in fetch.asked) == [1, MAX_IDS, MAX_IDS]
    assert all(isinstance(found[sub_id], LastNotify) for sub_id in ids)


def test_an_instance_that_answers_nonsense_is_said_so() -> None:
    found = last_notifies([("a1", "ks1")], ADDRESSES, fetch=lambda address, path, timeout: "<html>")
    assert found == {"a1": NotifyUnknown("instance ks1 gave no valid answer")}


def test_nothing_is_asked_without_watchers() -> None:
    fetch = Instances()
    assert last_notifies([], ADDRESSES, fetch=fetch) == {}
    assert fetch.asked == []


SENT = 1_765_000_000.5


@pytest.mark.parametrize(("last", "unknown", "text"), [
    ({"version": 4, "cseq": 65541, "sent_at": SENT, "sent_by": "ks2", "answer": 200}, None,
     f"last NOTIFY: version 4, CSeq 65541, sent {time.strftime('%H:%M:%S', time.gmtime(SENT))} by ks2, answered 200"),
    ({"version": 4, "cseq": 65541, "sent_at": SENT, "sent_by": "ks2", "answer": None}, None,
     f"last NOTIFY: version 4, CSeq 65541, sent {time.strftime('%H:%M:%S', time.gmtime(SENT))} by ks2, no answer yet"),
    (None, "instance ks2 unreachable", "last NOTIFY: instance ks2 unreachable: not known"),
])
def test_why_says_the_last_notify_in_one_phrase(last: dict[str, Any] | None, unknown: str | None, text: str) -> None:
    assert cli_inspect.last_notify_text({"last_notify": last, "last_notify_unknown": unknown}) == text


@pytest.mark.parametrize(("env", "sip", "announced"), [
    ({}, "192.0.2.10:5060", None),
    ({"BLF_METRICS_PORT": "9470"}, "192.0.2.10:5060", "192.0.2.10:9470"),
    ({"BLF_METRICS_PORT": "9470", "BLF_METRICS_ADDRESS": "10.0.0.5"}, "192.0.2.10:5060", "10.0.0.5:9470"),
    ({"BLF_METRICS_PORT": "9470"}, "[2001:db8::1]:5060", "[2001:db8::1]:9470"),
])
def test_the_metrics_socket_an_instance_announces(env: dict[str, str], sip: str, announced: str | None) -> None:
    assert announced_address(env, sip) == announced


def zone(instances: Mapping[str, Mapping[str, Any]] | StoreUnavailable) -> Any:
    def read() -> Mapping[str, Mapping[str, Any]]:
        if isinstance(instances, StoreUnavailable):
            raise instances
        return instances
    return read


def test_metrics_finds_the_instances_each_zone_announces() -> None:
    z1 = {"ks1": {"sip": "a", "metrics": "10.0.0.1:9470"}, "ks2": {"sip": "b"}}  # ks2: an older version
    z2 = {"ks1": {"metrics": "10.0.0.1:9470"}, "ks3": {"metrics": "10.0.0.3:9470"}}
    assert cli_metrics.announced_targets([zone(z1), zone(z2)]) == {"ks1": "10.0.0.1:9470", "ks3": "10.0.0.3:9470"}
    assert cli_metrics.announced_targets([zone(StoreUnavailable("down")), zone(z2)]) == {
        "ks1": "10.0.0.1:9470", "ks3": "10.0.0.3:9470"}
    with pytest.raises(StoreUnavailable):
        cli_metrics.announced_targets([zone(StoreUnavailable("down"))])


def test_metrics_without_lab_or_instance_reads_the_store(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(cli_metrics, "lab_targets", dict)
    monkeypatch.setattr(cli_metrics, "store_targets", lambda args: {"ks1": "10.0.0.1:9470"})
    asked = []

    def fetch(address: str, timeout: float) -> str:
        asked.append(address)
        return "blf_pike_blocked_total 0 1765000000000\n"

    args = cli_metrics.argparse.Namespace(instance=[], json=False, timeout=0.5)
    assert cli_metrics.cmd_metrics(args, fetch) == 0
    assert asked == ["10.0.0.1:9470"]
    assert 'blf_pike_blocked_total{instance="ks1"} 0' in capsys.readouterr().out
    monkeypatch.setattr(cli_metrics, "store_targets", lambda args: {})
    assert cli_metrics.cmd_metrics(args, fetch) == 1
    assert "no live instance announces a metrics socket" in capsys.readouterr().err
