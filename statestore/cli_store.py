"""blfctl store health|maintain: etcd's health (every member of every zone asked on its own)
and its maintenance (compaction, one member's defragmentation at a time, alarms), once or
every so often (`--every`; `blfctl run` runs it for the lab: statestore.cli_run)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from statestore import cli_errors, maintenance, member_probe, zone_health
from statestore.cli_zones import zones_of
from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import EtcdStore
from statestore.zones import Zones


def store_health(
    store: EtcdStore, members: Sequence[maintenance.MemberStatus] | None = None, zones: dict[str, Any] | None = None
) -> maintenance.Health:
    """The store's figures; `members` as already asked (else each member is asked through
    `store`), `zones` the per-zone report (zone_health.zones_report)."""
    if members is None:
        members = [store.member_status(endpoint) for endpoint in store.member_endpoints()]
    total, counts = store.key_counts()
    return maintenance.health(
        members, store.quota(), store.compact_revision(), store.maintenance_record(), store.alarms(),
        counts, total, store.lease_count(), zones,
    )


def cmd_store_health(args: argparse.Namespace) -> int:
    """Every member of every zone asked on its own (short deadlines, in parallel), then the
    figures of the first zone (the store of old) read from its members that answered."""
    zones = zones_of(args)
    probes = member_probe.probe_zones(zones)
    report_zones = zone_health.zones_report(probes)
    first = next(iter(zones))
    leader = zone_health.zone_leader(probes[first])
    answered = sorted((probe for probe in probes[first] if probe.reachable), key=lambda p: p.member_id != leader)
    try:
        if not answered:
            raise StoreUnavailable(f"no member of zone {first} answers", ",".join(zones[first]))
        store = EtcdStore(",".join(probe.endpoint for probe in answered), timeout=2.0)
        try:
            report = store_health(store, [_member_status(probe) for probe in answered], report_zones)
        finally:
            store.close()
    except StoreUnavailable:
        print(json.dumps({"zones": report_zones}, indent=2) if args.json
              else "\n".join(zone_health.describe_zones(report_zones)))
        raise
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(maintenance.describe_health(report)))
    return report.exit_code()


def _member_status(probe: zone_health.MemberProbe) -> maintenance.MemberStatus:
    return maintenance.MemberStatus(
        endpoint=probe.endpoint, member_id=probe.member_id, db_size=probe.db_size,
        db_size_in_use=probe.db_size_in_use, revision=probe.revision,
    )


def maintain(store: EtcdStore, if_needed: bool, say: Callable[[str], None] = print) -> bool:
    """Compact to the current revision, defragment each member one at a time, disarm the
    alarms, record it (keys.MAINTENANCE). With `if_needed`, only when a member needs a
    defragmentation (maintenance.defrag_reason), and only those members. Whether it acted."""
    endpoints = store.member_endpoints()
    alarms = store.alarms()
    quota = store.quota()
    reasons = {}
    for endpoint in endpoints:
        status = store.member_status(endpoint)
        reason = maintenance.defrag_reason(status, quota, bool(alarms))
        if reason or not if_needed:
            reasons[endpoint] = (status, reason or "asked to")
    if not reasons:
        say("store maintain: nothing needed")
        return False
    for alarm in alarms:
        say(f"store maintain: alarm raised: {alarm}")
    previous = store.maintenance_record()
    revision = store.revision()
    started = time.monotonic()
    compacted = store.compact(revision)
    say(f"store maintain: compacted to revision {revision} in {time.monotonic() - started:.2f} s"
        if compacted else f"store maintain: history already compacted to {revision} or beyond")
    blocked: dict[str, float] = {}
    mib = 1024 * 1024
    for endpoint, (status, reason) in reasons.items():
        seconds = store.defragment(endpoint)
        blocked[endpoint] = round(seconds, 3)
        after = store.member_status(endpoint)
        say(f"store maintain: defragmented {endpoint} ({reason}): {status.db_size / mib:.1f} MiB -> "
            f"{after.db_size / mib:.1f} MiB, blocked it {seconds:.2f} s")
    for alarm in store.disarm_alarms():
        say(f"store maintain: disarmed {alarm}")
    now = time.time()
    store.record_maintenance(maintenance.MaintenanceRecord(
        last_compaction=now if compacted else previous.last_compaction,
        compacted_to=revision if compacted else previous.compacted_to,
        last_defrag=now, defrag_seconds=blocked,
    ))
    return True


def cmd_store_maintain(args: argparse.Namespace) -> int:
    """Every zone's cluster, one after the other."""
    zones = zones_of(args)
    if args.every is None:
        for zone, endpoints in zones.items():
            if len(zones) > 1:
                print(f"store maintain: zone {zone}")
            store = EtcdStore(",".join(endpoints), timeout=2.0)
            try:
                maintain(store, args.if_needed)
            finally:
                store.close()
        return 0
    maintain_every(zones, args.every, args.if_needed, threading.Event())
    return 0


def maintain_every(zones: str | Zones, seconds: float, if_needed: bool, stop: threading.Event) -> None:
    """`maintain` every `seconds` until `stop` is set, each zone's cluster (`zones`, or one
    cluster's members "h:p,h:p"); an unreachable store is said and tried again next time
    (the loop of `blfctl run` and of `store maintain --every`)."""
    clusters = [zones] if isinstance(zones, str) else [",".join(endpoints) for endpoints in zones.values()]
    while not stop.wait(seconds):
        for endpoints in clusters:
            store = EtcdStore(endpoints, timeout=2.0)
            try:
                maintain(store, if_needed)
            except StoreUnavailable as exc:
                print(f"store maintain: {cli_errors.unreachable_message(exc.endpoint, str(exc))}", file=sys.stderr)
            finally:
                store.close()
        sys.stdout.flush()


def add_parsers(sub: Any) -> None:
    store = sub.add_parser("store", help="etcd's health and maintenance").add_subparsers(
        dest="subcommand", required=True
    )
    health = store.add_parser("health", help="database size against quota, revisions, last maintenance, alarms, "
                              "key and lease counts, each zone's members (exit 0 healthy, 1 an alarm is raised, 3 etcd "
                              "unreachable, 4 a member unreachable or a zone without leader)")
    health.add_argument("--json", action="store_true")
    maintain_parser = store.add_parser(
        "maintain", help="compact to the current revision, defragment each member one at a time, disarm alarms"
    )
    maintain_parser.add_argument("--if-needed", action="store_true",
                                 help="only if a member's file is mostly free pages, near the quota, or alarmed")
    maintain_parser.add_argument("--every", type=float, metavar="SECONDS",
                                 help="keep running, maintaining every SECONDS")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "store health": cmd_store_health, "store maintain": cmd_store_maintain,
}
