"""BLF lamps through real calls: Kamailio ks1/ks2, etcd, sipp phones, a watcher phone.

Alice calls Boris; Catherine watches both. Alice's call goes through ks1, Boris is
registered through ks2, Catherine subscribes through ks2.
"""

from __future__ import annotations

from tests.e2e.conftest import (
    LEASE_TTL,
    blfctl,
    free_port,
    lamps_cleared_after_kill,
    phone,
    play_answered_call,
    register_contact,
    watcher,
)


def wait_exit(process: object, timeout: float = 30.0) -> int:
    return int(process.wait(timeout=timeout))  # type: ignore[attr-defined]


def test_answered_call_turns_caller_red_callee_flashing_then_red_then_both_dark(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port = free_port()
    register_contact(phone(phones, boris, "ks2"), port)
    register_contact(phone(phones, alice, "ks1"), free_port())
    cat = watcher(phones, catherine, "ks2")
    alice_lamp, boris_lamp = cat.subscribe(alice[0]), cat.subscribe(boris[0])
    assert alice_lamp.lamp == "idle" and boris_lamp.lamp == "idle"

    play_answered_call(sipp, "ks1", alice, boris[0], port, cat, alice_lamp, boris_lamp)
    shown = blfctl("show", f"{boris[0]}@example.com", "--json").stdout
    assert '"state": "idle"' in shown


def test_rejected_call_flashes_then_goes_dark_never_red(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port = free_port()
    register_contact(phone(phones, boris, "ks2"), port)
    cat = watcher(phones, catherine, "ks2")
    boris_lamp = cat.subscribe(boris[0])

    callee = sipp.callee(port, ring_ms=1000, busy=True)
    caller = sipp.call("ks1", alice, boris[0])
    cat.wait_lamp(boris_lamp, "early", 5)
    cat.wait_lamp(boris_lamp, "idle", 8)
    assert wait_exit(caller) == 0 and wait_exit(callee) == 0
    cat.pump(0.5)
    assert boris_lamp.lamps == ["idle", "early", "idle"]


def test_two_calls_of_one_account_stay_red_until_the_last_hangs_up(account, phones, sipp):
    alice, boris, dmitri, catherine = account("alice"), account("boris"), account("dmitri"), account("catherine")
    boris_port, dmitri_port = free_port(), free_port()
    register_contact(phone(phones, boris, "ks2"), boris_port)
    register_contact(phone(phones, dmitri, "ks1"), dmitri_port)
    cat = watcher(phones, catherine, "ks2")
    alice_lamp, boris_lamp = cat.subscribe(alice[0]), cat.subscribe(boris[0])

    sipp.callee(boris_port, ring_ms=200)
    sipp.callee(dmitri_port, ring_ms=200)
    short = sipp.call("ks1", alice, boris[0], hold_ms=1000)
    long = sipp.call("ks2", alice, dmitri[0], hold_ms=4000)
    cat.wait_lamp(boris_lamp, "busy", 5)
    cat.wait_lamp(boris_lamp, "idle", 8)
    assert wait_exit(short) == 0
    cat.pump(0.5)
    assert alice_lamp.lamp == "busy", "one call still up: the lamp stays red"
    cat.wait_lamp(alice_lamp, "idle", 10)
    assert wait_exit(long) == 0
    assert alice_lamp.lamps == ["idle", "busy", "idle"]


def test_instance_killed_mid_call_clears_lamps_within_the_lease_ttl(account, phones, sipp, lab):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port = free_port()
    register_contact(phone(phones, boris, "ks2"), port)
    cat = watcher(phones, catherine, "ks2")
    alice_lamp, boris_lamp = cat.subscribe(alice[0]), cat.subscribe(boris[0])

    sipp.callee(port, ring_ms=200)
    sipp.call("ks1", alice, boris[0], hold_ms=30000)
    cat.wait_lamp(boris_lamp, "busy", 5)
    cat.wait_lamp(alice_lamp, "busy", 2)
    try:
        cleared = lamps_cleared_after_kill("ks1", cat, [boris_lamp, alice_lamp])
        assert cleared <= LEASE_TTL + 2, f"lamps cleared {cleared:.1f}s after the kill"
    finally:
        blfctl("lab", "start", "ks1")


def test_call_over_tcp_lights_the_lamps_like_udp(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port = free_port()
    register_contact(phone(phones, boris, "ks2"), port, transport="tcp")
    cat = watcher(phones, catherine, "ks1")
    boris_lamp = cat.subscribe(boris[0])
    callee = sipp.callee(port, ring_ms=500, transport="t1")
    caller = sipp.call("ks1", alice, boris[0], hold_ms=500, transport="t1")
    cat.wait_lamp(boris_lamp, "busy", 8)
    cat.wait_lamp(boris_lamp, "idle", 8)
    assert wait_exit(caller) == 0 and wait_exit(callee) == 0
    assert boris_lamp.lamps == ["idle", "early", "busy", "idle"]
