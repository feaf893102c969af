"""MESSAGE between accounts (RFC 3428, issue 15 part 6): relayed with the same identity and
could-call rules as an INVITE, no dialog made. Phones are test UAs on 127.0.0.1."""

from __future__ import annotations

import uuid

from tests.e2e.conftest import DOMAIN, KS, phone
from tests.e2e.tenants import add_account, add_domain, tenant_phone
from tests.sipua import UserAgent

TEXT_PLAIN = {"Content-Type": "text/plain;charset=UTF-8"}


def _body() -> bytes:
    # Non-ASCII and a CRLF inside: the body must arrive byte for byte.
    return f"Lunch at 12? ünïcode\r\nsecond line {uuid.uuid4().hex}".encode()


def test_message_reaches_the_registered_callee_through_another_instance_and_its_200_comes_back(account, phones):
    alice, boris = account("alice"), account("boris")
    receiver = phone(phones, boris, "ks2")
    assert receiver.register().status == 200
    sender = phone(phones, alice, "ks1")
    body = _body()
    response = sender.request("MESSAGE", f"sip:{boris[0]}@{DOMAIN}", TEXT_PLAIN, body=body)
    assert response.status == 200, response.first_line
    arrived = receiver.wait_request("MESSAGE", timeout=5)
    assert arrived.body == body
    assert (arrived.header("content-type") or "").startswith("text/plain")
    assert f"sip:{alice[0]}@{DOMAIN}" in (arrived.header("from") or "")
    # No dialog: the cluster does not record-route a MESSAGE, and the callee got no credentials.
    assert not arrived.all("record-route") and not arrived.all("proxy-authorization")


def test_an_identity_the_sender_asserts_itself_is_not_passed_on(account, phones):
    """One account must not show itself to another as a third (RFC 3325 headers from a phone):
    the callee gets the message without them, with the account's identity asserted instead."""
    alice, boris, boss = account("alice"), account("boris"), account("boss")
    receiver = phone(phones, boris, "ks1")
    assert receiver.register().status == 200
    sender = phone(phones, alice, "ks1")
    forged = {**TEXT_PLAIN, "P-Asserted-Identity": f"<sip:{boss[0]}@{DOMAIN}>",
              "P-Preferred-Identity": f"<sip:{boss[0]}@{DOMAIN}>"}
    assert sender.request("MESSAGE", f"sip:{boris[0]}@{DOMAIN}", forged, body=_body()).status == 200
    arrived = receiver.wait_request("MESSAGE", timeout=5)
    assert not arrived.all("p-preferred-identity")
    assert arrived.all("p-asserted-identity") == [f"<sip:{alice[0]}@{DOMAIN}>"], "the cluster asserts the account"


def test_a_sender_that_withheld_its_identity_gets_none_asserted(account, phones):
    alice, boris = account("alice"), account("boris")
    receiver = phone(phones, boris, "ks1")
    assert receiver.register().status == 200
    sender = phone(phones, alice, "ks1")
    private = {**TEXT_PLAIN, "Privacy": "id"}
    assert sender.request("MESSAGE", f"sip:{boris[0]}@{DOMAIN}", private, body=_body()).status == 200
    assert not receiver.wait_request("MESSAGE", timeout=5).all("p-asserted-identity")


def test_unauthenticated_message_is_challenged_with_407_and_reaches_nobody(account, phones):
    alice, boris = account("alice"), account("boris")
    receiver = phone(phones, boris, "ks1")
    assert receiver.register().status == 200
    sender = phone(phones, alice, "ks1")
    response = sender.request("MESSAGE", f"sip:{boris[0]}@{DOMAIN}", TEXT_PLAIN, body=_body(), auth=False)
    assert response.status == 407 and response.header("proxy-authenticate")
    wrong = UserAgent(alice[0], DOMAIN, "not-the-password", sender.proxy)
    phones.append(wrong)
    assert wrong.request("MESSAGE", f"sip:{boris[0]}@{DOMAIN}", TEXT_PLAIN, body=_body()).status == 407
    assert receiver.requests.empty()


def test_message_across_domains_follows_could_call(lab, phones):
    closed, target_domain = add_domain(), add_domain()
    opened = add_domain(may_call=(target_domain,))
    target = add_account(target_domain, "target")
    receiver = tenant_phone(phones, target, "ks2")
    assert receiver.register().status == 200
    refused = tenant_phone(phones, add_account(closed, "closed"), "ks1")
    response = refused.request("MESSAGE", target.uri(), TEXT_PLAIN, body=_body())
    assert response.status == 403, response.first_line
    allowed = tenant_phone(phones, add_account(opened, "opened"), "ks1")
    body = _body()
    assert allowed.request("MESSAGE", target.uri(), TEXT_PLAIN, body=body).status == 200
    assert receiver.wait_request("MESSAGE", timeout=5).body == body
    assert receiver.requests.empty()  # the refused one never arrived


def test_message_to_an_unknown_or_unregistered_account(account, phones):
    alice, boris = account("alice"), account("boris")
    sender = phone(phones, alice, "ks1")
    unknown = sender.request("MESSAGE", f"sip:nobody-{uuid.uuid4().hex[:6]}@{DOMAIN}", TEXT_PLAIN, body=_body())
    assert unknown.status == 404, unknown.first_line
    offline = sender.request("MESSAGE", f"sip:{boris[0]}@{DOMAIN}", TEXT_PLAIN, body=_body())
    assert offline.status == 480, offline.first_line


def test_message_reaches_a_tcp_phone_through_the_instance_holding_its_connection(account, phones):
    alice, boris = account("alice"), account("boris")
    receiver = UserAgent(boris[0], DOMAIN, boris[1], KS["ks2"], transport="tcp")
    phones.append(receiver)
    assert receiver.register().status == 200
    body = _body()
    response = phone(phones, alice, "ks1").request("MESSAGE", f"sip:{boris[0]}@{DOMAIN}", TEXT_PLAIN, body=body)
    assert response.status == 200, response.first_line
    assert receiver.wait_request("MESSAGE", timeout=5).body == body
