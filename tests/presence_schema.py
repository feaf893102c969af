"""Test helper: validate application/pidf+xml bodies against RFC 3863 and its extensions.

Uses the schemas vendored in the package (statestore/schemas): `pidf.xsd` (RFC 3863 §4.4)
alone, and `presence-all.xsd`, which imports pidf, the data model (RFC 4479 §5.1) and RPID
(RFC 4480 §5.1) so that dm:/rpid: elements are checked in full rather than laxly skipped.
The package's catalog maps the RFC schemas' remote xml.xsd import to a local copy, so this
works offline.
"""

from __future__ import annotations

import functools

from lxml import etree

from statestore.domain.pidf import SCHEMAS_DIR, presence_schema, schema_parser

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
BASIC_VALUES = frozenset({"open", "closed"})


@functools.cache
def pidf_schema() -> etree.XMLSchema:
    """pidf.xsd alone, compiled once (the parser sets XML_CATALOG_FILES, serves xml.xsd)."""
    return etree.XMLSchema(etree.parse(str(SCHEMAS_DIR / "pidf.xsd"), schema_parser()))


def validate_pidf(body: bytes) -> etree._Element:
    """Raise AssertionError, with lxml's error log, unless `body` is a PIDF document valid
    against both pidf.xsd and presence-all.xsd; return its root."""
    try:
        document = etree.fromstring(body)
    except etree.XMLSyntaxError as exc:
        raise AssertionError(f"PIDF body is not well-formed: {exc}") from exc
    for schema in (pidf_schema(), presence_schema()):
        if not schema.validate(document):
            raise AssertionError(f"PIDF body is invalid:\n{schema.error_log}\n{body.decode()}")
    if document.tag != f"{{{PIDF_NS}}}presence":
        raise AssertionError(f"root is {document.tag}")
    ids = [node.get("id") for node in document.iter() if node.get("id") is not None]
    if len(ids) != len(set(ids)):
        raise AssertionError(f"ids not unique: {ids}")
    return document
