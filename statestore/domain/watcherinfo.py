"""Render the RFC 3858 watcherinfo document of the `.winfo` template packages (RFC 3857).

Pure: no I/O, no clock (`state.now` is when the state was read). `render_for("presence")`
is the renderer of `presence.winfo`, `render_for("dialog")` that of `dialog.winfo`: one
<watcher-list resource=entity package=watched event> listing the subscriptions to the
presentity (`state.watchers`) whose package is the watched one.

Watcher (RFC 3858 §3, RFC 3857 §3.2): `id` is the subscription id, the text the watcher's
URI ("sip:" + its AOR). `status` is the subscription's own ("active", "pending",
"waiting"), with the RFC 3857 §3.2.4 event that brought it there (`status_event`:
"subscribe", "approved"). A subscription that ended on purpose (`termination_reason`) or
whose expiry passed is `terminated`, its event the reason when RFC 3857 §3.2.4 has it
(rejected, noresource, deactivated, probation, giveup), else `timeout` (expiry and
unsubscribe, §3.2.4). Neither `expiration` nor `duration-subscribed` is shown: a refresh
is not a state change (§3.2), and we do not keep when a subscription began.

- Full state (no previous NOTIFY): every watcher not terminated (RFC 3858 §3).
- Partial state (against what the watcher's last NOTIFY showed): watchers new or changed
  since, with their state, and watchers shown then but absent now as `terminated`/`timeout`
  (RFC 3858 §4: what a partial document changes).

The digest covers the watcher, status, event and termination reason of every
subscription of the package held, never its expiry or `now`: a refresh changes nothing
shown, and the store removes an expired subscription, which is the change a watcher is
told of.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from statestore.domain.dialoginfo import xml_attribute, xml_text
from statestore.domain.model import Subscription

if TYPE_CHECKING:
    from statestore.domain.bodies import PresentityState

CONTENT_TYPE = "application/watcherinfo+xml"
NAMESPACE = "urn:ietf:params:xml:ns:watcherinfo"

# RFC 3857 §3.2.4 events that end a subscription; anything else ("", "invariant") is shown
# as a timeout.
_TERMINATING_EVENTS = frozenset({"rejected", "timeout", "noresource", "deactivated", "probation", "giveup"})
_STATUSES = frozenset({"active", "pending", "waiting"})
_STATUS_EVENTS = frozenset({"subscribe", "approved"}) | _TERMINATING_EVENTS


@dataclass(frozen=True)
class WatcherView:
    """One <watcher> as shown."""

    sub_id: str
    uri: str
    status: str
    event: str


def _view(subscription: Subscription, now: float) -> WatcherView:
    uri = f"sip:{subscription.watcher}"
    if subscription.termination_reason or subscription.expires_at <= now:
        reason = subscription.termination_reason
        event = reason if reason in _TERMINATING_EVENTS else "timeout"
        return WatcherView(subscription.sub_id, uri, "terminated", event)
    # An unknown status is shown as pending: never show as authorized what may not be.
    status = subscription.status if subscription.status in _STATUSES else "pending"
    event = subscription.status_event if subscription.status_event in _STATUS_EVENTS else "subscribe"
    return WatcherView(subscription.sub_id, uri, status, event)


def _views(state: PresentityState, watched_event: str) -> dict[str, WatcherView]:
    return {sub.sub_id: _view(sub, state.now) for sub in state.watchers if sub.event == watched_event}


def _shown(state: PresentityState, watched_event: str) -> dict[str, WatcherView]:
    """What a full-state document lists: the watchers not terminated."""
    return {key: view for key, view in _views(state, watched_event).items() if view.status != "terminated"}


def _differences(previous: PresentityState, state: PresentityState, watched_event: str) -> list[WatcherView]:
    before, after = _shown(previous, watched_event), _views(state, watched_event)
    changes = [view for key, view in after.items() if before.get(key) != view and not _stays_out(key, view, before)]
    for key in before.keys() - after.keys():
        gone = before[key]
        changes.append(WatcherView(gone.sub_id, gone.uri, "terminated", "timeout"))
    return sorted(changes, key=lambda view: view.sub_id)


def _stays_out(key: str, view: WatcherView, before: dict[str, WatcherView]) -> bool:
    # A subscription already terminated when last shown (so not listed then) is not news.
    return view.status == "terminated" and key not in before


def changed(previous: PresentityState, state: PresentityState, watched_event: str) -> bool:
    """Whether a partial document from `previous` to `state` would list any watcher."""
    return bool(_differences(previous, state, watched_event))


def _watcher(out: list[str], view: WatcherView) -> None:
    attributes = f'id="{xml_attribute(view.sub_id)}" status="{view.status}" event="{view.event}"'
    out.append(f"    <watcher {attributes}>{xml_text(view.uri)}</watcher>\n")


def _render(
    watched_event: str,
    entity: str,
    version: int | str,
    state: PresentityState,
    previous: PresentityState | None,
) -> bytes:
    if previous is None:
        views = sorted(_shown(state, watched_event).values(), key=lambda view: view.sub_id)
    else:
        views = _differences(previous, state, watched_event)
    kind = "full" if previous is None else "partial"
    out = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<watcherinfo xmlns="{NAMESPACE}" version="{xml_attribute(str(version))}" state="{kind}">\n',
        f'  <watcher-list resource="{xml_attribute(entity)}" package="{xml_attribute(watched_event)}"',
    ]
    if not views:
        out.append("/>\n")
    else:
        out.append(">\n")
        for view in views:
            _watcher(out, view)
        out.append("  </watcher-list>\n")
    out.append("</watcherinfo>\n")
    return "".join(out).encode("utf-8")


Renderer = Callable[[str, "int | str", "PresentityState", frozenset[str], "PresentityState | None"], bytes]
Digester = Callable[["PresentityState", frozenset[str]], str]


def render_for(watched_event: str) -> Renderer:
    """The renderer of the `<watched_event>.winfo` template package (RFC 3857); no profile applies."""

    def render(
        entity: str,
        version: int | str,
        state: PresentityState,
        profile: frozenset[str],
        previous: PresentityState | None,
    ) -> bytes:
        return _render(watched_event, entity, version, state, previous)

    return render


def _digest(watched_event: str, state: PresentityState) -> str:
    key = sorted(
        (sub.sub_id, sub.watcher, sub.status, sub.status_event, sub.termination_reason)
        for sub in state.watchers
        if sub.event == watched_event
    )
    canonical = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(canonical.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


def digest_for(watched_event: str) -> Digester:
    """Short stable hash of the subscriptions to the watched package that the state holds."""

    def digest(state: PresentityState, profile: frozenset[str]) -> str:
        return _digest(watched_event, state)

    return digest
