"""RFC 6665 subscription life cycle for Event: dialog, on real instances."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from tests.e2e.conftest import (
    DOMAIN,
    SUB_MIN_EXPIRES,
    blfctl,
    free_port,
    phone,
    register_contact,
    watched_callee,
    watcher,
)
from tests.schema import validate_dialog_info
from tests.sipua import UserAgent


def subscribe_raw(ua: UserAgent, user: str, headers: dict[str, str], **kwargs: object):
    return ua.request("SUBSCRIBE", f"sip:{user}@{DOMAIN}", headers, **kwargs)  # type: ignore[arg-type]


def test_subscribe_gets_200_not_above_requested_expires_and_an_immediate_full_notify(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(alice[0], expires=300)
    assert sub.response.status == 200
    assert int(sub.response.header("expires")) <= 300
    assert sub.response.header("event") is None and sub.response.header("subscription-state") is None
    assert sub.response.header("contact")
    first = sub.notifies[0]
    assert first.version == 0 and first.lamp == "idle"
    assert first.state_header.startswith("active;expires=")
    assert 0 < int(first.state_header.split("expires=")[1]) <= 300


def test_event_id_is_echoed_in_every_notify(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks2")
    sub = cat.subscribe(alice[0], headers={"Event": "dialog;id=key7"})
    assert cat.refresh(sub, 120).status == 200
    cat.wait(sub, lambda s: len(s.notifies) >= 2, 5)
    assert [n.message.header("event") for n in sub.notifies] == ["dialog;id=key7"] * 2


def test_refresh_sends_notify_with_next_version_and_unsubscribe_ends_with_timeout(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks2")
    sub = cat.subscribe(alice[0], expires=120)
    refreshed = cat.refresh(sub, 200)
    assert refreshed.status == 200 and int(refreshed.header("expires")) <= 200
    cat.wait(sub, lambda s: len(s.notifies) >= 2, 5)
    assert sub.notifies[1].version == 1
    ended = cat.refresh(sub, 0)
    assert ended.status == 200
    final = cat.wait_terminated(sub, 5)
    assert final.state_header == "terminated;reason=timeout"
    again = cat.refresh(sub, 60)
    assert again.status == 481


def test_subscription_expiry_ends_with_terminated_timeout(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(alice[0], expires=SUB_MIN_EXPIRES)
    final = cat.wait_terminated(sub, SUB_MIN_EXPIRES + 5)
    assert final.state_header == "terminated;reason=timeout"
    assert f'"watcher": "{catherine[0]}@{DOMAIN}"' not in blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout


def test_fetch_with_expires_zero_gets_one_terminated_notify(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks1")
    response = subscribe_raw(cat.ua, alice[0], {"Event": "dialog", "Expires": "0"}, call_id="fetch-" + uuid.uuid4().hex)
    assert response.status == 200 and response.header("expires") == "0"
    notify = cat.ua.wait_request("NOTIFY", 5)
    assert notify.header("subscription-state") == "terminated;reason=timeout"
    validate_dialog_info(notify.body)


def test_unsupported_package_gets_489_with_allow_events(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    response = subscribe_raw(ua, alice[0], {"Event": "message-summary", "Expires": "60"})
    assert response.status == 489
    assert "dialog" in (response.header("allow-events") or "")
    missing = subscribe_raw(ua, alice[0], {"Expires": "60"})
    assert missing.status == 489


def test_too_short_expires_gets_423_with_min_expires(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    response = subscribe_raw(ua, alice[0], {"Event": "dialog", "Expires": str(SUB_MIN_EXPIRES - 1)})
    assert response.status == 423
    assert response.header("min-expires") == str(SUB_MIN_EXPIRES)


def test_accept_without_dialog_info_gets_406(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    response = subscribe_raw(ua, alice[0], {"Event": "dialog", "Expires": "60", "Accept": "application/pidf+xml"})
    assert response.status == 406


def test_unknown_in_dialog_subscribe_gets_481(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks2")
    response = subscribe_raw(ua, alice[0], {"Event": "dialog", "Expires": "60"}, to_tag="nosuchtag")
    assert response.status == 481


def test_unauthenticated_subscribe_is_challenged_with_401_and_wrong_password_refused(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, (catherine[0], "wrong"), "ks1")
    response = subscribe_raw(ua, alice[0], {"Event": "dialog", "Expires": "60"})
    # We answer SUBSCRIBE as a UAS: 401 + WWW-Authenticate, never 407 (RFC 3261 §22.3).
    assert response.status == 401
    assert response.all("www-authenticate") and not response.all("proxy-authenticate")


def test_subscription_to_unknown_account_or_domain_gets_404(account, phones):
    catherine = account("catherine")
    ua = phone(phones, catherine, "ks1")
    assert subscribe_raw(ua, "nobody-" + uuid.uuid4().hex[:6], {"Event": "dialog", "Expires": "60"}).status == 404
    elsewhere = ua.request("SUBSCRIBE", "sip:alice@unknown.example", {"Event": "dialog", "Expires": "60"}, auth=False)
    assert elsewhere.status == 404


def test_watcher_answering_481_loses_the_subscription(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port, cat, sub = watched_callee(phones, boris, catherine, callee_at="ks2", watcher_at="ks1")
    cat.ua.notify_status = 481
    sipp.callee(port, ring_ms=200)
    sipp.call("ks1", alice, boris[0], hold_ms=500)
    cat.pump(3)
    cat.wait(sub, lambda s: len(s.notifies) >= 2, 5)
    shown = blfctl("show", f"{boris[0]}@{DOMAIN}", "--json").stdout
    assert sub.call_id not in shown and '"subscriptions": []' in shown
    assert cat.refresh(sub, 60).status == 481


def test_registered_presentity_idle_then_terminated_after_unregister(account, phones):
    alice, catherine = account("alice"), account("catherine")
    alice_phone = phone(phones, alice, "ks1")
    assert '"state": "terminated"' in blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout
    assert alice_phone.register(300).status == 200
    assert '"state": "idle"' in blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout
    assert alice_phone.register(0).status == 200
    assert '"state": "terminated"' in blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout
    cat = watcher(phones, catherine, "ks2")
    assert cat.subscribe(alice[0]).lamp == "idle"


def _notify_timeouts(presentity: str, watcher_aor: str, timeout: float) -> int:
    """Wait until the store counts a NOTIFY timeout for this watcher; the count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # each blfctl call takes a few hundred ms
        view = json.loads(blfctl("show", presentity, "--json").stdout)
        subs = [s for s in view["subscriptions"] if s["watcher"] == watcher_aor]
        assert subs, "the subscription is gone"
        if subs[0]["notify_timeouts"]:
            return int(subs[0]["notify_timeouts"])
    raise AssertionError(f"no NOTIFY timeout counted within {timeout}s")


def test_a_watcher_missing_notifies_keeps_its_subscription(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port = free_port()
    register_contact(phone(phones, boris, "ks2"), port)
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(boris[0])
    cat.ua.drop_notifies = 1  # the phone misses one NOTIFY (and its retransmissions)
    sipp.callee(port, ring_ms=200, busy=True)
    sipp.call("ks1", alice, boris[0])
    cat.wait_lamp(sub, "early", 5)
    cat.wait_lamp(sub, "idle", 8)
    # Kamailio gives up on an unanswered NOTIFY after its 4 s fr_timer (a 408).
    assert _notify_timeouts(f"{boris[0]}@{DOMAIN}", f"{catherine[0]}@{DOMAIN}", 15) == 1
    seen = len(sub.notifies)
    sipp.callee(port, ring_ms=200, busy=True)
    sipp.call("ks1", alice, boris[0])
    cat.wait(sub, lambda s: len(s.notifies) >= seen + 2 and s.lamp == "idle", 10)


def test_a_notify_that_timed_out_is_sent_again_with_the_current_state_within_seconds(account, phones):
    """Issue 6, finding 7: not left until the next change or refresh (up to an hour)."""
    boris, catherine = account("boris"), account("catherine")
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(boris[0], expires=600)
    cat.ua.drop_notifies = 1  # the refresh's NOTIFY goes unanswered (retransmissions too)
    assert cat.refresh(sub, 600).status == 200
    cat.wait(sub, lambda s: len(s.notifies) >= 2, 5)
    missed = sub.notifies[-1]
    # Kamailio gives up on it after its 4 s fr_timer; 2 s later the state is sent again,
    # as a new NOTIFY (next CSeq and version), which the phone answers.
    cat.wait(sub, lambda s: len(s.notifies) >= 3, 10)
    retry = sub.notifies[-1]
    assert (retry.cseq, retry.version) == (missed.cseq + 1, missed.version + 1)
    assert 5.5 <= retry.at - missed.at <= 9, retry.at - missed.at
    assert retry.lamp == missed.lamp and retry.state_header.startswith("active;expires=")
    assert _notify_timeouts(f"{boris[0]}@{DOMAIN}", f"{catherine[0]}@{DOMAIN}", 5) == 1
    cat.pump(3)
    assert len(sub.notifies) == 3, "answered: no further retry"


def test_refresh_and_unsubscribe_work_through_any_instance(account, phones):
    alice, catherine = account("alice"), account("catherine")
    cat = watcher(phones, catherine, "ks1")
    sub = cat.subscribe(alice[0], expires=120)
    other = phone(phones, catherine, "ks2")  # same phone, its requests now reach ks2
    refreshed = other.request(
        "SUBSCRIBE", f"sip:{alice[0]}@{DOMAIN}", {"Event": "dialog", "Expires": "300"}, to=sub.uri,
        call_id=sub.call_id, from_tag=sub.from_tag, to_tag=sub.to_tag,
    )
    assert refreshed.status == 200 and int(refreshed.header("expires")) <= 300
    notify = other.wait_request("NOTIFY", 5)
    assert notify.header("call-id") == sub.call_id
    assert int(notify.header("cseq").split()[0]) > sub.notifies[-1].cseq
    # ks2 answered the refresh; every NOTIFY of a subscription comes from one notifier,
    # its owner's (issue 6: no store write per NOTIFY), here ks1's.
    assert refreshed.source[1] == 5072 and "5071" in notify.header("contact")


def test_notify_keeps_the_record_route_set_but_goes_to_the_flow_that_subscribed(account, phones):
    """The route set stays in the NOTIFY's Route headers (RFC 6665 §4.2.2), but the NOTIFY is
    sent where the SUBSCRIBE came from (issue 12, finding 10): a Record-Route naming another
    address (here a socket where a proxy would listen) reflects nothing onto it."""
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.settimeout(0.5)
        route = f"<sip:127.0.0.1:{proxy.getsockname()[1]};lr>"
        response = subscribe_raw(ua, alice[0], {"Event": "dialog", "Expires": "60", "Record-Route": route})
        assert response.status == 200
        notify = ua.wait_request("NOTIFY", 5)
        with pytest.raises(TimeoutError):
            proxy.recvfrom(65535)
    assert notify.first_line.startswith(f"NOTIFY sip:{catherine[0]}@127.0.0.1:{ua.port}")
    assert notify.all("route") == [route]
    assert notify.header("cseq") == "1 NOTIFY"


def test_subscribe_to_the_servers_address_means_the_to_domain(account, phones):
    alice, catherine = account("alice"), account("catherine")
    ua = phone(phones, catherine, "ks1")
    response = ua.request(
        "SUBSCRIBE", f"sip:{alice[0]}@127.0.0.1:5071", {"Event": "dialog", "Expires": "60"},
        to=f"sip:{alice[0]}@{DOMAIN}",
    )
    assert response.status == 200
    notify = ua.wait_request("NOTIFY", 5)
    validate_dialog_info(notify.body)
    assert f'entity="sip:{alice[0]}@{DOMAIN}"'.encode() in notify.body
