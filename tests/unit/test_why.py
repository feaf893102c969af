"""`blfctl why`'s verdict (statestore.domain.why): the lamp, the reasons with their
evidence, what would change it and who sends each watcher's NOTIFYs, from facts alone."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statestore.domain.model import Binding, Direction, Leg, LegState, Party, Publication, Subscription
from statestore.domain.notified import LastNotify, NotifyUnknown
from statestore.domain.why import Facts, Instance, Lease, explain

NOW = 1_000_000.0
ALICE = "alice@example.com"
ALL = frozenset({"dialog", "presence", "reg"})
LIVE = {"ks1": Instance(ALL, Lease(6, 4)), "ks2": Instance(ALL, Lease(6, 5))}


def leg(state: LegState, direction: Direction = Direction.RECIPIENT, instance: str = "ks1", leg_id: str = "l1") -> Leg:
    return Leg(
        account=ALICE, instance=instance, leg_id=leg_id, version=1, state=state, direction=direction,
        call_id=f"call-{leg_id}", local_tag="", remote_tag="ft", local=Party("sip:alice@example.com"),
        remote=Party("sip:bob@example.com"),
    )


REG = Binding(ALICE, "sip:alice@10.0.0.1", NOW + 120, "reg-1", 1, instance="ks2")
OLD_REG = replace(REG, contact="sip:alice@10.0.0.9", expires_at=NOW - 1)
PUB = Publication(ALICE, "presence", "e1", NOW + 60, "application/pidf+xml", "<presence/>", NOW - 5, "ks1", "desk")
SUB = Subscription(
    sub_id="s1", event="dialog", presentity=ALICE, entity="sip:alice@example.com", watcher="bob@example.com",
    watcher_contact="sip:bob@10.0.0.2", call_id="c", local_tag="lt", remote_tag="rt",
    local_uri="sip:alice@example.com", remote_uri="sip:bob@example.com", route_set=(), expires_at=NOW + 300,
    owner="ks2", cseq=1, version=0, epoch=3,
)


def facts(*legs: Leg, bindings: tuple[Binding, ...] = (REG,), pubs: tuple[Publication, ...] = (),
          subs: tuple[Subscription, ...] = (), instances: dict[str, Instance] | None = None) -> Facts:
    return Facts(ALICE, legs, bindings, pubs, subs, LIVE if instances is None else instances, NOW)


@pytest.mark.parametrize(("given", "lamp", "state", "presence", "reg"), [
    (facts(), "idle", "idle", "open", "active"),
    (facts(bindings=()), "offline", "terminated", "closed", "terminated"),
    (facts(bindings=(OLD_REG,)), "offline", "terminated", "closed", "terminated"),
    (facts(leg(LegState.EARLY)), "ringing", "early", "open", "active"),
    (facts(leg(LegState.TRYING, Direction.INITIATOR)), "busy", "busy", "open", "active"),
    (facts(leg(LegState.CONFIRMED)), "busy", "busy", "open, on-the-phone", "active"),
    (facts(leg(LegState.TERMINATED)), "idle", "idle", "open", "active"),
    (facts(leg(LegState.EARLY), bindings=()), "ringing", "early", "closed", "terminated"),
    (facts(pubs=(PUB,)), "idle", "idle", "as published (1 live publication)", "active"),
    (facts(pubs=(replace(PUB, expires_at=NOW - 1),)), "idle", "idle", "open", "active"),
])
def test_the_lamp_and_each_package_as_its_watchers_see_it(given, lamp, state, presence, reg) -> None:
    verdict = explain(given).to_dict()
    assert (verdict["lamp"], verdict["state"]) == (lamp, state)
    assert verdict["packages"] == {"dialog": state, "presence": presence, "reg": reg}


@pytest.mark.parametrize(("the_leg", "instances", "text", "evidence"), [
    (leg(LegState.CONFIRMED), LIVE, "on ks1: answered: busy; instance ks1 live, lease TTL 6 s, 4 s left",
     {"instance": "ks1", "state": "confirmed", "lease_alive": True, "lease_ttl": 6, "lease_remaining": 4}),
    (leg(LegState.EARLY), LIVE, "ringing at the account: early",
     {"state": "early", "direction": "recipient"}),
    (leg(LegState.PROCEEDING, Direction.INITIATOR), LIVE, "placing a call: busy while the other side rings",
     {"direction": "initiator"}),
    (leg(LegState.TERMINATED), LIVE, "ended, counts for nothing", {"state": "terminated"}),
    (leg(LegState.CONFIRMED, instance="ks3"), LIVE, "instance ks3 is not live (its lease lapsed",
     {"instance": "ks3", "lease_alive": False}),
    (leg(LegState.CONFIRMED), {"ks1": Instance(ALL)}, "instance ks1 live", {"lease_alive": True}),
])
def test_each_leg_is_a_reason_naming_its_instance_state_and_lease(the_leg, instances, text, evidence) -> None:
    given = replace(facts(the_leg, instances=instances), leg_keys={"l1": "/blf/legs/alice@example.com/ks1/l1"})
    (reason,) = [r for r in explain(given).reasons if r.evidence.get("kind") == "leg"]
    assert text in reason.text
    assert evidence.items() <= reason.evidence.items()
    assert (reason.evidence["key"], reason.evidence["leg_id"]) == ("/blf/legs/alice@example.com/ks1/l1", "l1")


def test_registrations_and_publications_are_reasons_with_their_expiry() -> None:
    texts = [r.text for r in explain(facts(bindings=(REG, OLD_REG), pubs=(PUB,))).reasons]
    assert texts == [
        "registered sip:alice@10.0.0.1 via ks2, expires in 120 s",
        "registration sip:alice@10.0.0.9 expired (not counted)",
        "publication presence etag e1 by desk via ks1, expires in 60 s",
    ]
    assert "no live registration" in explain(facts(bindings=())).reasons[-1].text


@pytest.mark.parametrize(("given", "changes"), [
    (facts(leg(LegState.CONFIRMED)), [
        "leg l1 on ks1: the lamp moves when the call ends, or when instance ks1's lease (TTL 6 s) lapses",
        "with no active leg left it shows idle"]),
    (facts(leg(LegState.EARLY), bindings=()), [
        "leg l1 on ks1: the lamp moves when the call is answered (busy), or when instance ks1's lease (TTL 6 s) lapses",
        "with no active leg left it shows offline"]),
    (facts(), ["it turns ringing when a call reaches it, busy when it places or answers one",
               "it goes offline when its registrations end (the last expires in 120 s unless refreshed)"]),
    (facts(bindings=()), ["it turns idle when a phone of the account registers",
                          "a call placed or received shows ringing/busy even while unregistered"]),
])
def test_what_would_change_it(given, changes) -> None:
    assert list(explain(given).changes) == changes


@pytest.mark.parametrize(("sub", "instances", "responsible", "owner_live"), [
    (SUB, LIVE, "ks2", True),
    (replace(SUB, owner="ks9"), LIVE, "ks1", False),  # rendezvous over the live ones (s1: ks1)
    (replace(SUB, owner="ks9"), {"ks2": Instance(ALL)}, "ks2", False),
    (replace(SUB, owner="ks9", event="presence"), {"ks1": Instance(frozenset({"dialog"})), "ks2": Instance(ALL)},
     "ks2", False),  # ks1 does not serve presence (a rolling upgrade)
    (SUB, {}, None, False),
])
def test_each_watcher_names_the_instance_responsible_for_its_notifies(sub, instances, responsible, owner_live) -> None:
    (watcher,) = explain(facts(subs=(sub,), instances=instances)).to_dict()["subscriptions"]
    assert (watcher["responsible"], watcher["owner_live"]) == (responsible, owner_live)
    assert watcher["last_notify"] is None  # not in the store: asked of the responsible instance
    assert watcher["first_notify"] == {"epoch": 3, "cseq": 1, "version": 0}


def test_an_alias_is_said_and_the_json_shape_is_stable() -> None:
    verdict = explain(replace(facts(leg(LegState.EARLY), subs=(SUB,)), asked="104@example.com")).to_dict()
    assert (verdict["account"], verdict["asked"], verdict["alias"]) == (ALICE, "104@example.com", True)
    assert list(verdict) == ["account", "asked", "alias", "lamp", "state", "packages", "reasons", "changes",
                             "subscriptions"]
    assert list(verdict["subscriptions"][0]) == [
        "sub_id", "watcher", "event", "status", "expires_in", "owner", "owner_live", "responsible", "contact",
        "last_notify", "last_notify_unknown", "first_notify", "notify_timeouts"]
    assert explain(facts()).to_dict()["alias"] is False


@pytest.mark.parametrize(("notified", "last", "unknown"), [
    ({}, None, "not asked"),
    ({"s1": NotifyUnknown("instance ks2 unreachable")}, None, "instance ks2 unreachable"),
    ({"s1": LastNotify(4, 65541, NOW - 2, "ks2", 200)},
     {"version": 4, "cseq": 65541, "sent_at": NOW - 2, "sent_by": "ks2", "answer": 200}, None),
    ({"s1": LastNotify(5, 65542, NOW - 1, "ks2", None)},
     {"version": 5, "cseq": 65542, "sent_at": NOW - 1, "sent_by": "ks2", "answer": None}, None),
    ({"other": LastNotify(5, 2, NOW, "ks2", 200)}, None, "not asked"),
])
def test_each_watcher_shows_what_its_responsible_instance_said_of_the_last_notify(notified, last, unknown) -> None:
    (watcher,) = explain(replace(facts(subs=(SUB,)), notified=notified)).to_dict()["subscriptions"]
    assert (watcher["last_notify"], watcher["last_notify_unknown"]) == (last, unknown)
