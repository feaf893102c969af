"""RFC 3857/3858 watcherinfo rendering: full and partial state, schema validity, the digest."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from statestore.domain import watcherinfo
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Subscription
from tests.factories import subscription
from tests.schema import WATCHERINFO_NS, validate_watcherinfo

NS = f"{{{WATCHERINFO_NS}}}"
ENTITY = "sip:alice@example.com"
NOW = 1000.0
NO_PROFILE: frozenset[str] = frozenset()


def watcher(watcher_aor: str, sub_id: str, event: str = "presence", **changes: Any) -> Subscription:
    values: dict[str, Any] = {"expires_at": NOW + 600, **changes}
    return subscription(watcher=watcher_aor, sub_id=sub_id, event=event, **values)


def state_of(*watchers: Subscription, now: float = NOW) -> PresentityState:
    return PresentityState((), (), watchers=tuple(watchers), now=now)


def render(
    state: PresentityState,
    previous: PresentityState | None = None,
    package: str = "presence",
    version: int | str = 0,
    entity: str = ENTITY,
) -> etree._Element:
    """Render, validate against watcherinfo.xsd, and parse: every body here is validated."""
    body = watcherinfo.render_for(package)(entity, version, state, NO_PROFILE, previous)
    return validate_watcherinfo(body)


def watcher_list(root: etree._Element) -> etree._Element:
    (node,) = root.findall(f"{NS}watcher-list")
    return node


def shown(root: etree._Element) -> dict[str, tuple[str, str, str]]:
    """Each <watcher> by id: (status, event, URI)."""
    return {
        node.get("id", ""): (node.get("status", ""), node.get("event", ""), node.text or "")
        for node in watcher_list(root).findall(f"{NS}watcher")
    }


def test_content_type() -> None:
    assert watcherinfo.CONTENT_TYPE == "application/watcherinfo+xml"


@pytest.mark.parametrize(("package", "version"), [("presence", 0), ("dialog", 4294967296)])
def test_root_and_watcher_list_attributes(package: str, version: int) -> None:
    root = render(state_of(), package=package, version=version, entity="sip:o'brien&co@example.com")
    assert dict(root.items()) == {"version": str(version), "state": "full"}
    assert dict(watcher_list(root).items()) == {"resource": "sip:o'brien&co@example.com", "package": package}


def test_full_state_lists_the_watched_package_only_and_not_the_terminated() -> None:
    state = state_of(
        watcher("bob@example.com", "s1"),
        watcher("carol@example.com", "s2", status="pending"),
        watcher("dave@example.com", "s3", event="dialog"),
        watcher("erin@example.com", "s4", termination_reason="rejected"),
        watcher("frank@example.com", "s5", expires_at=NOW),
        watcher("gina@example.com", "s6", status_event="approved"),
    )
    assert shown(render(state)) == {
        "s1": ("active", "subscribe", "sip:bob@example.com"),
        "s2": ("pending", "subscribe", "sip:carol@example.com"),
        "s6": ("active", "approved", "sip:gina@example.com"),
    }
    assert shown(render(state, package="dialog")) == {"s3": ("active", "subscribe", "sip:dave@example.com")}


def test_unknown_status_is_shown_pending() -> None:
    state = state_of(watcher("bob@example.com", "s1", status="weird", status_event="odd"))
    assert shown(render(state)) == {"s1": ("pending", "subscribe", "sip:bob@example.com")}


@pytest.mark.parametrize(
    ("reason", "event"),
    [
        ("", "timeout"), ("rejected", "rejected"), ("noresource", "noresource"), ("deactivated", "deactivated"),
        ("probation", "probation"), ("giveup", "giveup"), ("timeout", "timeout"), ("invariant", "timeout"),
    ],
)
def test_partial_termination_events(reason: str, event: str) -> None:
    before = watcher("bob@example.com", "s1")
    after = replace(before, termination_reason=reason, expires_at=NOW if not reason else before.expires_at)
    root = render(state_of(after), state_of(before))
    assert root.get("state") == "partial"
    assert shown(root) == {"s1": ("terminated", event, "sip:bob@example.com")}


def test_partial_lists_changes_and_watchers_gone() -> None:
    same, approved, gone = (
        watcher("bob@example.com", "s1"),
        watcher("carol@example.com", "s2", status="pending"),
        watcher("dave@example.com", "s3"),
    )
    newcomer = watcher("erin@example.com", "s4", status="pending")
    already_over = watcher("frank@example.com", "s5", termination_reason="rejected")
    previous = state_of(same, approved, gone, already_over)
    state = state_of(same, replace(approved, status="active", status_event="approved"), newcomer, already_over)
    assert shown(render(state, previous)) == {
        "s2": ("active", "approved", "sip:carol@example.com"),
        "s3": ("terminated", "timeout", "sip:dave@example.com"),
        "s4": ("pending", "subscribe", "sip:erin@example.com"),
    }
    assert watcherinfo.changed(previous, state, "presence")
    assert not watcherinfo.changed(previous, previous, "presence")
    assert shown(render(previous, previous)) == {}


def test_digest_ignores_now_refreshes_and_other_packages() -> None:
    digest = watcherinfo.digest_for("presence")
    base = state_of(watcher("bob@example.com", "s1"), watcher("carol@example.com", "s2"))
    assert digest(base, NO_PROFILE) == digest(replace(base, now=NOW + 50), NO_PROFILE)
    refreshed = state_of(replace(base.watchers[0], expires_at=NOW + 3600), base.watchers[1])
    assert digest(base, NO_PROFILE) == digest(refreshed, NO_PROFILE)
    other = state_of(*base.watchers, watcher("dave@example.com", "s3", event="dialog"))
    assert digest(base, NO_PROFILE) == digest(other, NO_PROFILE)
    assert digest(base, NO_PROFILE) == digest(state_of(*reversed(base.watchers)), NO_PROFILE)
    approved = state_of(replace(base.watchers[0], status_event="approved"), base.watchers[1])
    assert digest(base, NO_PROFILE) != digest(approved, NO_PROFILE)


def test_attribute_values_are_escaped() -> None:
    state = state_of(watcher('o"brien&<x>@example.com', 'id"<&>'))
    assert shown(render(state)) == {'id"<&>': ("active", "subscribe", 'sip:o"brien&<x>@example.com')}


subscriptions = st.lists(
    st.builds(
        watcher,
        watcher_aor=st.sampled_from(["bob@example.com", "carol@example.com"]),
        sub_id=st.sampled_from([f"s{n}" for n in range(6)]),
        event=st.sampled_from(["presence", "dialog"]),
        status=st.sampled_from(["active", "pending"]),
        status_event=st.sampled_from(["subscribe", "approved"]),
        termination_reason=st.sampled_from(["", "", "rejected", "noresource"]),
    ),
    max_size=6,
    unique_by=lambda sub: sub.sub_id,
)


@settings(max_examples=150, deadline=None)
@given(first=subscriptions, second=subscriptions, version=st.integers(0, 2**32))
def test_partial_after_full_is_valid_and_consistent(
    first: list[Subscription], second: list[Subscription], version: int
) -> None:
    previous, state = state_of(*first), state_of(*second)
    full = render(previous, version=version)
    assert full.get("version") == str(version)
    listed = shown(full)
    assert set(listed) == {s.sub_id for s in first if s.event == "presence" and not s.termination_reason}
    partial = shown(render(state, previous, version=version + 1))
    # Applying the partial document to the full one gives the next full document (RFC 3858 §4).
    merged = {**listed, **partial}
    live = {key: value for key, value in merged.items() if value[0] != "terminated"}
    assert live == shown(render(state))
    assert watcherinfo.changed(previous, state, "presence") == bool(partial)
