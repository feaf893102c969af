"""What removing an account takes with it (issue 7 §1), decided without the store.

Each record kind declares what an account's removal does to its records
(statestore/records.py `on_account_removed`): most are deleted with it; a subscription is
deleted where the account is its watcher (record and both index entries) and ended where
the account is its presentity: rewritten due now with reason `noresource`, so that the
notifier responsible for it sends the final NOTIFY (`Subscription-State:
terminated;reason=noresource`, RFC 6665 §4.2.2) and removes it. A store reads what the
account has, asks `plan_removal`, and carries the plan out.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from statestore.domain.model import Subscription, WatcherEntry
from statestore.domain.subscription import REASON_NORESOURCE, ended


class AccountRemoved(enum.Enum):
    """What removing an account does to its records of one kind."""

    DELETED = "deleted"
    ENDED = "deleted where it is the watcher; ended with reason=noresource where it is the presentity"


@dataclass(frozen=True)
class RemovalPlan:
    """What to delete and what to rewrite when an account goes."""

    aliases: tuple[str, ...]  # alias names (in the account's domain) deleted with it
    deleted_kinds: tuple[str, ...]  # kinds whose records of the account are all deleted
    watching: tuple[WatcherEntry, ...]  # subscriptions it watches: deleted with both index entries
    ended: tuple[tuple[Subscription, int], ...]  # subscriptions to it, ended, with the revision read
    dangling: tuple[str, ...]  # ids of its presentity index entries whose record is gone


# A subscription to the account as read: its id, and its record with the revision read
# (None when the index entry outlived the record).
WatchedBy = tuple[str, tuple[Subscription, int] | None]


def plan_removal(
    aliases: Sequence[str],
    watching: Sequence[WatcherEntry],
    watched_by: Sequence[WatchedBy],
    kinds: Mapping[str, AccountRemoved],
    now: float,
) -> RemovalPlan:
    """The removal of an account with these aliases, subscriptions it watches (its watcher
    index entries) and subscriptions to it, under the kinds' declarations, at `now`.

    A subscription the account has to itself is deleted (as its watcher), not ended; one
    already ended with noresource is left to the notifier at it (a removal tried again)."""
    deleted = tuple(name for name, removed in kinds.items() if removed is AccountRemoved.DELETED)
    if kinds.get("subs") is not AccountRemoved.ENDED:
        return RemovalPlan(tuple(aliases), deleted, (), (), ())
    own = {entry.sub_id for entry in watching}
    to_end: list[tuple[Subscription, int]] = []
    dangling: list[str] = []
    for sub_id, read in watched_by:
        if sub_id in own:
            continue
        if read is None:
            dangling.append(sub_id)
        elif read[0].termination_reason != REASON_NORESOURCE:
            to_end.append((ended(read[0], now, REASON_NORESOURCE), read[1]))
    return RemovalPlan(tuple(aliases), deleted, tuple(watching), tuple(to_end), tuple(dangling))
