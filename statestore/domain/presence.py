"""Compose the PIDF document of a presentity (RFC 3863) from what the store knows of it.

Pure: no I/O, no clock (`state.now` is when the state was read). The rules, in order:

1. Publications. Those of event "presence" still alive (`expires_at > state.now`, RFC
   3903 §6) are composed newest first (`published_at`, then etag). A stored body that no
   longer parses is skipped (it was checked when published: statestore.domain.pidf).
   Of each device (`Publication.device`, when known) only the newest counts: a device has
   one state. An initial PUBLISH replaces its device's older publications (publication.
   admit), but two initial PUBLISHes of one device that race each other are both stored,
   each having found nothing of its device to replace (baresip sends two at registration,
   then modifies one: the other, left `open`, showed the account online after it went
   offline, until it expired).
2. Tuples. Every <tuple> of every live publication is kept as it was published, one
   each: RFC 3863 §3.2 and RFC 4479 §3.2 model a tuple as one service or device, so a
   merge of two devices' tuples would lose each device's <contact> and status. Ids are
   xs:ID, unique in a document: an id already used (by a tuple placed before it) is
   prefixed with a short hash of its publication's etag (`x<hash>-<id>`). Tuples whose
   basic status is `open` come first, then the others, each group in publication order:
   RFC 3863 gives the order of tuples no meaning, and a watcher that reads only the first
   <basic> (baresip 1.0: tests/e2e/test_baresip.py) then shows the presentity available
   when any of its devices is, as one that reads every tuple does.
3. Person. The <dm:person> (RFC 4479 §3.1) of the newest publication that has one; the
   others are dropped (one human user). Presence-level <note>s and <dm:device>s of the
   publications are not carried.
4. Registrations. With no live publication, a registered account (a binding with
   `expires_at > state.now`) is one tuple `reg-<hash>`, basic `open`, with the <contact>
   of its preferred binding (highest q, then contact): the account is reachable
   (RFC 3863 §4.1.4), whatever number of devices it has. With no publication and no
   registration, one tuple with basic `closed`. A contact that libxml2's xs:anyURI would
   refuse (an IPv6 reference: RFC 3986 §3.3 allows no brackets in the path of a `sip:`
   URI) is left out (<contact> is optional) rather than make the document invalid.
5. Calls (the BLF core's legs, RFC 4235 states). A `confirmed` leg puts RPID activity
   <rpid:on-the-phone/> (RFC 4480 §3.2) in the person, merged into its first
   <rpid:activities> (`unknown` removed, never twice), or in a new person when there is
   none. Legs that only ring (trying, proceeding, early) change nothing: RPID has no
   activity for ringing, a ringing phone does not make its user busy, and the dialog
   package already shows it. Terminated legs are ignored.
6. Size. Publications are taken newest first while their tuples fit in MAX_TUPLE_BYTES
   (24 KiB; the newest always): a NOTIFY must stay sendable over UDP.

`profile`, `version` and `previous` are part of the renderer signature shared with the
other packages; PIDF has no version and no watcher-specific rendering, so they are unused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from lxml import etree

from statestore.domain.bodies import PresentityState
from statestore.domain.model import Binding, LegState, Publication
from statestore.domain.pidf import DM_NS, PIDF_NS, RPID_NS, PidfDocument, element_of, parse_stored

CONTENT_TYPE = "application/pidf+xml"
EVENT = "presence"
_NSMAP = {None: PIDF_NS, "dm": DM_NS, "rpid": RPID_NS}
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DIGEST_ENTITY = "sip:digest.invalid"
# A URI that any xs:anyURI check accepts: a scheme, no authority, RFC 3986 §2 characters.
_PLAIN_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?!/)(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*")


def _short_hash(value: str) -> str:
    return hashlib.sha1(value.encode("utf-8"), usedforsecurity=False).hexdigest()[:8]


def _live_publications(state: PresentityState) -> list[Publication]:
    """Rule 1: alive at `state.now`, newest first, the newest only of each device."""
    live = [p for p in state.publications if p.event == EVENT and p.expires_at > state.now]
    newest_first = sorted(live, key=lambda p: (-p.published_at, p.etag))
    seen: set[str] = set()
    kept = []
    for publication in newest_first:
        if publication.device and publication.device in seen:
            continue
        seen.add(publication.device)
        kept.append(publication)
    return kept


# Rule 6: the tuples a document carries, in bytes at most. A NOTIFY goes over UDP too (RFC
# 3261 §18.1.1: well under 64 KB), and one account may hold 16 publications of 16 KB
# (publication.MAX_PUBLICATIONS_PER_ACCOUNT, pidf.MAX_PIDF_BYTES): composed whole, its
# watchers' NOTIFYs could not be sent and would be retried for ever.
MAX_TUPLE_BYTES = 24 * 1024


def _documents(publications: list[Publication]) -> Iterator[tuple[Publication, PidfDocument]]:
    """Rules 1 and 6: the parsed live publications, newest first, as long as their tuples
    fit in MAX_TUPLE_BYTES (the newest always)."""
    total = 0
    for publication in publications:
        try:
            document = parse_stored(publication.body)
        except etree.XMLSyntaxError:
            continue
        total += sum(len(pidf_tuple.xml) for pidf_tuple in document.tuples)
        if total > MAX_TUPLE_BYTES and publication is not publications[0]:
            return
        yield publication, document


def _unique_ids(element: etree._Element, etag: str, used: set[str]) -> None:
    """Rule 2: every id in the subtree made unique in the document (xs:ID, NCName kept)."""
    for node in element.iter():
        value = node.get("id")
        if value is None:
            continue
        candidate, n = value, 1
        if candidate in used:
            candidate = f"x{_short_hash(etag)}-{value}"
        while candidate in used:
            n += 1
            candidate = f"x{_short_hash(etag)}-{n}-{value}"
        node.set("id", candidate)
        used.add(candidate)


def _qvalue(q: float) -> str:
    """A <contact priority> of RFC 3863 §4.4 (0 to 1, three decimals at most)."""
    text = f"{min(max(q, 0.0), 1.0):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _tuple(tuple_id: str, basic: str, binding: Binding | None) -> etree._Element:
    element = etree.Element(f"{{{PIDF_NS}}}tuple", nsmap=_NSMAP, id=tuple_id)
    status = etree.SubElement(element, f"{{{PIDF_NS}}}status")
    etree.SubElement(status, f"{{{PIDF_NS}}}basic").text = basic
    if binding is not None and _PLAIN_URI.fullmatch(binding.contact):
        contact = etree.SubElement(element, f"{{{PIDF_NS}}}contact", priority=_qvalue(binding.q))
        contact.text = binding.contact
    return element


def _registration_tuple(state: PresentityState) -> etree._Element:
    """Rule 4: no publication, so the registrar says whether the account is reachable."""
    live = sorted((b for b in state.bindings if b.expires_at > state.now), key=lambda b: (-b.q, b.contact))
    if not live:
        return _tuple("offline", "closed", None)
    return _tuple(f"reg-{_short_hash(live[0].contact)}", "open", live[0])


def _on_the_phone(state: PresentityState) -> bool:
    """Rule 5: only an answered call makes the user busy on the phone."""
    return any(leg.state is LegState.CONFIRMED for leg in state.legs)


def _activities_of(person: etree._Element) -> etree._Element:
    """The person's first <rpid:activities>, added before dm:note/dm:timestamp (RFC 4479
    §5.1.2 sequence) when it has none."""
    found = person.find(f"{{{RPID_NS}}}activities")
    if found is not None:
        return found
    activities = etree.Element(f"{{{RPID_NS}}}activities", nsmap=_NSMAP)
    trailing = [child for child in person if child.tag in (f"{{{DM_NS}}}note", f"{{{DM_NS}}}timestamp")]
    if trailing:
        trailing[0].addprevious(activities)
    else:
        person.append(activities)
    return activities


def _add_on_the_phone(person: etree._Element) -> None:
    """Rule 5: merged, never duplicated; `unknown` excludes any activity (RFC 4480 §5.1)."""
    activities = _activities_of(person)
    for unknown in activities.findall(f"{{{RPID_NS}}}unknown"):
        activities.remove(unknown)
    if activities.find(f"{{{RPID_NS}}}on-the-phone") is None:
        etree.SubElement(activities, f"{{{RPID_NS}}}on-the-phone")


def _new_person(used: set[str]) -> etree._Element:
    person = etree.Element(f"{{{DM_NS}}}person", nsmap=_NSMAP, id="person")
    _unique_ids(person, "person", used)
    return person


def _compose(entity: str, state: PresentityState) -> etree._Element:
    root = etree.Element(f"{{{PIDF_NS}}}presence", nsmap=_NSMAP, entity=_NOT_XML.sub("\ufffd", entity))
    documents = list(_documents(_live_publications(state)))
    used: set[str] = set()
    person: etree._Element | None = None
    published = [(publication, pidf_tuple) for publication, document in documents for pidf_tuple in document.tuples]
    # Rule 2: open tuples first (a stable sort keeps publication order within each group).
    for publication, pidf_tuple in sorted(published, key=lambda item: item[1].basic != "open"):
        element = element_of(pidf_tuple.xml)
        _unique_ids(element, publication.etag, used)
        root.append(element)
    if not documents:
        root.append(_registration_tuple(state))
    # Rule 3: the newest publication that has a person (ids checked after the tuples').
    for publication, document in documents:
        if document.persons:
            person = element_of(document.persons[0].xml)
            _unique_ids(person, publication.etag, used)
            break
    if _on_the_phone(state):
        person = person if person is not None else _new_person(used)
        _add_on_the_phone(person)
    if person is not None:
        root.append(person)
    etree.cleanup_namespaces(root, top_nsmap=_NSMAP)
    return root


def render(
    entity: str,
    version: int | str,
    state: PresentityState,
    profile: frozenset[str],
    previous: PresentityState | None,
) -> bytes:
    """The full PIDF document (RFC 3863 §4) of `state`, UTF-8; `entity` written as given
    (escaped) in <presence entity>, so a caller may pass a stand-in and replace it later."""
    root = _compose(entity, state)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def digest(state: PresentityState, profile: frozenset[str]) -> str:
    """Short hash of the document `state` renders, whatever its entity: equal documents give
    equal digests. `state.now` counts only through which records are alive."""
    body = render(_DIGEST_ENTITY, 0, state, profile, None)
    return hashlib.sha1(body, usedforsecurity=False).hexdigest()[:16]
