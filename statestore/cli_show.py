"""blfctl show: an account's integrated state, its registrations, legs, publications and
the subscriptions to it, as one view (text, or JSON with --json)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from statestore import cli_accounts
from statestore.cli_zones import store_for
from statestore.domain import directory, nat
from statestore.domain.lamp import lamp_state
from statestore.store import StateStore


def show(store: StateStore, aor: str, now: float) -> dict[str, Any]:
    legs = store.legs_of(aor)
    bindings = store.bindings_of(aor)
    subscriptions = store.subscriptions_to(aor)
    publications = [pub for pub, _ in store.publications_of(aor)]
    return {
        "account": aor,
        "state": lamp_state(legs, bindings, now).value,
        "registrations": [
            {
                "contact": b.contact, "expires": b.remaining(now), "instance": b.instance,
                "received": b.received, "nat": nat.reached_behind_nat(b.contact, b.received, b.nat),
                "sip_instance": b.sip_instance, "reg_id": b.reg_id,
            }
            for b in bindings
        ],
        "legs": [
            {
                "instance": leg.instance, "call_id": leg.call_id, "state": leg.state.value,
                "direction": leg.direction.value, "leg_id": leg.leg_id, "remote": leg.remote.identity,
            }
            for leg in sorted(legs, key=lambda leg: (leg.instance, leg.call_id))
        ],
        "subscriptions": [
            {
                "watcher": s.watcher, "event": s.event, "expires": s.remaining(now), "owner": s.owner,
                "cseq": s.cseq, "version": s.version, "contact": s.watcher_contact, "id": s.sub_id,
                "notify_timeouts": s.notify_timeouts, "received": s.received, "flow_instance": s.flow_instance,
                "nat": s.nat, "status": s.status, "profile": list(s.profile),
            }
            for s in subscriptions
        ],
        "publications": [
            {
                "event": p.event, "etag": p.etag, "expires": p.remaining(now), "device": p.device,
                "instance": p.instance, "content_type": p.content_type, "body": p.body,
            }
            for p in sorted(publications, key=lambda p: p.published_at)
        ],
    }


def cmd_show(args: argparse.Namespace) -> int:
    """USER@DOMAIN, or ALIAS@DOMAIN: the account the alias reaches, said so."""
    store = store_for(args, directory.aor(args.account)[1])
    aor, through = cli_accounts.resolve(store, args.account)
    view = show(store, aor, time.time())
    if args.json:
        print(json.dumps({**view, "alias": through} if through else view, indent=2))
        return 0
    print(f"{aor}: {view['state']}" + (f" (through its alias {through})" if through else ""))
    for reg in view["registrations"]:
        shown_nat = f" behind NAT, reached at {reg['received']}" if reg["nat"] else ""
        print(f"  registered  {reg['contact']} expires in {reg['expires']}s (via {reg['instance']}){shown_nat}")
    for leg in view["legs"]:
        print(f"  leg         {leg['instance']} {leg['call_id']} {leg['state']} {leg['direction']} {leg['remote']}")
    for pub in view["publications"]:
        print(f"  published   {pub['event']} etag={pub['etag']} expires in {pub['expires']}s by {pub['device']} "
              f"(via {pub['instance']})")
    for sub in view["subscriptions"]:
        print(f"  watched by  {sub['watcher']} event={sub['event']} {sub['status']} expires in {sub['expires']}s "
              f"owner={sub['owner']}")
    return 0


def add_parser(sub: Any) -> None:
    show_parser = sub.add_parser("show", help="integrated state, legs and subscriptions of an account")
    show_parser.add_argument("account", help="USER@DOMAIN, or ALIAS@DOMAIN for the account it reaches")
    show_parser.add_argument("--json", action="store_true")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"show": cmd_show}
