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
import re
from collections.abc import Sequence
from xml.sax.saxutils import escape

from statestore.domain.model import Leg, LegState, Party

CONTENT_TYPE = "application/dialog-info+xml"
NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"

def _visible(legs: Sequence[Leg]) -> list[Leg]:
    """Every leg the store holds, sorted by (call_id, leg_id).

    A terminated leg stays in the store for a few seconds after its call ends (under a
    short-lived lease): while it does, the document shows it as `terminated` with its
    event and code (RFC 4235 §3.7.1, so phones can show a missed or rejected call);
    once it is gone, the full-state document no longer lists it (§4.3).
    """
    return sorted(legs, key=lambda leg: (leg.call_id, leg.leg_id))


# Characters XML 1.0 cannot carry (§2.2); SIP values reach here checked (blf_sip._get),
# but a document is never made invalid by one: it becomes U+FFFD.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def _attr(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value), _ATTRIBUTE_ESCAPES)


def _text(value: str) -> str:
    # A raw CR in text would come back as LF from any XML parser (§2.11).
    return escape(_NOT_XML.sub("\ufffd", value), {"\r": "&#13;"})


def _participant(out: list[str], tag: str, party: Party) -> None:
    """<local>/<remote> (RFC 4235 §4.1.6): identity, then target, in schema order."""
    if not party.identity and not party.target:
        out.append(f"    <{tag}/>\n")
        return
    out.append(f"    <{tag}>\n")
    if party.identity:
        # §4.1.6.1: the local/remote URI, with an optional display name.
        display = f' display="{_attr(party.display)}"' if party.display else ""
        out.append(f"      <identity{display}>{_text(party.identity)}</identity>\n")
    if party.target:
        # §4.1.6.2: the target URI of this participant, in a "uri" attribute.
        out.append(f'      <target uri="{_attr(party.target)}"/>\n')
    out.append(f"    </{tag}>\n")


def _dialog(out: list[str], leg: Leg) -> None:
    """<dialog> (RFC 4235 §4.1.1).

    Children follow the §4.4 schema sequence: state, duration?, replaces?,
    referred-by?, route-set?, local?, remote?.
    """
    tags = f' local-tag="{_attr(leg.local_tag)}"' if leg.local_tag else ""
    tags += f' remote-tag="{_attr(leg.remote_tag)}"' if leg.remote_tag else ""
    # §4.1.1: whether the observed user sent or received the creating INVITE.
    out.append(
        f'  <dialog id="{_attr(leg.leg_id)}" call-id="{_attr(leg.call_id)}"{tags} direction="{leg.direction.value}">\n'
    )
    # §4.1.2: one of the states of the dialog FSM of §3.7.1; a terminated one says why.
    why = ""
    if leg.state is LegState.TERMINATED:
        if leg.event is not None:
            why += f' event="{leg.event.value}"'
        if leg.code:
            why += f' code="{int(leg.code)}"'
    out.append(f"    <state{why}>{leg.state.value}</state>\n")
    _participant(out, "local", leg.local)
    _participant(out, "remote", leg.remote)
    out.append("  </dialog>\n")


def render_dialog_info(entity: str, version: int | str, legs: Sequence[Leg]) -> bytes:
    """A full-state dialog-info document (RFC 4235 §4.1), UTF-8 encoded (§4).

    `version` is the per-subscription counter of §4.1 and `entity` the observed
    user's URI; both are written as given. Built as text (a NOTIFY body is rendered once
    per change of the presentity, on the notifier's hot path): the same bytes lxml's
    pretty printer gave, which the unit tests check against it.
    """
    out = [
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        f'<dialog-info xmlns="{NAMESPACE}" version="{_attr(str(version))}" state="full" entity="{_attr(entity)}"',
    ]
    visible = _visible(legs)
    if not visible:
        out.append("/>\n")
    else:
        out.append(">\n")
        for leg in visible:
            _dialog(out, leg)
        out.append("</dialog-info>\n")
    return "".join(out).encode("utf-8")


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
