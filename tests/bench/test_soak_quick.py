"""`make soak`'s code in `make test`: `bench.soak --quick` runs the soak for 1.5 minutes of
load (calls at 5/s answered, rejected and cancelled; registrations and subscriptions with
short Expires that are refreshed, removed and left to lapse; ks2 restarted after 30 s),
then waits until every registration and subscription has ended or expired.

What it checks: the load ran (calls of each kind, subscriptions refreshed and expired,
the restart), the samples carry every figure, slopes were fitted for each, and no orphan
remains: the store holds exactly provisioning and the two instances, each key and lease
owned (statestore.orphans). It does not judge flatness: a window of under a minute after
the restart says nothing about growth over days (`make soak` does, over 30 minutes).

It runs in a network namespace of its own when it can (root), like test_bench_quick.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_soak_quick_leaves_no_orphans_and_fits_every_figure(tmp_path: Path) -> None:
    for tool in ("kamailio", "etcd", "memcached", "kamcmd"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            pytest.fail(f"{tool} is not installed: run `make setup`")
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [str(ROOT / "bench" / "in_netns.sh"), sys.executable, "-m", "bench.soak", "--quick", "--out", str(out),
         "--var", str(tmp_path / "var")],
        cwd=ROOT, capture_output=True, text=True, timeout=420,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    verdict = report["verdict"]
    assert verdict["orphans"] == 0 and report["leftovers"] == [], report["leftovers"]
    assert done.returncode == 0 and verdict["passed"], done.stdout[-3000:] + done.stderr[-3000:]

    counts = report["counts"]
    for kind in ("call answered", "call busy", "call cancelled", "SUBSCRIBE refreshed", "SUBSCRIBE removed",
                 "SUBSCRIBE left to expire", "REGISTER ok", "REGISTER removed", "NOTIFY terminated"):
        assert counts.get(kind, 0) > 0, (kind, counts)
    assert report["restart_at_s"] is not None and report["restart_seconds"] > 0

    samples = report["samples"]
    assert len(samples) >= 10 and {sample["phase"] for sample in samples} == {"load", "drain"}
    last = samples[-1]
    assert last["store"]["quota"] and last["store"]["db_size"] > 0 and last["store"]["revision"] > 0
    assert set(last["kamailio"]) == {"ks1", "ks2"}
    for instance in last["kamailio"].values():
        assert instance["shm"]["total"] > 0 and instance["processes"]
        assert all(proc["pss_kb"] > 0 and proc["pkg_total"] > 0 for proc in instance["processes"].values())
    assert last["memcached"]["rss_kb"] > 0 and last["etcd"]["rss_kb"] > 0

    figures = report["figures"]
    assert verdict["slopes_computed"] == len(figures) > 40
    for name in ("etcd db_size (bytes)", "etcd keys", "etcd leases", "memcached curr_items",
                 "ks1 shm real_used (bytes)", "ks2 shm real_used (bytes)"):
        assert isinstance(figures[name]["slope_per_hour"], float), name
    assert report["plot"] and (tmp_path / report["plot"]).exists()
