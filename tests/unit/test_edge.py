"""TCP at the edge: how long a connection may stay idle (domain/edge.py, kemi/blf_tcp.py) and
the lab's firewall guards (statestore/lab_edge.py)."""

from __future__ import annotations

import pytest

from statestore import lab_edge as lab
from statestore.domain.edge import REFRESH_MARGIN_SECONDS, authenticated_lifetime
from statestore.domain.registrar import RegistrarPolicy
from statestore.domain.subscription import SubscriptionPolicy
from tests.fakeksr import FakeContext, install


@pytest.mark.parametrize(
    ("transport", "longest", "lifetime"),
    [
        ("tcp", 3600, 3600 + REFRESH_MARGIN_SECONDS),
        ("TCP", 3600, 3600 + REFRESH_MARGIN_SECONDS),
        ("tls", 300, 300 + REFRESH_MARGIN_SECONDS),
        ("ws", 0, REFRESH_MARGIN_SECONDS),
        ("wss", 7200, 7200 + REFRESH_MARGIN_SECONDS),
        ("udp", 3600, None),
        ("sctp", 3600, None),
        ("", 3600, None),
    ],
)
def test_only_a_connection_is_held_and_for_the_longest_expiry_plus_a_margin(transport, longest, lifetime):
    assert authenticated_lifetime(transport, longest) == lifetime


def test_a_negative_expiry_is_a_bug():
    with pytest.raises(ValueError):
        authenticated_lifetime("tcp", -1)


def test_the_lab_runs_without_the_firewall_when_not_root_and_says_so(monkeypatch):
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(lab, "_nft", lambda: "/usr/sbin/nft")
    assert lab.apply_edge_firewall() == {
        "applied": False, "report": "not applied: not root (per-address TCP limit off)",
    }


def test_the_lab_runs_without_the_firewall_when_nft_is_missing_and_says_so(monkeypatch):
    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab, "_nft", lambda: None)
    status = lab.apply_edge_firewall()
    assert status["applied"] is False
    assert "nft not installed" in status["report"]


def test_the_lab_applies_the_shipped_rules_to_its_ports_with_its_address_exempt(monkeypatch):
    seen: list[list[str]] = []

    class Done:
        returncode = 0
        stderr = ""

    def run(command: list[str], **_: object) -> Done:
        seen.append(command)
        return Done()

    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab, "_nft", lambda: "/usr/sbin/nft")
    monkeypatch.setattr(lab.subprocess, "run", run)
    assert lab.apply_edge_firewall()["applied"] is True
    assert seen == [[
        "/usr/sbin/nft", "-D", "sip_tcp_ports={ 5071-5099, 9471-9499 }", "-D", "cluster_v4={ 127.0.0.1 }",
        "-D", "cluster_v6={ ::1 }", "-f", str(lab.EDGE_RULES),
    ]]
    assert lab.EDGE_RULES.exists()


@pytest.mark.parametrize(("transport", "held"), [("tcp", [(3660,)]), ("tls", [(3660,)]), ("udp", [])])
def test_an_authenticated_request_on_a_connection_raises_its_lifetime(transport, held):
    ksr = install()
    import blf_tcp  # kemi/, importable once the fake KSR is installed

    ksr.pvs["$pr"] = transport
    ctx = FakeContext(None, registrar=RegistrarPolicy(max_expires=600, default_expires=600),
                      subscriptions=SubscriptionPolicy(max_expires=3600))
    blf_tcp.hold_flow(ctx)  # type: ignore[arg-type]
    assert ksr.calls_of("tcpops.tcp_set_connection_lifetime") == held
