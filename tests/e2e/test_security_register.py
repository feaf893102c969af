"""The registrar against hostile and real-world phones (issue 5): RFC 5626 device identity,
the cap on bindings per account, and phones behind NAT. Real instances, no mocks."""

from __future__ import annotations

import json
import os
import re
import socket
import uuid

from tests.e2e.conftest import blfctl, free_port, phone, register_contact
from tests.sipua import Message

MAX_BINDINGS = int(os.environ.get("BLF_MAX_BINDINGS", "10"))
NAT_EXPIRES = int(os.environ.get("BLF_NAT_EXPIRES", "60"))
# Where a phone behind NAT believes it is: a loopback address nothing listens on, so that
# nothing the test makes the cluster send can leave this host (or even reach a socket).
FAKE_PRIVATE = "127.0.0.99:5999"


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def contacts(response: Message) -> list[str]:
    return [c.strip() for value in response.all("contact") for c in re.split(r",\s*(?=<)", value)]


def registrations(aor: str) -> list[dict[str, object]]:
    view = json.loads(blfctl("show", aor, "--json").stdout)
    return list(view["registrations"])


def test_restarted_phone_with_the_same_instance_id_replaces_its_binding_and_rings_alone(
    account, phones, sipp
):
    alice, boris = account("alice"), account("boris")
    desk = phone(phones, boris, "ks2")
    instance = urn()
    old_port, new_port = free_port(), free_port()
    first = desk.register(300, contact=f'<sip:{boris[0]}-boot1@127.0.0.1:{old_port}>;+sip.instance="<{instance}>"')
    assert first.status == 200, first.first_line
    # The phone restarts: new Contact user part and Call-ID, same device.
    second = desk.register(300, contact=f'<sip:{boris[0]}-boot2@127.0.0.1:{new_port}>;+sip.instance="<{instance}>"')
    assert second.status == 200, second.first_line
    listed = contacts(second)
    assert len(listed) == 1 and listed[0].startswith(f"<sip:{boris[0]}-boot2@127.0.0.1:{new_port}>"), listed
    shown = registrations(f"{boris[0]}@example.com")
    assert [r["contact"] for r in shown] == [f"sip:{boris[0]}-boot2@127.0.0.1:{new_port}"]
    assert shown[0]["sip_instance"] == instance

    # The dead contact must not ring: listen on its port for anything the cluster sends.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", old_port))
        dead.settimeout(0.2)
        callee = sipp.callee(new_port, ring_ms=300)
        caller = sipp.call("ks1", alice, boris[0], hold_ms=300)
        assert caller.wait(timeout=30) == 0 and callee.wait(timeout=30) == 0
        try:
            data, _ = dead.recvfrom(65535)
        except TimeoutError:
            data = b""
    assert data == b"", f"the stale contact was rung: {data[:60]!r}"


def test_instance_id_and_reg_id_are_echoed_in_the_200(account, phones):
    ua = phone(phones, account("alice"), "ks1")
    instance = urn()
    contact = f'<sip:{ua.user}@127.0.0.1:{ua.port};transport=udp>;+sip.instance="<{instance}>";reg-id=1'
    response = ua.register(120, contact=contact + ";expires=120;q=0.5")
    assert response.status == 200, response.first_line
    (listed,) = contacts(response)
    params = listed.split(">", 1)[1].split(";")[1:]
    assert f'+sip.instance="<{instance}>"' in params and "reg-id=1" in params, listed
    assert [p for p in params if p.startswith("expires=")] == ["expires=120"], listed
    assert [p for p in params if p.startswith("q=")] == ["q=0.5"], listed
    # We do not do outbound keep-alives: RFC 5626 §6 says not to claim outbound then.
    assert "outbound" not in (response.header("require") or "")
    # A refresh from the same device, as a phone sends it, keeps one binding.
    again = ua.register(120, contact=contact)
    assert again.status == 200 and len(contacts(again)) == 1


def test_more_bindings_than_the_cap_are_refused_and_nothing_is_written(account, phones):
    alice = account("alice")
    aor = f"{alice[0]}@example.com"
    ua = phone(phones, alice, "ks1")
    held = ", ".join(f"<sip:{alice[0]}-{n}@127.0.0.1:{7100 + n}>" for n in range(MAX_BINDINGS))
    assert ua.register(300, contact=held).status == 200
    assert len(registrations(aor)) == MAX_BINDINGS

    # One more, through the other instance: refused, as is a single REGISTER with too many.
    other = phone(phones, alice, "ks2")
    refused = other.register(300, contact=f"<sip:{alice[0]}-extra@127.0.0.1:7199>")
    assert (refused.status, refused.first_line.split(" ", 2)[2]) == (403, "Forbidden - Too Many Registrations")
    assert len(registrations(aor)) == MAX_BINDINGS
    assert all("extra" not in str(r["contact"]) for r in registrations(aor))
    # A refresh of a binding held is fine at the cap.
    assert other.register(300, contact=f"<sip:{alice[0]}-0@127.0.0.1:7100>").status == 200

    boris = account("boris")
    flood = ", ".join(f"<sip:{boris[0]}-{n}@127.0.0.1:{7200 + n}>" for n in range(MAX_BINDINGS + 1))
    assert phone(phones, boris, "ks2").register(300, contact=flood).status == 403
    assert registrations(f"{boris[0]}@example.com") == []


def test_phone_behind_nat_is_flagged_and_its_udp_binding_is_kept_short(account, phones):
    alice = account("alice")
    aor = f"{alice[0]}@example.com"
    ua = phone(phones, alice, "ks1")
    # The phone writes its private address in Via and Contact; its packets come from the
    # NAT's public mapping (here: the test socket, 127.0.0.1:ua.port).
    ua.sent_by = FAKE_PRIVATE
    response = ua.register(3600, contact=f"<sip:{alice[0]}@{FAKE_PRIVATE}>")
    assert response.status == 200, response.first_line
    (listed,) = contacts(response)
    assert listed == f"<sip:{alice[0]}@{FAKE_PRIVATE}>;expires={NAT_EXPIRES}", listed
    (shown,) = registrations(aor)
    assert shown["nat"] is True
    assert shown["received"] == f"udp:127.0.0.1:{ua.port}"
    assert 0 < int(str(shown["expires"])) <= NAT_EXPIRES

    # The same phone seen without NAT (Via and source agree): not flagged, not shortened.
    direct = phone(phones, alice, "ks1")
    register_contact(direct, direct.port, expires=3600)
    by_contact = {str(r["contact"]): r for r in registrations(aor)}
    plain = by_contact[f"sip:{alice[0]}@127.0.0.1:{direct.port}"]
    assert plain["nat"] is False and int(str(plain["expires"])) > NAT_EXPIRES
