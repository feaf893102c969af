"""The directory's names and rules, checked before anything is written (issue 7).

An account is `user@domain`; an alias is another user part of the same domain that
reaches that account (`101`, `+15551230101`, `sales-desk`). Number forms are plain
strings here: a domain's rules say which forms are equal (policy.NumberRule), and they
are applied where requests are resolved (statestore.domain.identity), not here.
A domain's rules are policy.DomainRules; `rules_to_record`/`rules_from_record` are their
stored form.

Names become etcd key segments (statestore.keys), so "/" is never allowed; the other
limits keep them plain SIP user parts and host names (RFC 3261 §25.1), without the
characters (`;`, `?`, `,`, `%`) that make a request URI ambiguous to read back.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from statestore.domain.policy import DomainRules, NumberRule

MAX_USER = 64
MAX_DOMAIN = 253
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$]+")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class DirectoryError(ValueError):
    """A name or request the directory refuses; the message says which and why."""


class NameTaken(DirectoryError):
    """A user part of a domain is already another account's (as an alias or the account)."""

    def __init__(self, name: str, domain: str, owner: str) -> None:
        super().__init__(f"alias {name}@{domain} is taken by {owner}")
        self.name, self.domain, self.owner = name, domain, owner


class UnknownAccount(DirectoryError):
    def __init__(self, aor: str) -> None:
        super().__init__(f"no account {aor}")
        self.aor = aor


def _user_part(kind: str, name: str) -> str:
    if not name:
        raise DirectoryError(f"{kind} is empty")
    if len(name) > MAX_USER:
        raise DirectoryError(f"{kind} {name!r} is longer than {MAX_USER} characters")
    if not _USER.fullmatch(name):
        raise DirectoryError(
            f"{kind} {name!r} has a character other than letters, digits and - _ . ! ~ * ' ( ) & = + $"
        )
    return name


def user(name: str) -> str:
    """A valid account user part, unchanged (SIP user parts are case-sensitive)."""
    return _user_part("user", name)


def alias(name: str) -> str:
    """A valid alias, unchanged: the same characters as a user part (it is one)."""
    return _user_part("alias", name)


def domain(name: str) -> str:
    """A valid domain, lowercased (host names are case-insensitive, RFC 3261 §19.1.4)."""
    lowered = name.lower()
    if not lowered:
        raise DirectoryError("domain is empty")
    if len(lowered) > MAX_DOMAIN:
        raise DirectoryError(f"domain {name!r} is longer than {MAX_DOMAIN} characters")
    for label in lowered.split("."):
        if not _LABEL.fullmatch(label):
            raise DirectoryError(
                f"domain {name!r}: label {label!r} must be 1-63 letters, digits or '-', not starting or ending with '-'"
            )
    return lowered


def aor(text: str) -> tuple[str, str]:
    """USER@DOMAIN split and checked: (user, lowercased domain)."""
    name, sep, host = text.rpartition("@")
    if not sep:
        raise DirectoryError(f"{text!r} is not USER@DOMAIN")
    return user(name), domain(host)


def alias_address(text: str) -> tuple[str, str]:
    """ALIAS@DOMAIN split and checked: (alias, lowercased domain)."""
    name, sep, host = text.rpartition("@")
    if not sep:
        raise DirectoryError(f"{text!r} is not ALIAS@DOMAIN")
    return alias(name), domain(host)


def aliases(names: Iterable[str], account_user: str) -> list[str]:
    """Valid aliases of the account `account_user`, each once, in the order given."""
    found: list[str] = []
    for name in names:
        alias(name)
        if name == account_user:
            raise DirectoryError(f"alias {name!r} is the account's own user")
        if name not in found:
            found.append(name)
    if len(found) > MAX_ALIASES:
        raise DirectoryError(f"more than {MAX_ALIASES} aliases in one request")
    return found


def rules_to_record(rules: DomainRules) -> dict[str, Any]:
    """The stored value of a domain's rules: the domain itself is implied in `may_call`
    and `accept_from` and left out of them (as records have always been written); names
    sorted, so one set of rules is always one value."""
    own = rules.name
    return {
        "domain": own,
        "may_call": sorted(rules.may_call - {own}),
        "accept_from": None if rules.accept_from is None else sorted(rules.accept_from - {own}),
        "numbers": {
            "strip_plus": rules.numbers.strip_plus,
            "prefixes": [[a, b] for a, b in rules.numbers.prefixes],
        },
    }


def rules_from_record(data: dict[str, Any]) -> DomainRules:
    """A domain's rules from its stored value. A value written before rules existed
    (`{"domain": ...}`) reads as the defaults: may call itself only, accepts from all,
    no equivalent number forms. Fields this version does not know are ignored."""
    accept_from = data.get("accept_from")
    numbers = data.get("numbers") or {}
    return DomainRules(
        name=str(data["domain"]),
        may_call=frozenset(str(name) for name in data.get("may_call") or ()),
        accept_from=None if accept_from is None else frozenset(str(name) for name in accept_from),
        numbers=NumberRule(
            strip_plus=bool(numbers.get("strip_plus", False)),
            prefixes=tuple((str(a), str(b)) for a, b in numbers.get("prefixes") or ()),
        ),
    )


def number_prefix(text: str) -> tuple[str, str]:
    """A number prefix rule `A=B` (`0=+44`, `=+1`): two different prefixes of an optional
    '+' and digits, one of them may be empty (see policy.NumberRule)."""
    a, sep, b = text.partition("=")
    if not sep:
        raise DirectoryError(f"number prefix {text!r} is not A=B (e.g. 0=+44 or =+1)")
    try:
        NumberRule(prefixes=((a, b),))
    except ValueError as exc:
        raise DirectoryError(f"number prefix {text!r}: two different prefixes of '+' and digits") from exc
    return a, b


def domain_rules(
    name: str,
    may_call: Sequence[str] = (),
    accept_from: Sequence[str] | None = None,
    strip_plus: bool = False,
    prefixes: Sequence[str] = (),
) -> DomainRules:
    """Rules with every name checked and lowercased (the domain itself is implied in
    `may_call`), `prefixes` given as `A=B` texts (number_prefix), each pair once."""
    own = domain(name)
    pairs = tuple(dict.fromkeys(number_prefix(text) for text in prefixes))
    return DomainRules(
        own,
        frozenset(domain(other) for other in may_call),
        None if accept_from is None else frozenset(domain(other) for other in accept_from),
        NumberRule(strip_plus=strip_plus, prefixes=pairs),
    )


MAX_ALIASES = 50  # per request: an account's write and its checks fit one etcd transaction


@dataclass(frozen=True)
class AccountEntry:
    """One account to write: its record (None: keep the stored one, it must exist) and
    aliases to add to it."""

    aor: str
    record: dict[str, Any] | None
    aliases: tuple[str, ...] = ()

    @property
    def user(self) -> str:
        return self.aor.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.aor.rpartition("@")[2]


@dataclass(frozen=True)
class Found:
    """What the store holds for the names an AccountEntry touches."""

    record: dict[str, Any] | None  # the stored account value
    user_alias_owner: str | None  # who holds the account's user as an alias
    alias_owners: dict[str, str]  # alias -> the AOR holding it
    accounts_named: frozenset[str]  # aliases that are an account's user in the domain


def merged_record(entry: AccountEntry, found: Found) -> dict[str, Any]:
    """The account value to write: the new (or stored) record with every alias it had
    and the new ones; raises when a name belongs to another account."""
    if entry.record is None and found.record is None:
        raise UnknownAccount(entry.aor)
    if found.user_alias_owner not in (None, entry.aor):
        raise NameTaken(entry.user, entry.domain, str(found.user_alias_owner))
    for name in entry.aliases:
        if name in found.accounts_named:
            raise NameTaken(name, entry.domain, f"{name}@{entry.domain}")
        owner = found.alias_owners.get(name)
        if owner is not None and owner != entry.aor:
            raise NameTaken(name, entry.domain, owner)
    stored = found.record or {}
    had = [str(name) for name in stored.get("aliases", [])]
    record = dict(entry.record if entry.record is not None else stored)
    record["aliases"] = had + [name for name in entry.aliases if name not in had]
    return record


@dataclass(frozen=True)
class ImportEntry:
    """One account of a bulk import, its names checked."""

    user: str
    domain: str
    password: str
    aliases: tuple[str, ...]

    @property
    def aor(self) -> str:
        return f"{self.user}@{self.domain}"


# The shortest password blfctl stores (account add and import). An empty or trivially
# short one is guessed online within pike's limits; phones store any length.
MIN_PASSWORD_LENGTH = 8


def check_passwords(named: Iterable[tuple[str, str]]) -> None:
    """Every (account, password) pair has a password of MIN_PASSWORD_LENGTH characters or
    more; otherwise DirectoryError naming each short one (nothing is written)."""
    short = [account for account, password in named if len(password) < MIN_PASSWORD_LENGTH]
    if short:
        raise DirectoryError(
            f"a password must have at least {MIN_PASSWORD_LENGTH} characters (nothing written): {', '.join(short)}"
        )


def import_entries(lines: Iterable[str]) -> list[ImportEntry]:
    """Accounts to import, one a line: CSV `user@domain,password,alias1;alias2` or a JSON
    object `{"account": ..., "password": ..., "aliases": [...]}`. Blank lines and lines
    starting with `#` are skipped. The whole input is checked before anything is written:
    any bad line, an account listed twice or an alias given to two accounts raises
    DirectoryError naming every such line."""
    entries: list[ImportEntry] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    owners: dict[tuple[str, str], str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            entry = _import_line(text)
        except DirectoryError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if entry.aor in seen:
            problems.append(f"line {number}: account {entry.aor} is listed on line {seen[entry.aor]} already")
            continue
        seen[entry.aor] = number
        for name in (entry.user, *entry.aliases):
            owner = owners.setdefault((entry.domain, name), entry.aor)
            if owner != entry.aor:
                problems.append(f"line {number}: {name}@{entry.domain} is {owner}'s already")
        entries.append(entry)
    if problems:
        raise DirectoryError("nothing imported:\n  " + "\n  ".join(problems))
    return entries


def _import_line(text: str) -> ImportEntry:
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DirectoryError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DirectoryError("not a JSON object")
        account, password, listed = data.get("account"), data.get("password"), data.get("aliases") or []
        if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
            raise DirectoryError('"aliases" must be a list of strings')
    else:
        fields = next(csv.reader([text]))
        if len(fields) not in (2, 3):
            raise DirectoryError("a CSV line is user@domain,password[,alias1;alias2]")
        account, password = fields[0].strip(), fields[1]
        listed = [name.strip() for name in fields[2].split(";") if name.strip()] if len(fields) == 3 else []
    if not isinstance(account, str) or not isinstance(password, str) or not password:
        raise DirectoryError("an account (user@domain) and a password are required")
    user_name, domain_name = aor(account)
    if len(listed) > MAX_ALIASES:
        raise DirectoryError(f"{account}: more than {MAX_ALIASES} aliases")
    return ImportEntry(user_name, domain_name, password, tuple(aliases(listed, user_name)))
