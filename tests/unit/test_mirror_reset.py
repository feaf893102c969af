"""`blfctl reset` as the notifier's mirror sees it: a put under keys.RESET makes every
subscription to that account due with the same state, numbered on as any NOTIFY."""

from __future__ import annotations

from dataclasses import replace

from statestore import codec, keys
from statestore.domain import bodies
from statestore.mirror import Mirror
from statestore.mirror_due import Sent
from tests.unit.test_mirror import ALICE, CAROL, LEG, LEG_KEY, NOW, SUB, digest_of, live, mirror_with, sub_item

RESET = codec.encode({"at": NOW})


def sent_all(mirror: Mirror, me: str = "node-a") -> None:
    """Whatever is due is sent (numbered), so that nothing is left due."""
    for due in mirror.due(me, set(mirror.by_presentity), NOW):
        mirror.numbers(due)


def test_a_reset_makes_the_accounts_subscriptions_due_with_the_same_state() -> None:
    carol_sub = replace(SUB, sub_id="sub-2", presentity=CAROL)
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), sub_item(carol_sub, 6), (LEG_KEY, codec.encode_leg(LEG), 7))
    sent_all(mirror)
    assert mirror.due("node-a", {ALICE, CAROL}, NOW) == []

    assert mirror.apply(keys.reset(ALICE), RESET, 8, NOW) == {ALICE}
    (due,) = mirror.due("node-a", set(), NOW)
    state = bodies.presentity_state([LEG], [], now=NOW)
    assert (due.subscription, due.state, due.digest) == (SUB, state, digest_of(LEG))


def test_the_reset_notify_is_numbered_after_the_last_one() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5))
    mirror.epoch = 3
    mirror.sent[SUB.sub_id] = Sent(3, 4, digest_of())
    mirror.apply(keys.reset(ALICE), RESET, 8, NOW)
    (due,) = mirror.due("node-a", set(), NOW)
    cseq, version = mirror.numbers(due) or (0, 0)
    offset = (3 - SUB.epoch) * (1 << 16) + 4
    assert (cseq, version) == (SUB.cseq + offset, SUB.version + offset)


def test_a_reset_forgets_what_a_partial_package_showed_so_the_document_is_full() -> None:
    reg_sub = replace(SUB, sub_id="sub-r", event="reg")
    mirror = mirror_with(*live("node-a"), sub_item(reg_sub, 5))
    shown = bodies.presentity_state([], [], now=NOW)
    mirror.sent[reg_sub.sub_id] = Sent(1, 2, "digest", NOW, shown)
    mirror.apply(keys.reset(ALICE), RESET, 8, NOW)
    assert mirror.sent[reg_sub.sub_id].shown is None


def test_only_the_responsible_instance_sends_it() -> None:
    mirror = mirror_with(*live("node-a", "node-b"), sub_item(SUB, 5))
    sent_all(mirror)
    mirror.apply(keys.reset(ALICE), RESET, 8, NOW)
    assert mirror.due("node-b", set(), NOW) == []


def test_a_reset_of_an_account_nobody_watches_or_its_lease_ending_does_nothing() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5))
    sent_all(mirror)
    assert mirror.apply(keys.reset(CAROL), RESET, 8, NOW) == set()
    assert mirror.apply(keys.reset(ALICE), None, 9, NOW) == set()
    assert mirror.due("node-a", set(), NOW) == []


def test_a_reset_key_in_a_snapshot_is_not_acted_on_and_the_notifier_watches_its_prefix() -> None:
    mirror = mirror_with(*live("node-a"), sub_item(SUB, 5), (keys.reset(ALICE), RESET, 6))
    assert mirror.forced == set()
    assert keys.RESET in Mirror.prefixes()
