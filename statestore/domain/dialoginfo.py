"""Render the RFC 4235 dialog-info document that a BLF lamp subscriber receives.

Pure: no I/O, no clock. `render_dialog_info` builds a full-state document
(RFC 4235 §4.1) from the legs of one account; `body_digest` hashes only what the
lamp can see, so a caller can tell whether a NOTIFY carries anything new.
The identity attribute is `display`, as in the RFC prose and examples (§4.1.6.1),
not the `display-name` of the printed schema (§4.4).

A watcher's profile (statestore.domain.profiles) shapes what it is shown:
`single-dialog` keeps the most relevant dialog (confirmed, then early, then
proceeding/trying, then terminated; ties to the higher leg version), `no-terminated`
drops terminated dialogs before that choice, `no-identities` leaves out <local> and
<remote>, and `dummy-idle` shows one terminated dialog "idle" when none would be shown.
The digest hashes exactly what is shown, profile included.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from statestore.domain.model import Leg, LegState, Party
from statestore.domain.profiles import DUMMY_IDLE, NO_IDENTITIES, NO_TERMINATED, SINGLE_DIALOG

if TYPE_CHECKING:
    from statestore.domain.bodies import PresentityState

CONTENT_TYPE = "application/dialog-info+xml"
NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"

def _visible(legs: Sequence[Leg], profile: frozenset[str] = frozenset()) -> list[Leg]:
    """The legs the document shows, sorted by (call_id, leg_id).

    A terminated leg stays in the store for a few seconds after its call ends (under a
    short-lived lease): while it does, the document shows it as `terminated` with its
    event and code (RFC 4235 §3.7.1, so phones can show a missed or rejected call);
    once it is gone, the full-state document no longer lists it (§4.3). The profile
    may hide terminated legs, or keep only the most relevant leg.
    """
    shown = [leg for leg in legs if not (NO_TERMINATED in profile and leg.state is LegState.TERMINATED)]
    if SINGLE_DIALOG in profile and shown:
        shown = [max(shown, key=_relevance)]
    return sorted(shown, key=lambda leg: (leg.call_id, leg.leg_id))


# How much a dialog tells a lamp: a call in progress before one ringing, before one being
# set up, before one that ended (RFC 4235 §3.7.1 states).
_RANK = {
    LegState.CONFIRMED: 4,
    LegState.EARLY: 3,
    LegState.PROCEEDING: 2,
    LegState.TRYING: 2,
    LegState.TERMINATED: 1,
}


def _relevance(leg: Leg) -> tuple[int, int, str, str]:
    # Ties go to the leg written last, then to a fixed order so every instance agrees.
    return (_RANK[leg.state], leg.version, leg.call_id, leg.leg_id)


# The dialog `dummy-idle` shows in place of none: terminated, no direction, no parties.
IDLE_DIALOG_ID = "idle"


# Characters XML 1.0 cannot carry (§2.2); SIP values reach here checked (blf_sip._get),
# but a document is never made invalid by one: it becomes U+FFFD.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def xml_attribute(value: str) -> str:
    """`value` made safe inside a double-quoted XML attribute."""
    return escape(_NOT_XML.sub("\ufffd", value), _ATTRIBUTE_ESCAPES)


def xml_text(value: str) -> str:
    """`value` made safe as XML character data."""
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
        display = f' display="{xml_attribute(party.display)}"' if party.display else ""
        out.append(f"      <identity{display}>{xml_text(party.identity)}</identity>\n")
    if party.target:
        # §4.1.6.2: the target URI of this participant, in a "uri" attribute.
        out.append(f'      <target uri="{xml_attribute(party.target)}"/>\n')
    out.append(f"    </{tag}>\n")


def _dialog(out: list[str], leg: Leg, profile: frozenset[str]) -> None:
    """<dialog> (RFC 4235 §4.1.1).

    Children follow the §4.4 schema sequence: state, duration?, replaces?,
    referred-by?, route-set?, local?, remote?.
    """
    tags = f' local-tag="{xml_attribute(leg.local_tag)}"' if leg.local_tag else ""
    tags += f' remote-tag="{xml_attribute(leg.remote_tag)}"' if leg.remote_tag else ""
    # §4.1.1: whether the observed user sent or received the creating INVITE.
    ids = f'id="{xml_attribute(leg.leg_id)}" call-id="{xml_attribute(leg.call_id)}"'
    out.append(f'  <dialog {ids}{tags} direction="{leg.direction.value}">\n')
    # §4.1.2: one of the states of the dialog FSM of §3.7.1; a terminated one says why.
    why = ""
    if leg.state is LegState.TERMINATED:
        if leg.event is not None:
            why += f' event="{leg.event.value}"'
        if leg.code:
            why += f' code="{int(leg.code)}"'
    out.append(f"    <state{why}>{leg.state.value}</state>\n")
    if NO_IDENTITIES not in profile:
        _participant(out, "local", leg.local)
        _participant(out, "remote", leg.remote)
    out.append("  </dialog>\n")


def _idle_dialog(out: list[str]) -> None:
    """The stand-in of `dummy-idle`: a dialog that ended, which any lamp shows as idle."""
    out.append(f'  <dialog id="{IDLE_DIALOG_ID}" call-id="{IDLE_DIALOG_ID}">\n')
    out.append("    <state>terminated</state>\n")
    out.append("  </dialog>\n")


def render_dialog_info(
    entity: str, version: int | str, legs: Sequence[Leg], profile: frozenset[str] = frozenset()
) -> bytes:
    """A full-state dialog-info document (RFC 4235 §4.1), UTF-8 encoded (§4).

    `version` is the per-subscription counter of §4.1 and `entity` the observed
    user's URI; both are written as given. Built as text (a NOTIFY body is rendered once
    per change of the presentity, on the notifier's hot path): the same bytes lxml's
    pretty printer gave, which the unit tests check against it.
    """
    root = f'<dialog-info xmlns="{NAMESPACE}" version="{xml_attribute(str(version))}" state="full"'
    out = ["<?xml version='1.0' encoding='UTF-8'?>\n", f'{root} entity="{xml_attribute(entity)}"']
    visible = _visible(legs, profile)
    if not visible and DUMMY_IDLE not in profile:
        out.append("/>\n")
        return "".join(out).encode("utf-8")
    out.append(">\n")
    for leg in visible:
        _dialog(out, leg, profile)
    if not visible:
        _idle_dialog(out)
    out.append("</dialog-info>\n")
    return "".join(out).encode("utf-8")


def _party_key(party: Party) -> tuple[str, str, str]:
    return (party.identity, party.display, party.target)


def _dialog_key(leg: Leg, profile: frozenset[str]) -> tuple[object, ...]:
    """What the <dialog> of `leg` shows."""
    key: tuple[object, ...] = (
        leg.leg_id,
        leg.call_id,
        leg.local_tag,
        leg.remote_tag,
        leg.direction.value,
        leg.state.value,
        leg.event.value if leg.event else "",
        leg.code,
    )
    if NO_IDENTITIES in profile:
        return key
    return (*key, _party_key(leg.local), _party_key(leg.remote))


def body_digest(legs: Sequence[Leg], profile: frozenset[str] = frozenset()) -> str:
    """Short stable hash of the shown dialogs, independent of version and entity.

    Two leg sets with the same digest render the same <dialog> elements, so a
    NOTIFY for them would tell the watcher nothing new. Under `no-terminated` a call
    that ends and then disappears leaves the digest where it was before the call.
    """
    visible = _visible(legs, profile)
    key: list[object] = [_dialog_key(leg, profile) for leg in visible]
    if not visible and DUMMY_IDLE in profile:
        key.append(IDLE_DIALOG_ID)
    canonical = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(canonical.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


def render(
    entity: str, version: int | str, state: PresentityState, profile: frozenset[str], previous: PresentityState | None
) -> bytes:
    """The renderer of the dialog package (statestore.domain.bodies): always full state
    (RFC 4235 §4.1 allows partial, which no phone we serve asks for), so `previous` is
    not read."""
    return render_dialog_info(entity, version, state.legs, profile)


def digest(state: PresentityState, profile: frozenset[str]) -> str:
    return body_digest(state.legs, profile)
