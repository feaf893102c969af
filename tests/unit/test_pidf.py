"""PUBLISH bodies of the presence package: hostile XML refused with the right 4xx and nothing
fetched (RFC 3903 §6 step 5), the RFC 3863 examples accepted and read back."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statestore.domain.errors import SipError
from statestore.domain.pidf import (
    CONTENT_TYPE,
    MAX_DEPTH,
    MAX_PIDF_BYTES,
    check_pidf,
    parse_stored,
)
from tests.presence_schema import validate_pidf
from tests.schema import schemas_dir

EXAMPLES = sorted((schemas_dir() / "examples").glob("rfc3863-*.xml"))
PRESENCE = '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">{}</presence>'
OPEN_TUPLE = '<tuple id="t1"><status><basic>open</basic></status><contact>sip:alice@192.0.2.1</contact></tuple>'


def pidf_body(inner: str = OPEN_TUPLE) -> bytes:
    return PRESENCE.format(inner).encode()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on loopback that records whether anything connected to it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def assert_nothing_connected(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


def refused(body: bytes, content_type: str = CONTENT_TYPE) -> SipError:
    with pytest.raises(SipError) as caught:
        check_pidf(body, content_type)
    return caught.value


def billion_laughs() -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)
    ]
    return (
        f'<?xml version="1.0"?><!DOCTYPE presence [{"".join(entities)}]>'
        + PRESENCE.format("<note>&lol9;</note>")
    ).encode()


def test_billion_laughs_is_refused_without_expansion() -> None:
    started = time.monotonic()
    error = refused(billion_laughs())
    # libxml2 may already stop at the amplification (not well-formed); else the DOCTYPE is.
    assert error.status == 400
    assert error.reason in (
        "Bad Request - DOCTYPE not allowed in PIDF", "Bad Request - PIDF body is not well-formed XML"
    )
    assert time.monotonic() - started < 1.0


def test_external_file_entity_is_refused_and_not_read() -> None:
    body = (
        '<!DOCTYPE presence [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        + PRESENCE.format("<note>&xxe;</note>")
    ).encode()
    error = refused(body)
    assert error.status == 400
    assert "root:" not in error.reason


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://127.0.0.1:{port}/x"])
def test_external_http_entity_is_refused_and_not_fetched(url: str, listener: socket.socket) -> None:
    url = url.format(port=listener.getsockname()[1])
    for body in (
        f'<!DOCTYPE presence [<!ENTITY xxe SYSTEM "{url}">]>' + PRESENCE.format("<note>&xxe;</note>"),
        f'<!DOCTYPE presence [<!ENTITY % pe SYSTEM "{url}"> %pe;]>' + PRESENCE.format(""),
        f'<!DOCTYPE presence SYSTEM "{url}">' + PRESENCE.format(""),
    ):
        assert refused(body.encode()).status == 400
    assert_nothing_connected(listener)


def test_schema_location_hint_is_not_fetched(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    body = (
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@example.com"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        f' xsi:schemaLocation="urn:ietf:params:xml:ns:pidf http://127.0.0.1:{port}/pidf.xsd"/>'
    )
    check_pidf(body.encode(), CONTENT_TYPE)
    assert_nothing_connected(listener)


@pytest.mark.parametrize(
    "body",
    [b"<!DOCTYPE presence>" + pidf_body(), b'<!DOCTYPE presence [<!ELEMENT presence ANY>]>' + pidf_body()],
    ids=["doctype", "internal-subset"],
)
def test_a_dtd_alone_is_refused(body: bytes) -> None:
    assert refused(body).reason == "Bad Request - DOCTYPE not allowed in PIDF"


def test_ten_thousand_deep_nesting_is_refused_by_its_size() -> None:
    deep = "<a>" * 10_000 + "</a>" * 10_000
    assert refused(pidf_body(deep)).status == 413


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    inner = '<x:a xmlns:x="urn:example">' * MAX_DEPTH + "</x:a>" * MAX_DEPTH
    assert refused(pidf_body(OPEN_TUPLE + inner)).reason == "Bad Request - PIDF nested too deep"


def test_two_thousand_deep_nesting_under_the_size_limit_is_refused() -> None:
    deep = "<a>" * 2000 + "</a>" * 2000
    assert refused(pidf_body(deep)).status == 400


def test_one_megabyte_body_is_413() -> None:
    body = pidf_body(OPEN_TUPLE + "<note>" + "x" * 1_000_000 + "</note>")
    error = refused(body)
    assert (error.status, error.reason) == (413, "Request Entity Too Large")


def test_body_of_exactly_the_limit_is_not_refused_for_its_size() -> None:
    filler = MAX_PIDF_BYTES - len(pidf_body(OPEN_TUPLE + "<note></note>"))
    body = pidf_body(OPEN_TUPLE + "<note>" + "x" * filler + "</note>")
    assert len(body) == MAX_PIDF_BYTES
    check_pidf(body, CONTENT_TYPE)


def test_wrong_root_is_refused() -> None:
    body = b'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity="sip:a@b"/>'
    assert refused(body).reason == "Bad Request - root is not PIDF presence"


def test_presence_outside_the_pidf_namespace_is_refused() -> None:
    assert refused(b'<presence entity="sip:a@example.com"/>').reason == "Bad Request - root is not PIDF presence"


@pytest.mark.parametrize("content_type", ["application/dialog-info+xml", "text/xml", "", "application/pidf"])
def test_wrong_content_type_is_415_with_accept(content_type: str) -> None:
    error = refused(pidf_body(), content_type)
    assert (error.status, error.reason, error.headers) == (415, "Unsupported Media Type", {"Accept": CONTENT_TYPE})


def test_content_type_parameters_and_case_are_ignored() -> None:
    check_pidf(pidf_body(), "Application/PIDF+XML ; charset=UTF-8")


@pytest.mark.parametrize(
    "body",
    [b"", b"<presence", b"not xml", pidf_body("<tuple id='t1'>"), b"\xff\xfe<\x00"],
    ids=["empty", "unclosed", "text", "bad-nesting", "bad-encoding"],
)
def test_not_well_formed_is_refused(body: bytes) -> None:
    assert refused(body).reason == "Bad Request - PIDF body is not well-formed XML"


def test_schema_invalid_basic_value_is_refused() -> None:
    body = pidf_body('<tuple id="t1"><status><basic>maybe</basic></status></tuple>')
    assert refused(body).reason == "Bad Request - PIDF body is not valid"


def test_invalid_rpid_extension_is_refused() -> None:
    person = (
        '<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" id="p1">'
        "<rpid:activities><rpid:dancing/></rpid:activities></dm:person>"
    )
    assert refused(pidf_body(OPEN_TUPLE + person)).reason == "Bad Request - PIDF body is not valid"


@pytest.mark.parametrize("entity", ["", "  "])
def test_missing_or_empty_entity_is_refused(entity: str) -> None:
    body = f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}"/>'.encode()
    assert refused(body).status == 400
    no_entity = refused(b'<presence xmlns="urn:ietf:params:xml:ns:pidf"/>')
    assert no_entity.reason == "Bad Request - PIDF presence has no entity"


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_rfc3863_examples_are_accepted(example: Path) -> None:
    stored = check_pidf(example.read_bytes(), CONTENT_TYPE)
    validate_pidf(stored.encode())
    document = parse_stored(stored)
    assert document.entity == "pres:someone@example.com"
    assert document.tuples and all(t.basic == "open" for t in document.tuples)


def test_rfc3863_examples_are_all_there() -> None:
    assert len(EXAMPLES) == 6


def test_a_declared_encoding_is_stored_as_text() -> None:
    body = ("<?xml version='1.0' encoding='ISO-8859-1'?>" + PRESENCE.format(OPEN_TUPLE + "<note>café</note>")).encode(
        "latin-1"
    )
    stored = check_pidf(body, CONTENT_TYPE)
    assert "café" in stored
    assert not stored.startswith("<?xml")


def test_parse_stored_reads_tuples_and_persons() -> None:
    person = (
        '<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" id="p1">'
        "<rpid:activities><rpid:note>lunch</rpid:note><rpid:meal/><rpid:busy/></rpid:activities></dm:person>"
    )
    tuple_ = (
        '<tuple id="t9"><status><basic>closed</basic></status><contact>sip:a@192.0.2.9</contact>'
        "<note>gone</note><timestamp>2026-12-06T10:00:00Z</timestamp></tuple>"
    )
    document = parse_stored(check_pidf(pidf_body(tuple_ + person), CONTENT_TYPE))
    (only,) = document.tuples
    assert (only.id, only.basic, only.contact, only.note, only.timestamp) == (
        "t9", "closed", "sip:a@192.0.2.9", "gone", "2026-12-06T10:00:00Z"
    )
    assert only.xml.startswith("<tuple")
    (someone,) = document.persons
    assert (someone.id, someone.activities) == ("p1", ("meal", "busy"))


# baresip 1.0 (Debian 12, modules/presence/publisher.c), byte for byte apart from the AoR:
# its person comes before its tuple, and before it has registered its status is "unknown".
BARESIP = (
    '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\r\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf"\r\n'
    '    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"\r\n'
    '    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"\r\n'
    '    entity="sip:pat@example.com">\r\n'
    '  <dm:person id="p4159"><rpid:activities/></dm:person>\r\n'
    '  <tuple id="t4109">\r\n'
    "    <status>\r\n"
    "      <basic>{}</basic>\r\n"
    "    </status>\r\n"
    "    <contact>sip:pat@example.com</contact>\r\n"
    "  </tuple>\r\n"
    "</presence>\r\n"
)


@pytest.mark.parametrize("basic", ["open", "closed"])
def test_a_person_before_the_tuples_is_accepted_and_stored_after_them(basic: str) -> None:
    stored = check_pidf(BARESIP.format(basic).encode(), CONTENT_TYPE)
    validate_pidf(stored.encode())
    assert stored.index("<tuple") < stored.index("<dm:person")
    document = parse_stored(stored)
    assert [(t.id, t.basic) for t in document.tuples] == [("t4109", basic)]
    assert [p.id for p in document.persons] == ["p4159"]


def test_notes_and_extensions_are_put_after_the_tuples_each_in_their_order() -> None:
    person = (
        '<dm:person xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" id="p{}"/>'
    )
    second = OPEN_TUPLE.replace('id="t1"', 'id="t2"')
    body = pidf_body(person.format(1) + "<note>a</note>" + OPEN_TUPLE + person.format(2) + second + "<note>b</note>")
    stored = check_pidf(body, CONTENT_TYPE)
    validate_pidf(stored.encode())
    document = parse_stored(stored)
    assert [t.id for t in document.tuples] == ["t1", "t2"]
    assert [p.id for p in document.persons] == ["p1", "p2"]
    assert stored.index(">a<") < stored.index(">b<") < stored.index('id="p1"')


def test_an_unknown_basic_status_is_refused_even_in_baresips_order() -> None:
    assert refused(BARESIP.format("unknown").encode()).reason == "Bad Request - PIDF body is not valid"
