"""Test helper: validate dialog-info (RFC 4235), reginfo (RFC 3680) and watcherinfo
(RFC 3858) bodies against their schemas.

Uses `dialog-info-display-attr.xsd` (the RFC 4235 §4.4 schema with `display` in place of
`display-name`, as in the RFC prose) from the project's one schemas directory,
statestore/schemas (the runtime's too), or `$BLF_SCHEMAS_DIR` when set. The catalog there
maps the schema's remote xml.xsd import to a local copy, so this works offline.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from lxml import etree

from statestore.domain.pidf import SCHEMAS_DIR

DIALOG_INFO_NS = "urn:ietf:params:xml:ns:dialog-info"
REGINFO_NS = "urn:ietf:params:xml:ns:reginfo"
WATCHERINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
SCHEMA_FILE = "dialog-info-display-attr.xsd"
# The schema leaves <state> free text; RFC 4235 §4.1.2 names the FSM states of
# §3.7.1, and erratum 2861 proposes this lower-case enumeration.
DIALOG_STATES = frozenset({"trying", "proceeding", "early", "confirmed", "terminated"})


def schemas_dir() -> Path:
    override = os.environ.get("BLF_SCHEMAS_DIR")
    if override:
        return Path(override)
    return SCHEMAS_DIR


@functools.cache
def _schema(file_name: str) -> etree.XMLSchema:
    """Compile a schema once; XML_CATALOG_FILES must be set before compiling."""
    directory = schemas_dir()
    os.environ["XML_CATALOG_FILES"] = str(directory / "catalog.xml")
    return etree.XMLSchema(etree.parse(str(directory / file_name)))


def dialog_info_schema() -> etree.XMLSchema:
    return _schema(SCHEMA_FILE)


def _validate(body: bytes, file_name: str, what: str) -> etree._Element:
    """The parsed document; AssertionError, with lxml's error log, unless it is valid."""
    try:
        document = etree.fromstring(body)
    except etree.XMLSyntaxError as exc:
        raise AssertionError(f"{what} body is not well-formed: {exc}") from exc
    schema = _schema(file_name)
    if not schema.validate(document):
        raise AssertionError(f"{what} body is invalid:\n{schema.error_log}")
    return document


def validate_reginfo(body: bytes) -> etree._Element:
    """Validate an application/reginfo+xml body (RFC 3680 §5.4) and return it parsed."""
    return _validate(body, "reginfo.xsd", "reginfo")


def validate_watcherinfo(body: bytes) -> etree._Element:
    """Validate an application/watcherinfo+xml body (RFC 3858) and return it parsed."""
    return _validate(body, "watcherinfo.xsd", "watcherinfo")


def validate_dialog_info(body: bytes) -> None:
    """Raise AssertionError, with lxml's error log, unless `body` is a valid document."""
    document = _validate(body, SCHEMA_FILE, "dialog-info")
    states = document.iterfind(f"{{{DIALOG_INFO_NS}}}dialog/{{{DIALOG_INFO_NS}}}state")
    for state in states:
        value = state.text or ""
        if value not in DIALOG_STATES:
            raise AssertionError(f"line {state.sourceline}: unknown dialog state {value!r}")
