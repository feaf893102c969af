"""python_exec("blf_lookup") (docs/dropin.md, addition 7): a call the drop-in tracks gets its
branches from the cluster's registrar with the full mode's planning; anything else goes to
the operator's own lookup("location")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict

import pytest

from statestore.domain.errors import SipError
from statestore.domain.legs import CallParties
from tests.fakeksr import FakeContext, FakeKSR, install

PARTIES = CallParties(call_id="c1", from_tag="f1", caller="alice@example.com", callee="boris@example.com",
                      caller_display="", callee_display="", caller_target="sip:alice@192.0.2.1")


@pytest.fixture
def ksr() -> Iterator[FakeKSR]:
    yield install()


@pytest.mark.parametrize(
    ("method", "to_tag", "tracked", "planned", "found", "asked"),
    [
        ("INVITE", "", True, 2, True, True),  # the callee's live bindings anywhere in the cluster
        ("INVITE", "", True, 0, False, True),  # none reachable: the operator's lookup
        ("INVITE", "", True, SipError(480, "Temporarily Unavailable"), False, True),  # no live binding
        ("INVITE", "", False, 2, False, False),  # not a call we track (another domain, ...)
        ("INVITE", "t9", True, 2, False, False),  # a re-INVITE is the operator's
        ("MESSAGE", "", False, 2, False, False),
    ],
)
def test_blf_lookup_plans_only_the_calls_it_tracks(
    ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch, method: str, to_tag: str, tracked: bool,
    planned: int | SipError, found: bool, asked: bool,
) -> None:
    import blf_calls
    import blf_dropin

    ksr.pvs.update({"$rm": method, "$tt": to_tag})
    if tracked:
        ksr.pvs[blf_calls.PARTIES_VAR] = json.dumps(asdict(PARTIES))
    plans: list[tuple[str, str]] = []

    def plan(ctx: object, callee: str, branch_route: str = "ksr_branch") -> int:
        plans.append((callee, branch_route))
        if isinstance(planned, SipError):
            raise planned
        return planned

    monkeypatch.setattr(blf_dropin, "plan_callee_branches", plan)
    monkeypatch.setattr(blf_dropin, "callee_now", lambda ctx, caller: PARTIES.callee)
    assert blf_dropin.lookup(FakeContext(None)) is found  # type: ignore[arg-type]
    assert plans == ([(PARTIES.callee, "blf_branch")] if asked else [])


@pytest.mark.parametrize("now", ["carol@example.com", None])
def test_blf_lookup_leaves_a_call_the_operators_routing_sent_elsewhere_to_it(
    ksr: FakeKSR, monkeypatch: pytest.MonkeyPatch, now: str | None,
) -> None:
    """Between blf_request and route[LOCATION] the operator rewrote the Request-URI (a forward,
    voicemail, a blocked number): the tracked callee's phones must not be rung instead."""
    import blf_calls
    import blf_dropin

    ksr.pvs.update({"$rm": "INVITE", "$tt": ""})
    ksr.pvs[blf_calls.PARTIES_VAR] = json.dumps(asdict(PARTIES))
    planned: list[str] = []
    monkeypatch.setattr(blf_dropin, "plan_callee_branches", lambda ctx, callee, route="": planned.append(callee) or 1)
    monkeypatch.setattr(blf_dropin, "callee_now", lambda ctx, caller: now)
    assert blf_dropin.lookup(FakeContext(None)) is False  # type: ignore[arg-type]
    assert planned == []


def test_the_branch_route_blf_lookup_arms_is_the_native_one_in_blf_cfg() -> None:
    import blf_dropin

    from statestore.dropin_recipe import INCLUDE_FILE

    assert f"branch_route[{blf_dropin.BRANCH_ROUTE}] {{" in INCLUDE_FILE.read_text().splitlines()


def test_the_drop_ins_notifies_time_out_as_the_full_modes_whatever_the_operators_fr_timer(ksr: FakeKSR) -> None:
    import blf_kemi

    from statestore.dropin_recipe import INCLUDE_FILE, ROOT

    full = (ROOT / "kamailio" / "kamailio.cfg").read_text()
    assert f'modparam("tm", "fr_timer", {blf_kemi.NOTIFY_TIMEOUT_MS})' in full
    assert '\t\tpython_exec("blf_notify_timer");' in INCLUDE_FILE.read_text().splitlines()
    assert blf_kemi.kamailio().blf_notify_timer(None) == 1
    assert ksr.calls_of("tm.t_set_fr") == [(0, blf_kemi.NOTIFY_TIMEOUT_MS)]
