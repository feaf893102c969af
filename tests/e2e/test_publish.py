"""PUBLISH (RFC 3903) of presence on the two-instance lab: an account publishes, refreshes,
modifies and removes its state through either instance; every refusal of §6; and what
its presence watchers see (the publication, across an instance's death, gone at expiry)."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.e2e.conftest import (
    DOMAIN,
    PUB_MIN_EXPIRES,
    blfctl,
    etcdctl,
    phone,
    wait_store,
)
from tests.sipua import Message, UserAgent

CT = "application/pidf+xml"


def pidf(user: str, basic: str = "open", tuple_id: str = "") -> bytes:
    tuple_id = tuple_id or f"t{uuid.uuid4().hex[:8]}"
    return (
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@{DOMAIN}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()


def publish(
    ua: UserAgent, body: bytes = b"", *, etag: str = "", expires: str = "60", user: str = "",
    content_type: str = CT, event: str = "presence", auth: bool = True,
) -> Message:
    headers = {"Event": event, "Expires": expires, "SIP-If-Match": etag, "Content-Type": content_type if body else ""}
    return ua.request("PUBLISH", f"sip:{user or ua.user}@{DOMAIN}", headers, body=body, auth=auth)


def stored_etags(user: str) -> set[str]:
    done = etcdctl("get", "--prefix", "--keys-only", f"/blf/pubs/{user}@{DOMAIN}/")
    assert done.returncode == 0, done.stderr
    return {line.rpartition("/")[2] for line in done.stdout.split() if line}


def test_publish_through_ks1_refresh_modify_and_remove_through_ks2(account, phones):
    alice = account("alice")
    at_ks1, at_ks2 = phone(phones, alice, "ks1"), phone(phones, alice, "ks2")
    first = publish(at_ks1, pidf(alice[0]))
    assert first.status == 200, first.first_line
    etag1 = first.header("sip-etag")
    assert etag1 and first.header("expires") == "60"
    assert stored_etags(alice[0]) == {etag1}

    refreshed = publish(at_ks2, etag=etag1, expires="120")
    assert refreshed.status == 200, refreshed.first_line
    etag2 = refreshed.header("sip-etag")
    assert etag2 and etag2 != etag1 and refreshed.header("expires") == "120"
    assert stored_etags(alice[0]) == {etag2}

    modified = publish(at_ks2, pidf(alice[0], "closed"), etag=etag2)
    assert modified.status == 200, modified.first_line
    etag3 = modified.header("sip-etag")
    assert etag3 not in (None, etag1, etag2)
    assert stored_etags(alice[0]) == {etag3}

    assert publish(at_ks1, etag=etag1).status == 412, "a replaced entity-tag names nothing"
    removed = publish(at_ks1, etag=etag3, expires="0")
    assert removed.status == 200 and removed.header("expires") == "0"
    assert stored_etags(alice[0]) == set()
    assert publish(at_ks2, etag=etag3).status == 412


def test_refusals_that_need_no_store(account, phones):
    alice = account("alice")
    ua = phone(phones, alice, "ks1")
    unknown = publish(ua, etag="0123456789abcdef")
    assert unknown.status == 412
    brief = publish(ua, pidf(alice[0]), expires=str(PUB_MIN_EXPIRES - 1))
    assert brief.status == 423 and brief.header("min-expires") == str(PUB_MIN_EXPIRES)
    bad_event = publish(ua, pidf(alice[0]), event="dialog")
    assert bad_event.status == 489 and bad_event.header("allow-events") == "presence"
    plain = publish(ua, b"I am here", content_type="text/plain")
    assert plain.status == 415 and plain.header("accept") == CT
    assert publish(ua, b"<presence").status == 400, "malformed"
    dtd = b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY x "y">]>' + pidf(alice[0])
    assert publish(ua, dtd).status == 400, "a DTD or entity"
    assert publish(ua).status == 400, "an initial PUBLISH without a body"
    assert stored_etags(alice[0]) == set()


def test_only_the_account_may_publish_its_state(account, phones):
    alice, mallory = account("alice"), account("mallory")
    forged = publish(phone(phones, mallory, "ks2"), pidf(alice[0]), user=alice[0])
    assert forged.status == 403 and "Only The Account" in forged.first_line
    assert stored_etags(alice[0]) == set()


def test_publish_without_credentials_is_challenged(account, phones):
    alice = account("alice")
    answer = publish(phone(phones, alice, "ks1"), pidf(alice[0]), auth=False)
    assert answer.status == 401 and answer.header("www-authenticate")
    assert stored_etags(alice[0]) == set()


# --- what presence watchers see --------------------------------------------------------------


def subscribe_presence(ua: UserAgent, user: str, expires: int = 120) -> Message:
    headers = {"Event": "presence", "Expires": str(expires), "Accept": CT}
    return ua.request("SUBSCRIBE", f"sip:{user}@{DOMAIN}", headers)


def next_notify(ua: UserAgent, timeout: float) -> Message:
    notify = ua.wait_request("NOTIFY", timeout)
    ua.sock.sendto(ua.response_to(notify, 200), ua.proxy)
    return notify


def notify_showing(ua: UserAgent, shown: bool, text: str, timeout: float) -> Message:
    """The first NOTIFY whose body shows (or no longer shows) `text`."""
    while True:
        notify = next_notify(ua, timeout)
        if (text in notify.body.decode(errors="replace")) == shown:
            return notify


def presence_watcher(phones, creds, instance: str) -> UserAgent:
    return phone(phones, creds, instance)


def test_a_publication_through_ks1_is_seen_by_a_presence_watcher_on_ks2(account, phones):
    alice, catherine = account("alice"), account("catherine")
    tuple_id = f"pub-{uuid.uuid4().hex[:8]}"
    assert publish(phone(phones, alice, "ks1"), pidf(alice[0], tuple_id=tuple_id)).status == 200
    cat = presence_watcher(phones, catherine, "ks2")
    answer = subscribe_presence(cat, alice[0])
    assert answer.status == 200, answer.first_line
    notify = notify_showing(cat, True, tuple_id, 10)
    assert (notify.header("content-type") or "").startswith(CT)


def test_a_publication_survives_the_death_of_the_instance_that_took_it(account, phones):
    alice, catherine = account("alice"), account("catherine")
    tuple_id = f"pub-{uuid.uuid4().hex[:8]}"
    assert publish(phone(phones, alice, "ks1"), pidf(alice[0], tuple_id=tuple_id), expires="300").status == 200
    try:
        blfctl("lab", "kill", "ks1")
        cat = presence_watcher(phones, catherine, "ks2")
        answer = subscribe_presence(cat, alice[0])
        assert answer.status == 200, answer.first_line
        notify_showing(cat, True, tuple_id, 10)
    finally:
        blfctl("lab", "start", "ks1")


def test_watchers_see_a_publication_gone_within_10s_of_its_expiry_and_the_store_is_swept(account, phones):
    alice, catherine = account("alice"), account("catherine")
    tuple_id = f"pub-{uuid.uuid4().hex[:8]}"
    expires = 3
    published = publish(phone(phones, alice, "ks1"), pidf(alice[0], tuple_id=tuple_id), expires=str(expires))
    assert published.status == 200 and published.header("expires") == str(expires)
    cat = presence_watcher(phones, catherine, "ks2")
    answer = subscribe_presence(cat, alice[0])
    assert answer.status == 200, answer.first_line
    notify_showing(cat, True, tuple_id, 5)
    notify_showing(cat, False, tuple_id, expires + 10)
    assert wait_store(lambda: stored_etags(alice[0]) == set(), 10, prefix="/blf/pubs/")


def test_account_removal_removes_its_publications(account, phones):
    alice = account("alice")
    assert publish(phone(phones, alice, "ks1"), pidf(alice[0])).status == 200
    blfctl("account", "remove", f"{alice[0]}@{DOMAIN}")
    assert stored_etags(alice[0]) == set()


def test_a_device_publishing_anew_replaces_its_older_state_and_two_devices_keep_theirs(account, phones):
    alice = account("alice")
    desk, mobile = phone(phones, alice, "ks1"), phone(phones, alice, "ks2")
    first = publish(desk, pidf(alice[0]))
    other = publish(mobile, pidf(alice[0], "closed"))
    assert first.status == 200 and other.status == 200
    # The desk phone lost its entity-tag (a reboot): its new initial PUBLISH replaces its old state.
    again = publish(desk, pidf(alice[0]))
    assert again.status == 200
    wanted = {again.header("sip-etag"), other.header("sip-etag")}
    prefix = f"/blf/pubs/{alice[0]}@{DOMAIN}/"
    assert wait_store(lambda: stored_etags(alice[0]) == wanted, 5, prefix), stored_etags(alice[0])


def test_blfctl_show_lists_an_accounts_publications(account, phones):
    alice = account("alice")
    done = publish(phone(phones, alice, "ks1"), pidf(alice[0]))
    shown = json.loads(blfctl("show", f"{alice[0]}@{DOMAIN}", "--json").stdout)
    [listed] = shown["publications"]
    assert listed["etag"] == done.header("sip-etag") and listed["event"] == "presence"
    assert 0 < listed["expires"] <= 60 and listed["instance"] == "ks1"


def test_fifty_changes_in_a_second_reach_a_watcher_as_one_notify_of_the_last(account, phones):
    """Rate control (RFC 3856 §6.10): a watcher's presence NOTIFYs are 5 s apart at least;
    changes in between are merged and the last state is sent."""
    alice, catherine = account("alice"), account("catherine")
    me = phone(phones, alice, "ks1")
    first = publish(me, pidf(alice[0], tuple_id="change-0"))
    assert first.status == 200
    cat = presence_watcher(phones, catherine, "ks2")
    assert subscribe_presence(cat, alice[0]).status == 200
    notify_showing(cat, True, "change-0", 5)  # NOTIFY 0, sent by the SIP worker
    etag = first.header("sip-etag") or ""
    for n in range(1, 51):  # the first change goes at once, the next 49 within its interval
        answer = publish(me, pidf(alice[0], "open" if n % 2 else "closed", tuple_id=f"change-{n}"), etag=etag)
        assert answer.status == 200, answer.first_line
        etag = answer.header("sip-etag") or ""
    shown = [next_notify(cat, 8).body.decode()]
    while "change-50" not in shown[-1]:
        shown.append(next_notify(cat, 8).body.decode())
    assert len(shown) <= 2, [body.count("change-") for body in shown]  # the first change, then the last
    with pytest.raises(TimeoutError):
        next_notify(cat, 6)  # nothing after the last state
