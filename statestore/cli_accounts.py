"""blfctl account list / account show (alias list): which accounts a domain has, and an
account's aliases. Read only; the writes are `account add|remove|import`, `alias add|remove`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from statestore.cli_errors import Refused
from statestore.cli_zones import stores
from statestore.domain import directory
from statestore.etcd_store import EtcdStore
from statestore.store import StateStore


def resolve(store: StateStore, text: str) -> tuple[str, str | None]:
    """USER@DOMAIN or ALIAS@DOMAIN (checked, domain lowercased) -> (the account's AOR, the
    alias it was reached through or None); Refused when it is neither."""
    name, domain = directory.aor(text)
    aor = f"{name}@{domain}"
    if store.get_account(aor) is not None:
        return aor, None
    owner = store.resolve_alias(domain, name)
    if owner is None:
        raise Refused(f"no account {aor} (and no alias {aor})")
    return owner, aor


def cmd_account_list(args: argparse.Namespace) -> int:
    """One AOR a line (a JSON array with --json), domain by domain, zone by zone; with
    DOMAIN only its accounts, read from its zone a page at a time."""
    zones = stores(args)
    sources: list[tuple[EtcdStore, str | None]]
    if args.domain is None:
        sources = [(zones.store(zone), None) for zone in zones.zones]
    else:
        domain = directory.domain(args.domain)
        zone = zones.zone_of(domain)
        if zone is None:
            raise Refused(f"no domain {domain}")
        sources = [(zones.store(zone), domain)]
    found = (aor for store, domain in sources for aor in store.accounts_in(domain))
    if not args.json:
        for aor in found:
            print(aor)
        return 0
    # The array is written as the pages are read (what json.dumps of the list would print):
    # nothing held grows with the directory.
    separator = ""
    sys.stdout.write("[")
    for aor in found:
        sys.stdout.write(separator + json.dumps(aor))
        separator = ", "
    sys.stdout.write("]\n")
    return 0


def cmd_account_show(args: argparse.Namespace) -> int:
    """An account (or the one an alias reaches), its zone and its aliases."""
    domain = directory.aor(args.account)[1]
    zones = stores(args)
    zone = zones.zone_of(domain)
    if zone is None:
        raise Refused(f"no domain {domain}")
    store: EtcdStore = zones.store(zone)
    aor, through = resolve(store, args.account)
    aliases = store.account_aliases(aor)
    if aliases is None:  # removed between the two reads
        raise Refused(f"no account {aor}")
    view: dict[str, Any] = {"account": aor, "zone": zone, "aliases": [f"{name}@{domain}" for name in aliases]}
    if through:
        view["alias"] = through
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"{aor} (zone {zone})" + (f" through its alias {through}" if through else ""))
    for alias in view["aliases"]:
        print(f"  alias  {alias}")
    return 0


def add_parsers(account: Any, alias: Any) -> None:
    """`account list|show` and `alias list` on blfctl's `account` and `alias` subparsers."""
    listing = account.add_parser("list", help="the accounts of DOMAIN (of every zone's domains without it), "
                                 "one USER@DOMAIN a line")
    listing.add_argument("domain", nargs="?", metavar="DOMAIN")
    listing.add_argument("--json", action="store_true", help="a JSON array of USER@DOMAIN")
    for parser in (account.add_parser("show", help="an account's zone and aliases"),
                   alias.add_parser("list", help="an account's aliases (as `account show`)")):
        parser.add_argument("account", help="USER@DOMAIN, or ALIAS@DOMAIN for the account it reaches")
        parser.add_argument("--json", action="store_true")


COMMANDS = {"account list": cmd_account_list, "account show": cmd_account_show, "alias list": cmd_account_show}
