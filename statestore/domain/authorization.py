"""Who may watch a presentity's presence: its policy and its decisions per watcher.

The record (keys.authz) is {"policy": "allow" | "ask", "watchers": {aor: decision}}.
With `allow` (the default: an operator's BLF and presence work without approvals) every
watcher the could-call rule admits is active at once. With `ask`, a new watcher is
`pending` (RFC 6665 §4.1.3, RFC 3857 §3.2.4 event "subscribe"): its NOTIFYs carry no state
until the presentity approves it. Decisions (`blfctl watcher approve|deny|block`):

- approve: remembered; the watcher's subscriptions become active (event "approved"),
  and later ones are active at once;
- deny: this time only: its current subscriptions end with reason=rejected (RFC 6665
  §4.2.2: it should not subscribe again at once); nothing is remembered, so a later
  SUBSCRIBE is pending again and asks anew;
- block: remembered; current subscriptions end with reason=rejected and later
  SUBSCRIBEs get 403.

The presentity always sees itself. Packages without authorization (dialog, reg,
winfo) are governed by their own rules (could-call, self) alone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from statestore.domain.errors import SipError


class Policy(enum.StrEnum):
    ALLOW = "allow"
    ASK = "ask"


class Decision(enum.StrEnum):
    APPROVED = "approved"
    DENIED = "denied"  # not stored: a deny acts on the subscriptions there are
    BLOCKED = "blocked"


BLOCKED_REASON = "Forbidden - Watcher Blocked By Presentity"


@dataclass(frozen=True)
class Authorization:
    policy: Policy = Policy.ALLOW
    watchers: Mapping[str, Decision] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.value, "watchers": {aor: d.value for aor, d in sorted(self.watchers.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Authorization:
        """A missing or unreadable record is the default (allow): a lamp never goes dark
        because a record written by a newer version cannot be read."""
        if not data:
            return cls()
        try:
            policy = Policy(data.get("policy", "allow"))
        except ValueError:
            policy = Policy.ALLOW
        watchers: dict[str, Decision] = {}
        raw = data.get("watchers")
        for aor, value in (raw.items() if isinstance(raw, Mapping) else ()):
            try:
                watchers[str(aor)] = Decision(value)
            except ValueError:
                continue
        return cls(policy, watchers)

    def decided(self, watcher: str, decision: Decision) -> Authorization:
        """The record after a decision: approve and block are remembered, deny is not."""
        watchers = dict(self.watchers)
        if decision is Decision.DENIED:
            watchers.pop(watcher, None)
        else:
            watchers[watcher] = decision
        return Authorization(self.policy, watchers)


def initial_status(authorization: Authorization, watcher: str, presentity: str) -> tuple[str, str]:
    """(status, status event) of a new subscription of `watcher` to `presentity`'s
    presence (RFC 3857 §3.2.4); 403 when the presentity blocked the watcher."""
    if watcher == presentity:
        return "active", "subscribe"
    decision = authorization.watchers.get(watcher)
    if decision is Decision.BLOCKED:
        raise SipError(403, BLOCKED_REASON)
    if decision is Decision.APPROVED or authorization.policy is Policy.ALLOW:
        return "active", "subscribe"
    return "pending", "subscribe"
