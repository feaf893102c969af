"""What an operator's decision does to a subscription, the watcher list, and the profile records."""

from __future__ import annotations

import pytest

from statestore.domain import profiles
from statestore.domain.authorization import Authorization, Decision, Policy
from statestore.domain.lifecycle import Event, State
from statestore.presence_admin import decision_event, watchers
from tests.factories import subscription

NOW = 1_000_000.0


@pytest.mark.parametrize(
    ("decision", "state", "event"),
    [
        (Decision.APPROVED, State.PENDING, Event.APPROVED),
        (Decision.APPROVED, State.ACTIVE, None),
        (Decision.APPROVED, State.TERMINATED, None),
        (Decision.DENIED, State.PENDING, Event.REJECTED),
        (Decision.DENIED, State.ACTIVE, Event.REJECTED),
        (Decision.DENIED, State.TERMINATED, None),
        (Decision.BLOCKED, State.PENDING, Event.REJECTED),
        (Decision.BLOCKED, State.ACTIVE, Event.REJECTED),
        (Decision.BLOCKED, State.TERMINATED, None),
    ],
)
def test_decision_event(decision: Decision, state: State, event: Event | None) -> None:
    assert decision_event(decision, state) is event


def test_watchers_rows_sorted_with_decisions_of_watchers_without_subscription() -> None:
    pending = subscription("bob@x", "alice@x", event="presence", status="pending", expires_at=NOW + 60)
    ended = subscription("bob@x", "alice@x", event="dialog", expires_at=NOW, termination_reason="rejected")
    expired = subscription("carol@x", "alice@x", event="presence", expires_at=NOW - 1)
    authorization = Authorization(Policy.ASK, {"carol@x": Decision.APPROVED, "dave@x": Decision.BLOCKED})
    view = watchers("alice@x", authorization, [pending, ended, expired], NOW)
    assert view["presentity"] == "alice@x" and view["policy"] == "ask"
    assert [(r["watcher"], r["event"], r["status"], r["event_reason"], r["expires"], r["decision"])
            for r in view["watchers"]] == [
        ("bob@x", "dialog", "terminated", "rejected", 0, ""),
        ("bob@x", "presence", "pending", "subscribe", 60, ""),
        ("carol@x", "presence", "terminated", "timeout", 0, "approved"),
        ("dave@x", "", "", "", None, "blocked"),
    ]


def test_profile_records_round_trip_and_tolerate_what_they_do_not_know() -> None:
    assert profiles.profile_from_record(profiles.profile_record(["single-dialog"])) == ("single-dialog",)
    assert profiles.profile_from_record(None) is None
    assert profiles.profile_from_record({"profile": ["single-dialog", "from-the-future"]}) == ("single-dialog",)
    rules = profiles.with_rule([], "^Yealink", ["single-dialog"])
    rules = profiles.with_rule(rules, "^Snom", [])
    rules = profiles.with_rule(rules, "^Yealink", ["dummy-idle"])
    assert rules == [("^Yealink", ("dummy-idle",)), ("^Snom", ())]
    assert profiles.ua_rules_from_record(profiles.ua_rules_record(rules)) == rules
    assert profiles.ua_rules_from_record({"rules": [["ok", []], "junk", [1, []]]}) == [("ok", ())]
    assert profiles.without_rule(rules, "^Yealink") == [("^Snom", ())]
    with pytest.raises(ValueError, match="invalid User-Agent regex"):
        profiles.check_pattern("(")
