"""Rendering profiles: how a watcher's phone wants its dialog-info bodies shaped.

Pure: no I/O. A profile is a set of names a renderer reads (statestore.domain.dialoginfo):

- `single-dialog`: at most one <dialog>, the most relevant one (phones whose lamp
  follows the first dialog of the document).
- `dummy-idle`: when no dialog would be shown, one terminated dialog instead of none
  (phones that ignore an empty document, RFC 4235 §4.1 allows zero dialogs).
- `no-identities`: no <local>/<remote> (both optional, RFC 4235 §4.1.6).
- `no-terminated`: terminated dialogs are not shown (RFC 4235 §4.3: a full-state document
  need not keep a dialog once it ended).

A watcher's profile is chosen when it subscribes: its account's own setting wins, else the
first User-Agent rule that matches, else none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

SINGLE_DIALOG = "single-dialog"
DUMMY_IDLE = "dummy-idle"
NO_IDENTITIES = "no-identities"
NO_TERMINATED = "no-terminated"

PROFILES = frozenset({SINGLE_DIALOG, DUMMY_IDLE, NO_IDENTITIES, NO_TERMINATED})


def parse_profile(names: Sequence[str]) -> frozenset[str]:
    """The profile named by `names` (blanks around a name ignored, empty names skipped);
    ValueError names every unknown one, so a configuration error is reported whole."""
    wanted = {name.strip() for name in names} - {""}
    unknown = sorted(wanted - PROFILES)
    if unknown:
        raise ValueError(f"unknown profile name(s): {', '.join(unknown)}; known: {', '.join(sorted(PROFILES))}")
    return frozenset(wanted)


def _matches(pattern: str, user_agent: str) -> bool:
    """re.search, where a pattern that does not compile matches nothing (one bad rule
    written by an operator must not refuse every SUBSCRIBE)."""
    try:
        return re.search(pattern, user_agent) is not None
    except re.error:
        return False


def choose_profile(
    watcher_account_profile: Sequence[str] | None,
    user_agent: str,
    ua_rules: Sequence[tuple[str, tuple[str, ...]]],
) -> tuple[str, ...]:
    """The profile of a new subscription: the watcher account's own profile when it has one
    (None: not set; an empty one is a choice too), else that of the first rule whose
    User-Agent regex matches, else no profile."""
    if watcher_account_profile is not None:
        return tuple(watcher_account_profile)
    for pattern, profile in ua_rules:
        if _matches(pattern, user_agent):
            return tuple(profile)
    return ()


# The records blfctl writes and an initial SUBSCRIBE reads: an account's profile
# (keys.profile: {"profile": [names]}) and the User-Agent rules (keys.UA_PROFILES:
# {"rules": [[regex, [names]], ...]}, in the order they are tried).
UaRule = tuple[str, tuple[str, ...]]


def profile_record(names: Sequence[str]) -> dict[str, Any]:
    return {"profile": list(names)}


def profile_from_record(data: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """An account's profile, None when not set; names this version does not know are
    dropped (a record written by a newer version still applies what it can)."""
    raw = data.get("profile") if data else None
    if not isinstance(raw, list):
        return None
    return tuple(name for name in raw if name in PROFILES)


def ua_rules_record(rules: Sequence[UaRule]) -> dict[str, Any]:
    return {"rules": [[pattern, list(names)] for pattern, names in rules]}


def ua_rules_from_record(data: Mapping[str, Any] | None) -> list[UaRule]:
    """The User-Agent rules in order; a malformed rule is skipped, not the whole list."""
    raw = data.get("rules") if data else None
    rules: list[UaRule] = []
    for rule in raw if isinstance(raw, list) else ():
        if isinstance(rule, list) and len(rule) == 2 and isinstance(rule[0], str) and isinstance(rule[1], list):
            rules.append((rule[0], tuple(name for name in rule[1] if name in PROFILES)))
    return rules


def check_pattern(pattern: str) -> str:
    """A User-Agent regex as given; ValueError when it does not compile."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid User-Agent regex {pattern!r}: {exc}") from exc
    return pattern


def with_rule(rules: Sequence[UaRule], pattern: str, names: Sequence[str]) -> list[UaRule]:
    """The rules with `pattern`'s profile set: replaced where it is, else appended last."""
    rule = (pattern, tuple(names))
    if any(existing == pattern for existing, _ in rules):
        return [rule if existing == pattern else (existing, kept) for existing, kept in rules]
    return [*rules, rule]


def without_rule(rules: Sequence[UaRule], pattern: str) -> list[UaRule]:
    return [(existing, names) for existing, names in rules if existing != pattern]
