"""Composition of a presentity's PIDF document (statestore.domain.presence): one test per
rule of the module docstring, every body validated against pidf.xsd and presence-all.xsd."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from statestore.domain.bodies import PresentityState
from statestore.domain.model import Binding, Direction, Leg, LegState, Party, Publication
from statestore.domain.pidf import CONTENT_TYPE, DM_NS, PIDF_NS, RPID_NS, check_pidf
from statestore.domain.presence import digest, render
from tests.presence_schema import validate_pidf

ENTITY = "sip:alice@example.com"
NOW = 1000.0
P = f"{{{PIDF_NS}}}"
DM = f"{{{DM_NS}}}"
RPID = f"{{{RPID_NS}}}"
NO_PROFILE: frozenset[str] = frozenset()


def tuple_xml(tuple_id: str, contact: str, basic: str = "open") -> str:
    return f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status><contact>{contact}</contact></tuple>'


def person_xml(person_id: str, *activities: str, note: str = "") -> str:
    inner = "".join(f"<rpid:{name}/>" for name in activities)
    body = f"<rpid:activities>{inner}</rpid:activities>" if activities else ""
    body += f"<dm:note>{note}</dm:note>" if note else ""
    return (
        f'<dm:person xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}" id="{person_id}">{body}</dm:person>'
    )


def publication(etag: str, published_at: float, *elements: str, **changes: Any) -> Publication:
    document = f'<presence xmlns="{PIDF_NS}" entity="{ENTITY}">{"".join(elements)}</presence>'
    values: dict[str, Any] = {
        "account": "alice@example.com", "event": "presence", "etag": etag, "expires_at": NOW + 3600,
        "content_type": CONTENT_TYPE, "body": check_pidf(document.encode(), CONTENT_TYPE),
        "published_at": published_at,
    }
    values.update(changes)
    return Publication(**values)


def binding(contact: str, q: float = 1.0, expires_at: float = NOW + 600) -> Binding:
    return Binding("alice@example.com", contact, expires_at, "call-1", 1, q=q)


def leg(state: LegState, leg_id: str = "leg-1") -> Leg:
    return Leg(
        "alice@example.com", "ks1", leg_id, 1, state, Direction.INITIATOR, f"call-{leg_id}", "lt", "rt",
        Party("sip:alice@example.com"), Party("sip:bob@example.com"),
    )


def state(
    publications: tuple[Publication, ...] = (), bindings: tuple[Binding, ...] = (), legs: tuple[Leg, ...] = (),
    now: float = NOW,
) -> PresentityState:
    return PresentityState(legs, bindings, publications, now=now)


def compose(presentity: PresentityState, entity: str = ENTITY) -> etree._Element:
    """The rendered document, validated against both schemas."""
    return validate_pidf(render(entity, 7, presentity, NO_PROFILE, None))


def tuples(root: etree._Element) -> list[tuple[str, str, str]]:
    return [
        (t.get("id") or "", t.findtext(f"{P}status/{P}basic") or "", t.findtext(f"{P}contact") or "")
        for t in root.iterfind(f"{P}tuple")
    ]


def activities(root: etree._Element) -> list[list[str]]:
    return [
        [etree.QName(a).localname for a in person.iterfind(f"{RPID}activities/*")]
        for person in root.iterfind(f"{DM}person")
    ]


# Rule 1: live publications of event "presence", newest first.
def test_live_presence_publications_are_composed_newest_first() -> None:
    old = publication("e-old", 10, tuple_xml("desk", "sip:alice@192.0.2.1"))
    new = publication("e-new", 20, tuple_xml("mobile", "sip:alice@192.0.2.2"))
    expired = publication("e-gone", 30, tuple_xml("gone", "sip:alice@192.0.2.3"), expires_at=NOW)
    other_event = publication("e-other", 40, tuple_xml("other", "sip:alice@192.0.2.4"), event="dialog")
    root = compose(state((old, expired, new, other_event)))
    assert [t[0] for t in tuples(root)] == ["mobile", "desk"]


def test_only_the_newest_publication_of_a_device_counts() -> None:
    """baresip's two racing initial PUBLISHes were both stored; it then modified one to
    closed: the other, still open, must not show the account online."""
    stale = publication("e-1", 10, tuple_xml("t1", "sip:alice@192.0.2.1"), device="udp:192.0.2.1:5060")
    modified = publication("e-2", 20, tuple_xml("t1", "sip:alice@192.0.2.1", "closed"), device="udp:192.0.2.1:5060")
    other = publication("e-3", 5, tuple_xml("t9", "sip:alice@192.0.2.9", "closed"), device="udp:192.0.2.9:5060")
    assert [t[:2] for t in tuples(compose(state((stale, modified, other))))] == [("t1", "closed"), ("t9", "closed")]


# Rule 2: one tuple per published tuple, ids made unique with the etag's hash.
def test_each_device_keeps_its_own_tuple_and_colliding_ids_are_renamed() -> None:
    desk = publication("e-desk", 10, tuple_xml("t1", "sip:alice@192.0.2.1", "closed"))
    mobile = publication("e-mobile", 20, tuple_xml("t1", "sip:alice@192.0.2.2"))
    (first, second) = tuples(compose(state((desk, mobile))))
    assert first == ("t1", "open", "sip:alice@192.0.2.2")
    assert second[1:] == ("closed", "sip:alice@192.0.2.1")
    assert second[0].startswith("x") and second[0].endswith("-t1")


def test_open_tuples_come_first_whatever_their_age() -> None:
    desk = publication("e-desk", 10, tuple_xml("t1", "sip:alice@192.0.2.1"))
    mobile = publication("e-mobile", 20, tuple_xml("t1", "sip:alice@192.0.2.2", "closed"))
    tablet = publication("e-tablet", 30, tuple_xml("t3", "sip:alice@192.0.2.3"), tuple_xml("t4", "sip:a@b", "closed"))
    (first, second, third, fourth) = tuples(compose(state((desk, mobile, tablet))))
    assert [first, second] == [("t3", "open", "sip:alice@192.0.2.3"), ("t1", "open", "sip:alice@192.0.2.1")]
    assert third == ("t4", "closed", "sip:a@b")
    assert fourth[1:] == ("closed", "sip:alice@192.0.2.2") and fourth[0].endswith("-t1")


# Rule 3: the person of the newest publication that has one.
def test_the_newest_person_is_taken() -> None:
    older = publication("e-1", 10, tuple_xml("a", "sip:a@192.0.2.1"), person_xml("p1", "meal"))
    newer = publication("e-2", 20, tuple_xml("b", "sip:a@192.0.2.2"), person_xml("p2", "busy"))
    newest_without_person = publication("e-3", 30, tuple_xml("c", "sip:a@192.0.2.3"))
    root = compose(state((older, newer, newest_without_person)))
    assert [p.get("id") for p in root.iterfind(f"{DM}person")] == ["p2"]
    assert activities(root) == [["busy"]]


# Rule 4: no publication, registered: one open tuple with the preferred binding's contact.
def test_registered_without_publication_is_one_open_tuple() -> None:
    bindings = (
        binding("sip:alice@192.0.2.1", q=0.5),
        binding("sip:alice@192.0.2.2", q=0.9),
        binding("sip:alice@192.0.2.3", q=1.0, expires_at=NOW),
    )
    ((tuple_id, basic, contact),) = tuples(compose(state(bindings=bindings)))
    assert tuple_id.startswith("reg-")
    assert (basic, contact) == ("open", "sip:alice@192.0.2.2")


def test_a_contact_xs_anyuri_refuses_is_left_out() -> None:
    ((tuple_id, basic, contact),) = tuples(compose(state(bindings=(binding("sip:a@[2001:db8::1]:5060"),))))
    assert (basic, contact) == ("open", "")


def test_publications_hide_registrations() -> None:
    pub = publication("e-1", 10, tuple_xml("t1", "sip:alice@192.0.2.9", "closed"))
    assert tuples(compose(state((pub,), bindings=(binding("sip:alice@192.0.2.1"),)))) == [
        ("t1", "closed", "sip:alice@192.0.2.9")
    ]


# Rule 4: neither publication nor registration: closed.
def test_nothing_known_is_one_closed_tuple() -> None:
    expired = publication("e-1", 10, tuple_xml("t1", "sip:a@192.0.2.1"), expires_at=NOW - 1)
    assert tuples(compose(state((expired,), bindings=(binding("sip:a@192.0.2.1", expires_at=NOW),)))) == [
        ("offline", "closed", "")
    ]


# Rule 5: an answered call is on-the-phone, in a new person when none was published.
def test_confirmed_call_adds_on_the_phone() -> None:
    root = compose(state(bindings=(binding("sip:alice@192.0.2.1"),), legs=(leg(LegState.CONFIRMED),)))
    assert activities(root) == [["on-the-phone"]]


def test_on_the_phone_is_merged_into_the_published_person_without_duplicates() -> None:
    busy = publication("e-1", 10, tuple_xml("t1", "sip:a@192.0.2.1"), person_xml("p1", "busy", note="hi"))
    calls = (leg(LegState.CONFIRMED, "l1"), leg(LegState.CONFIRMED, "l2"))
    assert activities(compose(state((busy,), legs=calls))) == [["busy", "on-the-phone"]]
    already = publication("e-1", 10, tuple_xml("t1", "sip:a@192.0.2.1"), person_xml("p1", "on-the-phone"))
    assert activities(compose(state((already,), legs=calls))) == [["on-the-phone"]]
    unknown = publication("e-1", 10, tuple_xml("t1", "sip:a@192.0.2.1"), person_xml("p1", "unknown"))
    assert activities(compose(state((unknown,), legs=calls))) == [["on-the-phone"]]
    bare = publication("e-1", 10, tuple_xml("t1", "sip:a@192.0.2.1"), person_xml("p1", note="at work"))
    root = compose(state((bare,), legs=calls))
    assert [etree.QName(c).localname for c in root.find(f"{DM}person")] == ["activities", "note"]


def test_new_person_id_does_not_collide_with_a_tuple() -> None:
    pub = publication("e-1", 10, tuple_xml("person", "sip:a@192.0.2.1"))
    root = compose(state((pub,), legs=(leg(LegState.CONFIRMED),)))
    assert activities(root) == [["on-the-phone"]]


# Rule 5: ringing changes nothing; terminated legs are ignored.
def test_ringing_and_terminated_legs_change_nothing() -> None:
    pub = publication("e-1", 10, tuple_xml("t1", "sip:a@192.0.2.1"), person_xml("p1", "busy"))
    quiet = render(ENTITY, 1, state((pub,)), NO_PROFILE, None)
    for ringing in (LegState.TRYING, LegState.PROCEEDING, LegState.EARLY, LegState.TERMINATED):
        assert render(ENTITY, 1, state((pub,), legs=(leg(ringing),)), NO_PROFILE, None) == quiet


# The entity attribute: written as given, escaped, so a stand-in can be replaced later.
def test_entity_is_written_verbatim_and_escaped() -> None:
    root = compose(state(), entity='sip:a&b"<c>@example.com')
    assert root.get("entity") == 'sip:a&b"<c>@example.com'
    mark = "\u2063entity\u2063"
    assert render(mark, 1, state(), NO_PROFILE, None).count(mark.encode()) == 1


# digest: what the document shows, not when it was read nor for whom.
def test_digest_follows_the_document_not_the_clock() -> None:
    pub = publication("e-1", 10, tuple_xml("t1", "sip:a@192.0.2.1"))
    assert digest(state((pub,), now=NOW), NO_PROFILE) == digest(state((pub,), now=NOW + 60), NO_PROFILE)
    assert digest(state((pub,)), NO_PROFILE) != digest(state((pub,), now=pub.expires_at), NO_PROFILE)
    assert digest(state((pub,)), NO_PROFILE) != digest(state((pub,), legs=(leg(LegState.CONFIRMED),)), NO_PROFILE)
    assert digest(state((pub,)), NO_PROFILE) == digest(state((pub,), legs=(leg(LegState.EARLY),)), NO_PROFILE)
    assert digest(state((pub,)), NO_PROFILE) == digest(state((pub,)), frozenset({"single-dialog"}))


CONTACTS = [
    "sip:a@192.0.2.1", "sip:a@[2001:db8::1]:5060;transport=tcp", "sip:a%41@192.0.2.1;ob", "sip:a b@c", "sip:a@b%zz",
    "sips:a@b?x=1&y=2", "", "tel:+1-555", "sip://x@[::1]", "sip:\u00e9@b",
]
ACTIVITY_NAMES = ["busy", "meal", "on-the-phone", "unknown", "away"]


@st.composite
def publications(draw: st.DrawFn) -> Publication:
    elements = [
        tuple_xml(
            draw(st.sampled_from(["t1", "t2", "person", "p1"])), "sip:a@192.0.2.1",
            draw(st.sampled_from(["open", "closed"])),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    ids = {e.split('"')[1] for e in elements}
    if len(ids) < len(elements):
        elements = elements[:1]
    if draw(st.booleans()):
        chosen = draw(st.lists(st.sampled_from(ACTIVITY_NAMES), unique=True, max_size=3))
        if "unknown" in chosen:
            chosen = ["unknown"]
        person_id = draw(st.sampled_from(["p1", "p2", "t1"]))
        if person_id not in ids:
            elements.append(person_xml(person_id, *chosen, note=draw(st.sampled_from(["", "hi"]))))
    return publication(
        draw(st.sampled_from(["e1", "e2", "e3"])), draw(st.floats(0, 100)), *elements,
        expires_at=draw(st.sampled_from([NOW - 1, NOW, NOW + 1])), event=draw(st.sampled_from(["presence", "dialog"])),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(publications(), max_size=4),
    st.lists(st.builds(binding, st.sampled_from(CONTACTS),
                       st.floats(0, 1), st.sampled_from([NOW - 1, NOW + 1])), max_size=3),
    st.lists(st.sampled_from(list(LegState)), max_size=3),
)
def test_every_combination_validates(
    pubs: list[Publication], bindings: list[Binding], leg_states: list[LegState]
) -> None:
    legs = tuple(leg(s, f"l{n}") for n, s in enumerate(leg_states))
    root = compose(state(tuple(pubs), tuple(bindings), legs))
    assert len(root.findall(f"{DM}person")) <= 1
    if LegState.CONFIRMED in leg_states:
        assert activities(root)[0].count("on-the-phone") == 1


def test_rule_6_old_publications_beyond_the_size_budget_are_left_out() -> None:
    """A NOTIFY must stay sendable over UDP: 16 publications of ~15 KB are not all shown."""
    note = "n" * 15_000
    pubs = [
        publication(f"e{n}", NOW - 100 + n, f'<tuple id="t{n}"><status><basic>open</basic></status>'
                                            f"<note>{note}</note></tuple>")
        for n in range(16)
    ]
    body = render(ENTITY, 0, PresentityState((), (), tuple(pubs), (), NOW), NO_PROFILE, None)
    validate_pidf(body)
    assert len(body) < 40_000
    assert b'id="t15"' in body and b'id="t0"' not in body  # the newest kept, the oldest left out
