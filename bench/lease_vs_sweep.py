"""A lease per publication against the sweep (kemi/blf_notifier.py), measured on a private etcd.

    .venv/bin/python -m bench.lease_vs_sweep [--count 1000] [--ttl 3]

Leases: grant COUNT leases of TTL seconds and put one key on each, then let them all
expire at once (publications made in step: a PBX restart, a morning log-in). Sweep: put
COUNT keys without a lease, then delete each with one guarded transaction (value compare),
as the notifier's sweep does. Meanwhile a probe writes one key every 10 ms and records its
latency: what every other writer (a call's legs, a SUBSCRIBE) sees while the expiry or
the sweep runs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import etcd3  # type: ignore[import-untyped]

from bench.etcd_cluster import READY_MARKER, free_ports

PREFIX = "/bench/pubs/"


def start_etcd(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    client_port, peer_port, metrics_port = free_ports(3)
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    process = subprocess.Popen(
        ["/usr/bin/etcd", "--name", "bench", "--data-dir", str(base / "data"),
         "--listen-client-urls", client, "--advertise-client-urls", client,
         "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
         "--initial-cluster", f"bench={peer}", "--initial-cluster-state", "new",
         "--listen-metrics-urls", f"http://127.0.0.1:{metrics_port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    for line in process.stdout:
        if READY_MARKER in line:
            break
        if time.monotonic() > deadline:
            raise SystemExit("etcd did not start")
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    return process, f"127.0.0.1:{client_port}"


class Probe:
    """One put every 10 ms; latencies in ms, by the time they were made."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.samples: list[tuple[float, float]] = []
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            started = time.monotonic()
            self.client.put("/bench/probe", str(started))
            self.samples.append((started, (time.monotonic() - started) * 1000))
            time.sleep(0.01)

    def between(self, start: float, end: float) -> dict[str, float]:
        values = sorted(ms for at, ms in self.samples if start <= at <= end)
        if not values:
            return {}
        return {
            "probe_puts": len(values), "median_ms": round(statistics.median(values), 2),
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2), "max_ms": round(values[-1], 2),
        }

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def remaining(client: Any) -> int:
    return sum(1 for _ in client.get_prefix(PREFIX, keys_only=True))


def wait_until(done: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not done():
        if time.monotonic() - started > timeout:
            raise SystemExit("timed out")
        time.sleep(0.02)
    return time.monotonic()


def leases(client: Any, probe: Probe, count: int, ttl: int) -> dict[str, Any]:
    """Each lease granted with what is left of `ttl` from the first grant (whole seconds),
    so that all of them expire within about a second of each other: a storm."""
    started = time.monotonic()
    target = started + ttl
    for n in range(count):
        lease = client.lease(max(1, round(target - time.monotonic())))
        client.put(f"{PREFIX}lease-{n}", "x" * 300, lease=lease)
    granted = time.monotonic()
    if granted > target - 1:
        raise SystemExit(f"granting took {granted - started:.1f}s: give a --ttl above it")
    wait_until(lambda: time.monotonic() >= target - 1, ttl + 5)
    gone = wait_until(lambda: remaining(client) == 0, 120)
    return {
        "grant_and_put_s": round(granted - started, 3),
        "grant_and_put_per_s": round(count / (granted - started)),
        "all_expired_s_after_target": round(gone - target, 3),
        "probe_during_grants": probe.between(started, granted),
        "probe_during_expiry": probe.between(target - 1, gone + 0.2),
    }


def sweep(client: Any, probe: Probe, count: int) -> dict[str, Any]:
    started = time.monotonic()
    for n in range(count):
        client.put(f"{PREFIX}sweep-{n}", "x" * 300)
    written = time.monotonic()
    tx = client.transactions
    for n in range(count):
        key = f"{PREFIX}sweep-{n}"
        client.transaction(compare=[tx.value(key) == "x" * 300], success=[tx.delete(key)], failure=[])
    swept = time.monotonic()
    assert remaining(client) == 0
    return {
        "put_s": round(written - started, 3),
        "put_per_s": round(count / (written - started)),
        "guarded_delete_s": round(swept - written, 3),
        "guarded_delete_per_s": round(count / (swept - written)),
        "probe_during_puts": probe.between(started, written),
        "probe_during_sweep": probe.between(written, swept),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--ttl", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, endpoint = start_etcd(Path(tmp))
        try:
            host, port = endpoint.split(":")
            client = etcd3.client(host=host, port=int(port), timeout=10)
            probe_client = etcd3.client(host=host, port=int(port), timeout=10)
            probe = Probe(probe_client)
            time.sleep(0.5)
            idle = probe.between(0, time.monotonic())
            result = {"count": args.count, "ttl_s": args.ttl, "probe_idle": idle,
                      "leases": leases(client, probe, args.count, args.ttl), "sweep": sweep(client, probe, args.count)}
            probe.stop()
            print(json.dumps(result, indent=2))
        finally:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
