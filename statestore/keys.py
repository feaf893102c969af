"""The etcd key layout, written once.

    /blf/domains/<domain>                       provisioned domain and its rules (could-call)
    /blf/accounts/<user>@<domain>               account (HA1s, its aliases)
    /blf/aliases/<domain>/<alias>               alias of an account in that domain -> its AOR
    /blf/instances/<name>                       live instance, under its lease
    /blf/legs/<account>/<instance>/<leg_id>     call leg, under the serving instance's lease
    /blf/regs/<account>/<binding_id>            registered contact, under a lease of its expiry
    /blf/pubs/<account>/<etag>                  publication (RFC 3903), until its expiry
    /blf/authz/<presentity>                     who may watch its presence (policy, decisions)
    /blf/profiles/<account>                     rendering profile of that watcher's phones
    /blf/uaprofiles                             rendering profiles by User-Agent pattern
    /blf/subs/<sub_id>                          subscription (survives its instance)
    /blf/watchers/<watcher>/<sub_id>            index: a subscription of that watcher
    /blf/watched/<presentity>/<sub_id>          index: a subscription to that presentity
    /blf/epoch                                  ownership epoch counter of the notifiers
    /blf/reset/<account>                        `blfctl reset`: its watchers get the full state
                                                again (a put the notifiers watch, short lease)
    /blf/maintenance                            last compaction and defragmentation by
                                                `blfctl store maintain` (statestore.maintenance)

The two index keys of a subscription are written and deleted in the same transaction as
the subscription itself, so that caps are counted without reading every subscription.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "/blf/"
DOMAINS = ROOT + "domains/"
ACCOUNTS = ROOT + "accounts/"
ALIASES = ROOT + "aliases/"
INSTANCES = ROOT + "instances/"
LEGS = ROOT + "legs/"
REGS = ROOT + "regs/"
SUBS = ROOT + "subs/"
PUBS = ROOT + "pubs/"
AUTHZ = ROOT + "authz/"
PROFILES = ROOT + "profiles/"
UA_PROFILES = ROOT + "uaprofiles"
WATCHERS = ROOT + "watchers/"
WATCHED = ROOT + "watched/"
RESET = ROOT + "reset/"
# Bumped by compare-and-swap when a notifier starts or takes subscriptions over; NOTIFY
# CSeqs are numbered from it (statestore.domain.subscription.notify_numbers).
EPOCH = ROOT + "epoch"
# What `blfctl store maintain` did last (statestore.maintenance.MaintenanceRecord).
MAINTENANCE = ROOT + "maintenance"


def domain(name: str) -> str:
    return DOMAINS + name


def account(aor: str) -> str:
    return ACCOUNTS + aor


def aliases_in(domain_name: str) -> str:
    return f"{ALIASES}{domain_name}/"


def alias(domain_name: str, alias_name: str) -> str:
    return f"{ALIASES}{domain_name}/{alias_name}"


def instance(name: str) -> str:
    return INSTANCES + name


def legs_of(aor: str) -> str:
    return f"{LEGS}{aor}/"


def leg(aor: str, instance_name: str, leg_id: str) -> str:
    return f"{LEGS}{aor}/{instance_name}/{leg_id}"


def regs_of(aor: str) -> str:
    return f"{REGS}{aor}/"


def reg(aor: str, binding_id: str) -> str:
    return f"{REGS}{aor}/{binding_id}"


def pubs_of(aor: str) -> str:
    return f"{PUBS}{aor}/"


def pub(aor: str, etag: str) -> str:
    return f"{PUBS}{aor}/{etag}"


def authz(presentity: str) -> str:
    return AUTHZ + presentity


def profile(aor: str) -> str:
    return PROFILES + aor


def sub(sub_id: str) -> str:
    return SUBS + sub_id


def reset(aor: str) -> str:
    return RESET + aor


def subs_of_watcher(watcher: str) -> str:
    return f"{WATCHERS}{watcher}/"


def watcher_sub(watcher: str, sub_id: str) -> str:
    return f"{WATCHERS}{watcher}/{sub_id}"


def subs_of_presentity(presentity: str) -> str:
    return f"{WATCHED}{presentity}/"


def presentity_sub(presentity: str, sub_id: str) -> str:
    return f"{WATCHED}{presentity}/{sub_id}"


@dataclass(frozen=True)
class ParsedKey:
    """What a key under ROOT names: its kind and the account it belongs to, if any (for
    an alias: the alias, and its domain in `account`)."""

    kind: str
    name: str
    account: str = ""


def parse(key: str) -> ParsedKey | None:
    if not key.startswith(ROOT):
        return None
    kind, _, rest = key[len(ROOT):].partition("/")
    if kind in ("legs", "regs", "pubs"):
        aor, _, name = rest.partition("/")
        return ParsedKey(kind, name, aor)
    if kind == "aliases":
        domain_name, _, alias_name = rest.partition("/")  # a domain has no "/", an alias neither
        return ParsedKey(kind, alias_name, domain_name)
    if kind in ("watchers", "watched"):
        aor, _, sub_id = rest.rpartition("/")  # the sub id is one segment; the aor is the rest
        return ParsedKey(kind, sub_id, aor)
    if kind in ("domains", "accounts", "instances", "subs", "authz", "profiles", "reset"):
        return ParsedKey(kind, rest)
    return None
