"""The notifier's in-memory copy of the store: events in, dirty presentities and due NOTIFYs out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statestore import codec, keys
from statestore.domain import bodies
from statestore.domain.model import Binding, Direction, Leg, LegState, Party, Subscription
from statestore.domain.subscription import PACKAGES, EventPackage
from statestore.mirror import EXPIRY_RECHECK_SECONDS, Due, Mirror

NOW = 1_000_000.0
ALICE = "alice@example.com"
CAROL = "carol@example.com"

LEG = Leg(
    account=ALICE, instance="node-a", leg_id="leg-1", version=1, state=LegState.EARLY,
    direction=Direction.RECIPIENT, call_id="call-1", local_tag="", remote_tag="ftag",
    local=Party("sip:alice@example.com"), remote=Party("sip:bob@example.com"),
)
LEG_KEY = keys.leg(ALICE, "node-a", "leg-1")
BINDING = Binding(ALICE, "sip:alice@10.0.0.1", NOW + 300, "reg-1", 1, instance="node-a")
REG_KEY = keys.reg(ALICE, "b1")
SUB = Subscription(
    sub_id="sub-1", event="dialog", presentity=ALICE, entity="sip:alice@example.com",
    watcher="bob@example.com", watcher_contact="sip:bob@10.0.0.2", call_id="sub-call",
    local_tag="lt", remote_tag="rt", local_uri="sip:alice@example.com", remote_uri="sip:bob@example.com",
    route_set=(), expires_at=NOW + 300, owner="node-a", cseq=1, version=0,
)
SUB_KEY = keys.sub("sub-1")
EMPTY = bodies.presentity_state([], [])


def info() -> bytes:
    return codec.encode({"host": "10.0.0.1"})


def mirror_with(*items: tuple[str, bytes, int]) -> Mirror:
    mirror = Mirror()
    mirror.load(items)
    return mirror


def sub_item(sub: Subscription, revision: int) -> tuple[str, bytes, int]:
    return keys.sub(sub.sub_id), codec.encode_subscription(sub), revision


def seen(sub: Subscription, *legs: Leg) -> Subscription:
    """The subscription as it is once a NOTIFY showed these legs."""
    return replace(sub, last_digest=bodies.digest(sub.event, bodies.presentity_state(legs, [])))


# --- load and apply ---------------------------------------------------------------------------


def test_load_fills_every_table() -> None:
    mirror = mirror_with(
        (LEG_KEY, codec.encode_leg(LEG), 10),
        (REG_KEY, codec.encode_binding(BINDING), 11),
        sub_item(SUB, 12),
        (keys.instance("node-a"), info(), 13),
        (keys.domain("example.com"), codec.encode({"domain": "example.com"}), 14),
        ("/elsewhere/x", b"{}", 15),
    )
    assert mirror.legs == {ALICE: {LEG_KEY: LEG}}
    assert mirror.bindings == {ALICE: {REG_KEY: BINDING}}
    assert mirror.subs == {"sub-1": (SUB, 12)}
    assert mirror.instances == {"node-a"}
    assert mirror.state_of(ALICE) == bodies.presentity_state([LEG], [BINDING])


def test_load_replaces_what_was_there() -> None:
    mirror = mirror_with((LEG_KEY, codec.encode_leg(LEG), 10), (keys.instance("node-a"), info(), 11))
    mirror.remember(replace(SUB, sub_id="sub-2"), 20)
    mirror.load([sub_item(SUB, 30)])
    assert (mirror.legs, mirror.bindings, mirror.subs, mirror.instances) == ({}, {}, {"sub-1": (SUB, 30)}, set())


def test_apply_leg_returns_its_account() -> None:
    mirror = Mirror()
    assert mirror.apply(LEG_KEY, codec.encode_leg(LEG), 5) == {ALICE}
    assert mirror.state_of(ALICE) == bodies.presentity_state([LEG], [])


def test_apply_newer_leg_value_replaces_it() -> None:
    mirror = mirror_with((LEG_KEY, codec.encode_leg(LEG), 5))
    confirmed = replace(LEG, state=LegState.CONFIRMED, version=2)
    assert mirror.apply(LEG_KEY, codec.encode_leg(confirmed), 6) == {ALICE}
    assert mirror.legs == {ALICE: {LEG_KEY: confirmed}}


def test_apply_leg_deletion() -> None:
    mirror = mirror_with((LEG_KEY, codec.encode_leg(LEG), 5))
    assert mirror.apply(LEG_KEY, None, 6) == {ALICE}
    assert mirror.legs == {}
    assert mirror.state_of(ALICE) == EMPTY


def test_apply_deletion_of_one_leg_keeps_the_others() -> None:
    other_key = keys.leg(ALICE, "node-b", "leg-2")
    other = replace(LEG, instance="node-b", leg_id="leg-2")
    mirror = mirror_with((LEG_KEY, codec.encode_leg(LEG), 5), (other_key, codec.encode_leg(other), 6))
    assert mirror.apply(LEG_KEY, None, 7) == {ALICE}
    assert mirror.legs == {ALICE: {other_key: other}}


def test_apply_reg_and_its_deletion_do_not_dirty_a_dialog_presentity() -> None:
    mirror = mirror_with(sub_item(SUB, 4))
    assert mirror.apply(REG_KEY, codec.encode_binding(BINDING), 5) == set()
    assert mirror.state_of(ALICE) == bodies.presentity_state([], [BINDING])
    assert mirror.apply(REG_KEY, None, 6) == set()
    assert mirror.bindings == {}


def test_deleting_an_unknown_leg_or_reg_is_harmless() -> None:
    mirror = Mirror()
    assert mirror.apply(LEG_KEY, None, 5) == {ALICE}
    assert mirror.apply(REG_KEY, None, 6) == set()
    assert (mirror.legs, mirror.bindings) == ({}, {})


def test_apply_sub_returns_its_presentity() -> None:
    mirror = Mirror()
    assert mirror.apply(*sub_item(SUB, 5)) == {ALICE}
    assert mirror.subs == {"sub-1": (SUB, 5)}


def test_apply_sub_deletion() -> None:
    mirror = mirror_with(sub_item(SUB, 5))
    assert mirror.apply(SUB_KEY, None, 6) == {ALICE}
    assert mirror.subs == {}


def test_deleting_an_unknown_sub_changes_nothing() -> None:
    assert Mirror().apply(SUB_KEY, None, 6) == set()


def test_apply_newer_sub_revision_replaces_it() -> None:
    mirror = mirror_with(sub_item(SUB, 5))
    newer = replace(SUB, cseq=2, version=1)
    assert mirror.apply(*sub_item(newer, 6)) == {ALICE}
    assert mirror.subs == {"sub-1": (newer, 6)}


def test_apply_instance_put_and_delete_return_the_presentities_whose_sender_changes() -> None:
    carol_sub = replace(SUB, sub_id="sub-2", presentity=CAROL, owner="node-b")
    mirror = mirror_with(sub_item(SUB, 5), sub_item(carol_sub, 6))
    # node-a joins: its own subscriptions come back to it, node-b's are orphans (rendezvous).
    assert mirror.apply(keys.instance("node-a"), info(), 7) == {ALICE, CAROL}
    assert mirror.instances == {"node-a"}
    # node-b joins: only its subscriptions move; node-a's stay where they are.
    assert mirror.apply(keys.instance("node-b"), info(), 8) == {CAROL}
    assert mirror.apply(keys.instance("node-b"), info(), 9) == set()  # a lease refresh: no change
    assert mirror.apply(keys.instance("node-a"), None, 10) == {ALICE}
    assert mirror.instances == {"node-b"}


def test_apply_of_keys_the_notifier_does_not_track() -> None:
    mirror = Mirror()
    assert mirror.apply(keys.domain("example.com"), codec.encode({"domain": "example.com"}), 5) == set()
    assert mirror.apply(keys.account(ALICE), codec.encode({"user": "alice"}), 6) == set()
    assert mirror.apply("/elsewhere/legs/x", b"{}", 7) == set()
    assert (mirror.legs, mirror.bindings, mirror.subs, mirror.instances) == ({}, {}, {}, set())


# --- remember and forget ----------------------------------------------------------------------


def test_remember_takes_a_newer_revision() -> None:
    mirror = mirror_with(sub_item(SUB, 5))
    newer = replace(SUB, cseq=2)
    mirror.remember(newer, 6)
    assert mirror.subs == {"sub-1": (newer, 6)}


def test_remember_ignores_an_older_revision() -> None:
    mirror = mirror_with(sub_item(SUB, 6))
    mirror.remember(replace(SUB, cseq=9), 5)
    assert mirror.subs == {"sub-1": (SUB, 6)}


def test_an_older_event_does_not_replace_a_newer_remembered_sub() -> None:
    mirror = Mirror()
    ours = replace(SUB, cseq=3, version=2)
    mirror.remember(ours, 10)
    assert mirror.apply(*sub_item(replace(SUB, cseq=2), 9)) == set()
    assert mirror.apply(*sub_item(ours, 10)) == set()  # the watch echo of our own write
    assert mirror.subs == {"sub-1": (ours, 10)}


def test_forget() -> None:
    mirror = mirror_with(sub_item(SUB, 5), sub_item(replace(SUB, sub_id="sub-2"), 6))
    mirror.forget("sub-1")
    mirror.forget("unknown")
    assert set(mirror.subs) == {"sub-2"}


# --- due --------------------------------------------------------------------------------------


def plain(dues: list[Due]) -> list[Due]:
    """The dues without their body templates (compared on their own below)."""
    return [replace(due, body=None) for due in dues]


def live(*names: str) -> list[tuple[str, bytes, int]]:
    return [(keys.instance(name), info(), 1) for name in names]


def test_due_when_the_body_changed() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(seen(SUB), 5), (LEG_KEY, codec.encode_leg(LEG), 6))
    assert plain(mirror.due("node-a", {ALICE}, NOW)) == [
        Due(seen(SUB), 5, bodies.presentity_state([LEG], []), expired=False)
    ]


def test_nothing_due_when_the_digest_is_the_last_one_sent() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(seen(SUB, LEG), 5), (LEG_KEY, codec.encode_leg(LEG), 6))
    assert mirror.due("node-a", {ALICE}, NOW) == []


def test_a_registration_alone_does_not_change_a_dialog_body() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(seen(SUB), 5), (REG_KEY, codec.encode_binding(BINDING), 6))
    assert mirror.due("node-a", {ALICE}, NOW) == []


def test_due_only_for_dirty_presentities() -> None:
    carol_sub = replace(SUB, sub_id="sub-2", presentity=CAROL)
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), sub_item(carol_sub, 6))
    # Neither has been notified of the empty state (last_digest ""), but only Carol is dirty.
    assert [due.subscription for due in mirror.due("node-a", {CAROL}, NOW)] == [carol_sub]
    assert mirror.due("node-a", set(), NOW) == []


def test_due_for_every_presentity_when_all_are_dirty() -> None:
    carol_sub = replace(SUB, sub_id="sub-2", presentity=CAROL)
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), sub_item(carol_sub, 6))
    assert {due.subscription.sub_id for due in mirror.due("node-a", {ALICE, CAROL}, NOW)} == {"sub-1", "sub-2"}


def test_due_only_for_subscriptions_this_instance_sends() -> None:
    mirror = mirror_with(*live("node-a", "node-b"), sub_item(SUB, 5))
    assert mirror.due("node-b", {ALICE}, NOW) == []
    assert [due.subscription for due in mirror.due("node-a", {ALICE}, NOW)] == [SUB]


def test_a_dead_owners_subscription_is_taken_over() -> None:
    orphan = replace(SUB, owner="node-z")
    mirror = mirror_with(*live("node-b"), sub_item(orphan, 5))
    assert [due.subscription for due in mirror.due("node-b", {ALICE}, NOW)] == [orphan]


def test_nothing_is_due_without_live_instances() -> None:
    mirror = mirror_with(sub_item(SUB, 5))
    assert mirror.due("node-a", {ALICE}, NOW) == []


def test_expired_subscriptions_are_flagged_even_without_a_change() -> None:
    expired = seen(replace(SUB, expires_at=NOW))
    mirror = mirror_with(*live("node-a"), sub_item(expired, 5))
    assert plain(mirror.due("node-a", {ALICE}, NOW)) == [Due(expired, 5, EMPTY, expired=True)]


def test_due_uses_the_remembered_revision() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(seen(SUB), 5))
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 6)
    notified = replace(seen(SUB, LEG), cseq=2, version=1)
    mirror.remember(notified, 7)
    assert mirror.due("node-a", {ALICE}, NOW) == []
    mirror.apply(LEG_KEY, None, 8)
    assert plain(mirror.due("node-a", {ALICE}, NOW)) == [Due(notified, 7, EMPTY, expired=False)]


# --- event package inputs ---------------------------------------------------------------------


def test_a_registration_dirties_presentities_watched_by_a_package_that_reads_them(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    presence = EventPackage("presence", "application/pidf+xml", frozenset({"legs", "regs"}))
    monkeypatch.setitem(PACKAGES, "presence", presence)
    mirror = mirror_with(sub_item(replace(SUB, event="presence"), 4))
    assert mirror.apply(REG_KEY, codec.encode_binding(BINDING), 5) == {ALICE}
    assert mirror.apply(REG_KEY, None, 6) == {ALICE}


# --- index and expiry heap ----------------------------------------------------------------------


def test_the_index_follows_puts_moves_and_deletes() -> None:
    mirror = mirror_with(sub_item(SUB, 5), sub_item(replace(SUB, sub_id="sub-2"), 6))
    assert mirror.by_presentity == {ALICE: {"sub-1", "sub-2"}}
    assert mirror.by_owner == {"node-a": {"sub-1", "sub-2"}}
    mirror.apply(*sub_item(replace(SUB, sub_id="sub-2", presentity=CAROL, owner="node-b"), 7))
    assert mirror.by_presentity == {ALICE: {"sub-1"}, CAROL: {"sub-2"}}
    assert mirror.by_owner == {"node-a": {"sub-1"}, "node-b": {"sub-2"}}
    mirror.apply(SUB_KEY, None, 8)
    mirror.forget("sub-2")
    assert (mirror.subs, mirror.by_presentity, mirror.by_owner) == ({}, {}, {})


def test_due_looks_only_at_the_watchers_of_dirty_presentities() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(seen(SUB), 5))
    others = [replace(SUB, sub_id=f"other-{n}", presentity=f"u{n}@example.com") for n in range(50)]
    for n, other in enumerate(others):
        mirror.apply(*sub_item(other, 10 + n))
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 100)
    # The other presentities were never notified (last_digest ""), but only Alice is dirty.
    assert [due.subscription.sub_id for due in mirror.due("node-a", {ALICE}, NOW)] == ["sub-1"]


def test_expiry_comes_from_the_heap_without_any_dirty_presentity() -> None:
    soon = replace(seen(SUB), expires_at=NOW + 10)
    later = replace(seen(SUB), sub_id="sub-2", expires_at=NOW + 20)
    mirror = mirror_with(*live("node-a"), sub_item(soon, 5), sub_item(later, 6))
    assert mirror.due("node-a", set(), NOW) == []
    assert [d.subscription.sub_id for d in mirror.due("node-a", set(), NOW + 10) if d.expired] == ["sub-1"]
    mirror.forget("sub-1")  # the notifier removed it
    assert [d.subscription.sub_id for d in mirror.due("node-a", set(), NOW + 20) if d.expired] == ["sub-2"]


def test_a_refresh_moves_the_expiry() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(replace(seen(SUB), expires_at=NOW + 10), 5))
    mirror.apply(*sub_item(replace(seen(SUB), expires_at=NOW + 100), 6))
    assert mirror.due("node-a", set(), NOW + 50) == []
    assert [d.expired for d in mirror.due("node-a", set(), NOW + 100)] == [True]


def test_an_expired_subscription_still_there_is_due_again_later() -> None:
    """A removal that failed (store outage) is tried again; one removed is not."""
    mirror = mirror_with(*live("node-a"), sub_item(replace(seen(SUB), expires_at=NOW), 5))
    assert len(mirror.due("node-a", set(), NOW)) == 1
    assert mirror.due("node-a", set(), NOW + 1) == []
    assert len(mirror.due("node-a", set(), NOW + EXPIRY_RECHECK_SECONDS)) == 1
    mirror.forget("sub-1")
    assert mirror.due("node-a", set(), NOW + 3 * EXPIRY_RECHECK_SECONDS) == []


def test_another_instances_expired_subscription_is_taken_when_it_dies() -> None:
    mirror = mirror_with(*live("node-a", "node-b"), sub_item(replace(seen(SUB), expires_at=NOW), 5))
    assert mirror.due("node-b", set(), NOW) == []
    mirror.apply(keys.instance("node-a"), None, 6)
    assert [d.expired for d in mirror.due("node-b", set(), NOW + EXPIRY_RECHECK_SECONDS)] == [True]


# --- bodies rendered once per presentity --------------------------------------------------------


def test_the_watchers_of_one_presentity_share_one_body_template() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), sub_item(replace(SUB, sub_id="sub-2", version=7), 6))
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 7)
    dues = mirror.due("node-a", {ALICE}, NOW)
    assert len(dues) == 2 and dues[0].body is dues[1].body and dues[0].body is not None
    for due in dues:
        sub = due.subscription
        assert due.body.fill(sub.entity, sub.version) == bodies.render(sub.event, sub.entity, sub.version, due.state)


@pytest.mark.parametrize("entity", ["sip:alice@example.com", 'sip:a&b<c>"d\'@example.com', "sip:\u00e9l\u00e8ve@x.org"])
@pytest.mark.parametrize("version", [0, 1, 2**31 - 2])
def test_a_filled_template_is_the_body_rendered_for_that_watcher(entity: str, version: int) -> None:
    tricky = replace(LEG, local=Party(entity, display='"version" & entity'), remote=Party("sip:b@example.com"))
    state = bodies.presentity_state([tricky, LEG], [])
    assert bodies.Template("dialog", state).fill(entity, version) == bodies.render("dialog", entity, version, state)


# --- forward compatibility (issue 6, finding 5) -------------------------------------------------


def test_a_subscription_with_fields_this_version_does_not_know_is_read() -> None:
    data = SUB.to_dict() | {"zone": "eu-1", "future": {"nested": [1, 2]}}
    mirror = mirror_with(*live("node-a"), (SUB_KEY, codec.encode(data), 5))
    assert mirror.subs == {"sub-1": (SUB, 5)}
    assert len(mirror.due("node-a", {ALICE}, NOW)) == 1


def test_a_subscription_of_an_unknown_event_package_is_skipped_and_counted() -> None:
    presence = replace(SUB, sub_id="sub-2", event="presence")
    other = replace(presence, sub_id="sub-3")
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), sub_item(presence, 6), sub_item(other, 7))
    assert set(mirror.subs) == {"sub-1"}
    assert mirror.unknown_packages == {"presence": 2}
    assert len(mirror.notes) == 1 and "presence" in mirror.notes[0]  # logged once
    assert [d.subscription.sub_id for d in mirror.due("node-a", {ALICE}, NOW)] == ["sub-1"]


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[1, 2]", codec.encode({"sub_id": "sub-2"}), codec.encode(SUB.to_dict() | {"route_set": 5})],
)
def test_one_bad_subscription_record_does_not_stop_the_others(value: bytes) -> None:
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5))
    assert mirror.apply(keys.sub("sub-2"), value, 6) == set()
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 7)
    assert [d.subscription.sub_id for d in mirror.due("node-a", {ALICE}, NOW)] == ["sub-1"]
    assert mirror.unreadable == {"subs": 1}
    assert len(mirror.notes) == 1


def test_a_record_that_becomes_unreadable_is_dropped() -> None:
    mirror = mirror_with(sub_item(SUB, 5), (LEG_KEY, codec.encode_leg(LEG), 6))
    assert mirror.apply(SUB_KEY, b"{}", 7) == {ALICE}
    assert mirror.apply(LEG_KEY, b"{broken", 8) == {ALICE}
    assert (mirror.subs, mirror.legs, mirror.by_presentity) == ({}, {}, {})
    assert mirror.unreadable == {"subs": 1, "legs": 1}


def test_bad_leg_and_registration_records_are_skipped_in_a_snapshot() -> None:
    mirror = mirror_with(
        *live("node-a"), sub_item(SUB, 5), (LEG_KEY, b"\xff", 6), (REG_KEY, codec.encode({"account": ALICE}), 7),
        (keys.leg(ALICE, "node-a", "leg-2"), codec.encode_leg(LEG), 8),
    )
    assert list(mirror.legs[ALICE]) == [keys.leg(ALICE, "node-a", "leg-2")]
    assert mirror.unreadable == {"legs": 1, "regs": 1}
