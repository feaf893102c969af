"""The cluster-wide registrar (RFC 3261 §10.3) and malformed input, on real instances."""

from __future__ import annotations

import socket

from tests.e2e.conftest import DOMAIN, KS, phone
from tests.sipua import Message, UserAgent


def register(ua: UserAgent, contact: str | None, expires: str | None, call_id: str = "") -> Message:
    headers: dict[str, str] = {"Contact": contact or ""}
    if expires is not None:
        headers["Expires"] = expires
    return ua.request("REGISTER", f"sip:{DOMAIN}", headers, to=ua.aor, call_id=call_id or f"r-{ua.port}")


def contacts(response: Message) -> list[str]:
    return [c.strip() for value in response.all("contact") for c in value.split(",")]


def test_register_is_challenged_with_401_then_accepted(account, phones):
    alice = account("alice")
    ua = phone(phones, alice, "ks1")
    first = ua.request("REGISTER", f"sip:{DOMAIN}", {"Expires": "60"}, to=ua.aor, auth=False)
    assert first.status == 401 and "Digest" in (first.header("www-authenticate") or "")
    assert ua.register(120).status == 200


def test_several_contacts_query_and_wildcard_removal(account, phones):
    alice = account("alice")
    ua = phone(phones, alice, "ks1")
    one, two = "<sip:a1@127.0.0.1:7001>", "<sip:a2@127.0.0.1:7002>;expires=90"
    response = register(ua, f"{one}, {two}", "120")
    assert response.status == 200
    listed = contacts(response)
    assert "<sip:a1@127.0.0.1:7001>;expires=120" in listed
    assert any(c.startswith("<sip:a2@127.0.0.1:7002>;expires=") and int(c.split("=")[-1]) in (89, 90) for c in listed)
    other = phone(phones, alice, "ks2")
    query = register(other, None, None, call_id="query")
    assert query.status == 200 and len(contacts(query)) == 2, "bindings are shared by the cluster"
    wildcard = register(ua, "*", "0")
    assert wildcard.status == 200 and wildcard.all("contact") == []
    bad = register(ua, "*", "60")
    assert bad.status == 400


def test_too_brief_registration_gets_423_with_min_expires(account, phones):
    ua = phone(phones, account("alice"), "ks2")
    response = register(ua, "<sip:a@127.0.0.1:7003>", "5")
    assert response.status == 423 and response.header("min-expires") == "60"


def test_register_for_someone_else_is_refused(account, phones):
    alice, boris = account("alice"), account("boris")
    ua = phone(phones, alice, "ks1")
    response = ua.request("REGISTER", f"sip:{DOMAIN}", {"Expires": "60"}, to=f"sip:{boris[0]}@{DOMAIN}")
    assert response.status in (401, 403)


def test_call_to_unregistered_account_gets_480_and_to_unknown_user_404(account, phones):
    alice, boris = account("alice"), account("boris")
    ua = phone(phones, alice, "ks1")
    assert ua.request("INVITE", f"sip:{boris[0]}@{DOMAIN}", {"Content-Type": "application/sdp"}).status == 480
    assert ua.request("INVITE", f"sip:nobody-x@{DOMAIN}", {}).status == 404


def test_malformed_request_gets_400():
    host, port = KS["ks1"]
    bad = (
        "SUBSCRIBE sip:alice@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:7999;branch=z9hG4bKbad1;rport\r\n"
        "From: <sip:x@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        "Call-ID: malformed-1\r\nCSeq: notanumber SUBSCRIBE\r\nMax-Forwards: 70\r\n"
        "Event: dialog\r\nContent-Length: 0\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        sock.sendto(bad.encode(), (host, port))
        data, _ = sock.recvfrom(65535)
    assert data.startswith(b"SIP/2.0 400"), data[:80]


def test_unsupported_method_gets_405_with_allow(account, phones):
    ua = phone(phones, account("alice"), "ks1")
    response = ua.request("INFO", f"sip:bob@{DOMAIN}", {})
    allowed = response.header("allow") or ""
    assert response.status == 405 and "SUBSCRIBE" in allowed and "MESSAGE" in allowed
