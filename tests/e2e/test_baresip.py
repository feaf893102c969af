"""Debian's baresip (1.0.0, package `baresip-core`) as a presence client on the two-instance lab.

Its `presence` module publishes its own status (PUBLISH, RFC 3903, when its account has
`pubint`), subscribes to its contacts' presence (`;presence=p2p` in its `contacts`) and shows
what our NOTIFYs say; tests/e2e/baresip_ua.py drives it through its `ctrl_tcp` interface
(`presence_online`, `presence_offline`, `contacts`). Its files and its log, SIP trace
included, stay under `$BLF_VAR/phones/<user>/`.

Quirks of this client, and how each is handled
----------------------------------------------
1. Its PIDF puts `<dm:person>` before `<tuple>`, which RFC 3863's schema (tuples, then notes,
   then extensions) refuses: every PUBLISH of it was a 400. Handled by us:
   statestore.domain.pidf.check_pidf puts a document's tuples first when that alone makes it
   valid, and stores it so (tests/unit/test_pidf.py).
2. Its first PUBLISH, sent before its REGISTER is answered, says `<basic>unknown</basic>`
   (not a PIDF value). It is refused with 400, which is right; baresip publishes again with
   `open` as soon as it is registered (test 1 checks that this one is accepted).
3. It never retries a PUBLISH refused with anything but 401/407 or 412 (no timer after an
   error response): a refused status stays unpublished until its user changes it. Nothing
   we can do beyond accepting what it sends (quirk 1).
4. Every PUBLISH, the refreshes and modifications too, is challenged (it does not reuse a
   nonce) and resent with credentials: twice the messages, no harm.
5. A status change while the previous PUBLISH is unanswered goes out with the entity-tag it
   holds, soon replaced: 412, and baresip publishes anew without SIP-If-Match (RFC 3903 §6
   recovery), forgetting the publication that replaced it, which would stay until it expires
   (Expires = `pubint`) and, were it `open`, show the account open after it went offline.
   Handled by us: an initial PUBLISH replaces the older publications of the same device
   (statestore.domain.publication.admit; the device is here its connection) (test 5).
6. It reads a NOTIFY's status from the first `<basic>` only (then `<rpid:away/>`,
   `<rpid:busy/>`, `<rpid:on-the-phone/>` matched as text, `rpid` prefix included). Handled
   by us: statestore.domain.presence composes open tuples first (any open device shows
   Online, as our aggregate rule says) and always writes RPID with the `rpid` prefix, so an
   answered call shows Busy (test 2).
7. Its SUBSCRIBE has no Accept header: RFC 3856 makes PIDF the default then, which we send.
   It answers a NOTIFY whose type is not PIDF with 415; we never send one (test 2 checks it
   never answered 415).
8. A NOTIFY without a body (a pending subscription) shows as Unknown, and only a change
   between two known statuses is logged (`<sip:...> changed status from X to Y`); the tests
   read its `contacts` listing instead of its log (test 4).
9. Its status is `open`/`closed` only: `presence_offline` publishes `closed` with an empty
   `<rpid:activities/>`; there is no busy or away command in 1.0.
10. When it quits it sends PUBLISH Expires: 0 with its entity-tag and unsubscribes
   (SUBSCRIBE Expires: 0 to our Contact): both answered 200.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from statestore import keys
from tests.e2e.baresip_ua import PresencePhone
from tests.e2e.conftest import DOMAIN, KS, blfctl, etcdctl, free_port, phone, register_contact, watcher
from tests.e2e.real_phone import MODULES, available
from tests.e2e.test_call_flows import wait_exit

PUBINT = 60


def uri(user: str) -> str:
    return f"sip:{user}@{DOMAIN}"


@pytest.fixture
def presence_phones(lab: dict[str, tuple[str, int]]) -> Iterator[object]:
    if not available():
        pytest.fail("baresip is not installed: run `make setup` (Debian package baresip-core)")
    for module in ("presence.so", "contact.so", "ctrl_tcp.so"):
        if not os.path.exists(os.path.join(MODULES, module)):
            pytest.fail(f"baresip has no {module} in {MODULES}: the presence tests need it (package baresip-core)")
    started: list[PresencePhone] = []
    var = Path(os.environ["BLF_VAR"]) / "phones"

    def start(
        creds: tuple[str, str], instance: str, pubint: int = 0, watching: tuple[str, ...] = (),
        transport: str = "tcp",
    ) -> PresencePhone:
        ua = PresencePhone(
            var / creds[0], creds[0], DOMAIN, creds[1], KS[instance], free_port(tcp=True), free_port(tcp=True),
            transport, pubint, watching,
        )
        started.append(ua)
        ua.wait_registered(10)
        return ua

    yield start
    for ua in started:
        ua.stop()


def published(baresip: PresencePhone, change: str) -> None:
    """Change baresip's status (`online`/`offline`) and wait until its PUBLISH is accepted."""
    mark = len(baresip.text())
    getattr(baresip, f"set_{change}")()
    baresip.wait_published(mark, 10)


def shown(watching: PresencePhone, publisher: PresencePhone, user: str, status: str, timeout: float) -> None:
    """`watching.wait_shown`, failing with the publisher's messages too."""
    try:
        watching.wait_shown(uri(user), status, timeout)
    except AssertionError as error:
        raise AssertionError(f"{error}\npublisher's last messages:\n{publisher.summary()}") from None


def test_baresip_publishes_its_status_to_a_watcher_on_the_other_instance(account, presence_phones, phones):
    pat, wendy = account("pat"), account("wendy")
    baresip = presence_phones(pat, "ks1", pubint=PUBINT)
    baresip.wait_published(0, 10)  # quirk 2: its "unknown" is refused, its "open" accepted
    watching = watcher(phones, wendy, "ks2")
    sub = watching.subscribe(pat[0], headers={"Event": "presence"})
    watching.wait_lamp(sub, "open", 8)
    assert b'id="t4109"' in sub.notifies[-1].message.body, "the watcher sees baresip's own tuple"
    published(baresip, "offline")  # still registered: only its publication says closed
    watching.wait_lamp(sub, "closed", 12)
    published(baresip, "online")
    watching.wait_lamp(sub, "open", 12)
    assert "publisher got error response 412" not in baresip.text()
    stored = ("get", "--prefix", "--keys-only", keys.pubs_of(f"{pat[0]}@{DOMAIN}"))
    assert etcdctl(*stored).stdout.strip(), "baresip's publication is stored"
    baresip.stop()  # quirk 10: its publication is removed (PUBLISH Expires: 0)
    left = etcdctl(*stored)
    assert left.returncode == 0 and not left.stdout.strip(), f"publications left: {left.stdout}"


def test_baresip_shows_registration_calls_and_unregistration_of_an_account_it_watches(
    account, presence_phones, phones, sipp
):
    pat, bob, carl = account("pat"), account("bob"), account("carl")
    baresip = presence_phones(pat, "ks2", watching=(bob[0],))
    baresip.wait_shown(uri(bob[0]), "Offline", 10)
    bob_phone = phone(phones, bob, "ks1")
    port = free_port()
    register_contact(bob_phone, port)
    baresip.wait_shown(uri(bob[0]), "Online", 12)
    callee = sipp.callee(port, ring_ms=300)
    caller = sipp.call("ks1", carl, bob[0], hold_ms=8000, scenario="caller_late_1xx.xml")  # see test_real_phone
    baresip.wait_shown(uri(bob[0]), "Busy", 12)  # quirk 6: <rpid:on-the-phone/>
    assert wait_exit(caller) == 0 and wait_exit(callee) == 0
    baresip.wait_shown(uri(bob[0]), "Online", 12)
    assert bob_phone.register(0, contact=f"<sip:{bob[0]}@127.0.0.1:{port}>").status == 200
    baresip.wait_shown(uri(bob[0]), "Offline", 12)
    assert not baresip.received("SIP/2.0 415"), "quirk 7: baresip refused a NOTIFY's type"
    assert "415 Unsupported Media Type" not in baresip.text()


@pytest.mark.parametrize(("publishes", "watches"), [("tcp", "tcp"), ("udp", "tcp"), ("tcp", "udp")])
def test_one_baresip_sees_another_change_its_status_across_instances(account, presence_phones, publishes, watches):
    pat, quinn = account("pat"), account("quinn")
    publisher = presence_phones(pat, "ks1", pubint=PUBINT, transport=publishes)
    publisher.wait_published(0, 10)
    watching = presence_phones(quinn, "ks2", watching=(pat[0],), transport=watches)
    shown(watching, publisher, pat[0], "Online", 10)
    published(publisher, "offline")
    shown(watching, publisher, pat[0], "Offline", 12)
    published(publisher, "online")
    shown(watching, publisher, pat[0], "Online", 12)


def test_a_pending_subscription_shows_unknown_until_the_presentity_approves(account, presence_phones, phones):
    pat, bob = account("pat"), account("bob")
    register_contact(phone(phones, bob, "ks1"), free_port())
    blfctl("presence", "policy", f"{bob[0]}@{DOMAIN}", "ask")
    baresip = presence_phones(pat, "ks2", watching=(bob[0],))
    baresip.wait_for("Subscription-State: pending", 10)
    assert baresip.shown()[uri(bob[0])] == "Unknown"  # quirk 8: no body, no status
    blfctl("watcher", "approve", f"{bob[0]}@{DOMAIN}", f"{pat[0]}@{DOMAIN}")
    baresip.wait_shown(uri(bob[0]), "Online", 12)


def test_two_status_changes_in_a_row_end_on_the_last_one(account, presence_phones, phones):
    pat, wendy, xavier = account("pat"), account("wendy"), account("xavier")
    baresip = presence_phones(pat, "ks1", pubint=PUBINT)
    baresip.wait_published(0, 10)
    published(baresip, "offline")
    mark = len(baresip.text())
    baresip.set_online()
    baresip.set_offline()  # before its "online" PUBLISH is answered: quirk 5, usually a 412
    baresip.wait_published(baresip.wait_published(mark, 10) + 1, 10)
    raced = "412 Conditional Request Failed" in baresip.text()[mark:]
    # A watcher that comes now is told the state as composed at once.
    watching = watcher(phones, wendy, "ks2")
    sub = watching.subscribe(pat[0], headers={"Event": "presence"})
    assert sub.lamp == "closed", f"412 race: {raced}; body {sub.notifies[-1].message.body!r}"
    late = presence_phones(xavier, "ks2", watching=(pat[0],))
    late.wait_shown(uri(pat[0]), "Offline", 10)
