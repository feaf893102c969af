"""blfctl why | subs | legs | regs | reset: asking the store why a lamp shows what it shows
(docs/inspect.md). Each reads only what it shows: one account's keys, or one page.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from statestore import codec, keys
from statestore.cli_notified import last_notifies
from statestore.cli_zones import store_for, stores
from statestore.domain import directory, why
from statestore.domain.directory import DirectoryError, UnknownAccount
from statestore.domain.model import Binding, Leg, Subscription
from statestore.domain.notified import LastNotify
from statestore.domain.subscription import LEGACY_PACKAGES
from statestore.store import KeyValue, StateStore

# Keys per page of subs|legs|regs unless --limit says otherwise.
PAGE = 50
# The reset request's lease: long enough for every notifier's watch to deliver the put.
RESET_TTL = 10


def resolve(store: StateStore, name: str) -> str:
    """The account `name` (USER@DOMAIN) is, or the one it is an alias of; UnknownAccount."""
    user, sep, host = name.rpartition("@")
    if not sep or not user:
        raise DirectoryError(f"{name!r} is not USER@DOMAIN")
    aor = f"{user}@{directory.domain(host)}"
    if store.get_account(aor) is not None:
        return aor
    owner = store.resolve_alias(directory.domain(host), user)
    if owner is None:
        raise UnknownAccount(aor)
    return owner


def opened(args: argparse.Namespace, name: str) -> tuple[StateStore, str]:
    """The store of `name`'s zone and the account it names."""
    store = store_for(args, name.rpartition("@")[2].lower())
    return store, resolve(store, name)


# --- why ------------------------------------------------------------------------------------


def facts_of(store: StateStore, aor: str, asked: str, now: float) -> why.Facts:
    legs = store.legs_of(aor)
    live = store.instances()
    instances = {}
    for name, info in live.items():
        announced = info.get("packages")
        packages = frozenset(announced) if isinstance(announced, list) else LEGACY_PACKAGES
        lease = None
        if any(leg.instance == name for leg in legs):
            found = store.instance_lease(name)
            lease = None if found is None else why.Lease(found.granted_ttl, found.remaining)
        metrics = info.get("metrics")
        instances[name] = why.Instance(packages, lease, metrics if isinstance(metrics, str) else None)
    return why.Facts(
        account=aor, legs=tuple(legs), bindings=tuple(store.bindings_of(aor)),
        publications=tuple(pub for pub, _ in store.publications_of(aor)),
        subscriptions=tuple(store.subscriptions_to(aor)), instances=instances, now=now, asked=asked,
        leg_keys={leg.leg_id: keys.leg(aor, leg.instance, leg.leg_id) for leg in legs},
    )


def describe(verdict: why.Verdict) -> list[str]:
    view = verdict.to_dict()
    head = f"{view['account']}: {view['lamp']}"
    if view["alias"]:
        head += f" (asked as {view['asked']}, an alias of {view['account']})"
    lines = [head, *(f"  {event:<9} {state}" for event, state in view["packages"].items()), "why:"]
    lines += [f"  - {reason['text']}" for reason in view["reasons"]]
    lines += ["what would change it:", *(f"  - {change}" for change in view["changes"])]
    lines.append(f"watchers ({len(view['subscriptions'])}):")
    for sub in view["subscriptions"]:
        first = sub["first_notify"]
        owner = f"owner {sub['owner']} ({'live' if sub['owner_live'] else 'gone'})"
        lines.append(
            f"  - {sub['watcher']} {sub['event']} {sub['status']}, expires in {sub['expires_in']} s, {owner}, "
            f"NOTIFYs sent by {sub['responsible'] or 'no live instance'}; {last_notify_text(sub)} "
            f"(first at epoch {first['epoch']}: CSeq {first['cseq']}, version {first['version']}; "
            f"{sub['notify_timeouts']} timeouts)"
        )
    return lines


def last_notify_text(sub: dict[str, Any]) -> str:
    """`last NOTIFY: version V, CSeq C, sent HH:MM:SS by ksN, answered 200` (UTC), or why it
    is not known."""
    last = sub["last_notify"]
    if last is None:
        return f"last NOTIFY: {sub['last_notify_unknown']}: not known"
    shown = LastNotify(last["version"], last["cseq"], last["sent_at"], last["sent_by"], last["answer"])
    sent = time.strftime("%H:%M:%S", time.gmtime(shown.sent_at))
    return f"last NOTIFY: version {shown.version}, CSeq {shown.cseq}, sent {sent} by {shown.sent_by}, " \
        f"{shown.answer_text()}"


def cmd_why(args: argparse.Namespace) -> int:
    store, aor = opened(args, args.account)
    facts = facts_of(store, aor, args.account, time.time())
    verdict = why.explain(facts)
    # The last NOTIFYs: asked of the responsible instances, once the verdict says which.
    addresses = {name: instance.metrics for name, instance in facts.instances.items()}
    asked = last_notifies([(w.subscription.sub_id, w.responsible) for w in verdict.watchers], addresses)
    verdict = why.explain(replace(facts, notified=asked))
    print(json.dumps(verdict.to_dict(), indent=2) if args.json else "\n".join(describe(verdict)))
    return 0


# --- subs | legs | regs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    """One kind of record as `subs|legs|regs` show it: its columns and how a row is made."""

    columns: tuple[str, ...]
    row: Callable[[dict[str, Any]], tuple[str, ...]]


LISTINGS = {
    "legs": Listing(("ACCOUNT", "INSTANCE", "LEG", "STATE", "DIRECTION", "CALL-ID", "REMOTE"), lambda d: (
        d["account"], d["instance"], d["leg_id"], d["state"], d["direction"], d["call_id"], d["remote"]["identity"])),
    "regs": Listing(("ACCOUNT", "INSTANCE", "CONTACT", "EXPIRES-AT", "RECEIVED"), lambda d: (
        d["account"], d["instance"], d["contact"], f"{d['expires_at']:.0f}", d["received"] or "-")),
    "subs": Listing(("PRESENTITY", "WATCHER", "EVENT", "STATUS", "OWNER", "EXPIRES-AT", "SUB-ID"), lambda d: (
        d["presentity"], d["watcher"], d["event"], d["status"], d["owner"], f"{d['expires_at']:.0f}", d["sub_id"])),
}


def _decoded(kind: str, item: KeyValue) -> dict[str, Any]:
    record: Leg | Binding | Subscription
    if kind == "legs":
        record = codec.decode_leg(item.value)
    elif kind == "regs":
        record = codec.decode_binding(item.value)
    else:
        record = codec.decode_subscription(item.value)
    return {"key": item.key, **record.to_dict()}


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    cursor: str | None  # the last key read: the next page starts after it (None: no more)


def _read(store: StateStore, prefix: str, after: str, limit: int) -> tuple[list[KeyValue], str | None]:
    items, more = store.page(prefix, after, limit)
    return items, items[-1].key if more and items else None


def page_of_account(store: StateStore, kind: str, aor: str, after: str, limit: int) -> Page:
    """A page of one account's records: its prefix (legs, regs), or for subs a page of the
    presentity's index (keys.WATCHED) and then each subscription it names."""
    if kind != "subs":
        items, cursor = _read(store, keys.legs_of(aor) if kind == "legs" else keys.regs_of(aor), after, limit)
        return Page([_decoded(kind, item) for item in items], cursor)
    index, cursor = _read(store, keys.subs_of_presentity(aor), after, limit)
    reads = [(entry.key, store.get_subscription(entry.key.rpartition("/")[2])) for entry in index]
    return Page([{**read[0].to_dict(), "key": key} for key, read in reads if read is not None], cursor)


def page_of_instance(store: StateStore, kind: str, name: str, after: str, limit: int) -> Page:
    """A page of one instance's records. Legs: the keys its lease holds (etcd's lease
    information, keys only), then each leg of the page. Registrations and subscriptions
    are not keyed by instance: a page of the whole kind is read and filtered, so a page may
    show fewer than `limit` rows (or none) while more follow."""
    if kind == "legs":
        lease = store.instance_lease(name)
        held = [] if lease is None else sorted(key for key in store.legs_on(lease.lease_id).values() if key > after)
        rows = [_decoded(kind, item) for key in held[:limit] for item in store.page(key, "", 1)[0]]
        return Page(rows, held[limit - 1] if len(held) > limit else None)
    prefix, field = (keys.REGS, "instance") if kind == "regs" else (keys.SUBS, "owner")
    items, cursor = _read(store, prefix, after, limit)
    return Page([row for row in (_decoded(kind, item) for item in items) if row[field] == name], cursor)


def page_of_all(store: StateStore, kind: str, after: str, limit: int) -> Page:
    items, cursor = _read(store, {"legs": keys.LEGS, "regs": keys.REGS, "subs": keys.SUBS}[kind], after, limit)
    return Page([_decoded(kind, item) for item in items], cursor)


def cmd_list(args: argparse.Namespace) -> int:
    kind, limit = args.command, args.limit
    if limit < 1:
        raise DirectoryError("--limit must be at least 1")
    if args.account and args.instance:
        raise DirectoryError("give ACCOUNT or --instance NAME, not both")
    if args.account:
        store, aor = opened(args, args.account)
        page = page_of_account(store, kind, aor, args.after, limit)
    else:
        zones = stores(args)
        store = zones.store(zones.first)
        page = (page_of_instance(store, kind, args.instance, args.after, limit) if args.instance
                else page_of_all(store, kind, args.after, limit))
    if args.json:
        print(json.dumps({"kind": kind, "items": page.rows, "next": page.cursor}, indent=2))
        return 0
    listing = LISTINGS[kind]
    print("\n".join(table(listing.columns, [listing.row(row) for row in page.rows])))
    if page.cursor:
        print(f"next: --after {page.cursor}")
    return 0


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=True)]
    return [" ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in (columns, *rows)]


# --- reset ----------------------------------------------------------------------------------


def cmd_reset(args: argparse.Namespace) -> int:
    store, aor = opened(args, args.account)
    subscriptions = store.subscriptions_to(aor)
    if not subscriptions:
        print(f"reset {aor}: no watchers")
        return 0
    store.request_reset(aor, RESET_TTL)
    verdict = why.explain(facts_of_watchers(store, aor, subscriptions))
    by = Counter(watcher.responsible or "no live instance" for watcher in verdict.watchers)
    count = len(subscriptions)
    print(f"reset {aor}: the full state goes again to {count} watcher{'s' if count > 1 else ''}, sent by "
          + ", ".join(f"{name} ({number})" for name, number in sorted(by.items())))
    return 0


def facts_of_watchers(store: StateStore, aor: str, subscriptions: Sequence[Subscription]) -> why.Facts:
    """Only what says who sends each watcher's NOTIFYs (no legs, no leases read)."""
    live = store.instances()
    instances = {
        name: why.Instance(frozenset(info["packages"]) if isinstance(info.get("packages"), list) else LEGACY_PACKAGES)
        for name, info in live.items()
    }
    return why.Facts(aor, (), (), (), tuple(subscriptions), instances, 0.0)


def add_parsers(sub: Any) -> None:
    """Register why, subs, legs, regs and reset on blfctl's subcommands."""
    parser = sub.add_parser("why", help="the lamp an account's watchers see now, why, and what would change it "
                            "(exit 1: no such account)")
    parser.add_argument("account", help="USER@DOMAIN or ALIAS@DOMAIN")
    parser.add_argument("--json", action="store_true")
    for kind, what in (("subs", "subscriptions to"), ("legs", "call legs of"), ("regs", "registrations of")):
        listing = sub.add_parser(kind, help=f"{what} an account, of an instance, or all, a page at a time")
        listing.add_argument("account", nargs="?", help="USER@DOMAIN or ALIAS@DOMAIN")
        listing.add_argument("--instance", metavar="NAME", help="only the records of this instance")
        listing.add_argument("--limit", type=int, default=PAGE, help=f"keys per page (default {PAGE})")
        listing.add_argument("--after", default="", metavar="KEY", help="the `next` cursor of the previous page")
        listing.add_argument("--json", action="store_true")
    sub.add_parser("reset", help="send every watcher of the account its full state again, changing no state"
                   ).add_argument("account", help="USER@DOMAIN or ALIAS@DOMAIN")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "why": cmd_why, "subs": cmd_list, "legs": cmd_list, "regs": cmd_list, "reset": cmd_reset,
}
