"""GET /blf/notified?ids=ID,ID...: the last NOTIFY an instance sent on each subscription
named, served on its metrics socket (docs/inspect.md). Both sides of the contract, pure:
the instance parses the query and writes the answer (kemi/blf_notified.py), `blfctl why`
builds the query and reads the answer (statestore/cli_notified.py).

Answer: `200 OK`, `application/json`,
`{"instance": NAME, "notified": {ID: {"version", "cseq", "sent_at", "answer"} or null}}`:
every id asked, null for one the instance holds no NOTIFY of. A query that names no id,
more than MAX_IDS, or an id that is not one (1 to 64 lowercase hex digits) gets `400`.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from statestore.domain.notified import LastNotify, NotifyRecord

NOTIFIED_PATH = "/blf/notified"
# Ids per request at most: one account's watchers, a page at a time (a URL of ~2.5 KB).
MAX_IDS = 100
_HEX = frozenset(string.hexdigits.lower())


class NotifiedQueryError(ValueError):
    """A query the instance answers with 400."""


def parse_query(url: str) -> list[str]:
    """The subscription ids `url` (path and query string, as xhttp gives it) asks for."""
    values = parse_qs(urlsplit(url).query).get("ids", [])
    ids = [sub_id for value in values for sub_id in value.split(",") if sub_id]
    if not ids:
        raise NotifiedQueryError("no subscription id: ?ids=ID,ID...")
    if len(ids) > MAX_IDS:
        raise NotifiedQueryError(f"{len(ids)} ids: at most {MAX_IDS} per request")
    bad = next((sub_id for sub_id in ids if len(sub_id) > 64 or not set(sub_id) <= _HEX), None)
    if bad is not None:
        raise NotifiedQueryError(f"not a subscription id: {bad[:70]!r}")
    return list(dict.fromkeys(ids))


def answer_body(instance: str, found: Mapping[str, NotifyRecord | None]) -> str:
    """The JSON answer: each id asked, with its record or null."""
    notified = {sub_id: None if record is None else _record_dict(record, instance)
                for sub_id, record in found.items()}
    return json.dumps({"instance": instance, "notified": notified}, separators=(",", ":"))


def _record_dict(record: NotifyRecord, instance: str) -> dict[str, Any]:
    view = record.view(instance).to_dict()
    del view["sent_by"]
    return view


def query_path(ids: Sequence[str]) -> str:
    """The path and query string that asks for `ids` (at most MAX_IDS)."""
    if not 0 < len(ids) <= MAX_IDS:
        raise ValueError(f"1 to {MAX_IDS} ids per request, not {len(ids)}")
    return f"{NOTIFIED_PATH}?{urlencode({'ids': ','.join(ids)})}"


def read_answer(text: str, asked_of: str) -> dict[str, LastNotify | None]:
    """The records an answer holds, by subscription id (TypeError, ValueError or KeyError
    when it is not one); `asked_of`, the instance asked: the one that sent them."""
    answer = json.loads(text)
    if not isinstance(answer, dict) or not isinstance(answer.get("notified"), dict):
        raise TypeError("not an answer of /blf/notified")
    found: dict[str, LastNotify | None] = {}
    for sub_id, item in answer["notified"].items():
        if item is None:
            found[sub_id] = None
            continue
        answered = item.get("answer")
        if not isinstance(answered, int | str | None):
            raise TypeError(f"bad answer for {sub_id}: {answered!r}")
        found[sub_id] = LastNotify(int(item["version"]), int(item["cseq"]), float(item["sent_at"]), asked_of,
                                   answered)
    return found
