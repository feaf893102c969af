"""A real phone nobody here wrote: Debian's baresip, registered over TCP (and UDP), called by sipp.

Issue 5, finding 6: a phone registered over TCP on ks1 must be reachable through ks2 too (ks2
goes through the instance that holds the phone's connection). Requests reach the phone on the
connection it registered over (RFC 5626 flow), never on a new connection to its Contact: a phone
behind NAT or a firewall accepts none (baresip listens, so the test checks the flow in its trace).
The phone's configuration and its log (SIP trace) stay under `$BLF_VAR/phones/<user>/`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import DOMAIN, KS, free_port, watcher
from tests.e2e.real_phone import Baresip, available

# baresip auto-answers: its 180 and 200 leave together, reach two Kamailio workers, and the
# 180 is sometimes relayed after the 200 (tm decides under a lock but sends after it). A
# phone's transaction layer drops such a 180 (RFC 3261 §17.1.1.2); sipp's scenario must say so.
ANSWERS_AT_ONCE = "caller_late_1xx.xml"


@pytest.fixture
def real_phones(lab: dict[str, tuple[str, int]]) -> Iterator[object]:
    if not available():
        pytest.fail("baresip is not installed: run `make setup` (Debian package baresip-core)")
    started: list[Baresip] = []
    var = Path(os.environ["BLF_VAR"]) / "phones"

    def start(creds: tuple[str, str], instance: str, transport: str = "tcp") -> Baresip:
        phone = Baresip(var / creds[0], creds[0], DOMAIN, creds[1], KS[instance], free_port(), transport)
        started.append(phone)
        phone.wait_registered(10)
        return phone

    yield start
    for phone in started:
        phone.stop()


def answered(phone: Baresip, caller: object, after: int = 0) -> None:
    """The call reached the phone, the phone answered it, and sipp completed it (200, ACK, BYE, 200).

    `after`: offset in the phone's log where this call's part begins.
    """
    at = phone.wait_for("call: answering call", 10, after)
    code = caller.wait(timeout=15)  # type: ignore[attr-defined]
    assert code == 0, f"sipp caller exited {code}; phone log {phone.log}"
    phone.wait_for("BYE sip:", 5, at)
    flow = phone.flow()
    strangers = [m for m in phone.received("INVITE") + phone.received("BYE") if m.destination != flow]
    assert not strangers, (
        f"requests reached the phone outside the flow it registered on ({flow}): {strangers}; log {phone.log}"
    )


def test_real_phone_on_tcp_answers_a_call_through_the_instance_it_registered_with(account, real_phones, sipp):
    pat, carl = account("pat"), account("carl")
    phone = real_phones(pat, "ks1", "tcp")
    caller = sipp.call("ks1", carl, pat[0], hold_ms=1000, scenario=ANSWERS_AT_ONCE)
    answered(phone, caller)


def test_real_phone_on_tcp_at_ks1_answers_a_call_through_ks2_and_its_lamp_goes_busy(
    account, real_phones, sipp, phones
):
    pat, carl, wendy = account("pat"), account("carl"), account("wendy")
    phone = real_phones(pat, "ks1", "tcp")
    watching = watcher(phones, wendy, "ks2")
    lamp = watching.subscribe(pat[0])
    caller = sipp.call("ks2", carl, pat[0], hold_ms=1500, scenario=ANSWERS_AT_ONCE)
    watching.wait_lamp(lamp, "busy", 8)
    answered(phone, caller)
    watching.wait_lamp(lamp, "idle", 8)
    assert lamp.lamps[-1] == "idle" and "busy" in lamp.lamps


def test_real_phone_on_udp_answers_calls_through_either_instance(account, real_phones, sipp):
    pat, carl = account("pat"), account("carl")
    phone = real_phones(pat, "ks2", "udp")
    answered(phone, sipp.call("ks1", carl, pat[0], hold_ms=500, scenario=ANSWERS_AT_ONCE))
    mark = len(phone.text())
    answered(phone, sipp.call("ks2", carl, pat[0], hold_ms=500, scenario=ANSWERS_AT_ONCE), mark)
