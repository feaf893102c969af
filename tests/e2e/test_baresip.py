"""Debian's baresip as a presence client on the two-instance lab.

Its `presence` module publishes its own status (PUBLISH, when its account has `pubint`),
subscribes to its contacts' presence and shows what our NOTIFYs say
(tests/e2e/baresip_ua.py drives it; its files and log stay under `$BLF_VAR/phones/<user>/`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.baresip_ua import PresencePhone
from tests.e2e.conftest import DOMAIN, KS, free_port, phone, register_contact, watcher
from tests.e2e.real_phone import available

PUBINT = 60


@pytest.fixture
def presence_phones(lab: dict[str, tuple[str, int]]) -> Iterator[object]:
    if not available() or not os.path.exists("/usr/lib/baresip/modules/presence.so"):
        pytest.fail("baresip with its presence module is not installed: run `make setup` (Debian package baresip-core)")
    started: list[PresencePhone] = []
    var = Path(os.environ["BLF_VAR"]) / "phones"

    def start(
        creds: tuple[str, str], instance: str, pubint: int = 0, watching: tuple[str, ...] = (),
        transport: str = "tcp",
    ) -> PresencePhone:
        ua = PresencePhone(
            var / creds[0], creds[0], DOMAIN, creds[1], KS[instance], free_port(), free_port(), transport,
            pubint, watching,
        )
        started.append(ua)
        ua.wait_registered(10)
        return ua

    yield start
    for ua in started:
        ua.stop()


def test_baresip_publishes_its_status_to_a_watcher_on_the_other_instance(account, presence_phones, phones):
    pat, wendy = account("pat"), account("wendy")
    baresip = presence_phones(pat, "ks1", pubint=PUBINT)
    baresip.wait_for("SIP/2.0 200 OK", 10, baresip.wait_for("PUBLISH sip:", 10))
    watching = watcher(phones, wendy, "ks2")
    sub = watching.subscribe(pat[0], headers={"Event": "presence"})
    watching.wait_lamp(sub, "open", 8)
    baresip.set_offline()
    watching.wait_lamp(sub, "closed", 12)
    baresip.set_online()
    watching.wait_lamp(sub, "open", 12)


def test_baresip_shows_the_status_of_an_account_it_watches_through_the_other_instance(
    account, presence_phones, phones
):
    pat, bob = account("pat"), account("bob")
    baresip = presence_phones(pat, "ks2", watching=(bob[0],))
    uri = f"sip:{bob[0]}@{DOMAIN}"
    baresip.wait_shown(uri, "Offline", 10)
    bob_phone = phone(phones, bob, "ks1")
    register_contact(bob_phone, free_port())
    baresip.wait_shown(uri, "Online", 12)
