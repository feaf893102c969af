"""Sites (issue 14, "The lab" and "Faults to survive" 8): `lab up --sites 3 --etcd-members 3`.

Each site runs one instance and one member of the zone in a network namespace of its own,
delayed from the other sites (statestore.lab_sites); the phones of these tests are in the
test's namespace, on the sites' bridge, and reach ks{I} at the site's address without delay.

- a call served at one site lights the lamp of a watcher connected at another (the NOTIFY
  latency across sites is measured: the callee's 180 sent to the watcher's NOTIFY);
- fault 8, a site cut off from the others: the other two keep full service; the cut site
  refuses REGISTER and SUBSCRIBE with 503 and Retry-After but still routes its calls;
  healed, it converges (measured: from the heal to its store back, its REGISTER answered,
  the lamp of the call it routed while cut).

This module runs a lab of its own, as tests/e2e/cluster_lab.py does: the session lab, if
up, is brought down first and up again afterwards. It needs root (namespaces, veths, TUN
devices); BLF_SITES_PREFIX names the namespaces if another lab with sites runs on the
machine. Figures are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from statestore import lab_sites
from statestore.domain.packages import DIALOG
from statestore.lab import sip_options
from tests.e2e.blf_watch import Subscription, Watcher
from tests.e2e.cluster_lab import account_maker, own_lab
from tests.e2e.conftest import DOMAIN, LEASE_TTL, ROOT, blfctl, log_sizes, wait_logged
from tests.e2e.test_call_legs import Call
from tests.sipua import Message, UserAgent

SITES_VAR = Path(os.environ.get("BLF_TEST_SITES_VAR", str(ROOT / "var" / "test-lab-sites")))
SITES = lab_sites.plan(3, lab_sites.prefix_of(os.environ))
INSTANCES = {site.instance: (site.address, 5070 + site.index) for site in SITES}
# Calls at s1 watched at s2 and s3: NOTIFY latency samples per watcher.
SAMPLES = 8
# From a cut (or heal) to the instance's lease keeper saying so.
DETECTION_SECONDS = 20.0
# A refusal while the store is known down: no store round trip before the 503 (fault 2's figure).
REFUSAL_SECONDS = 0.1
# From a heal to the lamps showing the truth again (fault 2's figure).
CONVERGENCE_SECONDS = 10.0
RECONCILE_SECONDS = 2
# Past the dialog package's rate control before a measured 180 (see _timed_call).
RATE_MARGIN_SECONDS = 0.05
STORE_LOST = r"blf lease: store unavailable \(zone z1\)"
STORE_BACK = r"blf lease: etcd reachable again \(zone z1\)"


@pytest.fixture(scope="module")
def sites() -> Iterator[None]:
    up = ("--sites", "3", "--etcd-members", "3", "--zones", "1", "--lease-ttl", str(LEASE_TTL))
    with own_lab(SITES_VAR, up, {"BLF_RECONCILE_SECONDS": str(RECONCILE_SECONDS)}):
        blfctl("domain", "add", DOMAIN)
        yield


@pytest.fixture
def creds(sites: None) -> Callable[[str], tuple[str, str]]:
    return account_maker()


def status() -> dict[str, Any]:
    return dict(json.loads(blfctl("lab", "status", "--json").stdout))


def phone(phones: list[UserAgent], creds: tuple[str, str], instance: str) -> UserAgent:
    """A phone of the test's namespace (on the sites' bridge) whose proxy is `instance`."""
    ua = UserAgent(creds[0], DOMAIN, creds[1], INSTANCES[instance], bind=lab_sites.HOST_ADDRESS)
    phones.append(ua)
    return ua


def subscribe(phones: list[UserAgent], creds: tuple[str, str], instance: str,
              presentity: str) -> tuple[Watcher, Subscription]:
    cat = Watcher(phone(phones, creds, instance))
    return cat, cat.subscribe(presentity)


def connect_ms(site: lab_sites.Site | None, address: str, port: int) -> float:
    """The median time of a TCP connect to address:port from `site`'s namespace (None:
    the test's): one round trip."""
    probe = (
        "import socket, statistics, sys, time\n"
        "times = []\n"
        "for _ in range(5):\n"
        "    started = time.monotonic()\n"
        f"    socket.create_connection(({address!r}, {port}), timeout=2).close()\n"
        "    times.append((time.monotonic() - started) * 1000)\n"
        "print(statistics.median(times))\n"
    )
    command = [sys.executable, "-c", probe]
    if site is not None:
        command = ["ip", "netns", "exec", site.netns, *command]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30)
    return float(done.stdout)


def timed(action: Callable[[], Message]) -> tuple[float, Message]:
    started = time.monotonic()
    answer = action()
    return time.monotonic() - started, answer


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def test_each_site_runs_in_its_namespace_at_its_address_delayed_from_the_others_only(sites: None) -> None:
    shown = status()
    assert list(shown["sites"]) == ["s1", "s2", "s3"]
    for site in SITES:
        entry = shown["sites"][site.name]
        assert (entry["namespace"], entry["address"], entry["cut"]) == (site.netns, site.address, False)
        assert entry["runs"][:2] == [site.instance, f"z1-etcd{site.index}"]
        assert entry["memcached"]["alive"]
        instance = shown["instances"][site.instance]
        assert instance["sip"] == f"{site.address}:{5070 + site.index}" and instance["alive"]
        assert instance["store"] == "relayed"
        member = shown["zones"]["z1"]["members"][f"z1-etcd{site.index}"]
        assert member["client"].startswith(f"{site.address}:") and member["alive"]
    assert shown["wan"]["alive"]
    # In each site's namespace, every site's address exempt (statestore.lab_sites).
    assert shown["edge_firewall"]["applied"], shown["edge_firewall"]
    assert all(site.netns in shown["edge_firewall"]["report"] for site in SITES)
    s1, s2, s3 = SITES
    member_port = {site.name: int(shown["zones"]["z1"]["members"][f"z1-etcd{site.index}"]["client"].split(":")[1])
                   for site in SITES}
    across = connect_ms(s1, s2.address, member_port["s2"])
    across_far = connect_ms(s2, s3.address, member_port["s3"])
    own = connect_ms(s1, s1.address, member_port["s1"])
    from_phones = connect_ms(None, s3.address, member_port["s3"])
    print(f"\nTCP connect (one round trip): s1->s2 {across:.1f} ms, s2->s3 {across_far:.1f} ms, "
          f"s1->own member {own:.1f} ms, test namespace->s3 {from_phones:.1f} ms")
    assert across >= lab_sites.round_trip_ms(s1, s2) - 1, "s1 and s2 are delayed from each other"
    assert across_far >= lab_sites.round_trip_ms(s2, s3) - 1
    assert own < 5 and from_phones < 5, "no delay inside a site, nor between a site and the phones"


def _timed_call(call: Call, cats: list[tuple[Watcher, Subscription]]) -> list[float]:
    """Ring (each watcher's lamp early), answer (busy), hang up (idle); for each watcher,
    the time from the callee's 180 to its 'early' NOTIFY. The 180 is sent no sooner than
    the dialog package's rate control allows a NOTIFY after the last one (RFC 6446: a
    NOTIFY closer than `min_interval` to the one before is held back), so that the
    latency measured is the store's and the sites', not the rate control's."""
    call.place()
    last = max((lamp.notifies[-1].message.received_at for _cat, lamp in cats if lamp.notifies), default=0.0)
    time.sleep(max(0.0, last + DIALOG.min_interval + RATE_MARGIN_SECONDS - time.monotonic()))
    sent = call.reply(180, "Ringing")
    latencies = []
    for cat, lamp in cats:
        cat.wait_lamp(lamp, "early", 10)
        latencies.append(lamp.notifies[-1].message.received_at - sent)
    call.reply(200, "OK")
    call.answered()
    for cat, lamp in cats:
        cat.wait_lamp(lamp, "busy", 10)
    assert call.hang_up().status == 200
    for cat, lamp in cats:
        cat.wait_lamp(lamp, "idle", 10)
    return latencies


def again(call: Call) -> Call:
    follow = Call(call.caller, call.callee, "")
    follow.uri = call.uri
    return follow


def test_a_call_served_at_one_site_lights_the_lamps_of_watchers_at_the_others(
    creds: Callable[[str], tuple[str, str]],
) -> None:
    phones: list[UserAgent] = []
    try:
        callee_creds, caller_creds = creds("callee"), creds("caller")
        callee = phone(phones, callee_creds, "ks1")
        assert callee.register(300).status == 200
        cats = [subscribe(phones, creds(f"watcher{index}"), f"ks{index}", callee_creds[0]) for index in (2, 3)]
        call = Call(phone(phones, caller_creds, "ks1"), callee, callee_creds[0])
        samples: dict[str, list[float]] = {"s2": [], "s3": []}
        for _ in range(SAMPLES):
            for site, latency in zip(("s2", "s3"), _timed_call(call, cats), strict=True):
                samples[site].append(latency * 1000)
            call = again(call)
        for site, values in samples.items():
            print(f"\nNOTIFY latency, 180 at s1 -> 'early' NOTIFY to a watcher at {site}: "
                  f"p50 {statistics.median(values):.0f} ms, p99 {percentile(values, 0.99):.0f} ms "
                  f"({', '.join(f'{v:.0f}' for v in values)})")
        for _cat, lamp in cats:
            assert lamp.lamps == ["idle"] + ["early", "busy", "idle"] * SAMPLES, lamp.lamps
    finally:
        for ua in phones:
            ua.close()


def test_a_site_cut_off_refuses_state_routes_calls_and_converges_when_healed(
    creds: Callable[[str], tuple[str, str]],
) -> None:
    phones: list[UserAgent] = []
    cut = False
    try:
        callee_creds = creds("callee")
        callee = phone(phones, callee_creds, "ks1")
        assert callee.register(300).status == 200
        near, near_lamp = subscribe(phones, creds("near"), "ks2", callee_creds[0])
        far, far_lamp = subscribe(phones, creds("far"), "ks3", callee_creds[0])
        at_s3 = phone(phones, creds("roamer"), "ks3")
        assert at_s3.register(300).status == 200
        # Provisioned before the cut: an account added while s3 is cut off is unknown there.
        s3_caller = creds("caller")
        sizes = log_sizes("ks3")
        blfctl("lab", "cut", "s3")
        cut_at = time.monotonic()
        cut = True
        assert status()["sites"]["s3"]["cut"]
        wait_logged(sizes, STORE_LOST, DETECTION_SECONDS)
        detected = time.monotonic() - cut_at
        # The cut site refuses what needs the store, at once and with Retry-After.
        refusals = {
            "REGISTER": timed(lambda: at_s3.register(300)),
            "SUBSCRIBE": timed(lambda: at_s3.request(
                "SUBSCRIBE", f"sip:{callee_creds[0]}@{DOMAIN}", {"Event": "dialog", "Expires": "60"})),
        }
        print(f"\ns3 cut: its instance found the store gone {detected:.1f} s after the cut; "
              + ", ".join(f"{m} {a.status} in {t * 1000:.1f} ms" for m, (t, a) in refusals.items()))
        for method, (seconds, answer) in refusals.items():
            assert answer.status == 503 and answer.header("retry-after"), f"{method}: {answer.first_line}"
            assert seconds < REFUSAL_SECONDS, f"{method} refused after {seconds * 1000:.0f} ms"
        # The other two sites: full service.
        for instance in ("ks1", "ks2"):
            assert phone(phones, creds("other"), instance).register(300).status == 200
        fresh, fresh_lamp = subscribe(phones, creds("fresh"), "ks1", callee_creds[0])
        _timed_call(Call(phone(phones, creds("caller"), "ks2"), callee, callee_creds[0]),
                    [(near, near_lamp), (fresh, fresh_lamp)])
        # The cut site still routes its calls; this one stays up across the heal.
        routed = Call(phone(phones, s3_caller, "ks3"), callee, callee_creds[0])
        routed.place()
        routed.reply(180, "Ringing")
        routed.seen_by_caller(180, 5)
        routed.reply(200, "OK")
        routed.answered()
        back = log_sizes("ks3")
        blfctl("lab", "heal", "s3")
        cut = False
        healed = time.monotonic()
        wait_logged(back, STORE_BACK, DETECTION_SECONDS)
        store_back = time.monotonic() - healed
        # Its legs come back: the watcher at s2 sees the call the cut site routed.
        near.wait_lamp(near_lamp, "busy", CONVERGENCE_SECONDS + DETECTION_SECONDS)
        lamp_back = time.monotonic() - healed
        registered = at_s3.register(300)
        register_back = time.monotonic() - healed
        assert registered.status == 200, registered.first_line
        print(f"\nafter heal of s3: store reachable again in {store_back:.1f} s, the call it routed while cut "
              f"shown at s2 in {lamp_back:.1f} s, REGISTER at s3 answered 200 {register_back:.1f} s after the heal")
        assert lamp_back <= CONVERGENCE_SECONDS + DETECTION_SECONDS
        assert routed.hang_up().status == 200
        near.wait_lamp(near_lamp, "idle", CONVERGENCE_SECONDS)
        far.wait_lamp(far_lamp, "idle", CONVERGENCE_SECONDS)
        # The healed site's watcher follows calls again, and it serves SUBSCRIBE.
        again_at_s3, again_lamp = subscribe(phones, creds("again"), "ks3", callee_creds[0])
        _timed_call(Call(phone(phones, creds("caller"), "ks1"), callee, callee_creds[0]),
                    [(far, far_lamp), (again_at_s3, again_lamp)])
    finally:
        if cut:
            blfctl("lab", "heal", "s3", check=False)
        for ua in phones:
            ua.close()


def test_kill_start_stop_cont_cut_and_heal_act_on_the_processes_of_a_site(sites: None) -> None:
    site = SITES[2]
    member = f"z1-etcd{site.index}"
    for name in (member, site.instance):
        blfctl("lab", "kill", name)
    shown = status()
    assert not shown["zones"]["z1"]["members"][member]["alive"] and not shown["instances"][site.instance]["alive"]
    # Started again in the site's namespace, at the site's address: the member rejoins its
    # cluster across the sites; the instance answers SIP and is announced in the store.
    for name in (member, site.instance):
        blfctl("lab", "start", name)
    shown = status()
    assert shown["zones"]["z1"]["members"][member]["alive"] and shown["instances"][site.instance]["alive"]
    assert shown["instances"][site.instance]["sip"] == f"{site.address}:{5070 + site.index}"
    blfctl("lab", "stop", site.instance)
    try:
        assert status()["instances"][site.instance]["stopped"]
        assert sip_options(*INSTANCES[site.instance]) == 0
    finally:
        blfctl("lab", "cont", site.instance)
    assert sip_options(*INSTANCES[site.instance], timeout=2.0) == 200
    # An instance's own cut (its store link, in its site) still works beside the sites' cut.
    blfctl("lab", "cut", site.instance)
    try:
        assert status()["instances"][site.instance]["store"] == "cut"
    finally:
        blfctl("lab", "heal", site.instance)
    assert status()["instances"][site.instance]["store"] == "relayed"
