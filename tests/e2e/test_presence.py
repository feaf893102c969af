"""Presence (RFC 3856), watcher information (RFC 3857/3858) and registration state
(RFC 3680) on the two-instance lab: every body checked against its schema on arrival
(tests/e2e/blf_watch.py BODIES)."""

from __future__ import annotations

import json

from tests.e2e.conftest import DOMAIN, blfctl, free_port, phone, register_contact, watcher
from tests.e2e.test_call_flows import wait_exit


def test_presence_of_an_account_without_registration_is_closed_then_open_once_it_registers(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(alice[0], headers={"Event": "presence"})
    assert sub.lamp == "closed"
    assert sub.notifies[0].message.header("content-type") == "application/pidf+xml"
    register_contact(phone(phones, alice, "ks2"), free_port())
    cat.wait_lamp(sub, "open", 8)


def test_a_call_shows_on_the_phone_to_a_presence_watcher_on_the_other_instance(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port = free_port()
    register_contact(phone(phones, boris, "ks2"), port)
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(boris[0], headers={"Event": "presence"})
    assert sub.lamp == "open"
    callee = sipp.callee(port, ring_ms=300)
    caller = sipp.call("ks1", alice, boris[0], hold_ms=2500)
    cat.wait_lamp(sub, "on-the-phone", 8)
    assert wait_exit(caller) == 0 and wait_exit(callee) == 0
    cat.wait_lamp(sub, "open", 10)


def test_presence_without_an_acceptable_body_type_is_406_with_ours(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks2")
    response = ua.request(
        "SUBSCRIBE", f"sip:{alice[0]}@{DOMAIN}", {"Event": "presence", "Accept": "application/dialog-info+xml"}
    )
    assert response.status == 406
    assert response.header("accept") == "application/pidf+xml"


def test_allow_events_lists_every_package(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    response = ua.request("SUBSCRIBE", f"sip:{alice[0]}@{DOMAIN}", {"Event": "message-summary"})
    assert response.status == 489
    allowed = {name.strip() for name in (response.header("allow-events") or "").split(",")}
    assert allowed == {"dialog", "dialog.winfo", "presence", "presence.winfo", "reg"}


def test_only_the_presentity_may_watch_its_own_watchers(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    response = ua.request("SUBSCRIBE", f"sip:{alice[0]}@{DOMAIN}", {"Event": "presence.winfo"})
    assert response.status == 403


def test_winfo_shows_a_new_presence_watcher_and_its_departure(account, phones):
    alice, catherine = account("alice"), account("catherine")
    own = watcher(phones, alice, "ks2")
    winfo = own.subscribe(alice[0], headers={"Event": "presence.winfo"})
    assert winfo.lamp == "none"
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(alice[0], headers={"Event": "presence"})
    expected = f"sip:{catherine[0]}@{DOMAIN}=active"
    own.wait(winfo, lambda s: s.lamp == expected, 8)
    assert cat.refresh(sub, 0).status == 200
    own.wait(winfo, lambda s: s.lamp in ("none", f"sip:{catherine[0]}@{DOMAIN}=terminated"), 8)


def test_dialog_winfo_lists_blf_watchers_not_presence_ones(account, phones):
    alice, catherine, dmitri = account("alice"), account("catherine"), account("dmitri")
    own = watcher(phones, alice, "ks1")
    winfo = own.subscribe(alice[0], headers={"Event": "dialog.winfo"})
    watcher(phones, dmitri, "ks2").subscribe(alice[0], headers={"Event": "presence"})
    watcher(phones, catherine, "ks2").subscribe(alice[0])
    own.wait(winfo, lambda s: s.lamp == f"sip:{catherine[0]}@{DOMAIN}=active", 8)


def test_reg_event_shows_contacts_across_instances(account, phones):
    alice = account("alice")
    first, second = free_port(), free_port()
    register_contact(phone(phones, alice, "ks1"), first)
    own = watcher(phones, alice, "ks2")
    reg = own.subscribe(alice[0], headers={"Event": "reg"})
    assert reg.lamp == f"sip:{alice[0]}@127.0.0.1:{first}"
    register_contact(phone(phones, alice, "ks2"), second)
    own.wait(reg, lambda s: f"127.0.0.1:{second}" in s.lamp, 8)
    partial = reg.notifies[-1].message.body
    assert b'state="partial"' in partial and b'event="created"' in partial


def test_reg_event_of_another_account_follows_the_could_call_rule(account, phones):
    alice, catherine = account("alice"), account("catherine")
    register_contact(phone(phones, alice, "ks1"), free_port())
    cat = watcher(phones, catherine, "ks2")
    reg = cat.subscribe(alice[0], headers={"Event": "reg"})
    assert reg.lamp.startswith(f"sip:{alice[0]}@127.0.0.1:")


def test_blfctl_show_lists_presence_subscriptions(account, phones):
    alice, catherine = account("alice"), account("catherine")
    watcher(phones, catherine, "ks1").subscribe(alice[0], headers={"Event": "presence"})
    shown = json.loads(blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout)
    assert "presence" in json.dumps(shown)


def test_ask_policy_keeps_a_watcher_pending_until_approved_and_winfo_sees_each_step(account, phones):
    alice, catherine, dmitri = account("alice"), account("catherine"), account("dmitri")
    presentity = f"{alice[0]}@{DOMAIN}"
    blfctl("presence", "policy", presentity, "ask")
    own = watcher(phones, alice, "ks1")
    winfo = own.subscribe(alice[0], headers={"Event": "presence.winfo"})
    cat = watcher(phones, catherine, "ks2")
    pending = cat.subscribe(alice[0], headers={"Event": "presence"})
    first = pending.notifies[0]
    assert first.state_header.startswith("pending;expires=") and not first.message.body
    assert first.message.header("content-type") is None
    own.wait(winfo, lambda s: s.lamp == f"sip:{catherine[0]}@{DOMAIN}=pending", 8)
    blfctl("watcher", "approve", presentity, f"{catherine[0]}@{DOMAIN}")
    cat.wait(pending, lambda s: s.notifies[-1].state_header.startswith("active;"), 8)
    assert pending.lamp == "closed"
    own.wait(winfo, lambda s: s.lamp == f"sip:{catherine[0]}@{DOMAIN}=active", 8)
    assert b'event="approved"' in winfo.notifies[-1].message.body

    dim = watcher(phones, dmitri, "ks1")
    refused = dim.subscribe(alice[0], headers={"Event": "presence"})
    blfctl("watcher", "deny", presentity, f"{dmitri[0]}@{DOMAIN}")
    final = dim.wait_terminated(refused, 8)
    assert final.state_header == "terminated;reason=rejected"
    assert json.loads(blfctl("watcher", "list", presentity, "--json").stdout)["policy"] == "ask"


def test_a_blocked_watcher_is_refused_and_blf_is_not_governed_by_the_presence_policy(account, phones):
    alice, catherine = account("alice"), account("catherine")
    presentity = f"{alice[0]}@{DOMAIN}"
    blfctl("presence", "policy", presentity, "ask")
    blfctl("watcher", "block", presentity, f"{catherine[0]}@{DOMAIN}")
    ua = phone(phones, catherine, "ks2")
    response = ua.request("SUBSCRIBE", f"sip:{presentity}", {"Event": "presence"})
    assert response.status == 403
    lamp = watcher(phones, catherine, "ks1").subscribe(alice[0])  # BLF: the could-call rule alone
    assert lamp.notifies[0].state_header.startswith("active;")


def test_a_watcher_profile_single_dialog_shows_one_dialog(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    blfctl("profile", "set", f"{catherine[0]}@{DOMAIN}", "single-dialog", "no-identities")
    port = free_port()
    register_contact(phone(phones, boris, "ks2"), port)
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(boris[0])
    callee = sipp.callee(port, ring_ms=500)
    caller = sipp.call("ks2", alice, boris[0], hold_ms=1500)
    cat.wait_lamp(sub, "busy", 8)
    body = sub.notifies[-1].message.body
    assert body.count(b"<dialog ") == 1 and b"<identity" not in body
    assert wait_exit(caller) == 0 and wait_exit(callee) == 0
