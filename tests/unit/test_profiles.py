"""Rendering profiles: each dialog-info profile, its digest, and how a watcher's is chosen."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from statestore.domain import dialoginfo
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Direction, Leg, LegState, Party, TerminationEvent
from statestore.domain.profiles import (
    DUMMY_IDLE,
    NO_IDENTITIES,
    NO_TERMINATED,
    PROFILES,
    SINGLE_DIALOG,
    choose_profile,
    parse_profile,
)
from tests.schema import DIALOG_INFO_NS, validate_dialog_info

NS = f"{{{DIALOG_INFO_NS}}}"
ENTITY = "sip:alice@example.com"


def make_leg(leg_id: str, state: LegState, version: int = 1, **overrides: Any) -> Leg:
    values: dict[str, Any] = {
        "account": "alice@example.com", "instance": "node-a", "leg_id": leg_id, "version": version, "state": state,
        "direction": Direction.RECIPIENT, "call_id": f"call-{leg_id}", "local_tag": "lt", "remote_tag": "",
        "local": Party("sip:alice@example.com", "Alice"), "remote": Party("sip:bob@example.org", "Bob"),
    }
    if state is LegState.TERMINATED:
        values["event"] = TerminationEvent.REMOTE_BYE
    values.update(overrides)
    return Leg(**values)


def render(legs: list[Leg], *names: str, version: int = 0) -> etree._Element:
    """Render under a profile, validate against the schema, parse."""
    state = PresentityState(tuple(legs), ())
    body = dialoginfo.render(ENTITY, version, state, frozenset(names), None)
    assert body == dialoginfo.render_dialog_info(ENTITY, version, legs, frozenset(names))
    validate_dialog_info(body)
    root = etree.fromstring(body)
    assert root.get("version") == str(version)
    return root


def dialog_ids(root: etree._Element) -> list[str]:
    return [dialog.get("id", "") for dialog in root.findall(f"{NS}dialog")]


def digest(legs: list[Leg], *names: str) -> str:
    return dialoginfo.digest(PresentityState(tuple(legs), ()), frozenset(names))


def test_profile_names() -> None:
    assert sorted(PROFILES) == ["dummy-idle", "no-identities", "no-terminated", "single-dialog"]


def test_no_profile_renders_as_before() -> None:
    legs = [make_leg("a", LegState.CONFIRMED), make_leg("b", LegState.TERMINATED)]
    assert dialoginfo.render_dialog_info(ENTITY, 3, legs, frozenset()) == dialoginfo.render_dialog_info(ENTITY, 3, legs)
    assert digest(legs) == dialoginfo.body_digest(legs)


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([LegState.TERMINATED, LegState.EARLY, LegState.CONFIRMED, LegState.TRYING], "l2"),
        ([LegState.TERMINATED, LegState.EARLY, LegState.PROCEEDING], "l1"),
        ([LegState.TERMINATED, LegState.TRYING], "l1"),
        ([LegState.TERMINATED], "l0"),
    ],
)
def test_single_dialog_keeps_the_most_relevant(states: list[LegState], expected: str) -> None:
    legs = [make_leg(f"l{n}", state) for n, state in enumerate(states)]
    assert dialog_ids(render(legs, SINGLE_DIALOG)) == [expected]


def test_single_dialog_ties_go_to_the_latest_version() -> None:
    legs = [make_leg("old", LegState.EARLY, version=2), make_leg("new", LegState.EARLY, version=5)]
    assert dialog_ids(render(legs, SINGLE_DIALOG)) == ["new"]
    assert dialog_ids(render(list(reversed(legs)), SINGLE_DIALOG)) == ["new"]
    # Proceeding and trying rank alike (both before any provisional response with a tag).
    legs = [make_leg("setup", LegState.PROCEEDING, version=1), make_leg("later", LegState.TRYING, version=3)]
    assert dialog_ids(render(legs, SINGLE_DIALOG)) == ["later"]


def test_dummy_idle_shows_one_terminated_dialog_when_none_would_be() -> None:
    root = render([], DUMMY_IDLE)
    (dialog,) = root.findall(f"{NS}dialog")
    assert dict(dialog.items()) == {"id": "idle", "call-id": "idle"}
    assert dialog.findtext(f"{NS}state") == "terminated"
    assert [etree.QName(child).localname for child in dialog] == ["state"]
    assert dialog_ids(render([make_leg("a", LegState.EARLY)], DUMMY_IDLE)) == ["a"]


def test_no_identities_leaves_out_local_and_remote() -> None:
    root = render([make_leg("a", LegState.CONFIRMED)], NO_IDENTITIES)
    (dialog,) = root.findall(f"{NS}dialog")
    assert [etree.QName(child).localname for child in dialog] == ["state"]
    other_parties = [make_leg("a", LegState.CONFIRMED, remote=Party("sip:carol@example.org", "Carol"))]
    assert digest([make_leg("a", LegState.CONFIRMED)], NO_IDENTITIES) == digest(other_parties, NO_IDENTITIES)
    assert digest([make_leg("a", LegState.CONFIRMED)]) != digest(other_parties)


def test_no_terminated_hides_ended_calls() -> None:
    legs = [make_leg("a", LegState.TERMINATED), make_leg("b", LegState.CONFIRMED)]
    assert dialog_ids(render(legs, NO_TERMINATED)) == ["b"]
    assert dialog_ids(render(legs[:1], NO_TERMINATED)) == []
    assert dialog_ids(render(legs[:1], NO_TERMINATED, DUMMY_IDLE)) == ["idle"]


def test_no_terminated_digest_is_unchanged_by_a_call_ending_and_disappearing() -> None:
    before = [make_leg("b", LegState.CONFIRMED)]
    ringing = [*before, make_leg("a", LegState.EARLY)]
    ended = [*before, make_leg("a", LegState.TERMINATED, version=2)]
    assert digest(ended, NO_TERMINATED) == digest(before, NO_TERMINATED)
    assert digest(ringing, NO_TERMINATED) != digest(before, NO_TERMINATED)
    assert digest(ended) != digest(before)


def test_single_dialog_under_no_terminated_prefers_a_live_dialog() -> None:
    legs = [make_leg("a", LegState.TERMINATED, version=9), make_leg("b", LegState.TRYING)]
    assert dialog_ids(render(legs, SINGLE_DIALOG, NO_TERMINATED)) == ["b"]
    assert dialog_ids(render(legs[:1], SINGLE_DIALOG, NO_TERMINATED, DUMMY_IDLE)) == ["idle"]


def test_dummy_idle_digest_differs_from_empty() -> None:
    assert digest([], DUMMY_IDLE) != digest([])
    assert digest([make_leg("a", LegState.TERMINATED)], NO_TERMINATED, DUMMY_IDLE) == digest([], DUMMY_IDLE)


legs_strategy = st.lists(
    st.builds(
        make_leg,
        leg_id=st.sampled_from(["a", "b", "c", "d"]),
        state=st.sampled_from(list(LegState)),
        version=st.integers(0, 5),
        remote=st.sampled_from([Party("sip:bob@example.org"), Party("sip:carol@example.org", "Carol")]),
    ),
    max_size=4,
    unique_by=lambda leg: leg.leg_id,
)
profiles_strategy = st.frozensets(st.sampled_from(sorted(PROFILES)))


@settings(max_examples=200, deadline=None)
@given(first=legs_strategy, second=legs_strategy, profile=profiles_strategy)
def test_digest_equal_exactly_when_documents_equal(
    first: list[Leg], second: list[Leg], profile: frozenset[str]
) -> None:
    one = dialoginfo.render_dialog_info(ENTITY, 1, first, profile)
    two = dialoginfo.render_dialog_info(ENTITY, 1, second, profile)
    validate_dialog_info(one)
    assert (one == two) == (digest(first, *profile) == digest(second, *profile))


def test_parse_profile() -> None:
    assert parse_profile([]) == frozenset()
    assert parse_profile([" single-dialog", "no-terminated", ""]) == {SINGLE_DIALOG, NO_TERMINATED}
    with pytest.raises(ValueError, match="bogus, other"):
        parse_profile(["other", "single-dialog", "bogus"])


RULES = [
    ("^Yealink SIP-T4", ("single-dialog",)),
    ("[unclosed", ("no-identities",)),
    ("Grandstream", ("dummy-idle", "no-terminated")),
    ("", ("no-identities",)),
]


@pytest.mark.parametrize(
    ("account", "user_agent", "rules", "expected"),
    [
        (("no-terminated",), "Yealink SIP-T46S 66.85", RULES, ("no-terminated",)),
        ((), "Yealink SIP-T46S 66.85", RULES, ()),
        (None, "Yealink SIP-T46S 66.85", RULES, ("single-dialog",)),
        (None, "Grandstream GXP2170 1.0", RULES, ("dummy-idle", "no-terminated")),
        (None, "[unclosed", RULES[:2], ()),
        (None, "Linphone/5.2", RULES, ("no-identities",)),
        (None, "Linphone/5.2", RULES[:3], ()),
        (None, "", [], ()),
    ],
)
def test_choose_profile(
    account: tuple[str, ...] | None,
    user_agent: str,
    rules: list[tuple[str, tuple[str, ...]]],
    expected: tuple[str, ...],
) -> None:
    assert choose_profile(account, user_agent, rules) == expected
