"""Benchmark: how fast a call's state change reaches a watcher's NOTIFY, and what it costs etcd.

Runs a lab under var/bench-lab (ports as the lab contract says, so stop any other lab
first). Alternates two notifier settings side by side, in rounds:
  blocking  the notifier blocks up to 5 ms per tick on its event queue (the design when
            this was measured; 50 ms since: an event ends the wait at once);
  baseline  the notifier only polls the queue (BLF_NOTIFIER_WAIT_MS=0), so the etcd watch
            thread runs only when Kamailio's main thread happens to release the GIL.
Each sample: a sipp caller (alice via ks1) calls boris, whose phone here (registered via
ks2) answers 180 and then 486. Latency is from our phone sending the 180 (or the 486) to
the watcher (catherine, subscribed via ks2) receiving the NOTIFY that shows it.

    .venv/bin/python -m tests.bench.notify_latency [--calls 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.e2e.blf_watch import Watcher
from tests.sipua import UserAgent

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "e2e" / "scenarios"
DOMAIN = "bench.example"
KS1, KS2 = ("127.0.0.1", 5071), ("127.0.0.1", 5072)
METRICS = "http://127.0.0.1:2381/metrics"
CONFIGS = {"blocking": "5", "baseline": "0"}


def blfctl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "statestore.cli", *args], cwd=ROOT, check=True, capture_output=True)


def start_lab(wait_ms: str) -> None:
    """A fresh lab: no registrations or subscriptions left from an earlier run."""
    var = ROOT / "var" / "bench-lab"
    os.environ["BLF_VAR"] = str(var)
    os.environ["BLF_NOTIFIER_WAIT_MS"] = wait_ms
    blfctl("lab", "down")
    shutil.rmtree(var, ignore_errors=True)
    blfctl("lab", "up", "--instances", "2", "--direct-store")  # no store link in what is measured
    blfctl("domain", "add", DOMAIN)
    for user in ("alice", "boris", "catherine"):
        blfctl("account", "add", f"{user}@{DOMAIN}", "--password", f"{user}-pw")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def caller(target: str, port: int, scenario: str = "caller.xml", hold_ms: int = 100) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["timeout", "30", "sipp", f"{KS1[0]}:{KS1[1]}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
         "-p", str(port), "-m", "1", "-s", target, "-key", "domain", DOMAIN, "-key", "caller", "alice",
         "-au", "alice", "-ap", "alice-pw", "-auth_uri", f"{target}@{DOMAIN}", "-d", str(hold_ms), "-nostdin"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def latency_samples(calls: int) -> tuple[list[float], list[float]]:
    """(180 -> early NOTIFY, 486 -> idle NOTIFY) in milliseconds."""
    boris = UserAgent("boris", DOMAIN, "boris-pw", KS2)
    boris.answer_requests = False
    cat = Watcher(UserAgent("catherine", DOMAIN, "catherine-pw", KS2))
    try:
        assert boris.register(600).status == 200
        lamp = cat.subscribe("boris")
        ringing, cleared = [], []
        for index in range(calls):
            sipp = caller("boris", 17000 + index % 500)
            invite = boris.wait_request("INVITE", 10)
            cat.wait(lamp, lambda s: _shows(s, "trying"), 5)  # the INVITE's own NOTIFY first
            tag = f"b{index}"
            sent = time.monotonic()
            boris.sock.sendto(boris.response_to(invite, 180, "Ringing", tag), invite.source)
            cat.wait(lamp, lambda s: _shows(s, "early"), 5)
            ringing.append((lamp.notifies[-1].message.received_at - sent) * 1000)
            sent = time.monotonic()
            boris.sock.sendto(boris.response_to(invite, 486, "Busy Here", tag), invite.source)
            cat.wait_lamp(lamp, "idle", 5)
            cleared.append((lamp.notifies[-1].message.received_at - sent) * 1000)
            sipp.wait(timeout=30)
        return ringing, cleared
    finally:
        boris.close()
        cat.ua.close()


def _shows(sub: object, state: str) -> bool:
    """The last NOTIFY carries a dialog in this RFC 4235 state."""
    notifies = sub.notifies  # type: ignore[attr-defined]
    return bool(notifies) and f"<state>{state}</state>".encode() in notifies[-1].message.body


def etcd_counters() -> dict[str, float]:
    text = urllib.request.urlopen(METRICS, timeout=5).read().decode()
    wanted = ("etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_mvcc_txn_total")
    return {name: float(m.group(1)) for name in wanted if (m := re.search(rf"^{name} (\S+)$", text, re.M))}


def writes_per_answered_call(calls: int) -> dict[str, float]:
    """etcd puts, deletes and transactions per answered call, nobody subscribed."""
    callee_port = 16500
    boris = UserAgent("boris", DOMAIN, "boris-pw", KS2)
    try:
        contact = {"Expires": "600", "Contact": f"<sip:boris@127.0.0.1:{callee_port}>"}
        assert boris.request("REGISTER", f"sip:{DOMAIN}", contact, to=boris.aor).status == 200
    finally:
        boris.close()
    before = etcd_counters()
    for index in range(calls):
        callee = subprocess.Popen(
            ["timeout", "30", "sipp", "-sf", str(SCENARIOS / "callee.xml"), "-i", "127.0.0.1", "-p",
             str(callee_port), "-m", "1", "-d", "100", "-nostdin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        assert caller("boris", 18000 + index).wait(timeout=30) == 0
        callee.wait(timeout=30)
    after = etcd_counters()
    return {name.replace("etcd_mvcc_", ""): (after[name] - before.get(name, 0)) / calls for name in after}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "var" / "bench-notify-latency.json"))
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {name: {"ringing": [], "cleared": []} for name in CONFIGS}
    rounds = []
    try:
        for round_index in range(args.rounds):
            for name, wait_ms in CONFIGS.items():
                start_lab(wait_ms)
                ringing, cleared = latency_samples(args.calls)
                results[name]["ringing"] += ringing
                results[name]["cleared"] += cleared
                rounds.append({"round": round_index, "config": name, "ringing": summary(ringing),
                               "cleared": summary(cleared)})
                print(json.dumps(rounds[-1]), flush=True)
        start_lab(CONFIGS["blocking"])
        writes = writes_per_answered_call(20)
    finally:
        blfctl("lab", "down")
    report = {
        "rounds": rounds,
        "overall": {name: {kind: summary(values) for kind, values in kinds.items()} for name, kinds in results.items()},
        "etcd_per_answered_call": writes,
    }
    for kind in ("ringing", "cleared"):
        base, ours = report["overall"]["baseline"][kind], report["overall"]["blocking"][kind]
        report["overall"][f"ratio_{kind}_baseline_over_blocking"] = {
            "median": round(base["median_ms"] / ours["median_ms"], 1),
            "p99": round(base["p99_ms"] / ours["p99_ms"], 1),
        }
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["overall"], indent=2))
    print(json.dumps({"etcd_per_answered_call": writes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
