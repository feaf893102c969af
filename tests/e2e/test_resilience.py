"""Faults: an instance dies or restarts, the store goes away. Calls and lamps carry on."""

from __future__ import annotations

import os
import signal
import time

from tests.e2e.conftest import (
    LEASE_TTL,
    RECONCILE_SECONDS,
    blfctl,
    etcd_pid,
    free_port,
    log_sizes,
    logged_since,
    phone,
    register_contact,
    ring_after_takeover,
    wait_logged,
    watched_callee,
    watcher,
)


def test_subscription_survives_its_instance_dying_and_restarting(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port, cat, boris_lamp = watched_callee(phones, boris, catherine, callee_at="ks2", watcher_at="ks1")
    try:
        blfctl("lab", "kill", "ks1")
        ring_after_takeover(sipp, port, alice, boris[0], "ks2", cat, boris_lamp)
        cat.wait_lamp(boris_lamp, "idle", LEASE_TTL + 10)
    finally:
        blfctl("lab", "start", "ks1")
    sipp.callee(port, ring_ms=300, busy=True)
    sipp.call("ks2", alice, boris[0])
    cat.wait(boris_lamp, lambda s: s.lamps[-2:] == ["early", "idle"] and len(s.lamps) >= 5, 10)
    assert "5071" in (boris_lamp.notifies[-1].message.header("contact") or ""), "ks1 is back as the owner"


def _wait_store_back(phones, creds, presentity: str, timeout: float = 15.0) -> None:
    """The service is whole again when a fetch (which needs the store) gets 200 and its
    NOTIFY through every instance. The phones are made here: their NOTIFYs are consumed."""
    deadline = time.monotonic() + timeout
    for instance in ("ks1", "ks2"):
        ua = phone(phones, creds, instance)
        while True:
            assert time.monotonic() < deadline, f"the store did not come back within {timeout}s"
            response = ua.request("SUBSCRIBE", f"sip:{presentity}@example.com", {"Event": "dialog", "Expires": "0"})
            try:
                ua.wait_request("NOTIFY", 0.5)  # paces the retries while the answer is 503
            except TimeoutError:
                continue
            if response.status == 200:
                break


def test_store_outage_gives_503_with_retry_after_and_calls_still_go_through(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    dmitri = account("dmitri")  # provisioned, never seen by an instance before the outage
    port = free_port()
    register_contact(phone(phones, boris, "ks1"), port)
    alice_phone = phone(phones, alice, "ks1")
    assert alice_phone.register(300).status == 200
    cat = watcher(phones, catherine, "ks2")
    boris_lamp = cat.subscribe(boris[0])

    os.kill(etcd_pid(), signal.SIGKILL)
    try:
        response = cat.ua.request("SUBSCRIBE", f"sip:{alice[0]}@example.com", {"Event": "dialog", "Expires": "60"})
        assert response.status == 503 and response.header("retry-after")
        fresh = phone(phones, catherine, "ks2")  # no credentials yet: 503, not a challenge
        first = fresh.request("SUBSCRIBE", f"sip:{alice[0]}@example.com", {"Event": "dialog"}, auth=False)
        assert first.status == 503 and first.header("retry-after")
        assert alice_phone.register(300).status == 503
        sipp.callee(port, ring_ms=200)
        call = sipp.call("ks1", alice, boris[0], hold_ms=300)
        assert call.wait(timeout=30) == 0, "the call is routed with the store down"
        # The directory copy holds every account, not only those an instance has seen: an
        # account that never called before the outage authenticates and calls too.
        sipp.callee(port, ring_ms=200)
        call = sipp.call("ks1", dmitri, boris[0], hold_ms=300)
        assert call.wait(timeout=30) == 0, "a call of an account no instance had seen is routed too"
    finally:
        up = blfctl("lab", "up", "--instances", "2", "--lease-ttl", str(LEASE_TTL), check=False)
        assert up.returncode == 0, up.stderr
    _wait_store_back(phones, catherine, alice[0])
    sipp.callee(port, ring_ms=300, busy=True)
    sipp.call("ks1", alice, boris[0])
    cat.wait(boris_lamp, lambda s: "early" in s.lamps, 15)
    cat.wait_lamp(boris_lamp, "idle", 10)


def test_call_ending_while_the_store_is_down_does_not_leave_the_lamp_lit(account, phones, sipp):
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    port, cat, boris_lamp = watched_callee(phones, boris, catherine, callee_at="ks1", watcher_at="ks2")
    sipp.callee(port, ring_ms=200)
    call = sipp.call("ks1", alice, boris[0], hold_ms=2500)
    cat.wait_lamp(boris_lamp, "busy", 5)
    os.kill(etcd_pid(), signal.SIGKILL)
    try:
        assert call.wait(timeout=30) == 0, "the call ends normally with the store down"
    finally:
        up = blfctl("lab", "up", "--instances", "2", "--lease-ttl", str(LEASE_TTL), check=False)
        assert up.returncode == 0, up.stderr
    cat.wait_lamp(boris_lamp, "idle", RECONCILE_SECONDS + 15)
    _wait_store_back(phones, catherine, alice[0])


def test_a_notify_timing_out_during_a_store_outage_is_logged_in_one_line(account, phones):
    """Finding 10: the NOTIFY failure callback must not read a store that is down (it
    raised, logged a traceback and blocked its timer process for the store timeout)."""
    boris, catherine = account("boris"), account("catherine")
    cat = watcher(phones, catherine, "ks2")
    cat.ua.drop_notifies = 1  # the first NOTIFY goes unanswered: tm times out on it after 4 s
    sizes = log_sizes()
    cat.subscribe(boris[0])
    os.kill(etcd_pid(), signal.SIGKILL)
    try:
        wait_logged(sizes, "not recorded|Traceback", 15)  # the NOTIFY timeout was handled
        logged = logged_since(sizes)
        assert "Traceback" not in logged, logged[logged.find("Traceback") - 200:][:3000]
    finally:
        up = blfctl("lab", "up", "--instances", "2", "--lease-ttl", str(LEASE_TTL), check=False)
        assert up.returncode == 0, up.stderr
    _wait_store_back(phones, catherine, boris[0])
