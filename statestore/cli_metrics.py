"""blfctl metrics: every instance's Prometheus metrics in one exposition (docs/metrics.md).

Fetches each instance's metrics socket (those given with --instance, else the lab's, else
those the instances announce in the store of every zone: a production host), each
with its own deadline and all at once; merges them (statestore.prom_text) with
instance="ksN" on every series. An instance that does not answer is reported, with
blf_scrape_up 0, and the exit status 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from statestore.cli_zones import ZoneStores, stores
from statestore.domain.errors import StoreUnavailable
from statestore.lab import Lab
from statestore.metrics import METRICS_PATH
from statestore.prom_text import ExpositionError, Sample, as_json, merge, parse

DEFAULT_TIMEOUT = 2.0

Fetch = Callable[[str, float], str]


def fetch_http(address: str, timeout: float) -> str:
    """GET http://ADDRESS/metrics; its body."""
    with urllib.request.urlopen(f"http://{address}{METRICS_PATH}", timeout=timeout) as answer:  # noqa: S310
        return str(answer.read().decode("utf-8", "replace"))


def scrape(
    targets: Mapping[str, str], timeout: float, fetch: Fetch = fetch_http,
) -> tuple[dict[str, list[Sample]], dict[str, str | None]]:
    """Each instance's samples, and each instance's error (None when it answered)."""

    def one(name: str) -> tuple[str, list[Sample] | None, str | None]:
        try:
            return name, parse(fetch(targets[name], timeout)), None
        except (OSError, ExpositionError, ValueError) as exc:
            return name, None, f"{type(exc).__name__}: {exc}"

    samples: dict[str, list[Sample]] = {}
    errors: dict[str, str | None] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        for name, found, error in pool.map(one, sorted(targets)):
            errors[name] = error
            if found is not None:
                samples[name] = found
    return samples, errors


def lab_targets() -> dict[str, str]:
    """The lab's instances and their metrics sockets."""
    instances = Lab().state.get("instances", {})
    return {name: entry["metrics"] for name, entry in instances.items() if entry.get("metrics")}


def announced_targets(records: Iterable[Callable[[], Mapping[str, Mapping[str, Any]]]]) -> dict[str, str]:
    """The live instances' metrics sockets as their instance records announce them
    (`metrics`), over every zone: `records` reads one zone's. A zone that cannot be read is
    passed over while another answered; StoreUnavailable when none did."""
    targets: dict[str, str] = {}
    unavailable: StoreUnavailable | None = None
    answered = False
    for read in records:
        try:
            instances = read()
        except StoreUnavailable as exc:
            unavailable = exc
            continue
        answered = True
        for name, info in instances.items():
            address = info.get("metrics")
            if isinstance(address, str) and address:
                targets.setdefault(name, address)
    if not answered and unavailable is not None:
        raise unavailable
    return targets


def _instances(zones: ZoneStores, zone: str) -> dict[str, dict[str, Any]]:
    return zones.store(zone).instances()


def store_targets(args: argparse.Namespace) -> dict[str, str]:
    """The instances announced in the store of every zone blfctl knows (BLF_ZONES, --etcd,
    BLF_ETCD: a production host's environment file)."""
    zones = stores(args)
    try:
        return announced_targets(functools.partial(_instances, zones, zone) for zone in zones.zones)
    finally:
        zones.close()


def parse_targets(values: list[str]) -> dict[str, str]:
    """NAME=HOST:PORT, as given with --instance."""
    targets = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep or not name or ":" not in address:
            raise ValueError(f"--instance takes NAME=HOST:PORT, not {value!r}")
        targets[name] = address
    return targets


def cmd_metrics(args: argparse.Namespace, fetch: Fetch = fetch_http) -> int:
    try:
        targets = parse_targets(args.instance) if args.instance else lab_targets() or store_targets(args)
    except ValueError as exc:
        print(f"blfctl metrics: {exc}", file=sys.stderr)
        return 2
    if not targets:
        print("blfctl metrics: no instances (no --instance given, no lab up, and no live instance announces a "
              "metrics socket in the store)", file=sys.stderr)
        return 1
    samples, errors = scrape(targets, args.timeout, fetch)
    for name, error in sorted(errors.items()):
        if error is not None:
            print(f"blfctl metrics: {name} ({targets[name]}) did not answer: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps(as_json(samples, errors), indent=2))
    else:
        sys.stdout.write(merge(samples, {name: error is None for name, error in errors.items()}))
    return 0 if all(error is None for error in errors.values()) else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    metrics = sub.add_parser("metrics", help="every instance's Prometheus metrics, labelled with its instance")
    metrics.add_argument("--json", action="store_true", help="the instances and samples as JSON")
    metrics.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per instance (default 2)")
    metrics.add_argument("--instance", action="append", default=[], metavar="NAME=HOST:PORT",
                         help="an instance's metrics socket (repeatable); default: the lab's instances, else "
                         "those announced in the store (BLF_ZONES, BLF_ETCD, --etcd)")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"metrics": cmd_metrics}
