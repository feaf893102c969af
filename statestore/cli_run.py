"""blfctl run (`make run`): the demo lab in the foreground with a demo domain and accounts,
its store maintained on the lab's schedule (the supervision is statestore.lab_run)."""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable
from typing import Any

from statestore import cli_lab, lab_run
from statestore.cli_directory import new_account
from statestore.cli_store import maintain_every
from statestore.cli_zones import stores, zones_of
from statestore.etcd_store import EtcdStore
from statestore.lab import Lab

DEMO_DOMAIN = "example.com"
# `blfctl run` looks this often whether the store needs maintenance (`store maintain --if-needed`).
LAB_MAINTAIN_SECONDS = 300.0
DEMO_ACCOUNTS = {"alice": "alice-secret", "boris": "boris-secret", "catherine": "catherine-secret"}


def provision_demo(store: EtcdStore) -> None:
    store.add_domain(DEMO_DOMAIN)
    for user, password in DEMO_ACCOUNTS.items():
        store.add_account(new_account(user, DEMO_DOMAIN, password))  # keeps aliases added meanwhile


def cmd_run(args: argparse.Namespace) -> int:
    """The demo lab in the foreground until Ctrl-C/SIGTERM/SIGHUP; an instance that dies
    leaves the others running (statestore.lab_run)."""
    lab = Lab()
    stopping = lab_run.stop_on_signals()
    with lab_run.run_lock(lab.paths.var):
        left = lab_run.running_pids(lab.status())
        if left:
            print(f"stopping a lab a previous run left behind (pids {' '.join(map(str, left))}) ...", flush=True)
        lab.down()
        done = threading.Event()
        # The lab's defragmentation schedule (docs/operations.md "Operating the store"): this process, not a
        # Kamailio one, since a defragmentation blocks its caller for as long as it takes.
        threading.Thread(
            target=maintain_every, args=(zones_of(args), LAB_MAINTAIN_SECONDS, True, done), name="blf-maintain",
            daemon=True,
        ).start()
        try:
            lab.up(args.instances, args.lease_ttl, config=args.config)
            zones = stores(args)
            provision_demo(zones.store(zones.first))
            _print_welcome(lab.status())
            # The lab as var/lab.json has it now: `blfctl lab start ks2` elsewhere changed it.
            lab_run.supervise(lambda: Lab(lab.paths).status(), stopping, lambda line: print(line, flush=True))
        finally:
            done.set()
            print("\nstopping the lab ...", flush=True)
            Lab(lab.paths).down()
            lab_run.reap_children()
    return 0


def _print_welcome(status: dict[str, Any]) -> None:
    print("\nThe BLF lab is running. Point a SIP phone at it:")
    for name, entry in status["instances"].items():
        print(f"  {name}: outbound proxy sip:{entry['sip']} (UDP or TCP)")
    print(f"  domain {DEMO_DOMAIN}; accounts (user / password):")
    for user, password in DEMO_ACCOUNTS.items():
        print(f"    {user} / {password}")
    print("  BLF keys: subscribe to sip:alice@example.com etc. with Event: dialog")
    print("  inspect:  .venv/bin/blfctl show alice@example.com   |   etcdctl get --prefix /blf/")
    print("An instance that dies (`blfctl lab kill ks2`) leaves the others running; "
          "`blfctl lab start ks2` brings it back.")
    print("Ctrl-C stops everything.", flush=True)


def add_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run the lab in the foreground with a demo domain")
    run.add_argument("--instances", type=int, default=2)
    run.add_argument("--lease-ttl", type=int, default=int(os.environ.get("BLF_LEASE_TTL", "6")))
    cli_lab.add_config_argument(run)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"run": cmd_run}
