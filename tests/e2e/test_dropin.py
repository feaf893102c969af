"""The drop-in (docs/dropin.md): two instances run Debian's stock kamailio.cfg with exactly
the page's additions, and the BLF flows work through them: a call lights the lamps for a
watcher on the other instance, lamps clear when the instance carrying a call dies, and the
other instance takes over a dead instance's subscriptions.

Run alone or with BLF_TEST_CONFIG=dropin, the session lab runs the drop-in; with other
modules (`make test`), this module brings up a drop-in lab of its own meanwhile.
The stock registrar saves each REGISTER in its instance's usrloc; a tracked call reaches a
callee registered through any instance (python_exec("blf_lookup"), the cluster's registrar).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statestore import dropin_recipe
from tests.e2e import conftest as e2e
from tests.e2e.cluster_lab import own_lab
from tests.e2e.conftest import LEASE_TTL, blfctl, lamps_cleared_after_kill, phone, ring_after_takeover
from tests.e2e.test_edge_tcp import PHONE
from tests.e2e.test_metrics import Scrape, http_get, scrape, total, wait_scraped
from tests.sipua import UserAgent


def wait_exit(process: object, timeout: float = 30.0) -> int:
    return int(process.wait(timeout=timeout))  # type: ignore[attr-defined]


DROPIN_VAR = Path(os.environ.get("BLF_TEST_DROPIN_VAR", str(e2e.ROOT / "var" / "test-lab-dropin")))


def _configs() -> dict[str, str]:
    status = json.loads(blfctl("lab", "status", "--json").stdout)
    return {name: entry["config"] for name, entry in status["instances"].items()}


@pytest.fixture(scope="module")
def dropin_session(lab: dict[str, tuple[str, int]]) -> Iterator[None]:
    """The session lab if it runs the drop-in (test_dropin.py alone, or BLF_TEST_CONFIG=dropin);
    else a drop-in lab of this module's own on the same ports (tests/e2e/cluster_lab.py
    own_lab: the session lab is brought down meanwhile and up again afterwards)."""
    if set(_configs().values()) == {"dropin"}:
        yield
        return
    up = ("--instances", "2", "--lease-ttl", str(LEASE_TTL), "--config", "dropin")
    with own_lab(DROPIN_VAR, up):
        blfctl("domain", "add", e2e.DOMAIN)
        yield


@pytest.fixture(autouse=True)
def dropin_lab(dropin_session: None) -> Iterator[None]:
    """Every instance runs the stock configuration with exactly the page's additions."""
    configs = _configs()
    assert configs == {"ks1": "dropin", "ks2": "dropin"}, f"the lab runs {configs}"
    recipe = dropin_recipe.additions(dropin_recipe.DOCS_PAGE.read_text())
    expected = dropin_recipe.apply(dropin_recipe.STOCK_CONFIG.read_text(), recipe)
    for name in configs:
        assert (Path(os.environ["BLF_VAR"]) / name / "config" / "kamailio.cfg").read_text() == expected
    yield


def test_the_operators_own_routing_answers_what_is_not_ours(account, phones):
    """OPTIONS to the server is the stock configuration's ("200 Keepalive"); our full
    routing answers "200 OK" with Allow-Events."""
    alice = account("alice")
    ua = phone(phones, alice, "ks1")
    response = ua.request("OPTIONS", "sip:127.0.0.1:5071", auth=False)
    assert response.first_line == "SIP/2.0 200 Keepalive"


def test_a_subscribe_we_answer_ends_the_operators_route(account, phones):
    """python_exec("blf_request") returns 0 once we have answered: the stock route does not
    go on to answer the SUBSCRIBE a second time (its route(PRESENCE) would say 404)."""
    alice, boris = account("alice"), account("boris")
    ua = phone(phones, alice, "ks2")
    response = ua.request("SUBSCRIBE", f"sip:{boris[0]}@example.com", {"Event": "dialog", "Expires": "60"},
                          auth=False)
    assert response.status == 401, response.first_line  # our challenge, as in the full mode
    cseq = int((response.header("cseq") or "0").split()[0])
    with pytest.raises(TimeoutError):
        ua.wait_response(response.header("call-id") or "", cseq, e2e.QUIET_SECONDS)


def test_an_unauthenticated_call_to_a_blf_domain_is_challenged_by_us(account, phones):
    alice, boris = account("alice"), account("boris")
    ua = phone(phones, alice, "ks1")
    response = ua.request("INVITE", f"sip:{boris[0]}@example.com", {"Content-Type": "application/sdp"},
                          auth=False, body=b"v=0\r\n")
    assert response.status == 407, response.first_line
    assert 'realm="example.com"' in (response.header("proxy-authenticate") or "")


def test_call_via_ks1_lights_the_lamps_for_a_watcher_on_ks2(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port = e2e.free_port()
    e2e.register_contact(phone(phones, boris, "ks1"), port)
    cat = e2e.watcher(phones, catherine, "ks2")
    alice_lamp, boris_lamp = cat.subscribe(alice[0]), cat.subscribe(boris[0])
    assert alice_lamp.lamp == "idle" and boris_lamp.lamp == "idle"

    e2e.play_answered_call(sipp, "ks1", alice, boris[0], port, cat, alice_lamp, boris_lamp)
    answered = boris_lamp.notifies[-2].message.body.decode()
    assert "<state>confirmed</state>" in answered and alice[0] in answered, "the caller is the authenticated account"
    # Seen ending by its BYE (python_exec("blf_in_dialog")), not by the lease keeper's
    # reconciliation with the dialog module, which would clear it a little later.
    ended = boris_lamp.notifies[-1].message.body.decode()
    assert 'event="local-bye"' in ended or 'event="remote-bye"' in ended, ended


def test_rejected_call_flashes_then_goes_dark(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port, cat, boris_lamp = e2e.watched_callee(phones, boris, catherine, callee_at="ks1", watcher_at="ks2")
    callee = sipp.callee(port, ring_ms=300, busy=True)
    caller = sipp.call("ks1", alice, boris[0])
    cat.wait(boris_lamp, lambda s: s.lamps[-2:] == ["early", "idle"], 8)
    assert wait_exit(caller) == 0 and wait_exit(callee) == 0
    assert "busy" not in boris_lamp.lamps
    # Seen failing in the operator's failure route (python_exec("blf_failure")), with its code.
    ended = boris_lamp.notifies[-1].message.body.decode()
    assert 'event="rejected"' in ended and 'code="486"' in ended, ended


def test_instance_killed_mid_call_clears_the_lamps_within_the_lease_ttl(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port, cat, boris_lamp = e2e.watched_callee(phones, boris, catherine, callee_at="ks1", watcher_at="ks2")
    sipp.callee(port, ring_ms=200)
    sipp.call("ks1", alice, boris[0], hold_ms=30000)
    cat.wait_lamp(boris_lamp, "busy", 5)
    try:
        cleared = lamps_cleared_after_kill("ks1", cat, [boris_lamp])
        assert cleared <= LEASE_TTL + 2, f"lamp cleared {cleared:.1f}s after the kill"
    finally:
        blfctl("lab", "start", "ks1")


def test_the_other_instance_takes_over_the_subscriptions_of_a_dead_one(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port, cat, boris_lamp = e2e.watched_callee(phones, boris, catherine, callee_at="ks2", watcher_at="ks1")
    try:
        blfctl("lab", "kill", "ks1")
        caller = ring_after_takeover(sipp, port, alice, boris[0], "ks2", cat, boris_lamp)
        cat.wait_lamp(boris_lamp, "idle", LEASE_TTL + 10)
        assert wait_exit(caller) == 0
    finally:
        blfctl("lab", "start", "ks1")
    status = json.loads(blfctl("lab", "status", "--json").stdout)
    assert status["instances"]["ks1"]["config"] == "dropin", "a restarted instance keeps the drop-in"


def test_a_register_is_challenged_by_us_recorded_and_saved_by_the_operators_registrar(account, phones):
    """Our digest, our registrar (presence goes open for a watcher on the other instance),
    then the stock save("location"): its 200 lists the contact."""
    alice, catherine = account("alice"), account("catherine")
    cat = e2e.watcher(phones, catherine, "ks2")
    sub = cat.subscribe(alice[0], headers={"Event": "presence"})
    assert sub.lamp == "closed"
    ua = phone(phones, alice, "ks1")
    unauthenticated = ua.request("REGISTER", "sip:example.com", {"Contact": ua.contact, "Expires": "300"}, auth=False,
                                 to=ua.aor)
    assert unauthenticated.status == 401, unauthenticated.first_line
    port = e2e.free_port()
    registered = ua.register(300, contact=f"<sip:{alice[0]}@127.0.0.1:{port}>")
    assert registered.status == 200 and f"127.0.0.1:{port}" in (registered.header("contact") or "")
    cat.wait_lamp(sub, "open", 8)
    assert ua.register(0, contact=f"<sip:{alice[0]}@127.0.0.1:{port}>").status == 200
    cat.wait_lamp(sub, "closed", 8)


def test_the_metrics_socket_serves_the_drop_ins_metrics(account, phones, sipp):
    """blf-metrics.cfg comes with the include, and blf.cfg's event_route[xhttp:request]
    serves it: a call moves the leg writer's counter, a subscription shows in the gauge."""
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    before = scrape()
    port, cat, boris_lamp = e2e.watched_callee(phones, boris, catherine, callee_at="ks1", watcher_at="ks2")
    sipp.callee(port, ring_ms=200)
    caller = sipp.call("ks1", alice, boris[0], hold_ms=300)
    cat.wait(boris_lamp, lambda s: "busy" in s.lamps and s.lamp == "idle", 10)
    assert wait_exit(caller) == 0

    def written(scraped: Scrape) -> float:
        return total(scraped, "blf_leg_writes_total", "ks1", result="written")

    expected: dict[str, Callable[[Scrape], bool]] = {
        "legs": lambda s: written(s) - written(before) >= 2,
        "subscriptions": lambda s: total(s, "blf_subscriptions", "ks2", package="dialog") >= 1,
        "store up": lambda s: total(s, "blf_store_up", zone="z1") == 2,
    }
    after = wait_scraped(lambda s: all(check(s) for check in expected.values()), 15)
    assert [what for what, check in expected.items() if not check(after)] == []
    assert http_get("127.0.0.1", e2e.KS["ks1"][1]) == b""  # the SIP port never serves HTTP


def test_a_tcp_phone_registered_through_ks1_is_called_through_ks2_over_its_connection(account, phones):
    """python_exec("blf_lookup") on ks2 plans the branch as the full mode does: through ks1,
    which holds the phone's connection (a flow Route), and ks1's python_exec("blf_request")
    relays it there. The stock lookup("location") on ks2 knows no such phone (404)."""
    boris, alice = account("boris"), account("alice")
    boris_phone = UserAgent(boris[0], e2e.DOMAIN, boris[1], e2e.KS["ks1"], transport="tcp", bind=PHONE)
    phones.append(boris_phone)
    assert boris_phone.register(300).status == 200
    caller = UserAgent(alice[0], e2e.DOMAIN, alice[1], e2e.KS["ks2"])
    phones.append(caller)
    answer = caller.request("INVITE", f"sip:{boris[0]}@{e2e.DOMAIN}", timeout=8)
    assert answer.status == 200, answer.first_line
    invite = boris_phone.wait_request("INVITE", 3)
    # It listens nowhere else: the INVITE came over its connection, sent by ks1 (top Via).
    assert "127.0.0.1:5071" in (invite.header("via") or ""), invite.header("via")
