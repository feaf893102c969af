"""Benchmark: how long lamps stay lit after the instance serving a call is killed.

Default lease TTL (6 s) unless --lease-ttl. Each repetition: Boris (registered via ks2)
answers a call from Alice served by ks1; Catherine watches Boris via ks2; ks1 is killed
with SIGKILL; we time the kill to the NOTIFY that shows Boris idle, then restart ks1.

    .venv/bin/python -m tests.bench.instance_death [--repeat 5] [--lease-ttl 6] [--etcd-members 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.blf_watch import Watcher
from tests.e2e.conftest import DOMAIN, Sipp, blfctl, free_port, register_contact
from tests.sipua import UserAgent

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lease-ttl", type=int, default=6)
    parser.add_argument("--etcd-members", type=int, default=1, help="1, or 3: a zone of three members")
    args = parser.parse_args()
    var = ROOT / "var" / "bench-death"
    shutil.rmtree(var, ignore_errors=True)
    os.environ["BLF_VAR"] = str(var)
    blfctl("lab", "up", "--instances", "2", "--lease-ttl", str(args.lease_ttl), "--direct-store",
           "--etcd-members", str(args.etcd_members))
    cleared: list[float] = []
    try:
        blfctl("account", "add", f"alice@{DOMAIN}", "--password", "a-password")
        blfctl("account", "add", f"boris@{DOMAIN}", "--password", "b-password")
        blfctl("account", "add", f"catherine@{DOMAIN}", "--password", "c-password")
        for _ in range(args.repeat):
            cleared.append(one_kill())
            print(f"cleared after {cleared[-1]:.2f} s", flush=True)
    finally:
        blfctl("lab", "down")
    report = {"lease_ttl": args.lease_ttl, "n": len(cleared), "median_s": round(statistics.median(cleared), 2),
              "max_s": round(max(cleared), 2)}
    print(json.dumps(report))
    return 0


def one_kill() -> float:
    port = free_port()
    boris = UserAgent("boris", DOMAIN, "b-password", ("127.0.0.1", 5072))
    cat = Watcher(UserAgent("catherine", DOMAIN, "c-password", ("127.0.0.1", 5072)))
    sipp = Sipp(Path(tempfile.mkdtemp(prefix="bench-death-")))
    try:
        register_contact(boris, port)
        lamp = cat.subscribe("boris")
        sipp.callee(port, ring_ms=100)
        sipp.call("ks1", ("alice", "a-password"), "boris", hold_ms=60000)
        cat.wait_lamp(lamp, "busy", 5)
        blfctl("lab", "kill", "ks1")
        killed = time.monotonic()
        cat.wait_lamp(lamp, "idle", 30)
        return lamp.notifies[-1].message.received_at - killed
    finally:
        sipp.stop()
        boris.close()
        cat.ua.close()
        blfctl("lab", "start", "ks1")


if __name__ == "__main__":
    sys.exit(main())
