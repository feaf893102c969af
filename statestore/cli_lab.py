"""blfctl lab: the local lab on loopback (statestore.lab), its zones of etcd members and the
faults it plays on demand (kill, start, stop, cont, cut, heal)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from statestore.lab import Lab
from statestore.lab_kamailio import CONFIGS


def cmd_lab(args: argparse.Namespace) -> int:
    lab = Lab()
    command = args.lab_command
    if command in ("up", "status"):  # the same table, or the same JSON (--json), from both
        if command == "up":
            lab.up(args.instances, args.lease_ttl, args.zones, args.etcd_members, args.direct_store, args.sites,
                   args.config)
        status = lab.status()
        print(json.dumps(status, indent=2) if args.json else "\n".join(status_lines(status)))
    elif command == "down":
        lab.down()
    else:
        LAB_ACTIONS[command](lab, args.name)
    return 0


LAB_ACTIONS: dict[str, Callable[[Lab, str], None]] = {
    "kill": Lab.kill, "start": lambda lab, name: lab.start(name), "stop": Lab.pause, "cont": Lab.resume,
    "cut": Lab.cut, "heal": lambda lab, name: lab.cut(name, heal=True),
}
LAB_ACTION_HELP = {
    "kill": "SIGKILL an instance (its whole process group) or a member",
    "start": "start an instance, or a member (it rejoins its cluster with its data)",
    "stop": "SIGSTOP an instance (its whole process group) or a member",
    "cont": "SIGCONT what `lab stop` stopped",
    "cut": "cut an instance off from the store (every zone's members), or a site (s1, ...) off from the "
           "other sites; not from phones",
    "heal": "undo `lab cut`",
}


def _state_word(entry: dict[str, Any]) -> str:
    return "stopped" if entry.get("stopped") else ("up" if entry["alive"] else "down")


def status_lines(status: dict[str, Any]) -> list[str]:
    """`lab up` and `lab status` as a table: each etcd member, memcached, each instance, each site."""
    memcached = status["memcached"]
    lines = []
    for zone, members in status["zones"].items():
        for name, member in members["members"].items():
            lines.append(f"{name:<10} {member['client']} pid={member['pid']} {_state_word(member)} (etcd, zone {zone})")
    lines.append(f"memcached  {memcached.get('address')} pid={memcached.get('pid')} {_state_word(memcached)}")
    for name, entry in status["instances"].items():
        lines.append(f"{name:<10} {entry['sip']} pid={entry['pid']} {_state_word(entry)} (store {entry['store']}, "
                     f"config {entry.get('config', 'full')}, metrics {entry.get('metrics') or 'none'})")
    for name, site in status.get("sites", {}).items():
        cut = " CUT off from the other sites" if site["cut"] else ""
        lines.append(f"{name:<10} {site['address']} netns {site['namespace']} +{site['delay_ms']} ms to the other "
                     f"sites ({', '.join(site['runs'])}){cut}")
    return lines


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", choices=CONFIGS, default="full",
                        help="what each instance runs: full = our routing (kamailio/kamailio.cfg); dropin = Debian's "
                        "stock kamailio.cfg with exactly the additions of docs/dropin.md (default full)")


def add_parsers(sub: Any) -> None:
    """`blfctl lab ...`, on blfctl's subcommand parsers."""
    lab = sub.add_parser("lab", help="local lab on loopback").add_subparsers(dest="lab_command", required=True)
    up = lab.add_parser("up", help="start etcd, memcached and the instances (idempotent)")
    up.add_argument("--instances", type=int, default=2)
    up.add_argument("--lease-ttl", type=int, default=int(os.environ.get("BLF_LEASE_TTL", "6")))
    up.add_argument("--zones", type=int, help="zones z1..zN, each its own etcd cluster (default 1, or the lab's)")
    up.add_argument("--etcd-members", type=int, choices=(1, 3), help="members per zone (default 1, or the lab's)")
    up.add_argument("--direct-store", action="store_true",
                    help="instances reach etcd directly, without their store link (no `lab cut`; benchmarks)")
    up.add_argument("--sites", type=int, help="run sites s1..sN, each in a network namespace of its own with "
                    "ks{I} and member I of every zone, delayed from each other (root; --etcd-members N; "
                    "--instances is then N; addresses in statestore/lab_sites.py)")
    up.add_argument("--json", action="store_true", help="print the status as JSON (as `lab status --json`)")
    add_config_argument(up)
    lab.add_parser("down", help="stop everything the lab started")
    status = lab.add_parser("status", help="what runs where (the table `lab up` prints)")
    status.add_argument("--json", action="store_true")
    for name, text in LAB_ACTION_HELP.items():
        lab.add_parser(name, help=text).add_argument("name", help="ks1, ks2, ..., z1-etcd1, z1-etcd2, ... (cut/heal: "
                                                     "also s1, s2, ...)")
