"""The directory is consistent, measured (issue 7 §5): a blfctl change is visible through BOTH
instances within 1 s; with the store down, REGISTER and SUBSCRIBE get 503 with Retry-After
and a call to an alias is still routed from the instances' copy.

Each change is polled with real requests through ks1 and ks2 at once (a SUBSCRIBE fetch,
Expires: 0, of the URI the change concerns, each sent as soon as the previous one is
answered: the probe waits on the instance's answer, not on a clock), from the moment blfctl
returns (its write is committed) until the answer changes; the delays are printed (`-s`).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import LEASE_TTL, blfctl, etcd_pid, log_sizes, wait_logged
from tests.e2e.tenants import (
    Tenant,
    add_account,
    add_alias,
    add_domain,
    hang_up,
    invite,
    registered_callee,
    remove_alias,
    set_domain,
    tenant_phone,
)
from tests.sipua import UserAgent

VISIBLE_WITHIN = 1.0  # seconds: the contract
GIVE_UP = 5.0
INSTANCES = ("ks1", "ks2")


def fetch(ua: UserAgent, uri: str) -> int:
    """A SUBSCRIBE fetch (Expires: 0) of `uri`: what the directory answers for it there."""
    try:
        return ua.request("SUBSCRIBE", uri, {"Event": "dialog", "Expires": "0"}, timeout=2.0).status
    except TimeoutError:
        return 0


def pollers(phones: list[UserAgent], watcher: Tenant) -> dict[str, UserAgent]:
    """One phone of `watcher` per instance, reusing its nonce (a poll is one round trip)."""
    made = {}
    for name in INSTANCES:
        ua = tenant_phone(phones, watcher, name)
        ua.reuse_nonce = True
        made[name] = ua
    return made


def delays_until(polls: dict[str, UserAgent], uri: str, want: int, change: Callable[[], None]) -> dict[str, float]:
    """Make `change`, then poll `uri` through every instance until it answers `want`: the
    seconds from the change's return to the first such answer, per instance."""
    for name, ua in polls.items():
        before = fetch(ua, uri)
        assert before != want, f"{name} answers {want} for {uri} before the change"
    seen: dict[str, float] = {}
    changed = threading.Event()
    start = [0.0]

    def poll(name: str, ua: UserAgent) -> None:
        changed.wait()
        while time.monotonic() - start[0] < GIVE_UP:
            if fetch(ua, uri) == want:
                seen[name] = time.monotonic() - start[0]
                return

    threads = [threading.Thread(target=poll, args=item, daemon=True) for item in polls.items()]
    for thread in threads:
        thread.start()
    change()
    start[0] = time.monotonic()
    changed.set()
    for thread in threads:
        thread.join(GIVE_UP + 5)
    return seen


def check(what: str, seen: dict[str, float]) -> None:
    print(f"\n{what}: " + ", ".join(f"{name} {seen.get(name, float('nan')) * 1000:.0f} ms" for name in INSTANCES))
    missing = [name for name in INSTANCES if name not in seen]
    assert not missing, f"{what}: never seen through {missing} within {GIVE_UP}s"
    late = {name: delay for name, delay in seen.items() if delay >= VISIBLE_WITHIN}
    assert not late, f"{what}: seen after {late} s, more than {VISIBLE_WITHIN} s"


def test_alias_added_then_removed_is_seen_on_both_instances_within_1s(lab, phones):
    domain = add_domain()
    watcher = add_account(domain, "watcher")
    owner = add_account(domain, "owner")
    polls = pollers(phones, watcher)
    uri = owner.uri("7101")
    check("alias add", delays_until(polls, uri, 200, lambda: add_alias(owner, "7101")))
    check("alias remove", delays_until(polls, uri, 404, lambda: remove_alias(domain, "7101")))


def test_account_added_is_seen_on_both_instances_within_1s(lab, phones):
    domain = add_domain()
    watcher = add_account(domain, "watcher")
    polls = pollers(phones, watcher)
    user = f"new-{os.getpid()}-{time.monotonic_ns() % 100000}"

    def made() -> None:
        blfctl("account", "add", f"{user}@{domain}", "--password", "pw-new-secret", "--alias", "7202")

    check("account add (by user)", delays_until(polls, f"sip:{user}@{domain}", 200, made))
    for name, ua in polls.items():
        assert fetch(ua, f"sip:7202@{domain}") == 200, f"{name}: the new account's alias"


def test_domain_may_call_change_is_seen_on_both_instances_within_1s(lab, phones):
    theirs = add_domain()
    ours = add_domain()  # may call only itself: watching across is 403
    watcher = add_account(ours, "watcher")
    presentity = add_account(theirs, "presentity")
    polls = pollers(phones, watcher)
    uri = presentity.uri()
    check("domain set --may-call (allow)", delays_until(polls, uri, 200, lambda: set_domain(ours, (theirs,))))
    check("domain set --may-call (revoke)", delays_until(polls, uri, 403, lambda: set_domain(ours, ())))


def _wait_store_back(polls: dict[str, UserAgent], uri: str, sizes: dict[Path, int], timeout: float = 15.0) -> None:
    """Each instance's lease keeper says it reaches etcd again (logged past `sizes`, taken
    before the outage); then a fetch through it is answered from the store again."""
    for name, ua in polls.items():
        wait_logged({log: size for log, size in sizes.items() if log.parent.name == name},
                    r"blf lease: etcd reachable again", timeout)
        assert fetch(ua, uri) == 200, f"{name}: the store is back but a fetch is not answered"


def test_store_unreachable_gives_503_and_a_call_to_an_alias_is_still_routed(lab, phones, sipp):
    domain = add_domain()
    callee = add_account(domain, "callee", aliases=("7301", "+15557301"))
    caller = add_account(domain, "caller")
    watcher = add_account(domain, "watcher")
    registered_callee(phones, sipp, callee, instance="ks2", ring_ms=200)
    caller_phone = tenant_phone(phones, caller, "ks1")
    assert caller_phone.register(300).status == 200
    polls = pollers(phones, watcher)
    for ua in polls.values():
        assert fetch(ua, callee.uri("7301")) == 200  # the copy and the store agree before

    sizes = log_sizes()
    os.kill(etcd_pid(), signal.SIGKILL)
    try:
        for name, ua in polls.items():
            response = ua.request("SUBSCRIBE", callee.uri("7301"), {"Event": "dialog", "Expires": "60"}, timeout=5.0)
            assert response.status == 503 and response.header("retry-after"), f"{name}: {response.first_line}"
        answer = caller_phone.register(300)
        assert answer.status == 503 and answer.header("retry-after"), answer.first_line
        started = time.monotonic()
        call = invite(caller_phone, callee.uri("7301"))
        print(f"\ncall to an alias with the store down: {call.status} in {time.monotonic() - started:.2f}s")
        assert call.status == 200, f"the call to the alias is routed from the copy: {call.first_line}"
        assert hang_up(caller_phone, call).status == 200
    finally:
        up = blfctl("lab", "up", "--instances", "2", "--lease-ttl", str(LEASE_TTL), check=False)
        assert up.returncode == 0, up.stderr
    _wait_store_back(polls, callee.uri("7301"), sizes)
