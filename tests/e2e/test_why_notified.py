"""The last NOTIFY each watcher got, as `blfctl why` tells it (issue 15 §3), and `blfctl
metrics` finding a production cluster's instances through the store (§2): against a real
lab during a real call (docs/inspect.md, docs/metrics.md are the contract).

The numbers `why` shows come from the instance that sent the NOTIFY (its shared memory,
served on its metrics socket), not from the store: the test compares them with the NOTIFY
its own watcher received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from statestore.cli_notified import last_notifies
from statestore.domain.notified import NotifyUnknown
from tests.e2e.blf_watch import Subscription
from tests.e2e.conftest import ROOT, blfctl
from tests.e2e.test_operator_cli import watched_call


def watcher_entry(account: str) -> dict[str, Any]:
    (entry,) = json.loads(blfctl("why", account, "--json").stdout)["subscriptions"]
    return entry


def wait_why(account: str, done: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
    """`why --json`'s watcher entry once `done` holds of it (the answer to a NOTIFY reaches
    the instance a moment after the watcher has the NOTIFY)."""
    deadline = time.monotonic() + timeout
    while True:
        entry = watcher_entry(account)
        if done(entry):
            return entry
        assert time.monotonic() < deadline, f"why never showed it: {entry}"
        time.sleep(0.1)  # polling with a deadline, not a fixed wait


def shows(lamp: Subscription, answer: int | str | None) -> Callable[[dict[str, Any]], bool]:
    """`why` shows the last NOTIFY `lamp` received, answered `answer`."""
    def check(entry: dict[str, Any]) -> bool:
        last = entry["last_notify"]
        received = lamp.notifies[-1]
        return last is not None and (last["cseq"], last["version"], last["answer"]) == (
            received.cseq, received.version, answer)
    return check


def test_why_shows_the_last_notify_the_watcher_received_and_reset_moves_it_by_one(account, phones):
    call, cat, lamp, boris = watched_call(account, phones)
    call.place()
    call.reply(200, "OK")  # answered at once: the lamp goes busy
    call.answered()
    cat.wait_lamp(lamp, "busy", 5)

    busy = wait_why(boris, shows(lamp, 200))
    assert busy["responsible"] == "ks2" and busy["last_notify"]["sent_by"] == "ks2"
    assert busy["last_notify_unknown"] is None
    assert abs(busy["last_notify"]["sent_at"] - time.time()) < 30
    text = blfctl("why", boris).stdout
    received = lamp.notifies[-1]
    sent = time.strftime("%H:%M:%S", time.gmtime(busy["last_notify"]["sent_at"]))
    assert (f"last NOTIFY: version {received.version}, CSeq {received.cseq}, sent {sent} by ks2, answered 200"
            in text), text
    print(f"\n$ blfctl why {boris}\n{text}")  # the report's example (pytest -s)

    before = lamp.notifies[-1]
    assert blfctl("reset", boris).returncode == 0
    cat.wait(lamp, lambda s: s.notifies[-1].cseq > before.cseq, 5)
    after = lamp.notifies[-1]
    assert (after.cseq, after.version) == (before.cseq + 1, before.version + 1)
    wait_why(boris, shows(lamp, 200))

    # The watcher now refuses its NOTIFYs: the next one is shown with that answer.
    cat.ua.notify_status = 486
    assert call.hang_up().status == 200
    cat.wait(lamp, lambda s: s.notifies[-1].cseq > after.cseq, 5)
    wait_why(boris, shows(lamp, 486))


def test_the_first_notify_is_known_and_only_the_instance_that_sent_it_knows_it(account, phones):
    _, _, lamp, boris = watched_call(account, phones)
    first = wait_why(boris, shows(lamp, 200))  # NOTIFY 0, sent by the SIP worker that took the SUBSCRIBE
    assert (first["last_notify"]["cseq"], first["last_notify"]["version"]) == (lamp.notifies[0].cseq, 0)
    # Asked of ks1, which never sent it a NOTIFY, and of a socket nobody listens on.
    asked = last_notifies([(first["sub_id"], "ks1")], {"ks1": "127.0.0.1:9471"})
    assert asked == {first["sub_id"]: NotifyUnknown("none recorded by ks1")}
    unreachable = last_notifies([(first["sub_id"], "ks1")], {"ks1": "127.0.0.1:1"})
    assert unreachable == {first["sub_id"]: NotifyUnknown("instance ks1 unreachable")}


def test_a_notify_nobody_answers_shows_as_timed_out(account, phones):
    _, cat, lamp, boris = watched_call(account, phones)
    wait_why(boris, shows(lamp, 200))
    before = lamp.notifies[-1]
    cat.ua.drop_notifies = 1  # the next NOTIFY (and its retransmissions) goes unanswered
    assert blfctl("reset", boris).returncode == 0
    # tm gives up after fr_timer (4 s) with its own 408: recorded from the failure route.
    timed_out = wait_why(boris, lambda entry: entry["last_notify"] is not None and (
        entry["last_notify"]["cseq"], entry["last_notify"]["answer"]) == (before.cseq + 1, "timeout"), 15)
    assert timed_out["last_notify"]["version"] == before.version + 1
    assert ", no answer (timed out) (first at epoch" in blfctl("why", boris).stdout


def test_metrics_without_a_lab_finds_the_instances_in_the_store(lab, tmp_path: Path):
    state = json.loads((Path(os.environ["BLF_VAR"]) / "lab.json").read_text())
    (member,) = state["zones"]["z1"]["members"].values()
    env = {**os.environ, "BLF_VAR": str(tmp_path / "empty"), "BLF_ETCD": member["client"]}
    env.pop("BLF_ZONES", None)
    done = subprocess.run([sys.executable, "-m", "statestore.cli", "metrics", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["instances"] == {"ks1": {"up": True, "error": None}, "ks2": {"up": True, "error": None}}
    assert {s["labels"]["instance"] for s in document["samples"]} == {"ks1", "ks2"}
