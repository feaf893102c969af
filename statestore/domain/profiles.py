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
from collections.abc import Sequence

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
