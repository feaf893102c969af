"""blfctl: the lab, provisioning and inspection of the StateStore."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from statestore import (
    cli_accounts,
    cli_env,
    cli_errors,
    cli_inspect,
    cli_lab,
    cli_metrics,
    cli_presence,
    cli_watch,
    lab_run,
    maintenance,
    member_probe,
    zone_health,
)
from statestore.cli_errors import Refused
from statestore.cli_zones import store_for, stores, zones_of
from statestore.domain import digest, directory, nat
from statestore.domain.directory import AccountEntry, DirectoryError, NameTaken, UnknownAccount
from statestore.domain.errors import Contended, StoreUnavailable
from statestore.domain.lamp import lamp_state
from statestore.domain.model import Account
from statestore.domain.policy import DomainRules
from statestore.etcd_store import EtcdStore
from statestore.lab import Lab, LabError
from statestore.store import StateStore
from statestore.zones import Zones

DEMO_DOMAIN = "example.com"
# `blfctl run` looks this often whether the store needs maintenance (`store maintain --if-needed`).
LAB_MAINTAIN_SECONDS = 300.0
DEMO_ACCOUNTS = {"alice": "alice-secret", "boris": "boris-secret", "catherine": "catherine-secret"}


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blfctl", description="Clustered BLF lab and StateStore tool", epilog=cli_errors.EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--etcd", help="zone z1's etcd members, host:port[,host:port...] (default: BLF_ZONES, "
                        "else the lab's zones when a lab is up, else BLF_ETCD or 127.0.0.1:2379)")
    sub = parser.add_subparsers(dest="command", required=True)

    cli_lab.add_parsers(sub)

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
    cli_accounts.add_parsers(account, alias)
    show_parser = sub.add_parser("show", help="integrated state, legs and subscriptions of an account")
    show_parser.add_argument("account", help="USER@DOMAIN, or ALIAS@DOMAIN for the account it reaches")
    show_parser.add_argument("--json", action="store_true")
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
    cli_presence.add_parsers(sub)
    cli_inspect.add_parsers(sub)
    cli_watch.add_parser(sub)
    cli_metrics.add_parsers(sub)
    run = sub.add_parser("run", help="run the lab in the foreground with a demo domain")
    run.add_argument("--instances", type=int, default=2)
    run.add_argument("--lease-ttl", type=int, default=int(os.environ.get("BLF_LEASE_TTL", "6")))
    cli_lab.add_config_argument(run)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "lab": cli_lab.cmd_lab, "show": cmd_show, "run": cmd_run,
    "domain add": cmd_domain_add, "domain set": cmd_domain_set, "domain show": cmd_domain_show,
    "account add": cmd_account_add, "account remove": cmd_account_remove, "account import": cmd_account_import,
    "alias add": cmd_alias_add, "alias remove": cmd_alias_remove,
    "store health": cmd_store_health, "store maintain": cmd_store_maintain,
    **cli_presence.COMMANDS, **cli_accounts.COMMANDS,
    **cli_inspect.COMMANDS,
    "watch": cli_watch.cmd_watch,
    **cli_metrics.COMMANDS,
}


def main(argv: list[str] | None = None) -> int:
    """Every error of every command is reported here, one way: `blfctl: <message>` on
    stderr and the exit code of statestore.cli_errors (listed in `blfctl --help`)."""
    try:
        cli_env.load_env_file(os.environ)  # before the parser: its defaults read the environment
    except cli_env.EnvFileError as exc:
        return _fail(str(exc), cli_errors.USAGE)
    args = build_parser().parse_args(argv)
    command = f"{args.command} {args.subcommand}" if getattr(args, "subcommand", None) else args.command
    try:
        return COMMANDS[command](args)
    except DirectoryError as exc:
        # Bad names are refused before anything is written (2); what the store refuses
        # (an alias taken, an unknown account) is 1.
        return _fail(str(exc), cli_errors.REFUSED if isinstance(exc, NameTaken | UnknownAccount) else cli_errors.USAGE)
    except (Refused, LabError) as exc:
        return _fail(str(exc), cli_errors.REFUSED)
    except Contended as exc:
        return _fail(f"{exc}; try again", cli_errors.REFUSED)
    except (cli_presence.Invalid, cli_errors.Malformed) as exc:
        return _fail(str(exc), cli_errors.USAGE)
    except StoreUnavailable as exc:
        return _fail(cli_errors.unreachable_message(exc.endpoint, str(exc)), cli_errors.UNREACHABLE)


def _fail(message: str, code: int) -> int:
    print(f"blfctl: {message}", file=sys.stderr)
    return code

if __name__ == "__main__":
    sys.exit(main())
