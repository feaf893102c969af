"""The notifier's in-memory copy of the store: events in, dirty presentities and due NOTIFYs out."""

from __future__ import annotations

from dataclasses import replace

from statestore import codec, keys
from statestore.domain import bodies
from statestore.domain.model import Binding, Direction, Leg, LegState, Party, Subscription
from statestore.mirror import ALL, Due, Mirror

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


def test_apply_reg_and_its_deletion() -> None:
    mirror = Mirror()
    assert mirror.apply(REG_KEY, codec.encode_binding(BINDING), 5) == {ALICE}
    assert mirror.state_of(ALICE) == bodies.presentity_state([], [BINDING])
    assert mirror.apply(REG_KEY, None, 6) == {ALICE}
    assert mirror.bindings == {}


def test_deleting_an_unknown_leg_or_reg_is_harmless() -> None:
    mirror = Mirror()
    assert mirror.apply(LEG_KEY, None, 5) == {ALICE}
    assert mirror.apply(REG_KEY, None, 6) == {ALICE}
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


def test_apply_instance_put_and_delete_return_all() -> None:
    mirror = Mirror()
    assert mirror.apply(keys.instance("node-a"), info(), 5) == {ALL}
    assert mirror.instances == {"node-a"}
    assert mirror.apply(keys.instance("node-a"), None, 6) == {ALL}
    assert mirror.instances == set()


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


def live(*names: str) -> list[tuple[str, bytes, int]]:
    return [(keys.instance(name), info(), 1) for name in names]


def test_due_when_the_body_changed() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(seen(SUB), 5), (LEG_KEY, codec.encode_leg(LEG), 6))
    assert mirror.due("node-a", {ALICE}, NOW) == [
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
    assert {due.subscription.sub_id for due in mirror.due("node-a", {ALL}, NOW)} == {"sub-1", "sub-2"}


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
    assert mirror.due("node-a", {ALL}, NOW) == []


def test_expired_subscriptions_are_flagged_even_without_a_change() -> None:
    expired = seen(replace(SUB, expires_at=NOW))
    mirror = mirror_with(*live("node-a"), sub_item(expired, 5))
    assert mirror.due("node-a", {ALICE}, NOW) == [Due(expired, 5, EMPTY, expired=True)]


def test_due_uses_the_remembered_revision() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(seen(SUB), 5))
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 6)
    notified = replace(seen(SUB, LEG), cseq=2, version=1)
    mirror.remember(notified, 7)
    assert mirror.due("node-a", {ALICE}, NOW) == []
    mirror.apply(LEG_KEY, None, 8)
    assert mirror.due("node-a", {ALICE}, NOW) == [Due(notified, 7, EMPTY, expired=False)]
