"""etc/prometheus and etc/grafana: promtool accepts the scrape configuration and the alert
rules, the rules' own unit tests pass, and the dashboard asks only for metrics that exist.

promtool comes out of Debian's `prometheus` package (Makefile: taken out, not installed);
without it the promtool checks are skipped, and say so."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from statestore.metrics import METRICS, Kind

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "etc" / "prometheus"
PROMTOOL = next((str(p) for p in (ROOT / ".venv" / "bin" / "promtool",) if p.exists()), shutil.which("promtool"))
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (make setup extracts it)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)


@needs_promtool
@pytest.mark.parametrize("check", [
    ("check", "rules", "blf-alerts.yml"),
    ("check", "config", "blf-scrape.yml"),
    ("test", "rules", "blf-alerts.test.yml"),
])
def test_promtool_accepts(check):
    result = promtool(*check)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_refuses_a_broken_rule(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((PROMETHEUS / "blf-alerts.yml").read_text().replace("blf_store_up == 0", "blf_store_up == ("))
    assert promtool("check", "rules", str(broken)).returncode != 0


def declared_series() -> set[str]:
    names = set()
    for metric in METRICS:
        suffixes = ("_bucket", "_sum", "_count") if metric.kind is Kind.HISTOGRAM else ("",)
        names |= {metric.name + suffix for suffix in suffixes}
    return names


def used_series(expression: str) -> set[str]:
    return set(re.findall(r"\b((?:blf|etcd)_[a-z_]+)\b", expression))


def test_rules_and_dashboard_use_only_declared_blf_metrics():
    rules = (PROMETHEUS / "blf-alerts.yml").read_text()
    dashboard = json.loads((ROOT / "etc" / "grafana" / "blf.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = used_series(rules) | {name for expr in expressions for name in used_series(expr)}
    etcd = {"etcd_mvcc_db_total_size_in_bytes", "etcd_server_quota_backend_bytes"}
    assert used - declared_series() - etcd == set()
    assert {"blf_store_up", "blf_notify_failed_total"} <= used_series(rules)
