"""Asking the cluster why (issue 15 §3): `blfctl why`, `watch`, `subs|legs|regs` and
`reset` against a real lab during real calls (docs/inspect.md is the contract).

The calls are made by test UAs whose every reply the test sends itself (test_call_legs.Call),
so that the lamp stays ringing or busy while blfctl is asked.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.e2e.blf_watch import Subscription, Watcher
from tests.e2e.conftest import (
    DOMAIN,
    KS,
    LEASE_TTL,
    ROOT,
    blfctl,
    phone,
    store_revision,
    store_writes_since,
    watcher,
)
from tests.e2e.test_call_legs import Call
from tests.sipua import UserAgent


def watched_call(account, phones) -> tuple[Call, Watcher, Subscription, str]:
    """A call, not placed yet, from Alice through ks1 to Boris (registered through ks1),
    whose lamp Catherine watches through ks2: the call, the watcher, the lamp, Boris's AOR."""
    alice, boris, catherine = account("alice"), account("boris"), account("catherine")
    callee = phone(phones, boris, "ks1")
    assert callee.register(300).status == 200
    cat = watcher(phones, catherine, "ks2")
    return Call(phone(phones, alice, "ks1"), callee, boris[0]), cat, cat.subscribe(boris[0]), f"{boris[0]}@{DOMAIN}"


def why(name: str) -> dict:
    done = blfctl("why", name, "--json")
    return json.loads(done.stdout)


def test_why_during_a_call_names_the_legs_instance_and_the_watchers_responsible_instance(account, phones):
    call, cat, lamp, boris = watched_call(account, phones)
    call.place()
    call.reply(180, "Ringing")
    cat.wait_lamp(lamp, "early", 5)

    ringing = why(boris)
    assert (ringing["lamp"], ringing["state"], ringing["packages"]["dialog"]) == ("ringing", "early", "early")
    (leg,) = [r["evidence"] for r in ringing["reasons"] if r["evidence"].get("kind") == "leg"]
    assert (leg["instance"], leg["state"], leg["direction"], leg["lease_alive"]) == ("ks1", "early", "recipient", True)
    assert leg["lease_ttl"] == LEASE_TTL and 0 <= leg["lease_remaining"] <= LEASE_TTL
    assert leg["key"].startswith(f"/blf/legs/{boris}/ks1/")
    (sub,) = ringing["subscriptions"]
    assert sub["watcher"].startswith("catherine-") and (sub["owner"], sub["responsible"]) == ("ks2", "ks2")
    assert sub["last_notify"]["sent_by"] == "ks2" and sub["first_notify"]["version"] == 0
    assert any("ks1's lease (TTL 4 s)" in change for change in ringing["changes"]), ringing["changes"]

    call.reply(200, "OK")
    call.answered()
    cat.wait_lamp(lamp, "busy", 5)
    text = blfctl("why", boris).stdout
    assert text.startswith(f"{boris}: busy\n") and "on ks1: answered: busy" in text, text
    assert "NOTIFYs sent by ks2; last NOTIFY: version " in text, text
    print(f"\n$ blfctl why {boris}\n{text}")  # the closing note's example (pytest -s)
    assert call.hang_up().status == 200
    cat.wait_lamp(lamp, "idle", 5)
    assert why(boris)["lamp"] == "idle"


class Panel:
    """`blfctl watch` as a subprocess, its stdout read line by line (not a TTY: plain lines)."""

    def __init__(self, *accounts: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "statestore.cli", "watch", *accounts], cwd=ROOT, env=os.environ.copy(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            self.lines.put(text.rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, account: str, lamp: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            assert text is not None, f"blfctl watch ended: {self.seen} {self.process.stderr}"
            self.seen.append(text)
            cells = text.split()
            if cells[:2] == [account, lamp]:
                return text


@contextmanager
def watching(*accounts: str) -> Iterator[Panel]:
    panel = Panel(*accounts)
    try:
        yield panel
    finally:
        if panel.process.poll() is None:
            panel.process.send_signal(signal.SIGINT)
        panel.process.wait(10)


def test_watch_follows_a_call_from_ringing_to_busy_to_idle(account, phones):
    call, cat, lamp, boris = watched_call(account, phones)
    with watching(boris) as panel:
        panel.wait_line(boris, "idle")
        call.place()
        call.reply(180, "Ringing")
        ringing = panel.wait_line(boris, "ringing")
        assert ringing.split()[3:] == ["1", "ks1"], ringing
        call.reply(200, "OK")
        call.answered()
        panel.wait_line(boris, "busy")
        assert call.hang_up().status == 200
        panel.wait_line(boris, "idle")
        panel.process.send_signal(signal.SIGINT)
        assert panel.process.wait(10) == 0
    assert panel.seen[0].split() == ["ACCOUNT", "LAMP", "SINCE", "LEGS", "INSTANCE"]
    print("\n$ blfctl watch " + boris + "\n" + "\n".join(panel.seen))


def test_watch_once_prints_the_panel_and_exits(account, phones):
    call, cat, lamp, boris = watched_call(account, phones)
    call.place()
    call.reply(180, "Ringing")
    cat.wait_lamp(lamp, "early", 5)
    alice = call.caller.aor.removeprefix("sip:")
    done = blfctl("watch", "--once", boris, alice)
    lines = done.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [[boris, "ringing"], [alice, "busy"]], done.stdout
    print(f"\n$ blfctl watch --once {boris} {alice}\n{done.stdout}")
    call.reply(486, "Busy Here")


def pages(kind: str, *args: str, limit: int) -> list[dict]:
    """Every page of `blfctl KIND ARGS --limit N --json`, following `next`."""
    found, after, count = [], "", 0
    while True:
        page = json.loads(blfctl(kind, *args, "--limit", str(limit), "--json", "--after", after).stdout)
        assert page["kind"] == kind and len(page["items"]) <= limit
        found.append(page)
        count += 1
        assert count < 100, "paging does not end"
        if page["next"] is None:
            return found
        after = page["next"]


def test_subs_legs_and_regs_page_through_more_records_than_one_page(account, phones):
    call, cat, lamp, boris = watched_call(account, phones)
    call.place()
    call.reply(180, "Ringing")
    cat.wait_lamp(lamp, "early", 5)
    legs = [item for page in pages("legs", "--instance", "ks1", limit=1) for item in page["items"]]
    assert {leg["instance"] for leg in legs} == {"ks1"}
    assert sorted(leg["direction"] for leg in legs if leg["call_id"] == call.call_id) == ["initiator", "recipient"]
    table = blfctl("legs", boris).stdout.splitlines()
    assert table[0].split() == ["ACCOUNT", "INSTANCE", "LEG", "STATE", "DIRECTION", "CALL-ID", "REMOTE"]
    assert table[1].split()[:2] == [boris, "ks1"] and len(table) == 2, table
    call.reply(486, "Busy Here")
    cat.wait_lamp(lamp, "idle", 5)

    callee: UserAgent = call.callee
    for port in (40001, 40002):
        assert callee.register(300, contact=f"<sip:{callee.user}@127.0.0.1:{port}>").status == 200
    regs = pages("regs", boris, limit=2)
    assert [len(page["items"]) for page in regs] == [2, 1]
    assert len({item["contact"] for page in regs for item in page["items"]}) == 3

    for name in ("dmitri", "elena"):  # one watcher's new SUBSCRIBE replaces its own: others
        watcher(phones, account(name), "ks1").subscribe(boris.partition("@")[0])
    subs = pages("subs", boris, limit=2)
    assert [len(page["items"]) for page in subs] == [2, 1]
    assert {item["presentity"] for page in subs for item in page["items"]} == {boris}


def test_reset_resends_the_full_state_to_a_watcher_of_ks2_and_changes_no_record(account, phones):
    call, cat, lamp, boris = watched_call(account, phones)
    call.place()
    call.reply(180, "Ringing")
    cat.wait_lamp(lamp, "early", 5)
    cat.pump(0.5)  # the NOTIFYs of the call so far, all taken in
    before = [lamp.notifies[-1].version, lamp.notifies[-1].cseq]
    records = (blfctl("subs", boris, "--json").stdout, blfctl("legs", boris, "--json").stdout)
    revision = store_revision()

    done = blfctl("reset", boris)
    assert done.stdout.strip() == f"reset {boris}: the full state goes again to 1 watcher, sent by ks2 (1)"
    cat.wait(lamp, lambda sub: len(sub.notifies) and sub.notifies[-1].version > before[0], 5)
    again = lamp.notifies[-1]
    assert (again.lamp, again.version, again.cseq) == ("early", before[0] + 1, before[1] + 1)
    assert again.message.source == KS["ks2"], "sent by ks2"
    # (other tests' subscriptions may be written meanwhile: a NOTIFY timeout to a closed phone)
    (sub_id,) = [item["sub_id"] for item in json.loads(records[0])["items"]]
    writes = store_writes_since(revision, store_revision())
    assert ("PUT", f"/blf/reset/{boris}") in writes, writes
    ours = (f"/blf/subs/{sub_id}", f"/blf/legs/{boris}/", f"/blf/watched/{boris}/", f"/blf/regs/{boris}/")
    assert [key for _, key in writes if key.startswith(ours)] == [], writes
    assert (blfctl("subs", boris, "--json").stdout, blfctl("legs", boris, "--json").stdout) == records
    call.reply(486, "Busy Here")


def test_an_alias_names_its_account_and_an_unknown_account_is_exit_1(account, phones):
    boris = account("boris")
    blfctl("alias", "add", f"{boris[0]}@{DOMAIN}", f"7{boris[0][-6:]}")
    alias = f"7{boris[0][-6:]}@{DOMAIN}"
    answer = why(alias)
    assert (answer["account"], answer["asked"], answer["alias"]) == (f"{boris[0]}@{DOMAIN}", alias, True)
    assert f"(asked as {alias}, an alias of {boris[0]}@{DOMAIN})" in blfctl("why", alias).stdout
    for command in (["why"], ["watch", "--once"], ["subs"], ["legs"], ["regs"], ["reset"]):
        done = blfctl(*command, f"nobody-{boris[0]}@{DOMAIN}", check=False)
        assert (done.returncode, done.stdout) == (1, ""), command
        assert done.stderr == f"blfctl: no account nobody-{boris[0]}@{DOMAIN}\n", command
    done = blfctl("why", "nobody", check=False)
    assert done.returncode == 2 and done.stderr.startswith("blfctl: "), done.stderr
