"""`make bench-quick` in `make test`: the benchmark's own code path runs, briefly, against both
systems, and writes a JSON with sane figures (not performance thresholds).

It runs in a network namespace of its own when it can (root): its lab takes the lab's usual
ports there, beside a test lab in the test's own namespace.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_writes_sane_figures(tmp_path: Path) -> None:
    for tool in ("kamailio", "etcd", "memcached"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            pytest.fail(f"{tool} is not installed: run `make setup`")
    if not Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/presence_dialoginfo.so").exists() and not list(
            Path("/usr/lib").glob("*/kamailio/modules/presence_dialoginfo.so")):
        pytest.fail("kamailio-presence-modules is not installed: run `make setup`")
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [str(ROOT / "bench" / "in_netns.sh"), sys.executable, "-m", "bench.run", "--quick", "--rates", "4",
         "--duration", "1.5", "--out", str(out), "--var", str(tmp_path / "var")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] and report["machine"]["cpus"] >= 1 and report["machine"]["commit"]
    runs = {run["system"]: run for run in report["runs"] if not run.get("workload", "").startswith("presence-")}
    assert set(runs) == {"native", "ours"}, report["runs"]
    for name, run in runs.items():
        assert "error" not in run, (name, run.get("error"))
        subs = run["subscriptions"]
        assert subs["accepted"] == subs["wanted"] == 20, (name, subs, run["client_errors"])
        assert subs["per_second"] > 0
        assert run["pss_kb"]["after"] > 0
        (rate,) = run["rates"]
        assert rate["placed"] == 6 and rate["answered"] == rate["placed"], (name, rate, run["client_errors"])
        # 3 state changes per call, each seen by the callee's 2 watchers (missed ones are counted).
        assert rate["samples"] + rate["missed"] == 3 * 2 * rate["answered"], (name, rate)
        assert rate["samples"] > 0 and 0 < rate["p50_ms"] <= rate["p99_ms"] < 5000, (name, rate)
        assert rate["cpu_ms_per_call"] is not None and rate["cpu_ms_per_call"] >= 0
        assert "kamailio" in rate["cpu_seconds"]
    assert "etcd" in runs["ours"]["rates"][0]["cpu_seconds"]
    writes = runs["ours"]["rates"][0]["etcd_write_requests_per_call"]
    assert not math.isnan(writes) and writes > 0
    assert set(report["summary"]["10x2"]) == {"native", "ours"}
    assert_presence_figures(report)


def assert_presence_figures(report: dict[str, Any]) -> None:
    """presence-10x2: 10 initial PUBLISHes, 20 presence subscriptions, then 4 PUBLISH/s for 1.5 s
    (each presentity published once: our 5 s NOTIFY rate limit is not met)."""
    runs = {run["system"]: run for run in report["runs"] if run.get("workload") == "presence-10x2"}
    assert set(runs) == {"native", "ours"}, report["runs"]
    for name, run in runs.items():
        assert "error" not in run, (name, run.get("error"))
        assert run["initial_publishes"]["answered"] == 10, (name, run["initial_publishes"], run["client_errors"])
        subs = run["subscriptions"]
        assert subs["accepted"] == subs["wanted"] == 20, (name, subs, run["client_errors"])
        (rate,) = run["rates"]
        assert rate["published"] == 6 and rate["answered"] == 6, (name, rate, run["client_errors"])
        assert rate["min_gap_s"] >= 6, (name, rate)
        # Each publication seen by its presentity's 2 watchers (missed ones are counted).
        assert rate["samples"] + rate["missed"] == 2 * rate["answered"], (name, rate)
        assert rate["samples"] > 0 and 0 < rate["p50_ms"] <= rate["p99_ms"] < 5000, (name, rate)
        assert rate["cpu_ms_per_publish"] is not None and "kamailio" in rate["cpu_seconds"]
    assert set(report["summary"]["presence-10x2"]) == {"native", "ours"}
