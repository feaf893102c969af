"""blfctl domain add|set|show, account add|remove|import, alias add|remove: provisioning
the directory (domains with their could-call rules, accounts and their aliases). The
read-only `account list|show` and `alias list` are statestore.cli_accounts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from statestore import cli_errors
from statestore.cli_errors import Refused
from statestore.cli_zones import store_for, stores
from statestore.domain import digest, directory
from statestore.domain.directory import AccountEntry
from statestore.domain.model import Account
from statestore.domain.policy import DomainRules
from statestore.store import StateStore


def ha1(user: str, domain: str, password: str) -> str:
    """RFC 2617 HA1 = MD5(username:realm:password); the realm is the domain."""
    return digest.ha1("MD5", user, domain, password)


def new_account(user: str, domain: str, password: str) -> Account:
    """An account with both HA1s (MD5 and SHA-256, RFC 7616 §3.4.2); the password is not kept."""
    return Account(
        user=user, domain=domain, ha1=ha1(user, domain, password),
        ha1_sha256=digest.ha1("SHA-256", user, domain, password),
    )


def _number_flags_given(args: argparse.Namespace) -> bool:
    return bool(args.strip_plus) or args.number_prefix is not None


def _rules(args: argparse.Namespace, may_call: list[str] | None) -> DomainRules:
    return directory.domain_rules(
        args.domain, may_call or (), args.accept_from, args.strip_plus, args.number_prefix or ()
    )


def _describe(rules: DomainRules) -> str:
    others = sorted(rules.may_call - {rules.name})
    accepts = "every domain" if rules.accept_from is None else ", ".join(
        (rules.name, *sorted(rules.accept_from - {rules.name}))
    )
    text = f"domain {rules.name}: may call {', '.join((rules.name, *others))}; accepts from {accepts}"
    numbers = rules.numbers
    if numbers.strip_plus or numbers.prefixes:
        forms = (["+N = N"] if numbers.strip_plus else []) + [f"{a}N = {b}N" for a, b in numbers.prefixes]
        text += f"; equal number forms {', '.join(forms)}"
    return text


def cmd_domain_add(args: argparse.Namespace) -> int:
    """A domain lives in one zone (everything of its accounts with it): adding it to a
    zone while another zone holds it is refused."""
    zones = stores(args)
    zone = args.zone or zones.first
    if zone not in zones.zones:
        raise Refused(f"no zone {zone} (zones: {', '.join(zones.zones)})")
    rules = None
    if args.may_call is None and args.accept_from is None and not _number_flags_given(args):
        name = directory.domain(args.domain)  # an existing domain keeps its rules
    else:
        rules = _rules(args, args.may_call)
        name = rules.name
    held = zones.zone_of(name)
    if held is not None and held != zone:
        raise Refused(f"domain {name} is in zone {held}: a domain lives in one zone, not added to {zone}")
    zones.store(zone).add_domain(name, rules)
    print(f"domain {name} added (zone {zone})")
    return 0


def cmd_domain_set(args: argparse.Namespace) -> int:
    rules = _rules(args, args.may_call)
    if not store_for(args, rules.name).set_domain_rules(rules):
        raise Refused(f"no domain {rules.name}")
    print(_describe(rules))
    return 0


def cmd_domain_show(args: argparse.Namespace) -> int:
    name = directory.domain(args.domain)
    zones = stores(args)
    zone = zones.zone_of(name)
    rules = None if zone is None else zones.store(zone).domain_rules(name)
    if zone is None or rules is None:
        raise Refused(f"no domain {name}")
    print(json.dumps({**directory.rules_to_record(rules), "zone": zone}, indent=2))
    return 0


def _ensure_domain(store: StateStore, domain: str) -> None:
    if not store.domain_exists(domain):
        store.add_domain(domain)
        print(f"domain {domain} added")


def cmd_account_add(args: argparse.Namespace) -> int:
    user, domain = directory.aor(args.account)
    aliases = directory.aliases(args.alias or (), user)
    directory.check_passwords([(f"{user}@{domain}", args.password)])
    store = store_for(args, domain)
    _ensure_domain(store, domain)
    existed = store.get_account(f"{user}@{domain}") is not None
    store.add_account(new_account(user, domain, args.password), aliases)
    print(account_added(f"{user}@{domain}", existed, aliases))
    return 0


def account_added(aor: str, existed: bool, aliases: Sequence[str]) -> str:
    """What `account add` says: a new account is added, an existing one has its password
    changed (its aliases kept, the ones given added)."""
    if not existed:
        return f"account {aor} added" + (f" with aliases {', '.join(aliases)}" if aliases else "")
    return f"account {aor}: password changed" + (f"; aliases {', '.join(aliases)} added" if aliases else "")


def cmd_account_remove(args: argparse.Namespace) -> int:
    user, domain = directory.aor(args.account)
    if not store_for(args, domain).remove_account(f"{user}@{domain}", time.time()):
        raise Refused(f"no account {user}@{domain}")
    print(f"account {user}@{domain} removed")
    return 0


def cmd_account_import(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        with open(args.file, encoding="utf-8") as source:
            entries = directory.import_entries(source)
    except OSError as exc:
        raise cli_errors.Malformed(f"{args.file}: {exc.strerror or exc}") from exc
    directory.check_passwords((entry.aor, entry.password) for entry in entries)
    zones = stores(args)
    refused = []
    for domain in sorted({entry.domain for entry in entries}):  # each domain's accounts in its zone
        store = zones.for_domain(domain)
        _ensure_domain(store, domain)
        refused += store.write_accounts([
            AccountEntry(entry.aor, new_account(entry.user, entry.domain, entry.password).to_dict(), entry.aliases)
            for entry in entries if entry.domain == domain
        ])
    for error in refused:
        print(f"blfctl: {error}", file=sys.stderr)
    aliases = sum(len(entry.aliases) for entry in entries)
    print(f"imported {len(entries) - len(refused)} of {len(entries)} accounts ({aliases} aliases listed) "
          f"in {time.monotonic() - started:.2f} s")
    return 1 if refused else 0


def cmd_alias_add(args: argparse.Namespace) -> int:
    user, domain = directory.aor(args.account)
    aliases = directory.aliases(args.aliases, user)
    store_for(args, domain).add_aliases(f"{user}@{domain}", aliases)
    print(f"account {user}@{domain}: aliases {', '.join(aliases)} added")
    return 0


def cmd_alias_remove(args: argparse.Namespace) -> int:
    alias, domain = directory.alias_address(args.alias)
    owner = store_for(args, domain).remove_alias(domain, alias)
    if owner is None:
        raise Refused(f"no alias {alias}@{domain}")
    print(f"alias {alias}@{domain} removed from {owner}")
    return 0


def add_parsers(sub: Any) -> tuple[Any, Any]:
    """`domain ...`, `account add|remove|import` and `alias add|remove` on blfctl's subcommand
    parsers; the `account` and `alias` subparsers, for statestore.cli_accounts to add to."""
    domain = sub.add_parser("domain", help="domains and their could-call rules").add_subparsers(
        dest="subcommand", required=True
    )
    domain_add = domain.add_parser("add", help="provision a domain (an existing one keeps its rules without flags)")
    domain_set = domain.add_parser("set", help="replace a domain's rules")
    for parser_, required in ((domain_add, False), (domain_set, True)):
        parser_.add_argument("domain")
        parser_.add_argument("--may-call", nargs="*", metavar="OTHER", required=required,
                             help="other domains its accounts may call (it may always call itself)")
        parser_.add_argument("--accept-from", nargs="*", metavar="OTHER",
                             help="the only other domains it accepts calls from (default: every domain)")
        parser_.add_argument("--strip-plus", action="store_true",
                             help="+N and N are the same number in its users and aliases")
        parser_.add_argument("--number-prefix", action="append", metavar="A=B",
                             help="a number starting with A is the same as B followed by the rest, "
                                  "e.g. 0=+44 or =+1 (repeatable)")
    domain_add.add_argument("--zone", help="the zone whose store holds the domain and all of its accounts "
                            "(default: the first zone)")
    domain.add_parser("show", help="a domain's rules and zone as JSON").add_argument("domain")
    account = sub.add_parser("account", help="accounts").add_subparsers(dest="subcommand", required=True)
    account_add = account.add_parser("add", help="create an account, or set its password, and add aliases")
    account_add.add_argument("account", help="USER@DOMAIN")
    account_add.add_argument("--password", required=True, help="at least 8 characters")
    account_add.add_argument("--alias", action="extend", nargs="+", metavar="ALIAS", help="an alias in its domain")
    account.add_parser("remove", help="remove an account, its aliases, legs, registrations and subscriptions "
                       "(its watchers get a final NOTIFY, reason noresource)"
                       ).add_argument("account", help="USER@DOMAIN")
    account.add_parser("import", help="accounts from CSV (user@domain,password,alias1;alias2) or JSON lines"
                       ).add_argument("file")
    alias = sub.add_parser("alias", help="aliases of accounts").add_subparsers(dest="subcommand", required=True)
    alias_add = alias.add_parser("add", help="add aliases to an account")
    alias_add.add_argument("account", help="USER@DOMAIN")
    alias_add.add_argument("aliases", nargs="+", metavar="ALIAS")
    alias.add_parser("remove", help="remove an alias").add_argument("alias", help="ALIAS@DOMAIN")
    return account, alias


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "domain add": cmd_domain_add, "domain set": cmd_domain_set, "domain show": cmd_domain_show,
    "account add": cmd_account_add, "account remove": cmd_account_remove, "account import": cmd_account_import,
    "alias add": cmd_alias_add, "alias remove": cmd_alias_remove,
}
