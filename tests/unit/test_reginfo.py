"""RFC 3680 reginfo rendering: full and partial state, schema validity, the digest."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from statestore.domain import reginfo
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Binding
from statestore.domain.uri_identity import binding_id
from tests.schema import REGINFO_NS, validate_reginfo

NS = f"{{{REGINFO_NS}}}"
AOR = "sip:alice@example.com"
NOW = 1000.0
NO_PROFILE: frozenset[str] = frozenset()


def make_binding(contact: str = "sip:alice@192.0.2.1:5060", expires_at: float = NOW + 300, **changes: Any) -> Binding:
    return Binding("alice@example.com", contact, expires_at, f"call-{contact}", 1, **changes)


def state_of(*bindings: Binding, now: float = NOW) -> PresentityState:
    return PresentityState((), tuple(bindings), now=now)


def render(
    state: PresentityState, previous: PresentityState | None = None, version: int | str = 0, entity: str = AOR
) -> etree._Element:
    """Render, validate against reginfo.xsd, and parse: every body here is validated."""
    return validate_reginfo(reginfo.render(entity, version, state, NO_PROFILE, previous))


def registration(root: etree._Element) -> etree._Element:
    (node,) = root.findall(f"{NS}registration")
    return node


def contacts(root: etree._Element) -> dict[str, dict[str, str]]:
    """Each <contact> by its uri: its attributes, with the uri under "uri"."""
    shown = {}
    for node in registration(root).findall(f"{NS}contact"):
        uri = node.findtext(f"{NS}uri") or ""
        shown[uri] = {**dict(node.items()), "uri": uri}
    return shown


def test_content_type() -> None:
    assert reginfo.CONTENT_TYPE == "application/reginfo+xml"


@pytest.mark.parametrize(("version", "entity"), [(0, AOR), (17, "sips:o'brien&co@example.com;user=phone")])
def test_root_and_registration_attributes(version: int, entity: str) -> None:
    root = render(state_of(make_binding()), version=version, entity=entity)
    assert dict(root.items()) == {"version": str(version), "state": "full"}
    assert dict(registration(root).items()) == {"aor": entity, "id": "reg", "state": "active"}


def test_full_state_lists_live_bindings_as_registered() -> None:
    phone = make_binding("sip:alice@192.0.2.1:5060", NOW + 300)
    softphone = make_binding("sip:alice@192.0.2.2:5070;transport=tcp", NOW + 59.6, q=0.5, sip_instance="urn:uuid:1")
    expired = make_binding("sip:alice@192.0.2.3:5060", NOW)
    shown = contacts(render(state_of(phone, softphone, expired)))
    assert shown == {
        phone.contact: {
            "id": binding_id(phone), "state": "active", "event": "registered", "expires": "300", "uri": phone.contact,
        },
        softphone.contact: {
            "id": binding_id(softphone), "state": "active", "event": "registered", "expires": "60", "q": "0.5",
            "uri": softphone.contact,
        },
    }


def test_full_state_without_bindings_is_init() -> None:
    root = render(state_of(make_binding(expires_at=NOW - 1)))
    assert registration(root).get("state") == "init"
    assert contacts(root) == {}


def events(previous: PresentityState, state: PresentityState) -> dict[str, tuple[str, str]]:
    root = render(state, previous)
    assert root.get("state") == "partial"
    return {uri: (attributes["state"], attributes["event"]) for uri, attributes in contacts(root).items()}


def test_partial_created_refreshed_shortened() -> None:
    kept, shortened = make_binding("sip:a@192.0.2.1"), make_binding("sip:b@192.0.2.2")
    unchanged = make_binding("sip:c@192.0.2.3")
    previous = state_of(kept, shortened, unchanged)
    new = make_binding("sip:d@192.0.2.4")
    state = state_of(
        replace(kept, expires_at=NOW + 900), replace(shortened, expires_at=NOW + 10), unchanged, new, now=NOW + 5
    )
    assert events(previous, state) == {
        kept.contact: ("active", "refreshed"),
        shortened.contact: ("active", "shortened"),
        new.contact: ("active", "created"),
    }
    assert reginfo.changed(previous, state)


def test_partial_gone_bindings_are_terminated_expired_or_unregistered() -> None:
    removed, lapsed = make_binding("sip:a@192.0.2.1"), make_binding("sip:b@192.0.2.2", NOW + 10)
    held = make_binding("sip:c@192.0.2.3", NOW + 20)
    previous = state_of(removed, lapsed, held)
    # `lapsed` is gone from the store after its expiry, `held` is still held though expired.
    state = state_of(held, now=NOW + 30)
    root = render(state, previous)
    assert registration(root).get("state") == "terminated"
    shown = contacts(root)
    assert {uri: (c["state"], c["event"]) for uri, c in shown.items()} == {
        removed.contact: ("terminated", "unregistered"),
        lapsed.contact: ("terminated", "expired"),
        held.contact: ("terminated", "expired"),
    }
    assert all("expires" not in attributes for attributes in shown.values())


def test_device_replacing_its_contact_is_refreshed_under_one_id() -> None:
    old = make_binding("sip:alice@192.0.2.1:5060", sip_instance="urn:uuid:1")
    new = make_binding("sip:alice@192.0.2.9:5060", sip_instance="urn:uuid:1")
    assert events(state_of(old), state_of(new)) == {new.contact: ("active", "refreshed")}


def test_nothing_changed_is_an_empty_partial_document() -> None:
    state = state_of(make_binding())
    root = render(replace(state, now=NOW + 60), state)
    assert contacts(root) == {}
    assert registration(root).get("state") == "active"
    assert not reginfo.changed(state, replace(state, now=NOW + 60))


def test_digest_ignores_now_and_follows_what_is_held() -> None:
    state = state_of(make_binding(), make_binding("sip:b@192.0.2.2", q=0.7))
    assert reginfo.digest(state, NO_PROFILE) == reginfo.digest(replace(state, now=NOW + 99), NO_PROFILE)
    reordered = state_of(*reversed(state.bindings))
    assert reginfo.digest(state, NO_PROFILE) == reginfo.digest(reordered, NO_PROFILE)
    refreshed = state_of(replace(state.bindings[0], expires_at=NOW + 600), state.bindings[1])
    assert reginfo.digest(state, NO_PROFILE) != reginfo.digest(refreshed, NO_PROFILE)


def test_placeholders_are_written_verbatim() -> None:
    """bodies.Template renders once with stand-ins, then substitutes their first occurrence."""
    body = reginfo.render("\u2063entity\u2063", "\u2063version\u2063", state_of(make_binding()), NO_PROFILE, None)
    filled = body.replace("\u2063version\u2063".encode(), b"42", 1).replace(
        "\u2063entity\u2063".encode(), b"sip:alice@example.com", 1
    )
    assert filled == reginfo.render(AOR, 42, state_of(make_binding()), NO_PROFILE, None)


CONTACTS = [f"sip:alice@192.0.2.{n}:5060" for n in range(1, 6)]
bindings = st.lists(
    st.builds(
        make_binding,
        contact=st.sampled_from(CONTACTS),
        expires_at=st.integers(int(NOW) - 50, int(NOW) + 500).map(float),
        q=st.sampled_from([1.0, 0.5, 0.123, 0.0]),
    ),
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(first=bindings, second=bindings, elapsed=st.integers(0, 100), version=st.integers(0, 2**32))
def test_partial_after_full_is_valid_and_consistent(
    first: list[Binding], second: list[Binding], elapsed: int, version: int
) -> None:
    previous, state = state_of(*first), state_of(*second, now=NOW + elapsed)
    full = render(previous, version=version)
    assert full.get("version") == str(version)
    live = {b.contact for b in first if b.expires_at > NOW}
    assert set(contacts(full)) == live
    partial = render(state, previous, version=version + 1)
    assert partial.get("version") == str(version + 1)
    shown = contacts(partial)
    now_live = {b.contact for b in second if b.expires_at > NOW + elapsed}
    assert {uri for uri, c in shown.items() if c["event"] == "created"} == now_live - live
    assert {uri for uri, c in shown.items() if c["state"] == "terminated"} == live - now_live
    assert reginfo.changed(previous, state) == bool(shown)
    state_now = registration(partial).get("state")
    assert state_now == ("active" if now_live else "terminated" if live else "init")
