"""Render the RFC 4235 dialog-info document that a BLF lamp subscriber receives.

Pure: no I/O, no clock. `render_dialog_info` builds a full-state document
(RFC 4235 §4.1) from the legs of one account; `body_digest` hashes only what the
lamp can see, so a caller can tell whether a NOTIFY carries anything new.
The identity attribute is `display`, as in the RFC prose and examples (§4.1.6.1),
not the `display-name` of the printed schema (§4.4).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from lxml import etree

from statestore.domain.model import Leg, LegState, Party

CONTENT_TYPE = "application/dialog-info+xml"
NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"

_NS = f"{{{NAMESPACE}}}"


def _visible(legs: Sequence[Leg]) -> list[Leg]:
    """Every leg the store holds, sorted by (call_id, leg_id).

    A terminated leg stays in the store for a few seconds after its call ends (under a
    short-lived lease): while it does, the document shows it as `terminated` with its
    event and code (RFC 4235 §3.7.1, so phones can show a missed or rejected call);
    once it is gone, the full-state document no longer lists it (§4.3).
    """
    return sorted(legs, key=lambda leg: (leg.call_id, leg.leg_id))


def _participant(parent: etree._Element, tag: str, party: Party) -> None:
    """<local>/<remote> (RFC 4235 §4.1.6): identity, then target, in schema order."""
    node = etree.SubElement(parent, _NS + tag)
    if party.identity:
        # §4.1.6.1: the local/remote URI, with an optional display name.
        identity = etree.SubElement(node, _NS + "identity")
        identity.text = party.identity
        if party.display:
            identity.set("display", party.display)
    if party.target:
        # §4.1.6.2: the target URI of this participant, in a "uri" attribute.
        etree.SubElement(node, _NS + "target", uri=party.target)


def _dialog(parent: etree._Element, leg: Leg) -> None:
    """<dialog> (RFC 4235 §4.1.1).

    Children follow the §4.4 schema sequence: state, duration?, replaces?,
    referred-by?, route-set?, local?, remote?.
    """
    node = etree.SubElement(parent, _NS + "dialog", id=leg.leg_id)
    node.set("call-id", leg.call_id)
    if leg.local_tag:
        node.set("local-tag", leg.local_tag)
    if leg.remote_tag:
        node.set("remote-tag", leg.remote_tag)
    # §4.1.1: whether the observed user sent or received the creating INVITE.
    node.set("direction", leg.direction.value)
    # §4.1.2: one of the states of the dialog FSM of §3.7.1; a terminated one says why.
    state = etree.SubElement(node, _NS + "state")
    state.text = leg.state.value
    if leg.state is LegState.TERMINATED:
        if leg.event is not None:
            state.set("event", leg.event.value)
        if leg.code:
            state.set("code", str(leg.code))
    _participant(node, "local", leg.local)
    _participant(node, "remote", leg.remote)


def render_dialog_info(entity: str, version: int | str, legs: Sequence[Leg]) -> bytes:
    """A full-state dialog-info document (RFC 4235 §4.1), UTF-8 encoded (§4).

    `version` is the per-subscription counter of §4.1 and `entity` the observed
    user's URI; both are written as given.
    """
    root = etree.Element(_NS + "dialog-info", nsmap={None: NAMESPACE})
    root.set("version", str(version))
    root.set("state", "full")
    root.set("entity", entity)
    for leg in _visible(legs):
        _dialog(root, leg)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _party_key(party: Party) -> tuple[str, str, str]:
    return (party.identity, party.display, party.target)


def body_digest(legs: Sequence[Leg]) -> str:
    """Short stable hash of the visible dialogs, independent of version and entity.

    Two leg sets with the same digest render the same <dialog> elements, so a
    NOTIFY for them would tell the watcher nothing new.
    """
    key = tuple(
        (
            leg.leg_id,
            leg.call_id,
            leg.local_tag,
            leg.remote_tag,
            leg.direction.value,
            leg.state.value,
            leg.event.value if leg.event else "",
            leg.code,
            _party_key(leg.local),
            _party_key(leg.remote),
        )
        for leg in _visible(legs)
    )
    canonical = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(canonical.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]
