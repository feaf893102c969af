"""Who may call whom, and therefore who may watch whom: the "could call" rule (issue 7 §3).

One pure function, `could_call`, decides both a cross-domain INVITE and a cross-domain
SUBSCRIBE, so BLF and calling never disagree: a watcher may watch a presentity exactly
when it could call it. Within a served domain everything is allowed; across domains the
caller's domain must be allowed to call the callee's (outbound rule, `may_call`) and the
callee's domain must accept calls from the caller's (inbound rule, `accept_from`).

Domains are compared case-insensitively (RFC 3261 §19.1.4: hosts are). A domain absent
from the rules is not served here: nothing may call it and it may call nothing.

These types are this module's own, pure view of the domain settings; the store adapter
(directory) turns its records into them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

# A prefix of a number form: "+" and digits, or digits, or empty (see NumberRule).
_PREFIX = re.compile(r"\+?[0-9]*")
# A dialled number: an optional "+" then digits; only such users have equivalent forms.
_NUMBER = re.compile(r"\+?[0-9]+")
# Bounds of the equivalent forms of one number (a rule set like ("1", "11") would otherwise
# generate forms without end): a few rewrites deep, a handful of forms.
_MAX_REWRITES = 3
_MAX_FORMS = 16


@dataclass(frozen=True)
class NumberRule:
    """Which written forms of a number a domain declares to be the same number.

    Only users that are numbers (`+` then digits, or digits) have other forms; a name such
    as `sales-desk` is only ever itself. Each rule is an equivalence, both ways:

    - `strip_plus`: `+15551230101` and `15551230101` are one number;
    - `prefixes`: pairs `(a, b)`: a number starting with `a` is the same as `b` followed by
      the rest, and back; e.g. `("0", "+44")` makes `02071234567` ~ `+442071234567`, and
      `("", "+1")` makes a 10-digit `5551230101` ~ `+15551230101`.

    The forms of a number are what a few of these rewrites reach (see `forms`). The
    default rule declares nothing equivalent: a number is only the form provisioned.
    """

    strip_plus: bool = False
    prefixes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for pair in self.prefixes:
            if len(pair) != 2 or not all(_PREFIX.fullmatch(p) for p in pair) or pair[0] == pair[1]:
                raise ValueError(f"number prefix rule {pair!r}: two different prefixes of '+' and digits")

    def forms(self, user: str) -> tuple[str, ...]:
        """`user` first, then its other forms in a fixed order (breadth first, then sorted).
        Not a number, or no rule: `(user,)`."""
        if not _NUMBER.fullmatch(user):
            return (user,)
        seen = [user]
        level = [user]
        for _ in range(_MAX_REWRITES):
            found = sorted({f for form in level for f in self._rewrites(form)} - set(seen))
            level = found[: _MAX_FORMS - len(seen)]
            seen.extend(level)
            if not level:
                break
        return tuple(seen)

    def _rewrites(self, number: str) -> Iterable[str]:
        if self.strip_plus:
            yield number[1:] if number.startswith("+") else "+" + number
        for a, b in self.prefixes:
            for old, new in ((a, b), (b, a)):
                if number.startswith(old):
                    rewritten = new + number[len(old) :]
                    if _NUMBER.fullmatch(rewritten):
                        yield rewritten


@dataclass(frozen=True)
class DomainRules:
    """The routing rules of one served domain.

    `may_call`: the domains its accounts may call (outbound); the domain itself is always
    in it (`blfctl domain add DOMAIN` without `--may-call` may call only itself).
    `accept_from`: the domains whose accounts may call it (inbound); None accepts every
    domain (the default), a set restricts it (calls from within are always accepted).
    `numbers`: the number forms it declares equivalent in its users and aliases.
    Every domain name is kept lower case.
    """

    name: str
    may_call: frozenset[str] = field(default_factory=frozenset)
    accept_from: frozenset[str] | None = None
    numbers: NumberRule = field(default_factory=NumberRule)

    def __post_init__(self) -> None:
        name = self.name.lower()
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "may_call", frozenset(d.lower() for d in self.may_call) | {name})
        if self.accept_from is not None:
            object.__setattr__(self, "accept_from", frozenset(d.lower() for d in self.accept_from) | {name})

    def accepts(self, caller_domain: str) -> bool:
        return self.accept_from is None or caller_domain.lower() in self.accept_from


class Rules(Protocol):
    """The rules of every served domain, looked up by lower-case domain name: a dict from
    `domain_table`, or the SIP path's shared copy of the directory (kemi/blf_directory.py)."""

    def get(self, domain: str, /) -> DomainRules | None: ...


def domain_table(domains: Iterable[DomainRules]) -> dict[str, DomainRules]:
    """The rules keyed as `could_call` and `identity.resolve` look them up."""
    return {rules.name: rules for rules in domains}


def served(domain: str, rules: Rules) -> DomainRules | None:
    """The rules of `domain` if it is served here, else None (case-insensitive)."""
    return rules.get(domain.lower())


def could_call(caller_domain: str, callee_domain: str, rules: Rules) -> bool:
    """Whether an account of `caller_domain` could call one of `callee_domain` (issue 7 §3).

    Both domains must be served here (an unknown one: False, even "within" it). Within a
    domain: True. Across: the caller's domain may call the callee's, and the callee's
    domain accepts calls from the caller's.
    """
    caller_rules, callee_rules = served(caller_domain, rules), served(callee_domain, rules)
    if caller_rules is None or callee_rules is None:
        return False
    if caller_rules.name == callee_rules.name:
        return True
    return callee_rules.name in caller_rules.may_call and callee_rules.accepts(caller_rules.name)


def domain_of(aor: str) -> str:
    """The domain of an account or alias `user@domain` (lower case); "" without one."""
    _, at, domain = aor.rpartition("@")
    return domain.lower() if at else ""


def may_watch(watcher: str, presentity: str, rules: Rules) -> bool:
    """Whether `watcher` may subscribe to `presentity` (accounts `user@domain`): exactly
    when the watcher could call the presentity, so BLF never shows whom one cannot call."""
    return could_call(domain_of(watcher), domain_of(presentity), rules)
