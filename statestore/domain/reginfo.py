"""Render the RFC 3680 reginfo document of the `reg` event package.

Pure: no I/O, no clock (`state.now` is when the state was read). One <registration> for
the watched address of record (`entity`), with one <contact> per binding
(statestore.domain.model.Binding). A binding is live while `expires_at > now`.

States and events are those of the registration and contact state machines (RFC 3680
§4.7); the document's structure is §5.1, how a partial document applies §5.2.

Registration state: `active` while the AOR has a live binding;
otherwise `init` in a full document, and `terminated` in a partial one whose previous
state had a live binding. Its `id` is a constant: a subscription sees one registration,
and §5.1 asks only that it be unique and stable within the subscription.

Contact: `id` is the binding's store id (uri_identity.binding_id: the
device's instance-id and reg-id, else its Contact URI), `expires` the seconds left at
`now` (active contacts only), `q` when not 1.

- Full state (no previous NOTIFY): every live binding, `active`, event `registered`.
- Partial state (against the state the watcher's last NOTIFY showed), differences only:
  a new id is `active`/`created`; a kept id whose expiry moved later (or whose URI or q
  changed) is `active`/`refreshed`, earlier `active`/`shortened`; an id no longer live is
  `terminated`, event `expired` when its expiry has passed, else `unregistered`
  (removed by a REGISTER with expires 0, or replaced by the same device's new Contact).

The digest covers every binding held, with its absolute expiry, never `now`: the store
removes expired bindings, and that removal is the change a watcher is told of.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from statestore.domain.dialoginfo import xml_attribute, xml_text
from statestore.domain.model import Binding
from statestore.domain.uri_identity import binding_id

if TYPE_CHECKING:
    from statestore.domain.bodies import PresentityState

CONTENT_TYPE = "application/reginfo+xml"
NAMESPACE = "urn:ietf:params:xml:ns:reginfo"
REGISTRATION_ID = "reg"


@dataclass(frozen=True)
class ContactChange:
    """One <contact> of a document: the binding, and its RFC 3680 §4.7 state and event."""

    binding: Binding
    state: str
    event: str


def _live(state: PresentityState) -> dict[str, Binding]:
    """The live bindings by id; of two with one id (a device seen on two instances during
    a takeover), the one that expires later."""
    live: dict[str, Binding] = {}
    for binding in sorted(state.bindings, key=lambda b: b.expires_at):
        if binding.expires_at > state.now:
            live[binding_id(binding)] = binding
    return live


def _updated(old: Binding, new: Binding) -> str | None:
    """The §4.7 event of a kept binding, None when nothing a watcher sees changed."""
    if new.expires_at < old.expires_at:
        return "shortened"
    if new.expires_at > old.expires_at or (new.contact, new.q) != (old.contact, old.q):
        return "refreshed"
    return None


def _gone(old: Binding, state: PresentityState) -> ContactChange:
    """A binding no longer live: expired when its (latest known) expiry has passed."""
    held = [b for b in state.bindings if binding_id(b) == binding_id(old)]
    last = max(held, key=lambda b: b.expires_at) if held else old
    return ContactChange(last, "terminated", "expired" if last.expires_at <= state.now else "unregistered")


def _differences(previous: PresentityState, state: PresentityState) -> Iterator[ContactChange]:
    before, after = _live(previous), _live(state)
    for key in sorted(after.keys() | before.keys()):
        if key not in before:
            yield ContactChange(after[key], "active", "created")
        elif key not in after:
            yield _gone(before[key], state)
        else:
            event = _updated(before[key], after[key])
            if event is not None:
                yield ContactChange(after[key], "active", event)


def changed(previous: PresentityState, state: PresentityState) -> bool:
    """Whether a partial document from `previous` to `state` would tell anything."""
    return next(_differences(previous, state), None) is not None


def _registration_state(live: bool, previous: PresentityState | None) -> str:
    """RFC 3680 §4.7: init -> active -> terminated (-> init)."""
    if live:
        return "active"
    if previous is not None and _live(previous):
        return "terminated"
    return "init"


def _q(value: float) -> str:
    """A qvalue as RFC 3261 §20.10 writes it: at most three decimals."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _contact(out: list[str], change: ContactChange, now: float) -> None:
    """<contact> (RFC 3680 §5.1): `expires` only on an active contact."""
    binding = change.binding
    attributes = f'id="{xml_attribute(binding_id(binding))}" state="{change.state}" event="{change.event}"'
    if change.state == "active":
        attributes += f' expires="{binding.remaining(now)}"'
    if binding.q != 1.0:
        attributes += f' q="{_q(binding.q)}"'
    out.append(f"    <contact {attributes}>\n")
    out.append(f"      <uri>{xml_text(binding.contact)}</uri>\n")
    out.append("    </contact>\n")


def _changes(state: PresentityState, previous: PresentityState | None) -> list[ContactChange]:
    if previous is None:
        live = _live(state)
        return [ContactChange(live[key], "active", "registered") for key in sorted(live)]
    return list(_differences(previous, state))


def render(
    entity: str, version: int | str, state: PresentityState, profile: frozenset[str], previous: PresentityState | None
) -> bytes:
    """A reginfo document (RFC 3680 §5.1), UTF-8: full state when `previous` is None,
    else the differences since `previous`. No profile applies to this package."""
    kind = "full" if previous is None else "partial"
    registration = _registration_state(bool(_live(state)), previous)
    out = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<reginfo xmlns="{NAMESPACE}" version="{xml_attribute(str(version))}" state="{kind}">\n',
        f'  <registration aor="{xml_attribute(entity)}" id="{REGISTRATION_ID}" state="{registration}"',
    ]
    changes = _changes(state, previous)
    if not changes:
        out.append("/>\n")
    else:
        out.append(">\n")
        for change in changes:
            _contact(out, change, state.now)
        out.append("  </registration>\n")
    out.append("</reginfo>\n")
    return "".join(out).encode("utf-8")


def digest(state: PresentityState, profile: frozenset[str]) -> str:
    """Short stable hash of the bindings held (ids, URIs, q, absolute expiries)."""
    key = sorted((binding_id(b), b.contact, b.q, b.expires_at) for b in state.bindings)
    canonical = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(canonical.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]
