"""The notifier's in-memory copy of the store: events in, dirty presentities and due NOTIFYs out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from statestore import codec, keys
from statestore.domain import bodies, packages
from statestore.domain.model import Binding, Direction, Leg, LegState, Party, Subscription
from statestore.domain.packages import PACKAGES, Input
from statestore.domain.subscription import EPOCH_STRIDE
from statestore.mirror import Mirror
from statestore.mirror_due import EXPIRY_RECHECK_SECONDS, FIRST_NOTIFY_GRACE_SECONDS, Due, Sent

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
    """An instance record of this version: it serves every package."""
    return codec.encode({"host": "10.0.0.1", "packages": sorted(PACKAGES)})


def mirror_with(*items: tuple[str, bytes, int]) -> Mirror:
    mirror = Mirror()
    mirror.load(items)
    return mirror


def sub_item(sub: Subscription, revision: int) -> tuple[str, bytes, int]:
    return keys.sub(sub.sub_id), codec.encode_subscription(sub), revision


def seen(sub: Subscription, *legs: Leg) -> Subscription:
    """The subscription as it is once a NOTIFY showed these legs."""
    return replace(sub, last_digest=packages.digest(sub.event, bodies.presentity_state(legs, [])))


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


def test_apply_leg_returns_its_account_when_a_package_watching_it_reads_legs() -> None:
    mirror = Mirror()
    assert mirror.apply(LEG_KEY, codec.encode_leg(LEG), 4) == set()  # nobody watches it
    mirror = mirror_with(sub_item(SUB, 3))
    assert mirror.apply(LEG_KEY, codec.encode_leg(LEG), 5) == {ALICE}
    assert mirror.state_of(ALICE) == bodies.presentity_state([LEG], [])


def test_apply_newer_leg_value_replaces_it() -> None:
    mirror = mirror_with(sub_item(SUB, 4), (LEG_KEY, codec.encode_leg(LEG), 5))
    confirmed = replace(LEG, state=LegState.CONFIRMED, version=2)
    assert mirror.apply(LEG_KEY, codec.encode_leg(confirmed), 6) == {ALICE}
    assert mirror.legs == {ALICE: {LEG_KEY: confirmed}}


def test_apply_leg_deletion() -> None:
    mirror = mirror_with(sub_item(SUB, 4), (LEG_KEY, codec.encode_leg(LEG), 5))
    assert mirror.apply(LEG_KEY, None, 6) == {ALICE}
    assert mirror.legs == {}
    assert mirror.state_of(ALICE) == EMPTY


def test_apply_deletion_of_one_leg_keeps_the_others() -> None:
    other_key = keys.leg(ALICE, "node-b", "leg-2")
    other = replace(LEG, instance="node-b", leg_id="leg-2")
    mirror = mirror_with(sub_item(SUB, 4), (LEG_KEY, codec.encode_leg(LEG), 5), (other_key, codec.encode_leg(other), 6))
    assert mirror.apply(LEG_KEY, None, 7) == {ALICE}
    assert mirror.legs == {ALICE: {other_key: other}}


def test_apply_reg_and_its_deletion_do_not_dirty_a_dialog_presentity() -> None:
    mirror = mirror_with(sub_item(SUB, 4))
    assert mirror.apply(REG_KEY, codec.encode_binding(BINDING), 5) == set()
    assert mirror.state_of(ALICE) == bodies.presentity_state([], [BINDING])
    assert mirror.apply(REG_KEY, None, 6) == set()
    assert mirror.bindings == {}


def test_deleting_an_unknown_leg_or_reg_is_harmless() -> None:
    mirror = mirror_with(sub_item(SUB, 4))
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


def told(mirror: Mirror, sub: Subscription, *legs: Leg) -> None:
    """This notifier has sent `sub` a NOTIFY showing these legs."""
    mirror.sent[sub.sub_id] = Sent(1, 1, packages.digest(sub.event, bodies.presentity_state(legs, [])))


def digest_of(*legs: Leg) -> str:
    return packages.digest("dialog", bodies.presentity_state(legs, []))


def test_due_when_the_body_changed() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), (LEG_KEY, codec.encode_leg(LEG), 6))
    told(mirror, SUB)
    assert plain(mirror.due("node-a", {ALICE}, NOW)) == [
        Due(SUB, 5, bodies.presentity_state([LEG], []), expired=False, digest=digest_of(LEG))
    ]


def test_nothing_due_when_the_digest_is_the_last_one_sent() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), (LEG_KEY, codec.encode_leg(LEG), 6))
    told(mirror, SUB, LEG)
    assert mirror.due("node-a", {ALICE}, NOW) == []


def test_a_subscription_nothing_was_sent_for_is_due_when_looked_at() -> None:
    """After a restart or a takeover: the watcher gets the full state (RFC 4235 §4.1)."""
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5))
    assert [due.subscription for due in mirror.due("node-a", {ALICE}, NOW)] == [SUB]


def test_due_only_for_dirty_presentities() -> None:
    carol_sub = replace(SUB, sub_id="sub-2", presentity=CAROL)
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), sub_item(carol_sub, 6))
    # Nothing has been sent to either, but only Carol is dirty.
    assert [due.subscription for due in mirror.due("node-a", {CAROL}, NOW)] == [carol_sub]
    assert mirror.due("node-a", set(), NOW) == []


def test_due_for_every_dirty_presentity() -> None:
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
    expired = replace(SUB, expires_at=NOW)
    mirror = mirror_with(*live("node-a"), sub_item(expired, 5))
    told(mirror, expired)
    assert plain(mirror.due("node-a", {ALICE}, NOW)) == [Due(expired, 5, EMPTY, expired=True, digest=digest_of())]


# --- what a written record asks for (issue 6, findings 1 and 7) ---------------------------------


def watched(*items: tuple[str, bytes, int]) -> Mirror:
    """A mirror of node-a that has sent SUB its NOTIFY of the empty state, at SUB's epoch."""
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), *items)
    mirror.epoch = SUB.epoch
    for due in mirror.due("node-a", {ALICE}, NOW):
        mirror.numbered(due)
    assert mirror.due("node-a", {ALICE}, NOW) == []
    return mirror


AFTER_GRACE = NOW + FIRST_NOTIFY_GRACE_SECONDS


def test_a_new_subscription_is_due_once_its_workers_first_notify_had_time() -> None:
    """The SIP worker that created it sends NOTIFY 0 right after the create: ours must not
    overtake it (the watcher takes version 0 first, RFC 4235 §4.1)."""
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, sub_id="sub-2"), 6), now=NOW)
    assert mirror.due("node-a", set(), NOW) == []
    assert mirror.due("node-a", set(), AFTER_GRACE - 0.01) == []
    assert [due.subscription.sub_id for due in mirror.due("node-a", set(), AFTER_GRACE)] == ["sub-2"]
    assert mirror.held == {}


def test_a_new_subscription_is_due_as_soon_as_its_worker_sent_notify_0() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, sub_id="sub-2"), 6), now=NOW)
    sent: set[str] = set()
    assert mirror.due("node-a", set(), NOW, sent.__contains__) == []
    sent.add("sub-2")
    assert [due.subscription.sub_id for due in mirror.due("node-a", set(), NOW, sent.__contains__)] == ["sub-2"]
    assert mirror.held == {}


def test_a_new_subscription_that_expires_within_the_grace_is_due_at_once() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, sub_id="sub-2", expires_at=NOW), 6), now=NOW)
    assert [(due.subscription.sub_id, due.expired) for due in mirror.due("node-a", set(), NOW)] == [("sub-2", True)]


def test_a_subscription_removed_within_the_grace_leaves_nothing_held() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, sub_id="sub-2"), 6), now=NOW)
    mirror.apply(keys.sub("sub-2"), None, 7, now=NOW)
    assert mirror.held == {} and mirror.due("node-a", set(), AFTER_GRACE) == []


def test_a_refresh_is_due_at_once_with_the_same_state() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, expires_at=NOW + 600), 6), now=NOW)
    assert [due.expired for due in mirror.due("node-a", set(), NOW)] == [False]
    assert mirror.due("node-a", {ALICE}, NOW) == []


def test_an_unsubscribe_is_due_as_an_expiry() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, expires_at=NOW), 6), now=NOW)
    assert [due.expired for due in mirror.due("node-a", set(), NOW)] == [True]


def test_a_removed_accounts_subscription_is_due_as_an_expiry_with_its_reason() -> None:
    """blfctl account remove: the presentity's legs go and each subscription to it is
    rewritten due now with reason noresource, in one revision (EtcdStore.remove_account)."""
    mirror = watched((LEG_KEY, codec.encode_leg(LEG), 4))
    mirror.apply(LEG_KEY, None, 6, now=NOW)
    mirror.apply(*sub_item(replace(SUB, expires_at=NOW, termination_reason="noresource"), 6), now=NOW)
    [due] = mirror.due("node-a", {ALICE}, NOW)
    assert due.expired and due.subscription.termination_reason == "noresource"
    assert due.state == EMPTY  # the final NOTIFY shows the account idle


def test_a_removed_subscription_is_never_due() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, expires_at=NOW + 600), 6), now=NOW)
    mirror.apply(SUB_KEY, None, 7, now=NOW)
    assert mirror.due("node-a", {ALICE}, NOW + 4000) == []
    assert mirror.sent == {}


def test_a_timed_out_notify_is_retried_after_2_then_4_seconds_without_a_write() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, notify_timeouts=1), 6), now=NOW)
    assert mirror.due("node-a", set(), NOW + 1.9) == []
    [retry] = mirror.due("node-a", set(), NOW + 2)
    assert mirror.numbered(retry) == replace(SUB, notify_timeouts=1, cseq=2, version=1)
    mirror.apply(*sub_item(replace(SUB, notify_timeouts=2), 7), now=NOW + 6)
    assert mirror.due("node-a", set(), NOW + 9.9) == []
    assert len(mirror.due("node-a", set(), NOW + 10)) == 1
    assert mirror.due("node-a", set(), NOW + 60) == []


def test_a_retry_is_dropped_when_a_refresh_resets_the_count() -> None:
    mirror = watched()
    mirror.apply(*sub_item(replace(SUB, notify_timeouts=1), 6), now=NOW)
    mirror.apply(*sub_item(replace(SUB, expires_at=NOW + 900), 7), now=NOW + 1)
    assert len(mirror.due("node-a", set(), NOW + 1)) == 1  # the refresh's NOTIFY
    assert mirror.due("node-a", set(), NOW + 5) == []


# --- numbering --------------------------------------------------------------------------------


def numbers(mirror: Mirror, now: float = NOW + 1) -> list[tuple[int, int]]:
    """NOTIFYs due at `now` (by default after the dialog package's min_interval)."""
    result = []
    for due in mirror.due("node-a", {ALICE}, now):
        sent = mirror.numbered(due)
        assert sent is not None
        result.append((sent.cseq, sent.version))
    return result


def test_one_sender_numbers_by_one_from_the_records_first_notify() -> None:
    mirror = Mirror()
    mirror.epoch = 3  # our SIP worker created it at our epoch and sent NOTIFY 0
    mirror.load([*live("node-a"), sub_item(replace(SUB, epoch=3, last_digest=digest_of()), 5)])
    assert numbers(mirror) == []
    for n in range(1, 4):
        mirror.apply(LEG_KEY, codec.encode_leg(replace(LEG, version=n, state=list(LegState)[n])), 5 + n)
        assert numbers(mirror, NOW + n) == [(1 + n, n)]


def test_a_subscription_our_worker_created_and_notified_goes_on_from_number_1() -> None:
    """The SIP worker answered 200 and sent NOTIFY 0 itself (the 200 first, RFC 6665
    §4.2.1.1), with the epoch our notifier shares; the record says what it showed."""
    mirror = watched()
    mirror.epoch = 3
    created = replace(SUB, sub_id="sub-2", epoch=3, last_digest=digest_of())
    mirror.apply(*sub_item(created, 6), now=NOW)
    assert [due.subscription.sub_id for due in mirror.due("node-a", {ALICE}, NOW)] == []
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 7)
    assert [(due.subscription.sub_id, mirror.numbered(due).cseq) for due in mirror.due("node-a", {ALICE}, AFTER_GRACE)
            if due.subscription.sub_id == "sub-2"] == [("sub-2", 2)]


def test_a_subscription_our_worker_created_is_due_if_the_state_moved_meanwhile() -> None:
    mirror = watched()
    mirror.epoch = 3
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 6)
    mirror.due("node-a", {ALICE}, NOW)
    mirror.apply(*sub_item(replace(SUB, sub_id="sub-2", epoch=3, last_digest=digest_of()), 7), now=NOW)
    assert "sub-2" not in {due.subscription.sub_id for due in mirror.due("node-a", {ALICE}, NOW)}
    assert "sub-2" in {due.subscription.sub_id for due in mirror.due("node-a", {ALICE}, AFTER_GRACE)}


def test_a_subscription_created_at_another_epoch_is_due_at_once_numbered_at_ours() -> None:
    mirror = watched()
    mirror.epoch = 3
    mirror.apply(*sub_item(replace(SUB, sub_id="sub-2", epoch=2, last_digest=digest_of()), 6), now=NOW)
    [due] = mirror.due("node-a", set(), AFTER_GRACE)
    sent = mirror.numbered(due)
    assert sent is not None and (sent.cseq, sent.version) == (1 + EPOCH_STRIDE, EPOCH_STRIDE)


def test_a_taken_over_subscription_jumps_forward_and_then_steps_by_one() -> None:
    mirror = mirror_with(*live("node-a", "node-b"), sub_item(replace(SUB, owner="node-b", epoch=3), 5))
    mirror.epoch = 2
    assert mirror.due("node-a", {ALICE}, NOW) == []
    mirror.apply(keys.instance("node-b"), None, 6)
    assert mirror.bump_wanted
    mirror.epoch, mirror.bump_wanted = 4, False  # the notifier's compare-and-swap
    assert numbers(mirror) == [(1 + EPOCH_STRIDE, EPOCH_STRIDE)]
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 7)
    assert numbers(mirror, NOW + 2) == [(2 + EPOCH_STRIDE, 1 + EPOCH_STRIDE)]


def test_numbering_goes_on_across_a_reload() -> None:
    mirror = watched()
    mirror.load([*live("node-a"), sub_item(SUB, 5), (LEG_KEY, codec.encode_leg(LEG), 6)])
    assert numbers(mirror) == [(2, 1)]


def test_an_instance_gone_while_not_watching_asks_for_a_new_epoch() -> None:
    mirror = watched(*live("node-b"))
    mirror.load([*live("node-a"), sub_item(SUB, 5)])
    assert mirror.bump_wanted


def test_a_used_up_epoch_asks_for_a_new_one_and_keeps_the_notify_due() -> None:
    mirror = watched()
    mirror.sent["sub-1"] = Sent(0, EPOCH_STRIDE, "x")
    [due] = mirror.due("node-a", {ALICE}, NOW)
    assert mirror.numbered(due) is None and mirror.bump_wanted
    mirror.epoch, mirror.bump_wanted = 1, False
    assert numbers(mirror) == [(1 + EPOCH_STRIDE, EPOCH_STRIDE)]


# --- event package inputs ---------------------------------------------------------------------


def test_a_registration_dirties_presentities_watched_by_a_package_that_reads_them(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    presence = replace(PACKAGES["dialog"], name="presence", inputs=frozenset({Input.LEGS, Input.REGS}))
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
    others = [replace(SUB, sub_id=f"other-{n}", presentity=f"u{n}@example.com") for n in range(50)]
    items = [sub_item(other, 10 + n) for n, other in enumerate(others)]
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), *items)
    told(mirror, SUB)
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 100)
    # Nothing was sent to the other presentities' watchers, but only Alice is dirty.
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
    assert [d.expired for d in mirror.due("node-a", set(), NOW)] == [False]  # the refresh's NOTIFY
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
        assert due.body.fill(sub.entity, sub.version) == packages.render(sub.event, sub.entity, sub.version, due.state)


@pytest.mark.parametrize("entity", ["sip:alice@example.com", 'sip:a&b<c>"d\'@example.com', "sip:\u00e9l\u00e8ve@x.org"])
@pytest.mark.parametrize("version", [0, 1, 2**31 - 2])
def test_a_filled_template_is_the_body_rendered_for_that_watcher(entity: str, version: int) -> None:
    tricky = replace(LEG, local=Party(entity, display='"version" & entity'), remote=Party("sip:b@example.com"))
    state = bodies.presentity_state([tricky, LEG], [])
    assert packages.template_for(SUB, state).fill(entity, version) == packages.render("dialog", entity, version, state)


# --- forward compatibility (issue 6, finding 5) -------------------------------------------------


def test_a_subscription_with_fields_this_version_does_not_know_is_read() -> None:
    data = SUB.to_dict() | {"zone": "eu-1", "future": {"nested": [1, 2]}}
    mirror = mirror_with(*live("node-a"), (SUB_KEY, codec.encode(data), 5))
    assert mirror.subs == {"sub-1": (SUB, 5)}
    assert len(mirror.due("node-a", {ALICE}, NOW)) == 1


def test_a_subscription_of_an_unknown_event_package_is_skipped_and_counted() -> None:
    unknown = replace(SUB, sub_id="sub-2", event="message-summary")
    other = replace(unknown, sub_id="sub-3")
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), sub_item(unknown, 6), sub_item(other, 7))
    assert set(mirror.subs) == {"sub-1"}
    assert mirror.unknown_packages == {"message-summary": 2}
    assert len(mirror.notes) == 1 and "message-summary" in mirror.notes[0]  # logged once
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
    assert mirror.apply(LEG_KEY, b"{broken", 8) == set()  # nobody watches it any more
    assert (mirror.subs, mirror.legs, mirror.by_presentity) == ({}, {}, {})
    assert mirror.unreadable == {"subs": 1, "legs": 1}


def test_bad_leg_and_registration_records_are_skipped_in_a_snapshot() -> None:
    mirror = mirror_with(
        *live("node-a"), sub_item(SUB, 5), (LEG_KEY, b"\xff", 6), (REG_KEY, codec.encode({"account": ALICE}), 7),
        (keys.leg(ALICE, "node-a", "leg-2"), codec.encode_leg(LEG), 8),
    )
    assert list(mirror.legs[ALICE]) == [keys.leg(ALICE, "node-a", "leg-2")]
    assert mirror.unreadable == {"legs": 1, "regs": 1}


def test_a_notify_tm_could_not_send_is_due_again_with_the_same_numbers() -> None:
    mirror = Mirror()
    mirror.epoch = 3
    mirror.load([*live("node-a"), sub_item(replace(SUB, epoch=3, last_digest=digest_of()), 5)])
    mirror.apply(LEG_KEY, codec.encode_leg(LEG), 6)
    [due] = mirror.due("node-a", {ALICE}, NOW)
    lost = mirror.numbered(due)
    assert lost is not None
    mirror.unsent(lost.sub_id)
    # Nothing changed since, yet it is due again (the presentity looked at once more), with the
    # numbers of the NOTIFY that never left: the watcher sees CSeq and version step by one.
    assert numbers(mirror) == [(lost.cseq, lost.version)]
    assert numbers(mirror) == []


def test_taking_back_a_number_nothing_was_sent_for_is_harmless() -> None:
    mirror = watched()
    mirror.unsent("sub-unknown")
    assert "sub-unknown" not in mirror.sent
