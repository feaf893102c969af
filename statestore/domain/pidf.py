"""Check a PUBLISH body of the `presence` package (RFC 3903 §6, RFC 3863), and read it back.

`check_pidf` is the ESC's check of RFC 3903 §6 step 5 ("the ESC MUST process the body
... 415 when its type is not supported, 400 when it is not valid"), made safe against
hostile XML: a body is refused, before any schema is consulted, when it is too large
(413), not well-formed, carries any DOCTYPE (so no entity is ever expanded and nothing
external is ever loaded), nests deeper than MAX_DEPTH, or has another root than PIDF's
<presence>. It is then validated against `presence-all.xsd` (PIDF, RFC 3863 §4.4; the data
model, RFC 4479 §5.1; RPID, RFC 4480 §5.1). `parse_stored` reads a checked document back
into the tuples and persons that composition (statestore.domain.presence) needs.

Pure apart from reading the vendored schemas (statestore/schemas) once, on the first
check: no network (`no_network=True`, and `xml.xsd` served from the package), no clock.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

if TYPE_CHECKING:
    from lxml.etree._docloader import _InputDocument

from statestore.domain.errors import SipError

CONTENT_TYPE = "application/pidf+xml"
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
MAX_PIDF_BYTES = 16 * 1024
MAX_DEPTH = 32
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
_XML_XSD_LOCATIONS = frozenset({"http://www.w3.org/2001/xml.xsd", "http://www.w3.org/2001/03/xml.xsd"})


def _safe_parser(remove_blank_text: bool = False) -> etree.XMLParser:
    """A parser that never expands an entity, loads a DTD or touches the network."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=remove_blank_text,
    )


class _LocalXmlXsd(etree.Resolver):
    """Serves the W3C `xml.xsd` that the RFC schemas import from the package copy, whether
    or not libxml2 read XML_CATALOG_FILES before (it reads it once per process)."""

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> _InputDocument | None:
        if system_url in _XML_XSD_LOCATIONS:
            return self.resolve_filename(str(SCHEMAS_DIR / "xml.xsd"), context)
        return None


def schema_parser() -> etree.XMLParser:
    """The parser to read a vendored schema with: its imports never leave the package."""
    os.environ["XML_CATALOG_FILES"] = str(SCHEMAS_DIR / "catalog.xml")
    parser = _safe_parser()
    parser.resolvers.add(_LocalXmlXsd())
    return parser


@functools.cache
def presence_schema() -> etree.XMLSchema:
    """presence-all.xsd (pidf + data-model + rpid), compiled once per process."""
    return etree.XMLSchema(etree.parse(str(SCHEMAS_DIR / "presence-all.xsd"), schema_parser()))


def _bad_request(why: str) -> SipError:
    return SipError(400, f"Bad Request - {why}")


def _check_content_type(content_type: str) -> None:
    """RFC 3903 §6 step 5: a type the package does not know is 415, with Accept."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != CONTENT_TYPE:
        raise SipError(415, "Unsupported Media Type", {"Accept": CONTENT_TYPE})


def _parse(body: bytes) -> etree._Element:
    try:
        root = etree.fromstring(body, _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise _bad_request("PIDF body is not well-formed XML") from exc
    info = root.getroottree().docinfo
    # Any DTD is refused, even one that declares nothing: PIDF needs none (RFC 3863 §4.4
    # is an XML Schema), and a DTD is how entity bombs and external entities come in.
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise _bad_request("DOCTYPE not allowed in PIDF")
    return root


def _deeper_than(root: etree._Element, limit: int) -> bool:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in element)
    return False


def _check_structure(root: etree._Element) -> None:
    if _deeper_than(root, MAX_DEPTH):
        raise _bad_request("PIDF nested too deep")
    if root.tag != f"{{{PIDF_NS}}}presence":
        raise _bad_request("root is not PIDF presence")
    # RFC 3863 §4.1.1: the presentity's URI; the schema requires it too, but an empty one
    # would pass as an xs:anyURI.
    if not (root.get("entity") or "").strip():
        raise _bad_request("PIDF presence has no entity")


def _tuples_first(root: etree._Element) -> etree._Element:
    """The document with <presence>'s children in the order RFC 3863 §4.4's schema asks for
    (every <tuple>, then every <note>, then the extensions such as <dm:person>), each group
    in the order it came in.

    baresip (1.0) publishes its <dm:person> before its <tuple>, which the schema refuses.
    Composition reads tuples and persons by kind and id, never by position, so nothing is
    lost by moving them; the document is stored in the schema's order, so that what watchers
    receive is valid whoever composed it. Anything still invalid after that is refused."""
    ordered = etree.Element(root.tag, root.attrib, nsmap=root.nsmap)
    ordered.text = root.text
    children = list(root)
    tuples = [child for child in children if child.tag == f"{{{PIDF_NS}}}tuple"]
    notes = [child for child in children if child.tag == f"{{{PIDF_NS}}}note"]
    others = [child for child in children if child not in tuples and child not in notes]
    for child in tuples + notes + others:
        ordered.append(child)
    return ordered


def check_pidf(body: bytes, content_type: str) -> str:
    """The published document as text to store, or SipError (415, 413, 400)."""
    _check_content_type(content_type)
    if len(body) > MAX_PIDF_BYTES:
        raise SipError(413, "Request Entity Too Large")
    root = _parse(body)
    _check_structure(root)
    schema = presence_schema()
    if not schema.validate(root):
        root = _tuples_first(root)
        if not schema.validate(root):
            raise _bad_request("PIDF body is not valid")
    # Stored without its XML declaration: the text is UTF-8 from here on, whatever
    # encoding the body declared.
    return etree.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class PidfTuple:
    """One <tuple> of a document (RFC 3863 §4.1.2): a service or device of the presentity."""

    id: str
    basic: str
    contact: str
    note: str
    timestamp: str
    xml: str


@dataclass(frozen=True)
class PidfPerson:
    """One <dm:person> (RFC 4479 §3.1) and the names of its RPID activities (RFC 4480 §3.2)."""

    id: str
    activities: tuple[str, ...]
    xml: str


@dataclass(frozen=True)
class PidfDocument:
    entity: str
    tuples: tuple[PidfTuple, ...]
    persons: tuple[PidfPerson, ...]


def _child_text(element: etree._Element, path: str) -> str:
    found = element.find(path, {"p": PIDF_NS})
    return (found.text or "").strip() if found is not None else ""


def _tuple(element: etree._Element) -> PidfTuple:
    return PidfTuple(
        id=element.get("id") or "",
        basic=_child_text(element, "p:status/p:basic"),
        contact=_child_text(element, "p:contact"),
        note=_child_text(element, "p:note"),
        timestamp=_child_text(element, "p:timestamp"),
        xml=etree.tostring(element, encoding="unicode", with_tail=False),
    )


def _person(element: etree._Element) -> PidfPerson:
    activities = tuple(
        etree.QName(activity).localname
        for group in element.iterfind(f"{{{RPID_NS}}}activities")
        for activity in group
        if isinstance(activity.tag, str) and activity.tag != f"{{{RPID_NS}}}note"
    )
    return PidfPerson(
        id=element.get("id") or "",
        activities=activities,
        xml=etree.tostring(element, encoding="unicode", with_tail=False),
    )


def parse_stored(text: str) -> PidfDocument:
    """Read a document that `check_pidf` returned; etree.XMLSyntaxError if it no longer parses."""
    root = etree.fromstring(text.encode("utf-8"), _safe_parser(remove_blank_text=True))
    return PidfDocument(
        entity=root.get("entity") or "",
        tuples=tuple(_tuple(element) for element in root.iterfind(f"{{{PIDF_NS}}}tuple")),
        persons=tuple(_person(element) for element in root.iterfind(f"{{{DM_NS}}}person")),
    )


def element_of(xml: str) -> etree._Element:
    """An element back from the `xml` of a PidfTuple or PidfPerson (already checked)."""
    return etree.fromstring(xml.encode("utf-8"), _safe_parser(remove_blank_text=True))
