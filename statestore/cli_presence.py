"""blfctl presence|watcher|profile: who may watch a presentity's presence, and how
watchers' phones want their bodies shaped (statestore.presence_admin does the writes).

Quiet on success (exit 0); exit 1 for an unknown account; exit 2 for malformed input: a
malformed account, an unknown profile name, a User-Agent regex that does not compile.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from statestore import presence_admin
from statestore.cli_errors import Refused
from statestore.cli_zones import domain_of, store_for, stores
from statestore.domain import directory, profiles
from statestore.domain.authorization import Decision, Policy
from statestore.etcd_store import EtcdStore
from statestore.store import StateStore

DECISIONS = {"approve": Decision.APPROVED, "deny": Decision.DENIED, "block": Decision.BLOCKED}


class Invalid(Exception):
    """Malformed input (exit code 2)."""


def _store(args: argparse.Namespace, aor: str) -> EtcdStore:
    """The store of the zone of `aor`'s domain."""
    return store_for(args, domain_of(aor))


def _aor(text: str) -> str:
    """USER@DOMAIN, or a watcher's sip:USER@DOMAIN, checked (domain lowercased)."""
    if text[:4].lower() == "sip:":
        text = text[4:]
    try:
        user, domain = directory.aor(text)
    except directory.DirectoryError as exc:
        raise Invalid(str(exc)) from exc
    return f"{user}@{domain}"


def _existing(store: StateStore, text: str) -> str:
    aor = _aor(text)
    if store.get_account(aor) is None:
        raise Refused(f"no account {aor}")
    return aor


def cmd_presence_policy(args: argparse.Namespace) -> int:
    presentity = _aor(args.account)
    if presence_admin.set_policy(_store(args, presentity), presentity, Policy(args.policy), time.time()) is None:
        raise Refused(f"no account {presentity}")
    return 0


def cmd_watcher_decide(args: argparse.Namespace) -> int:
    presentity, watcher = _aor(args.account), _aor(args.watcher)
    decision = DECISIONS[args.subcommand]
    if presence_admin.decide(_store(args, presentity), presentity, watcher, decision, time.time()) is None:
        raise Refused(f"no account {presentity}")
    return 0


def cmd_watcher_list(args: argparse.Namespace) -> int:
    store = _store(args, _aor(args.account))
    presentity = _existing(store, args.account)
    view = presence_admin.watchers(
        presentity, store.authorization(presentity), store.subscriptions_to(presentity), time.time()
    )
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print(f"{presentity}: policy {view['policy']}")
    columns = ("watcher", "event", "status", "event_reason", "expires", "decision", "id")
    table = [[str(column).upper() for column in columns]]
    table += [["-" if row[column] in ("", None) else str(row[column]) for column in columns]
              for row in view["watchers"]]
    widths = [max(len(line[index]) for line in table) for index in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def _names(words: Sequence[str]) -> tuple[str, ...]:
    """Profile names as given (each once, in order); Invalid lists the valid ones."""
    try:
        profiles.parse_profile(words)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    return tuple(dict.fromkeys(name.strip() for name in words if name.strip()))


def _pattern(text: str) -> str:
    try:
        return profiles.check_pattern(text)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def _target(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """(ACCOUNT, profile names) of `profile set|clear`; ACCOUNT None with --user-agent."""
    if args.user_agent is not None:
        return None, list(args.words)
    if not args.words:
        raise Invalid("give ACCOUNT or --user-agent REGEX")
    return args.words[0], list(args.words[1:])


def cmd_profile_set(args: argparse.Namespace) -> int:
    account, words = _target(args)
    names = _names(words)
    if account is None:
        pattern = _pattern(args.user_agent)
        _every_zone(args, lambda store: store.update_ua_profile_rules(
            lambda rules: profiles.with_rule(rules, pattern, names)))
    elif not _store(args, _aor(account)).set_profile(_aor(account), names):
        raise Refused(f"no account {_aor(account)}")
    return 0


def cmd_profile_clear(args: argparse.Namespace) -> int:
    account, words = _target(args)
    if words:
        raise Invalid(f"profile clear takes no profile names: {' '.join(words)}")
    if account is None:
        pattern = args.user_agent
        _every_zone(args, lambda store: store.update_ua_profile_rules(
            lambda rules: profiles.without_rule(rules, pattern)))
    elif not _store(args, _aor(account)).set_profile(_aor(account), None):
        raise Refused(f"no account {_aor(account)}")
    return 0


def _every_zone(args: argparse.Namespace, change: Callable[[EtcdStore], object]) -> None:
    """The User-Agent rules are the deployment's, not a domain's: kept alike in every zone."""
    zones = stores(args)
    for zone in zones.zones:
        change(zones.store(zone))


def cmd_profile_show(args: argparse.Namespace) -> int:
    zones = stores(args)
    store = zones.store(zones.first) if args.account is None else _store(args, _aor(args.account))
    view: dict[str, Any] = {"rules": [[pattern, list(names)] for pattern, names in store.ua_profile_rules()]}
    if args.account is not None:
        aor = _existing(store, args.account)
        profile = store.profile_of(aor)
        view |= {"account": aor, "profile": None if profile is None else list(profile)}
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    print("User-Agent rules (the first that matches applies):" if view["rules"] else "no User-Agent rules")
    for pattern, names in view["rules"]:
        print(f"  {pattern!r:<30} {', '.join(names) or '(none)'}")
    if "account" in view:
        own = view["profile"]
        shown = "not set (the User-Agent rules apply)" if own is None else (", ".join(own) or "(none)")
        print(f"{view['account']}: {shown}")
    return 0


def add_parsers(sub: Any) -> None:
    """The presence, watcher and profile commands, on blfctl's subcommand parsers."""
    presence = sub.add_parser("presence", help="who may watch a presentity's presence").add_subparsers(
        dest="subcommand", required=True
    )
    policy_help = ("allow: every watcher is active at once (the default); ask: a new watcher is pending until "
                   "approved. Switching to allow approves every pending presence subscription (a blocked watcher's "
                   "aside)")
    policy = presence.add_parser("policy", help=policy_help, description=policy_help)
    policy.add_argument("account", help="the presentity, USER@DOMAIN")
    policy.add_argument("policy", choices=[p.value for p in Policy])
    watcher = sub.add_parser("watcher", help="a presentity's watchers and its decisions about them").add_subparsers(
        dest="subcommand", required=True
    )
    helps = {
        "approve": "remembered; the watcher's pending presence subscriptions become active",
        "deny": "this time only: its presence subscriptions end (reason=rejected); nothing is remembered",
        "block": "remembered; its presence subscriptions end (reason=rejected), later SUBSCRIBEs get 403",
    }
    for name, text in helps.items():
        decide = watcher.add_parser(name, help=text, description=text)
        decide.add_argument("account", help="the presentity, USER@DOMAIN")
        decide.add_argument("watcher", help="the watcher's account, [sip:]USER@DOMAIN")
    listing = watcher.add_parser("list", help="every subscription to the account and the decisions stored")
    listing.add_argument("account", help="the presentity, USER@DOMAIN")
    listing.add_argument("--json", action="store_true")
    profile = sub.add_parser(
        "profile", help="rendering profiles of watchers' phones (from their next SUBSCRIBE or refresh)"
    ).add_subparsers(dest="subcommand", required=True)
    known = ", ".join(sorted(profiles.PROFILES))
    for name, text in (("set", f"set ACCOUNT's profile, or a User-Agent rule's (names: {known})"),
                       ("clear", "clear ACCOUNT's profile, or remove a User-Agent rule")):
        usage = f"blfctl profile {name} (ACCOUNT | --user-agent REGEX)" + (" [NAME ...]" if name == "set" else "")
        description = f"{text}; it applies to a phone's subscriptions from their next SUBSCRIBE or refresh"
        parser = profile.add_parser(name, help=text, description=description, usage=usage)
        parser.add_argument("words", nargs="*", metavar="ACCOUNT NAME", help="USER@DOMAIN, then profile names")
        parser.add_argument("--user-agent", metavar="REGEX", help="a rule for phones whose User-Agent matches")
    show = profile.add_parser("show", help="the User-Agent rules, and ACCOUNT's profile if given")
    show.add_argument("account", nargs="?")
    show.add_argument("--json", action="store_true")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "presence policy": cmd_presence_policy,
    "watcher approve": cmd_watcher_decide, "watcher deny": cmd_watcher_decide, "watcher block": cmd_watcher_decide,
    "watcher list": cmd_watcher_list,
    "profile set": cmd_profile_set, "profile clear": cmd_profile_clear, "profile show": cmd_profile_show,
}
