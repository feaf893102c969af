"""The last NOTIFY of each subscription `blfctl why` shows, asked of the instance responsible
for it (docs/inspect.md): one GET /blf/notified per instance (per MAX_IDS subscriptions) on
the metrics socket its instance record announces, all at once, each with a short deadline.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from statestore.domain.notified import LastNotify, NotifyUnknown
from statestore.notified import MAX_IDS, query_path, read_answer

# Seconds an instance has to answer.
TIMEOUT = 1.0

Fetch = Callable[[str, str, float], str]  # (HOST:PORT, path, timeout) -> body
Found = LastNotify | NotifyUnknown


def fetch_http(address: str, path: str, timeout: float) -> str:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as answer:  # noqa: S310
        return str(answer.read().decode("utf-8", "replace"))


def last_notifies(
    watchers: Sequence[tuple[str, str | None]], addresses: Mapping[str, str | None],
    timeout: float = TIMEOUT, fetch: Fetch = fetch_http,
) -> dict[str, Found]:
    """For each (subscription id, responsible instance or None), what that instance says of
    its last NOTIFY, or why it is not known; `addresses`: each live instance's announced
    metrics socket (None: it announces none)."""
    found: dict[str, Found] = {}
    asks: dict[str, list[str]] = defaultdict(list)
    for sub_id, responsible in watchers:
        if responsible is None:
            found[sub_id] = NotifyUnknown("no live instance sends its NOTIFYs")
        elif addresses.get(responsible) is None:
            found[sub_id] = NotifyUnknown(f"{responsible} announces no metrics socket")
        else:
            asks[responsible].append(sub_id)
    requests = [(name, ids[start:start + MAX_IDS]) for name, ids in asks.items()
                for start in range(0, len(ids), MAX_IDS)]

    def ask(request: tuple[str, list[str]]) -> dict[str, Found]:
        name, ids = request
        try:
            answer = read_answer(fetch(str(addresses[name]), query_path(ids), timeout), name)
        except OSError:
            return dict.fromkeys(ids, NotifyUnknown(f"instance {name} unreachable"))
        except (ValueError, KeyError, TypeError):
            return dict.fromkeys(ids, NotifyUnknown(f"instance {name} gave no valid answer"))
        return {sub_id: answer.get(sub_id) or NotifyUnknown(f"none recorded by {name}") for sub_id in ids}

    if requests:
        with ThreadPoolExecutor(max_workers=min(16, len(requests))) as pool:
            for answered in pool.map(ask, requests):
                found.update(answered)
    return found
