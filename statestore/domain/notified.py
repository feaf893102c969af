"""The last NOTIFY an instance sent on a subscription, as it keeps it (docs/inspect.md).

Nothing per NOTIFY is written to the store: the instance that sends a NOTIFY keeps its
numbers in its own shared memory (Kamailio's htable `blf_notified`, kemi/blf_notified.py),
one entry per subscription id, overwritten by the next NOTIFY, completed by the watcher's
final answer, and serves them on its metrics socket (statestore/notified.py). `blfctl why`
asks the responsible instance.

An entry is a fixed-width string: Kamailio 5.6's htable, updating a string with a longer
one while giving an expiry, sets the expiry on the freed cell and the new one never
expires (modules/htable/ht_api.c `ht_set_cell_ex`); values of one length are copied in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What became of the NOTIFY: no final answer yet, tm could not send it at all (it goes out
# again later, numbered alike), no answer within tm's timer (Kamailio's local 408); else
# the watcher's status code.
PENDING, UNSENT, TIMEOUT = "pending", "unsent", "timeout"
ANSWER_WIDTH = 7
# Kept this long after the subscription's expiry: the answer to its last NOTIFY (sent at
# expiry, or at an unsubscribe) still finds the entry (tm's fr_timer is 4 s).
KEEP_AFTER_EXPIRY_SECONDS = 60
_FORMAT = "{:010d} {:010d} {:013d} {:010d} {:>7}"


@dataclass(frozen=True)
class NotifyRecord:
    """A NOTIFY sent: its version (RFC 4235 §4.1; 0 for packages without one), CSeq, when
    (wall clock, ms), until when the entry is kept (Unix s), and its answer."""

    version: int
    cseq: int
    sent_ms: int
    keep_until: int
    answer: str = PENDING

    def encode(self) -> str:
        return _FORMAT.format(self.version, self.cseq, self.sent_ms, self.keep_until, self.answer)

    @classmethod
    def decode(cls, value: object) -> NotifyRecord | None:
        """The record an htable value holds; None for anything else (absent, damaged)."""
        if not isinstance(value, str):
            return None
        parts = value.split()
        if len(parts) != 5 or not _answer_ok(parts[4]):
            return None
        try:
            numbers = [int(part) for part in parts[:4]]
        except ValueError:
            return None
        if min(numbers) < 0:
            return None
        return cls(numbers[0], numbers[1], numbers[2], numbers[3], parts[4])

    def answered(self, cseq: int, answer: str) -> NotifyRecord | None:
        """This record with the final answer to NOTIFY `cseq`; None when the answer is to
        an earlier NOTIFY (this one is newer: its answer is still to come), or is not one."""
        if cseq != self.cseq or not _answer_ok(answer):
            return None
        return NotifyRecord(self.version, self.cseq, self.sent_ms, self.keep_until, answer)

    def keep_seconds(self, now: float) -> int:
        """The entry's lifetime from `now` (at least 1 s: 0 would mean the table's default)."""
        return max(1, self.keep_until - int(now))

    def view(self, sent_by: str) -> LastNotify:
        answer: int | str | None = None if self.answer == PENDING else (
            int(self.answer) if self.answer.isdigit() else self.answer)
        return LastNotify(self.version, self.cseq, self.sent_ms / 1000.0, sent_by, answer)


def sent(version: int, cseq: int, now: float, expires_at: float) -> NotifyRecord:
    """The record of a NOTIFY handed to tm at `now` for a subscription expiring at `expires_at`."""
    return NotifyRecord(version, cseq, int(now * 1000), int(expires_at) + KEEP_AFTER_EXPIRY_SECONDS)


def reply_answer(status: int) -> str | None:
    """The answer a final response records; None for a provisional one (RFC 3261 §7.2)."""
    return str(status) if 200 <= status <= 699 else None


def local_answer(status: int) -> str:
    """The answer Kamailio's own final response records (no answer came): its 408 is a timeout."""
    return TIMEOUT if status in (0, 408) else str(status)


_WORDS = frozenset({PENDING, UNSENT, TIMEOUT})


def _answer_ok(answer: str) -> bool:
    """A word above or a final status code, 200 to 699 (three digits)."""
    return answer in _WORDS or (len(answer) == 3 and answer.isdigit() and "2" <= answer[0] <= "6")


@dataclass(frozen=True)
class LastNotify:
    """The last NOTIFY of a subscription as `blfctl why` shows it: `answer` is the status
    code, "timeout", "unsent", or None (no final answer yet)."""

    version: int
    cseq: int
    sent_at: float
    sent_by: str
    answer: int | str | None

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "cseq": self.cseq, "sent_at": self.sent_at, "sent_by": self.sent_by,
                "answer": self.answer}

    def answer_text(self) -> str:
        if self.answer is None:
            return "no answer yet"
        if self.answer == TIMEOUT:
            return "no answer (timed out)"
        if self.answer == UNSENT:
            return "not sent (tm refused it; sent again later)"
        return f"answered {self.answer}"


@dataclass(frozen=True)
class NotifyUnknown:
    """Why the last NOTIFY of a subscription is not known."""

    reason: str
