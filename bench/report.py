"""The table of docs/benchmarks.md from a results JSON of bench/run.py (medians over repetitions,
[min-max] the noise seen, ratio ours/native).

    python -m bench.report bench/results/latest.json [--at 50x2=10,200x25=5,1000x100=2]

Presence workloads (`presence-PxW`) get a table of their own: per PUBLISH rate, both systems.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _cell(spread: dict[str, float] | None, unit: str = "") -> str:
    if not spread:
        return "–"
    if spread["min"] == spread["max"]:
        return f"{spread['median']:g}{unit}"
    return f"{spread['median']:g}{unit} [{spread['min']:g}–{spread['max']:g}]"


def _ratio(ours: dict[str, float] | None, native: dict[str, float] | None) -> str:
    if not ours or not native or not native["median"]:
        return "–"
    return f"{ours['median'] / native['median']:.2g}"


def _rate_entry(system: dict[str, Any], rate: float) -> dict[str, Any] | None:
    for key, entry in system.get("rates", {}).items():
        if float(key) == rate:
            return dict(entry)
    return None


def _at(system: dict[str, Any], rate: float, field: str) -> dict[str, float] | None:
    entry = _rate_entry(system, rate)
    return entry.get(field) if entry else None


def _memory(workload: str, *systems: dict[str, Any]) -> list[dict[str, float] | None]:
    """PSS per 10,000 subscriptions, only where there are enough subscriptions to tell."""
    presentities, watchers = (int(n) for n in workload.split("x"))
    if presentities * watchers < 5000:
        return [None for _ in systems]
    return [system.get("pss_mb_per_10k_subs") for system in systems]


def table(report: dict[str, Any], reference_rates: dict[str, float]) -> str:
    lines = ["| workload | figure | ours | native | ours/native |", "|---|---|---|---|---|"]
    for workload, systems in report["summary"].items():
        if workload.startswith("presence-"):
            continue
        ours, native = systems.get("ours", {}), systems.get("native", {})
        rate = reference_rates.get(workload, 10.0)
        rows: list[tuple[str, dict[str, float] | None, dict[str, float] | None, str]] = [
            ("held calls/s (no missed NOTIFY, p99 < 1 s)", ours.get("held_rate"), native.get("held_rate"), ""),
            (f"NOTIFY p50 at {rate:g} calls/s", _at(ours, rate, "p50_ms"), _at(native, rate, "p50_ms"), " ms"),
            (f"NOTIFY p99 at {rate:g} calls/s", _at(ours, rate, "p99_ms"), _at(native, rate, "p99_ms"), " ms"),
            (f"missed NOTIFYs at {rate:g} calls/s", _at(ours, rate, "missed"), _at(native, rate, "missed"), ""),
            (f"CPU per answered call at {rate:g} calls/s", _at(ours, rate, "cpu_ms_per_call"),
             _at(native, rate, "cpu_ms_per_call"), " ms"),
            ("initial SUBSCRIBE/s", ours.get("subscribe_per_second"), native.get("subscribe_per_second"), ""),
            ("memory (PSS) per 10,000 subscriptions", *_memory(workload, ours, native), " MB"),
            (f"etcd write requests per answered call at {rate:g}/s", _at(ours, rate, "etcd_write_requests_per_call"),
             None, ""),
        ]
        for label, mine, theirs, unit in rows:
            lines.append(f"| {workload} | {label} | {_cell(mine, unit)} | {_cell(theirs, unit)} | "
                         f"{_ratio(mine, theirs)} |")
    return "\n".join(lines)


def rates_table(report: dict[str, Any]) -> str:
    """p50/p99 per rate, both systems: the data of the PNG."""
    lines = ["| workload | calls/s | ours p50 / p99 (ms) | missed | native p50 / p99 (ms) | missed |",
             "|---|---|---|---|---|---|"]
    for workload, systems in report["summary"].items():
        if workload.startswith("presence-"):
            continue
        rates = sorted({float(r) for s in systems.values() for r in s.get("rates", {})})
        for rate in rates:
            cells = []
            for name in ("ours", "native"):
                entry = _rate_entry(systems.get(name, {}), rate)
                if not entry:
                    cells += ["not run (a lower rate was not held)", "–"]
                    continue
                reps = systems[name].get("reps", 0)
                reached = (entry.get("p99_ms") or {}).get("n", 0)
                note = f" ({reached} of {reps} reps reached it)" if reached < reps else ""
                cells.append(f"{_cell(entry.get('p50_ms'))} / {_cell(entry.get('p99_ms'))}{note}")
                cells.append(_cell(entry.get("missed")))
            lines.append(f"| {workload} | {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def presence_table(report: dict[str, Any]) -> str:
    """Per presence workload and PUBLISH rate: answered PUBLISH/s, NOTIFY p50/p99, missed
    NOTIFYs and CPU per PUBLISH of both systems, ratios ours/native."""
    lines = ["| workload | PUBLISH/s | system | answered/s | NOTIFY p50 (ms) | NOTIFY p99 (ms) | missed | "
             "CPU per PUBLISH (ms) |", "|---|---|---|---|---|---|---|---|"]
    fields = ("publish_answered_per_s", "p50_ms", "p99_ms", "missed", "cpu_ms_per_publish")
    for workload, systems in report["summary"].items():
        if not workload.startswith("presence-"):
            continue
        rates = sorted({float(r) for s in systems.values() for r in s.get("rates", {})})
        for rate in rates:
            entries = {name: _rate_entry(systems[name], rate) for name in ("ours", "native") if name in systems}
            for name, entry in entries.items():
                if not entry:
                    lines.append(f"| {workload} | {rate:g} | {name} | not run (a lower rate was not held) |"
                                 " – | – | – | – |")
                    continue
                reps = systems[name].get("reps", 0)
                reached = (entry.get("p99_ms") or {}).get("n", 0)
                note = f" ({reached} of {reps} reps)" if reached < reps else ""
                lines.append(f"| {workload} | {rate:g} | {name}{note} | "
                             + " | ".join(_cell(entry.get(field)) for field in fields) + " |")
            if len(entries) == 2 and all(entries.values()):
                ours, native = entries["ours"] or {}, entries["native"] or {}
                lines.append(f"| {workload} | {rate:g} | ours/native | "
                             + " | ".join(_ratio(ours.get(field), native.get(field)) for field in fields) + " |")
        for name in ("ours", "native"):
            system = systems.get(name)
            if system:
                lines.append(f"| {workload} | held | {name} | {_cell(system.get('held_rate'))} PUBLISH/s | "
                             f"initial SUBSCRIBE/s {_cell(system.get('subscribe_per_second'))} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--at", default="50x2=10,200x25=5,1000x100=2",
                        help="reference call rate of the table per workload (WORKLOAD=RATE,...) or one rate")
    args = parser.parse_args(argv)
    report = json.loads(args.results.read_text())
    if "=" in args.at:
        at = {name: float(rate) for name, _, rate in (part.partition("=") for part in args.at.split(","))}
    else:
        at = {workload: float(args.at) for workload in report["summary"]}
    if any(not workload.startswith("presence-") for workload in report["summary"]):
        print(table(report, at))
        print()
        print(rates_table(report))
    if any(workload.startswith("presence-") for workload in report["summary"]):
        print()
        print(presence_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
