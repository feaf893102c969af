"""The PUBLISH state machine (RFC 3903 §4, §6): every row of the table, every refusal of
the checks, and entity-tags never reused across a publication's life."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statestore.domain.errors import SipError
from statestore.domain.model import Publication
from statestore.domain.packages import PRESENCE, publishable
from statestore.domain.publication import (
    TOO_MANY_PUBLICATIONS,
    TRANSITIONS,
    Action,
    Checked,
    Held,
    Kind,
    PublishRequest,
    admit,
    check,
    check_body,
    check_headers,
    decide,
    device_of,
    held,
    kind_of,
)

NOW = 1_000_000.0
ALICE = "alice@example.com"
PIDF = (
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">'
    '<tuple id="t1"><status><basic>{}</basic></status></tuple></presence>'
)
OPEN, CLOSED = PIDF.format("open").encode(), PIDF.format("closed").encode()
CT = "application/pidf+xml"


def request(
    event: str | None = "presence", expires: str | None = "3600", if_match: str | None = None,
    content_type: str = CT, body: bytes = OPEN,
) -> PublishRequest:
    return PublishRequest(event, expires, if_match, content_type, body)


def refusal(req: PublishRequest, min_expires: int | None = None) -> SipError:
    with pytest.raises(SipError) as caught:
        check(req, min_expires)
    return caught.value


def stored(
    etag: str = "e1", expires_at: float = NOW + 100, account: str = ALICE, event: str = "presence"
) -> Publication:
    return Publication(account, event, etag, expires_at, CT, OPEN.decode(), NOW - 10, "ks1", "dev")


# --- the table -------------------------------------------------------------------------------


def test_the_table_has_one_row_per_meaningful_pair() -> None:
    assert set(TRANSITIONS) == {(Kind.INITIAL, Held.NOT_ASKED)} | {
        (kind, h) for kind in (Kind.REFRESH, Kind.MODIFY, Kind.REMOVE) for h in (Held.LIVE, Held.GONE)
    }


@pytest.mark.parametrize(
    ("has_if_match", "has_body", "expires", "kind"),
    [
        (False, True, None, Kind.INITIAL),
        (False, True, 3600, Kind.INITIAL),
        (True, False, 3600, Kind.REFRESH),
        (True, False, None, Kind.REFRESH),
        (True, True, 3600, Kind.MODIFY),
        (True, False, 0, Kind.REMOVE),
        (True, True, 0, Kind.REMOVE),
    ],
)
def test_kind_of_the_request(has_if_match: bool, has_body: bool, expires: int | None, kind: Kind) -> None:
    assert kind_of(has_if_match, has_body, expires) is kind


@pytest.mark.parametrize(("has_body", "expires"), [(False, 3600), (False, None), (True, 0), (False, 0)])
def test_without_an_entity_tag_a_body_is_required_and_nothing_is_removed(has_body: bool, expires: int | None) -> None:
    with pytest.raises(SipError) as caught:
        kind_of(False, has_body, expires)
    assert caught.value.status == 400


def test_initial_creates_with_the_new_etag_and_the_expiry_granted() -> None:
    verdict = decide(check(request()), ALICE, None, NOW, "new1", "dev", "ks1")
    assert verdict.action is Action.CREATE and verdict.delete is None
    assert verdict.headers == {"SIP-ETag": "new1", "Expires": "3600"}
    assert verdict.write is not None
    body = verdict.write.body
    assert verdict.write == Publication(ALICE, "presence", "new1", NOW + 3600, CT, body, NOW, "ks1", "dev")
    assert "open" in verdict.write.body


def test_refresh_replaces_under_a_new_etag_keeping_the_document() -> None:
    old = stored()
    verdict = decide(check(request(if_match="e1", body=b"", expires="600")), ALICE, old, NOW, "new2", "", "ks2")
    assert verdict.action is Action.REPLACE and verdict.delete == old
    assert verdict.headers == {"SIP-ETag": "new2", "Expires": "600"}
    assert verdict.write == replace(old, etag="new2", expires_at=NOW + 600, instance="ks2")


def test_modify_replaces_the_document_under_a_new_etag() -> None:
    old = stored()
    verdict = decide(check(request(if_match="e1", body=CLOSED)), ALICE, old, NOW, "new3", "dev2", "ks1")
    assert verdict.action is Action.REPLACE and verdict.delete == old
    assert verdict.write is not None and "closed" in verdict.write.body
    assert verdict.write.etag == "new3" and verdict.write.published_at == NOW and verdict.write.device == "dev2"
    assert verdict.headers["SIP-ETag"] == "new3"


def test_remove_deletes_and_answers_expires_zero_without_an_etag() -> None:
    old = stored()
    verdict = decide(check(request(if_match="e1", body=b"", expires="0")), ALICE, old, NOW, "unused")
    assert verdict.action is Action.DELETE and verdict.write is None and verdict.delete == old
    assert verdict.headers == {"Expires": "0"}


GONE_CASES = {
    "unknown": None,
    "expired": stored(expires_at=NOW),
    "another account's": stored(account="bob@example.com"),
    "another event's": stored(event="dialog"),
    "another tag's": stored(etag="e2"),
}


@pytest.mark.parametrize("case", list(GONE_CASES))
@pytest.mark.parametrize(
    "req",
    [
        request(if_match="e1", body=b""),
        request(if_match="e1", body=CLOSED),
        request(if_match="e1", body=b"", expires="0"),
    ],
    ids=["refresh", "modify", "remove"],
)
def test_an_entity_tag_not_held_live_is_412(case: str, req: PublishRequest) -> None:
    checked = check(req)
    assert held(checked, ALICE, GONE_CASES[case], NOW) is Held.GONE
    with pytest.raises(SipError) as caught:
        decide(checked, ALICE, GONE_CASES[case], NOW, "x")
    assert caught.value.status == 412 and caught.value.reason == "Conditional Request Failed"


# --- the checks that need no store ------------------------------------------------------------


def test_an_event_that_cannot_be_published_is_489_listing_the_publishable_ones() -> None:
    for event in ("dialog", "message-summary", None, ""):
        error = refusal(request(event=event))
        assert error.status == 489 and error.headers == {"Allow-Events": "presence"}


def test_event_parameters_are_ignored() -> None:
    assert check(request(event="Presence;id=7")).package is publishable("presence")


@pytest.mark.parametrize("expires", ["abc", "-5", "1.5", "٣"])
def test_unreadable_expires_is_400(expires: str) -> None:
    assert refusal(request(expires=expires)).status == 400


def test_below_the_minimum_is_423_with_min_expires() -> None:
    error = refusal(request(expires="59"))
    assert (error.status, error.headers) == (423, {"Min-Expires": "60"})
    error = refusal(request(expires="3"), min_expires=5)
    assert (error.status, error.headers) == (423, {"Min-Expires": "5"})
    assert check(request(expires="5"), min_expires=5).expires == 5


def test_above_the_maximum_is_granted_the_maximum_and_absent_the_default() -> None:
    assert PRESENCE.publishing is not None
    assert check(request(expires="999999")).expires == PRESENCE.publishing.max_expires
    assert check(request(expires=None)).expires == PRESENCE.publishing.default_expires


def test_a_body_type_the_package_does_not_take_is_415_with_accept() -> None:
    for content_type in ("text/plain", "application/xpidf+xml", ""):
        error = refusal(request(content_type=content_type))
        assert (error.status, error.headers) == (415, {"Accept": CT})
    assert refusal(request(if_match="e1", content_type="text/plain", body=b"x")).status == 415


def test_content_type_parameters_and_case_are_accepted() -> None:
    assert check(request(content_type="Application/PIDF+XML; charset=UTF-8")).content_type == CT


@pytest.mark.parametrize(
    "body",
    [
        b"<presence",
        b"<notpidf/>",
        b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY x "y">]>' + OPEN,
    ],
    ids=["malformed", "another root", "dtd"],
)
def test_a_body_the_pidf_check_refuses_is_400(body: bytes) -> None:
    assert refusal(request(body=body)).status == 400


def test_an_oversized_body_is_413() -> None:
    big = PIDF.format("open").replace("</presence>", f"<note>{'x' * 20000}</note></presence>").encode()
    assert refusal(request(body=big)).status == 413


def test_a_refresh_body_is_not_checked_and_a_removal_body_is_ignored() -> None:
    assert check(request(if_match="e1", body=b"", content_type="")).kind is Kind.REFRESH
    removal = check(request(if_match="e1", body=b"junk", content_type="text/plain", expires="0"))
    assert removal.kind is Kind.REMOVE and removal.document == ""


def test_device_is_the_instance_else_the_contact_else_the_source() -> None:
    assert device_of("urn:uuid:1", "sip:a@1.2.3.4", "udp:1.2.3.4:5060") == "urn:uuid:1"
    assert device_of("", "sip:a@1.2.3.4", "udp:1.2.3.4:5060") == "sip:a@1.2.3.4"
    assert device_of("", "", "udp:1.2.3.4:5060") == "udp:1.2.3.4:5060"


# --- property: entity-tags are never reused ----------------------------------------------------

STEPS = st.lists(st.sampled_from(["refresh", "modify"]), min_size=1, max_size=20)


@given(STEPS)
def test_every_successful_publish_carries_a_new_etag_and_the_old_one_stops_working(steps: list[str]) -> None:
    """RFC 3903 §6 step 6: a new entity-tag on every success; the replaced one is 412 after."""
    fresh = (f"tag{n}" for n in itertools.count())
    verdict = decide(check(request()), ALICE, None, NOW, next(fresh))
    current = verdict.write
    seen = {verdict.headers["SIP-ETag"]}
    for step in steps:
        assert current is not None
        body = b"" if step == "refresh" else CLOSED
        checked = check(request(if_match=current.etag, body=body))
        verdict = decide(checked, ALICE, current, NOW, next(fresh))
        etag = verdict.headers["SIP-ETag"]
        assert etag not in seen and verdict.write is not None and verdict.write.etag == etag
        seen.add(etag)
        # The store now holds only the new one: the old tag names nothing.
        with pytest.raises(SipError) as caught:
            decide(checked, ALICE, None, NOW, next(fresh))
        assert caught.value.status == 412
        current = verdict.write


def test_checked_is_what_decide_takes() -> None:
    checked = check(request())
    assert isinstance(checked, Checked) and checked.kind is Kind.INITIAL and checked.etag == ""


# --- admit: the per-account cap, and a device publishing anew ------------------------------------

def _pub(etag: str, device: str, expires_at: float = 2e9) -> Publication:
    return Publication("alice@example.com", "presence", etag, expires_at, "application/pidf+xml", "<x/>", 1.0,
                       device=device)


def test_a_device_publishing_anew_replaces_its_older_publication() -> None:


    older, other = _pub("e1", "urn:uuid:phone"), _pub("e2", "urn:uuid:desk")
    assert admit(_pub("e3", "urn:uuid:phone"), [older, other], 1e9) == (older,)


def test_the_cap_counts_live_publications_of_other_devices_only() -> None:


    existing = [_pub(f"e{n}", f"dev-{n}") for n in range(3)] + [_pub("old", "dev-x", expires_at=1.0)]
    assert admit(_pub("new", "dev-0"), existing, 1e9, cap=3) == (existing[0],)
    with pytest.raises(SipError) as refused:
        admit(_pub("new", "dev-9"), existing, 1e9, cap=3)
    assert (refused.value.status, refused.value.reason) == (403, TOO_MANY_PUBLICATIONS)


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [(CT, b"<presence", 400), ("text/plain", b"hello", 415), (CT, b"<" * 70_000, 413)],
    ids=["malformed", "other-type", "too-large"],
)
def test_the_body_is_checked_apart_from_the_headers(content_type: str, body: bytes, status: int) -> None:
    """Headers before the digest, the document after it: check_headers parses no body."""
    headers_only = check_headers(request(content_type=content_type, body=body))
    assert headers_only.kind is Kind.INITIAL and headers_only.document == ""
    with pytest.raises(SipError) as caught:
        check_body(headers_only, request(content_type=content_type, body=body))
    assert caught.value.status == status
    checked = check_body(check_headers(request()), request())
    assert checked == check(request()) and checked.document == OPEN.decode()
