"""RFC 4235 dialog-info rendering: structure, schema validity and the change digest."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from statestore.domain.dialoginfo import CONTENT_TYPE, body_digest, render_dialog_info
from statestore.domain.model import Direction, Leg, LegState, Party, TerminationEvent
from tests.schema import DIALOG_INFO_NS, schemas_dir, validate_dialog_info

NS = f"{{{DIALOG_INFO_NS}}}"
ENTITY = "sip:alice@example.com"
EXAMPLES = schemas_dir() / "examples"
ACTIVE_STATES = [state for state in LegState if state is not LegState.TERMINATED]


def make_leg(**overrides: Any) -> Leg:
    values: dict[str, Any] = {
        "account": "alice@example.com",
        "instance": "node-a",
        "leg_id": "leg-1",
        "version": 1,
        "state": LegState.EARLY,
        "direction": Direction.RECIPIENT,
        "call_id": "call-1@example.com",
        "local_tag": "ltag1",
        "remote_tag": "",
        "local": Party(identity="sip:alice@example.com"),
        "remote": Party(identity="sip:bob@example.org"),
    }
    values.update(overrides)
    return Leg(**values)


def render(legs: list[Leg], version: int = 0, entity: str = ENTITY) -> etree._Element:
    """Render, check against the schema, and parse: every body in these tests is validated."""
    body = render_dialog_info(entity, version, legs)
    validate_dialog_info(body)
    return etree.fromstring(body)


def dialogs(root: etree._Element) -> list[etree._Element]:
    return root.findall(f"{NS}dialog")


def child_tags(node: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in node]


def test_content_type() -> None:
    assert CONTENT_TYPE == "application/dialog-info+xml"


def test_empty_legs_give_a_valid_document_without_dialogs() -> None:
    root = render([])
    assert root.tag == f"{NS}dialog-info"
    assert root.nsmap == {None: DIALOG_INFO_NS}
    assert dialogs(root) == []


def test_body_is_utf8_with_xml_declaration() -> None:
    leg = make_leg(remote=Party(identity="sip:zoe@example.org", display="Zoë"))
    body = render_dialog_info(ENTITY, 0, [leg])
    validate_dialog_info(body)
    assert body.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert "Zoë".encode() in body


@pytest.mark.parametrize(
    ("entity", "version"),
    [
        ("sip:alice@example.com", 0),
        ("sip:alice@example.com", 7),
        ("sip:bob@pbx.example.net;user=phone", 4294967295),
        ("sips:o'brien&co@example.com", 12),
    ],
)
def test_root_attributes_are_exact(entity: str, version: int) -> None:
    root = render([make_leg()], version=version, entity=entity)
    assert dict(root.items()) == {"version": str(version), "state": "full", "entity": entity}


def test_early_recipient_leg() -> None:
    leg = make_leg(state=LegState.EARLY, direction=Direction.RECIPIENT, remote_tag="")
    (dialog,) = dialogs(render([leg]))
    assert dict(dialog.items()) == {
        "id": "leg-1",
        "call-id": "call-1@example.com",
        "local-tag": "ltag1",
        "direction": "recipient",
    }
    assert child_tags(dialog) == ["state", "local", "remote"]
    assert dialog.findtext(f"{NS}state") == "early"
    assert dialog.findtext(f"{NS}local/{NS}identity") == "sip:alice@example.com"
    assert dialog.findtext(f"{NS}remote/{NS}identity") == "sip:bob@example.org"
    assert dialog.find(f"{NS}local/{NS}target") is None


def test_confirmed_initiator_leg_with_display_names_and_targets() -> None:
    leg = make_leg(
        state=LegState.CONFIRMED,
        direction=Direction.INITIATOR,
        remote_tag="rtag9",
        local=Party("sip:alice@example.com", "Alice", "sip:alice@10.0.0.5:5060"),
        remote=Party("sip:bob@example.org", "Bob", "sip:bob@192.0.2.7:5062;transport=tcp"),
    )
    (dialog,) = dialogs(render([leg], version=3))
    assert dict(dialog.items()) == {
        "id": "leg-1",
        "call-id": "call-1@example.com",
        "local-tag": "ltag1",
        "remote-tag": "rtag9",
        "direction": "initiator",
    }
    assert dialog.findtext(f"{NS}state") == "confirmed"
    expected = {
        "local": ("sip:alice@example.com", "Alice", "sip:alice@10.0.0.5:5060"),
        "remote": ("sip:bob@example.org", "Bob", "sip:bob@192.0.2.7:5062;transport=tcp"),
    }
    for tag, (uri, display, target) in expected.items():
        participant = dialog.find(f"{NS}{tag}")
        assert participant is not None
        assert child_tags(participant) == ["identity", "target"]
        identity = participant.find(f"{NS}identity")
        assert identity is not None
        assert (identity.text, dict(identity.items())) == (uri, {"display": display})
        target_node = participant.find(f"{NS}target")
        assert target_node is not None
        assert dict(target_node.items()) == {"uri": target}
        assert len(target_node) == 0


@pytest.mark.parametrize(
    ("party", "tags", "identity_attrib"),
    [
        (Party("sip:bob@example.org"), ["identity"], {}),
        (Party("sip:bob@example.org", display="Bob"), ["identity"], {"display": "Bob"}),
        (Party("sip:bob@example.org", target="sip:bob@h"), ["identity", "target"], {}),
        (
            Party("sip:bob@example.org", "Bob", "sip:bob@h"),
            ["identity", "target"],
            {"display": "Bob"},
        ),
        (Party("", target="sip:bob@h"), ["target"], None),
        (Party(""), [], None),
    ],
)
def test_participant_elements_follow_what_is_known(
    party: Party, tags: list[str], identity_attrib: dict[str, str] | None
) -> None:
    (dialog,) = dialogs(render([make_leg(remote=party)]))
    remote = dialog.find(f"{NS}remote")
    assert remote is not None
    assert child_tags(remote) == tags
    identity = remote.find(f"{NS}identity")
    assert (None if identity is None else dict(identity.items())) == identity_attrib


@pytest.mark.parametrize(
    ("local_tag", "remote_tag", "expected"),
    [
        ("", "", set()),
        ("l1", "", {"local-tag"}),
        ("", "r1", {"remote-tag"}),
        ("l1", "r1", {"local-tag", "remote-tag"}),
    ],
)
def test_empty_tags_are_omitted(local_tag: str, remote_tag: str, expected: set[str]) -> None:
    (dialog,) = dialogs(render([make_leg(local_tag=local_tag, remote_tag=remote_tag)]))
    assert set(dialog.attrib) - {"id", "call-id", "direction"} == expected


@pytest.mark.parametrize("direction", list(Direction))
@pytest.mark.parametrize("state", ACTIVE_STATES)
def test_every_active_state_and_direction_renders_valid(
    state: LegState, direction: Direction
) -> None:
    (dialog,) = dialogs(render([make_leg(state=state, direction=direction)]))
    assert dialog.findtext(f"{NS}state") == state.value
    assert dialog.get("direction") == direction.value


def test_terminated_legs_are_shown_terminated_with_their_event_and_code() -> None:
    # RFC 4235 §3.7.1: a phone can show a missed or rejected call; the store keeps a
    # terminated leg only a few seconds, then the full state no longer lists it.
    legs = [
        make_leg(leg_id="a", state=LegState.TERMINATED, event=TerminationEvent.REJECTED, code=486),
        make_leg(leg_id="b", state=LegState.CONFIRMED),
        make_leg(leg_id="c", call_id="call-0", state=LegState.TERMINATED, event=TerminationEvent.REMOTE_BYE),
    ]
    found = {d.get("id"): d.find(f"{NS}state") for d in dialogs(render(legs))}
    assert {key: (node.text, node.get("event"), node.get("code")) for key, node in found.items()} == {
        "a": ("terminated", "rejected", "486"),
        "b": ("confirmed", None, None),
        "c": ("terminated", "remote-bye", None),
    }


@pytest.mark.parametrize("event", [None, *TerminationEvent])
@pytest.mark.parametrize("code", [0, 200, 404, 486, 487, 603])
def test_every_termination_renders_valid(event: TerminationEvent | None, code: int) -> None:
    (dialog,) = dialogs(render([make_leg(state=LegState.TERMINATED, event=event, code=code)]))
    assert dialog.find(f"{NS}state").get("event") == (event.value if event else None)


def test_event_and_code_of_a_leg_not_terminated_are_not_shown() -> None:
    (dialog,) = dialogs(render([make_leg(state=LegState.CONFIRMED, event=TerminationEvent.ERROR, code=500)]))
    assert dialog.find(f"{NS}state").attrib == {}


def test_dialogs_are_sorted_by_call_id_then_leg_id() -> None:
    legs = [
        make_leg(leg_id="z", call_id="call-b"),
        make_leg(leg_id="b", call_id="call-a"),
        make_leg(leg_id="a", call_id="call-b"),
        make_leg(leg_id="c", call_id="call-a"),
    ]
    order = [(d.get("call-id"), d.get("id")) for d in dialogs(render(legs))]
    assert order == [("call-a", "b"), ("call-a", "c"), ("call-b", "a"), ("call-b", "z")]
    assert render_dialog_info(ENTITY, 1, legs) == render_dialog_info(ENTITY, 1, legs[::-1])


def test_digest_is_short_hex() -> None:
    digest = body_digest([make_leg()])
    assert len(digest) == 16
    int(digest, 16)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (LegState.TRYING, LegState.PROCEEDING),
        (LegState.PROCEEDING, LegState.EARLY),
        (LegState.EARLY, LegState.CONFIRMED),
        (LegState.CONFIRMED, LegState.TERMINATED),
    ],
)
def test_digest_changes_when_state_changes(before: LegState, after: LegState) -> None:
    leg = make_leg(state=before)
    assert body_digest([leg]) != body_digest([leg.moved_to(after, version=leg.version + 1)])


@pytest.mark.parametrize(
    "change",
    [
        {"remote_tag": "r2"},
        {"direction": Direction.INITIATOR},
        {"leg_id": "leg-2"},
        {"call_id": "call-2"},
        {"local": Party("sip:alice@example.com", display="Alice")},
        {"remote": Party("sip:bob@example.org", target="sip:bob@192.0.2.7")},
    ],
)
def test_digest_changes_with_visible_content(change: dict[str, Any]) -> None:
    leg = make_leg()
    assert body_digest([leg]) != body_digest([replace(leg, **change)])


def test_digest_ignores_versions_and_order() -> None:
    one = make_leg(leg_id="a", version=1)
    two = make_leg(leg_id="b", version=5, state=LegState.CONFIRMED)
    digest = body_digest([one, two])
    assert body_digest([two, one]) == digest
    assert body_digest([replace(one, version=99, instance="node-b"), two]) == digest


def test_digest_tells_a_terminated_leg_from_none_and_its_event_and_code() -> None:
    gone = make_leg(leg_id="c", state=LegState.TERMINATED)
    rejected = replace(gone, event=TerminationEvent.REJECTED, code=486)
    variants: list[list[Leg]] = [[], [gone], [rejected], [replace(rejected, code=603)]]
    assert len({body_digest(legs) for legs in variants}) == 4


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("rfc4235-*.xml")), ids=lambda path: path.name)
def test_validator_accepts_rfc_examples(path: Path) -> None:
    validate_dialog_info(path.read_bytes())


def test_rfc_examples_are_present() -> None:
    assert len(list(EXAMPLES.glob("rfc4235-*.xml"))) >= 10


def test_validator_rejects_receiver_direction() -> None:
    body = (EXAMPLES / "invalid" / "rfc4235-s6.2-7.xml").read_bytes()
    with pytest.raises(AssertionError, match="direction"):
        validate_dialog_info(body)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"<state>early</state>", b"<state>Early</state>"),
        (b"<state>early</state>", b"<state>ringing</state>"),
        (b'direction="recipient"', b'direction="receiver"'),
        (b'state="full"', b'state="complete"'),
    ],
)
def test_validator_rejects_broken_bodies(old: bytes, new: bytes) -> None:
    body = render_dialog_info(ENTITY, 0, [make_leg()])
    assert old in body
    with pytest.raises(AssertionError):
        validate_dialog_info(body.replace(old, new))


# --- the text renderer gives the bytes lxml gave ---------------------------------------------
# The renderer builds the document as text (it runs once per presentity change in the
# notifier); this is the lxml tree it replaced, kept as the reference.


def _lxml_participant(parent: etree._Element, tag: str, party: Party) -> None:
    node = etree.SubElement(parent, NS + tag)
    if party.identity:
        identity = etree.SubElement(node, NS + "identity")
        identity.text = party.identity
        if party.display:
            identity.set("display", party.display)
    if party.target:
        etree.SubElement(node, NS + "target", uri=party.target)


def lxml_reference(entity: str, version: int | str, legs: list[Leg]) -> bytes:
    root = etree.Element(NS + "dialog-info", nsmap={None: DIALOG_INFO_NS})
    root.set("version", str(version))
    root.set("state", "full")
    root.set("entity", entity)
    for leg in sorted(legs, key=lambda leg: (leg.call_id, leg.leg_id)):
        node = etree.SubElement(root, NS + "dialog", id=leg.leg_id)
        node.set("call-id", leg.call_id)
        if leg.local_tag:
            node.set("local-tag", leg.local_tag)
        if leg.remote_tag:
            node.set("remote-tag", leg.remote_tag)
        node.set("direction", leg.direction.value)
        state = etree.SubElement(node, NS + "state")
        state.text = leg.state.value
        if leg.state is LegState.TERMINATED:
            if leg.event is not None:
                state.set("event", leg.event.value)
            if leg.code:
                state.set("code", str(leg.code))
        _lxml_participant(node, "local", leg.local)
        _lxml_participant(node, "remote", leg.remote)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# XML-compatible text, with the characters that need escaping over-represented.
_xml_text = st.text(
    alphabet=st.one_of(
        st.sampled_from('&<>"\'\t\n\r; =@:+ë漢'), st.characters(min_codepoint=0x20, max_codepoint=0xD7FF)
    ),
    max_size=12,
)
_parties = st.builds(Party, identity=_xml_text, display=_xml_text, target=_xml_text)
_legs = st.builds(
    make_leg,
    leg_id=_xml_text.filter(bool), call_id=_xml_text.filter(bool), local_tag=_xml_text, remote_tag=_xml_text,
    state=st.sampled_from(list(LegState)), direction=st.sampled_from(list(Direction)),
    event=st.one_of(st.none(), st.sampled_from(list(TerminationEvent))), code=st.integers(0, 699),
    local=_parties, remote=_parties,
)


@settings(max_examples=300, deadline=None)
@given(entity=_xml_text, version=st.integers(0, 2**32), legs=st.lists(_legs, max_size=4))
def test_the_text_renderer_gives_the_bytes_of_the_lxml_tree(entity: str, version: int, legs: list[Leg]) -> None:
    assert render_dialog_info(entity, version, legs) == lxml_reference(entity, version, legs)


def test_a_character_xml_cannot_carry_becomes_a_replacement_character() -> None:
    body = render_dialog_info(ENTITY, 0, [make_leg(remote=Party(identity="sip:x@example.org", display="a\x01b"))])
    validate_dialog_info(body)
    assert "a\ufffdb".encode() in body
