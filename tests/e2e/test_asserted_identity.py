"""Who the callee is told a call is from (RFC 3325): the cluster asserts the account the
caller's digest verified on the initial INVITE, after removing any identity the phone
asserted itself; in the dialog a phone's own P-Asserted-Identity is not passed on either.
Phones are test UAs on 127.0.0.1."""

from __future__ import annotations

from tests.e2e.conftest import DOMAIN, phone

FORGED = "P-Asserted-Identity: <sip:{}@" + DOMAIN + ">\r\nP-Preferred-Identity: <sip:{}@" + DOMAIN + ">\r\n"


def test_the_callee_is_told_the_authenticated_account_in_the_call_and_nothing_else_in_its_dialog(account, phones):
    alice, boris, boss = account("alice"), account("boris"), account("boss")
    callee = phone(phones, boris, "ks2")
    assert callee.register().status == 200
    caller = phone(phones, alice, "ks1")
    forged = FORGED.format(boss[0], boss[0])
    answer = caller.request("INVITE", f"sip:{boris[0]}@{DOMAIN}", raw_extra=forged)
    assert answer.status == 200, answer.first_line
    invite = callee.wait_request("INVITE", timeout=5)
    assert invite.all("p-asserted-identity") == [f"<sip:{alice[0]}@{DOMAIN}>"]
    assert not invite.all("p-preferred-identity")

    routes = ", ".join(reversed(answer.all("record-route")))
    in_dialog = {"Route": routes}
    dialog = {"to": f"sip:{boris[0]}@{DOMAIN}", "call_id": answer.header("call-id"),
              "from_tag": answer.tag("from"), "to_tag": answer.tag("to"), "auth": False}
    target = (answer.header("contact") or "").strip("<>")
    assert caller.request("INFO", target, in_dialog, raw_extra=forged, **dialog).status == 200
    info = callee.wait_request("INFO", timeout=5)
    assert not info.all("p-asserted-identity") and not info.all("p-preferred-identity")
    assert caller.request("BYE", target, in_dialog, **dialog).status == 200
