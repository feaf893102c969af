"""Issue 5, findings 3 and 4, played as an attacker would on the two-instance lab.

- An in-dialog SUBSCRIBE is bound to its watcher: knowing a subscription's Call-ID and
  tags, from another address and through the other instance, gives neither a new target
  for its NOTIFYs nor its end; the watcher itself still can do both.
- Caps: one account holds at most 4 subscriptions to one presentity (and since issue 12 its
  NOTIFYs go only to the devices that subscribed, never to a third party), a device subscribing again
  replaces its older subscription, and an account's subscriptions are capped (403).
"""

from __future__ import annotations

import json
import time
from collections import Counter

from statestore.domain.subscription import subscription_id
from tests.e2e.blf_watch import Subscription, Watcher
from tests.e2e.conftest import (
    DOMAIN,
    KS,
    MAX_SUBS_PER_WATCHER,
    blfctl,
    free_port,
    no_notify,
    phone,
    register_contact,
    watcher,
)
from tests.sipua import Message, UserAgent

PER_PAIR_CAP = 4  # BLF_MAX_SUBS_PER_PAIR's default, which the lab keeps


def in_dialog(ua: UserAgent, sub: Subscription, expires: int, contact: str = "") -> Message:
    """A SUBSCRIBE inside `sub`'s dialog (its Call-ID and both tags), sent by `ua`."""
    headers = {"Event": "dialog", "Expires": str(expires)}
    if contact:
        headers["Contact"] = contact
    return ua.request(
        "SUBSCRIBE", f"sip:{sub.presentity}@{DOMAIN}", headers, to=sub.uri,
        call_id=sub.call_id, from_tag=sub.from_tag, to_tag=sub.to_tag,
    )


def no_notify_into(ua: UserAgent, seen: Counter[str], seconds: float) -> bool:
    """True when no NOTIFY came within `seconds`; otherwise count it by Call-ID."""
    try:
        message = ua.wait_request("NOTIFY", seconds)
    except TimeoutError:
        return True
    seen[message.header("call-id") or ""] += 1
    return False


def subscriptions_of(presentity: str, watcher_user: str) -> list[dict[str, object]]:
    view = json.loads(blfctl("show", f"{presentity}@{DOMAIN}", "--json").stdout)
    return [s for s in view["subscriptions"] if s["watcher"] == f"{watcher_user}@{DOMAIN}"]


def ring(phones, sipp, presentity: tuple[str, str], caller: tuple[str, str]) -> None:
    """One short call to `presentity` (a sipp phone registered through ks2, called via ks1)."""
    port = free_port()
    register_contact(phone(phones, presentity, "ks2"), port)
    sipp.callee(port, ring_ms=200)
    sipp.call("ks1", caller, presentity[0], hold_ms=300)


def test_dialog_ids_without_the_watchers_password_neither_redirect_nor_end_a_subscription(account, phones, sipp):
    alice, catherine, mallory = account("alice"), account("catherine"), account("mallory")
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(alice[0], expires=300)
    # Catherine's name without her password, then Mallory's own account: both from their
    # own address, through the other instance, with the dialog's Call-ID and tags.
    forger = phone(phones, (catherine[0], "not-her-password"), "ks2")
    insider = phone(phones, mallory, "ks2")
    for attacker in (forger, insider):
        redirected = in_dialog(attacker, sub, 300, contact=attacker.contact)
        assert redirected.status in (401, 481), redirected.first_line
        ended = in_dialog(attacker, sub, 0)
        assert ended.status in (401, 481), ended.first_line
    assert subscriptions_of(alice[0], catherine[0])[0]["contact"] == f"sip:{catherine[0]}@127.0.0.1:{cat.ua.port}"
    # The presentity's next call is still NOTIFYed to Catherine, and to no attacker.
    ring(phones, sipp, alice, mallory)
    cat.wait_lamp(sub, "early", 5)
    cat.wait_lamp(sub, "idle", 8)
    assert no_notify(forger, 0.1) and no_notify(insider, 0.1)
    # The watcher herself: a target refresh from a new address through ks2, then the end.
    moved = Watcher(phone(phones, catherine, "ks2"))
    moved.subs[sub.call_id] = sub
    before = len(sub.notifies)
    refreshed = in_dialog(moved.ua, sub, 300, contact=moved.ua.contact)
    assert refreshed.status == 200, refreshed.first_line
    assert refreshed.source[1] == KS["ks2"][1]
    # The refresh's NOTIFY reaches the new address (sent by the subscription's notifier).
    moved.wait(sub, lambda s: len(s.notifies) > before, 5)
    stored = subscriptions_of(alice[0], catherine[0])[0]
    assert stored["contact"] == f"sip:{catherine[0]}@127.0.0.1:{moved.ua.port}"
    assert (stored["received"], stored["flow_instance"]) == (f"udp:127.0.0.1:{moved.ua.port}", "ks2")
    assert in_dialog(moved.ua, sub, 0).status == 200
    assert moved.wait_terminated(sub, 5).state_header == "terminated;reason=timeout"
    assert subscriptions_of(alice[0], catherine[0]) == []


def test_one_account_cannot_point_more_than_four_subscriptions_at_a_third_party(account, phones, sipp):
    """The cap holds (403 beyond four), and since issue 12 (finding 10) a Contact naming a
    third party reflects nothing onto it at all: every NOTIFY goes to the device that
    subscribed, each admitted device gets the same NOTIFYs, the refused ones none."""
    alice, mallory = account("alice"), account("mallory")
    victim = UserAgent("victim", "victim.example", "-", KS["ks1"])  # a third party: it only answers
    phones.append(victim)
    answers, devices = [], []
    for index in range(PER_PAIR_CAP + 2):
        # A new device each time (own socket, own Contact), alternating the instances.
        ua = phone(phones, mallory, "ks1" if index % 2 else "ks2")
        devices.append(ua)
        contact = f"<sip:v{index}@127.0.0.1:{victim.port}>"
        answers.append(ua.request(
            "SUBSCRIBE", f"sip:{alice[0]}@{DOMAIN}", {"Event": "dialog", "Expires": "600", "Contact": contact}
        ))
    assert [a.status for a in answers] == [200] * PER_PAIR_CAP + [403, 403]
    assert answers[-1].first_line == "SIP/2.0 403 Forbidden - Too Many Subscriptions To This Presentity"
    admitted, refused = devices[:PER_PAIR_CAP], devices[PER_PAIR_CAP:]
    for ua, answer in zip(admitted, answers, strict=False):
        assert ua.wait_request("NOTIFY", 5).header("call-id") == answer.header("call-id")
    assert all(no_notify(ua, 0.1) for ua in refused), "a NOTIFY beyond the cap"
    # Alice registers a phone and takes one call: each admitted subscription NOTIFYs each
    # change once, to its own device; the refused ones never.
    ring(phones, sipp, alice, mallory)
    changed: Counter[str] = Counter()
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 3.0:  # until no device has got a NOTIFY for 3 s
        if not all([no_notify_into(ua, changed, 0.05) for ua in admitted]):
            quiet_since = time.monotonic()
    assert len(changed) == PER_PAIR_CAP
    assert len(set(changed.values())) == 1, f"every subscription got the same NOTIFYs: {changed}"
    assert all(no_notify(ua, 0.1) for ua in refused)
    assert no_notify(victim, 0.1), "a NOTIFY reached the third party named in the Contact"
    assert len(subscriptions_of(alice[0], mallory[0])) == PER_PAIR_CAP


def test_a_device_subscribing_again_replaces_its_old_subscription(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks1")
    first = cat.subscribe(alice[0], expires=300)
    second = cat.subscribe(alice[0], expires=300)  # the phone restarted: new Call-ID, same Contact
    third = cat.subscribe(alice[0], expires=300, headers={"Contact": f"<sip:renamed@127.0.0.1:{cat.ua.port}>"})
    stored = subscriptions_of(alice[0], catherine[0])
    assert [s["id"] for s in stored] == [subscription_id(third.call_id, third.from_tag, third.to_tag)]
    # Replaced silently: no final NOTIFY for the old dialogs; refreshing one gets 481.
    assert all(not n.state_header.startswith("terminated") for n in first.notifies + second.notifies)
    assert cat.refresh(first, 300).status == 481
    assert cat.refresh(second, 300).status == 481
    assert cat.refresh(third, 300).status == 200


def test_the_per_watcher_cap_answers_403(account, phones):
    catherine = account("catherine")
    presentities = [account("p")[0] for _ in range(3)]
    devices = [watcher(phones, catherine, "ks1" if i % 2 else "ks2") for i in range(PER_PAIR_CAP)]
    plan = [(device, p) for p in presentities for device in devices][:MAX_SUBS_PER_WATCHER]
    for device, presentity in plan:
        device.subscribe(presentity, expires=300)
    spare = next(device for device in devices if (device, presentities[-1]) not in plan)
    refused = spare.ua.request(
        "SUBSCRIBE", f"sip:{presentities[-1]}@{DOMAIN}", {"Event": "dialog", "Expires": "300"}
    )
    assert refused.first_line == "SIP/2.0 403 Forbidden - Too Many Subscriptions"
    # A device subscribing again still replaces within the cap.
    again = plan[0][0].subscribe(plan[0][1], expires=300)
    assert again.response.status == 200
