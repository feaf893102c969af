"""Registrar rules of RFC 3261 §10.3: Contact parsing, expiry, wildcard and CSeq ordering."""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Literal

import pytest

from statestore.domain.contact import ContactSpec, parse_contacts
from statestore.domain.errors import SipError
from statestore.domain.model import Binding
from statestore.domain.registrar import (
    RegisterOutcome,
    RegisterRequest,
    RegistrarPolicy,
    apply_register,
    contact_header_value,
)
from statestore.domain.uri_identity import binding_id, binding_key_id, normalise_uri

NOW = 1_000_000.0
POLICY = RegistrarPolicy(min_expires=60, max_expires=3600, default_expires=1800)
ALICE = "sip:alice@10.0.0.1:5060"
BOB = "sip:alice@10.0.0.2"
ALICE_UPPER = "SIP:alice@10.0.0.1:5060"  # the same contact as ALICE (RFC 3261 §19.1.4)


def request(
    contacts: list[ContactSpec] | Literal["*"],
    expires: int | None = None,
    call_id: str = "call-1",
    cseq: int = 10,
) -> RegisterRequest:
    return RegisterRequest(
        account="alice@example.com",
        call_id=call_id,
        cseq=cseq,
        contacts=contacts,
        expires_header=expires,
        instance="node-a",
        received="10.0.0.1:5060",
    )


def stored(
    contact: str = ALICE,
    expires_at: float = NOW + 300,
    call_id: str = "call-1",
    cseq: int = 5,
    account: str = "alice@example.com",
) -> Binding:
    return Binding(account, contact, expires_at, call_id, cseq, instance="node-b")


def register(req: RegisterRequest, *current: Binding) -> RegisterOutcome:
    return apply_register(req, current, POLICY, NOW)


# --- parse_contacts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "uris"),
    [
        ([], []),
        (["<sip:a@h>"], ["sip:a@h"]),
        (["sip:a@h"], ["sip:a@h"]),
        (["<sip:a@h>, <sip:b@h>;q=0.5"], ["sip:a@h", "sip:b@h"]),
        (["<sip:a@h>", "sip:b@h;expires=60, <sip:c@h>"], ["sip:a@h", "sip:b@h", "sip:c@h"]),
        (['"Doe, John" <sip:a@h>, "x;y <z>" <sip:b@h>'], ["sip:a@h", "sip:b@h"]),
        (['"say \\"hi, there\\"" <sip:a@h>'], ["sip:a@h"]),
        (["John Doe <sip:a@h;transport=tcp>;expires=30"], ["sip:a@h;transport=tcp"]),
        (["<sip:a@h?Subject=x,y>"], ["sip:a@h?Subject=x,y"]),
        (["  <tel:+4930123>  "], ["tel:+4930123"]),
    ],
)
def test_parse_contacts_uris(values: list[str], uris: list[str]) -> None:
    parsed = parse_contacts(values)
    assert parsed != "*"
    assert [contact.uri for contact in parsed] == uris


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<sip:a@h>", ContactSpec("sip:a@h")),
        ("<sip:a@h>;expires=120", ContactSpec("sip:a@h", 120, 1.0, ";expires=120")),
        ("<sip:a@h>;EXPIRES=0;q=0.5", ContactSpec("sip:a@h", 0, 0.5, ";EXPIRES=0;q=0.5")),
        (
            'sip:a@h;q=1.0;+sip.instance="<urn:x;y>"',
            ContactSpec("sip:a@h", None, 1.0, ';q=1.0;+sip.instance="<urn:x;y>"', "urn:x;y"),
        ),
        ("<sip:a@h;expires=5>", ContactSpec("sip:a@h;expires=5")),
    ],
)
def test_parse_contact_params(value: str, expected: ContactSpec) -> None:
    assert parse_contacts([value]) == [expected]


@pytest.mark.parametrize("values", [["*"], [" * "]])
def test_parse_wildcard(values: list[str]) -> None:
    assert parse_contacts(values) == "*"


@pytest.mark.parametrize(
    "values",
    [
        ["<sip:a@h"],
        ["<sip:a@h>, <sip:b@h"],
        [""],
        ["<sip:a@h>,"],
        ["<sip:a@h>,,<sip:b@h>"],
        ["<>"],
        ["*, <sip:a@h>"],
        ["*", "<sip:a@h>"],
        ["*", "*"],
        ["*;expires=0"],
        ["<sip:a@h>;expires=abc"],
        ["<sip:a@h>;expires=-1"],
        ["<sip:a@h>;expires"],
        ["<sip:a@h>;q=1.5"],
        ["<sip:a@h>;q=0.1234"],
        ["<sip:a@h>;q=high"],
        ["<sip:a@h>;;q=1"],
        ['"unterminated <sip:a@h>'],
        ["not a uri"],
        ["<sip:a@h> junk"],
        ['bad"name <sip:a@h>'],
    ],
)
def test_parse_malformed_is_400(values: list[str]) -> None:
    with pytest.raises(SipError) as caught:
        parse_contacts(values)
    assert caught.value.status == 400
    assert caught.value.reason.startswith("Invalid Contact")


# --- expiry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "header", "expected"),
    [
        (120, 600, 120),  # the contact parameter wins over the header
        (None, 600, 600),  # then the Expires header
        (None, None, 1800),  # then the local default
        (7200, None, 3600),  # clamped to max
        (None, 99999999999, 3600),
        (60, 10, 60),  # the minimum itself is fine; the header is not looked at
    ],
)
def test_expiry_precedence_and_clamp(param: int | None, header: int | None, expected: int) -> None:
    outcome = register(request([ContactSpec(ALICE, param)], header))
    (binding,) = outcome.upserts
    assert binding.expires_at == NOW + expected
    assert outcome.bindings == (binding,)
    assert outcome.removals == ()


@pytest.mark.parametrize(("param", "header"), [(30, None), (None, 1), (59, 3600), (1, 0)])
def test_too_brief_is_423_with_min_expires(param: int | None, header: int | None) -> None:
    with pytest.raises(SipError) as caught:
        register(request([ContactSpec(BOB), ContactSpec(ALICE, param)], header))
    assert (caught.value.status, caught.value.reason) == (423, "Interval Too Brief")
    assert caught.value.headers == {"Min-Expires": "60"}


def test_negative_expires_header_is_400() -> None:
    with pytest.raises(SipError) as caught:
        register(request([ContactSpec(ALICE)], -5))
    assert caught.value.status == 400


def test_new_binding_carries_request_fields() -> None:
    outcome = register(request([ContactSpec(ALICE, 600, 0.7)], call_id="c9", cseq=42))
    assert outcome.upserts == (
        Binding("alice@example.com", ALICE, NOW + 600, "c9", 42, 0.7, "node-a", "10.0.0.1:5060", registered_at=NOW),
    )


# --- removal and wildcard ---------------------------------------------------------------


@pytest.mark.parametrize(("param", "header"), [(0, None), (None, 0), (0, 3600)])
def test_expires_zero_removes(param: int | None, header: int | None) -> None:
    old, other = stored(ALICE), stored(BOB)
    outcome = register(request([ContactSpec(ALICE, param)], header), old, other)
    assert outcome.upserts == ()
    assert outcome.removals == (old,)
    assert outcome.bindings == (other,)


def test_removing_unknown_contact_is_a_no_op() -> None:
    outcome = register(request([ContactSpec(ALICE, 0)]))
    assert outcome == RegisterOutcome((), (), ())


def test_wildcard_with_expires_zero_removes_all_of_the_account() -> None:
    mine, mine2 = stored(ALICE, call_id="other"), stored(BOB, cseq=9)
    foreign = stored(ALICE, account="bob@example.com", cseq=99)
    outcome = register(request("*", 0), mine, foreign, mine2)
    assert outcome.upserts == ()
    assert set(outcome.removals) == {mine, mine2}
    assert outcome.bindings == ()


@pytest.mark.parametrize("header", [None, 1, 3600])
def test_wildcard_needs_expires_zero(header: int | None) -> None:
    with pytest.raises(SipError) as caught:
        register(request("*", header), stored())
    assert caught.value.status == 400


def test_wildcard_obeys_cseq_order() -> None:
    with pytest.raises(SipError) as caught:
        register(request("*", 0, cseq=5), stored(cseq=5))
    assert (caught.value.status, caught.value.reason) == (400, "Out of order CSeq")


# --- Call-ID / CSeq ordering (RFC 3261 §10.3 step 7) ------------------------------------


@pytest.mark.parametrize(
    ("call_id", "cseq", "ok"),
    [
        ("call-1", 6, True),  # same Call-ID, higher CSeq
        ("call-1", 4, False),  # same Call-ID, lower CSeq
        ("call-2", 1, True),  # another Call-ID: any CSeq
    ],
)
@pytest.mark.parametrize("expires", [600, 0])
def test_call_id_cseq_order(call_id: str, cseq: int, ok: bool, expires: int) -> None:
    old = stored(cseq=5)
    req = request([ContactSpec(ALICE_UPPER, expires)], None, call_id, cseq)
    if not ok:
        with pytest.raises(SipError) as caught:
            register(req, old)
        assert (caught.value.status, caught.value.reason) == (400, "Out of order CSeq")
        return
    outcome = register(req, old)
    if expires:
        assert [(b.call_id, b.cseq) for b in outcome.upserts] == [(call_id, cseq)]
        assert outcome.removals == ()
        assert outcome.bindings == outcome.upserts
    else:
        assert outcome == RegisterOutcome((), (old,), ())


def test_out_of_order_contact_fails_the_whole_request() -> None:
    with pytest.raises(SipError):
        register(request([ContactSpec(BOB), ContactSpec(ALICE)], cseq=3), stored(cseq=3))


# --- expired bindings and queries -------------------------------------------------------


def test_expired_bindings_are_dropped_and_removed() -> None:
    dead, dead_now, alive = stored(BOB, NOW - 1), stored("sip:c@h", NOW), stored(ALICE)
    outcome = register(request([]), dead, alive, dead_now)
    assert outcome.upserts == ()
    assert outcome.removals == (dead, dead_now)
    assert outcome.bindings == (alive,)


def test_expired_binding_rewritten_is_not_removed_nor_ordered() -> None:
    dead = stored(ALICE, NOW - 1, cseq=50)
    outcome = register(request([ContactSpec(ALICE, 600)], cseq=2), dead)
    assert [b.cseq for b in outcome.upserts] == [2]
    assert outcome.removals == ()


def test_update_keeps_others_and_appends_new() -> None:
    a, b = stored(ALICE), stored(BOB)
    outcome = register(request([ContactSpec("sip:new@h", 600), ContactSpec(ALICE, 900)]), a, b)
    assert [x.contact for x in outcome.upserts] == ["sip:new@h", ALICE]
    assert [x.contact for x in outcome.bindings] == [ALICE, BOB, "sip:new@h"]
    assert outcome.bindings[0].expires_at == NOW + 900


# --- URIs, keys and the 200 OK ----------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "same"),
    [
        ("sip:alice@Example.COM:5060", "SIP:alice@example.com:5060", True),
        ("sip:Alice@example.com", "sip:alice@example.com", False),
        ("sip:example.com;transport=TCP", "sip:EXAMPLE.com;transport=TCP", True),
        ("sip:a@h;transport=tcp", "sip:a@h;transport=udp", False),
        ("sip:+49;phone-context=X@H", "sip:+49;phone-context=X@h", True),
    ],
)
def test_normalise_and_key(left: str, right: str, same: bool) -> None:
    assert (normalise_uri(left) == normalise_uri(right)) is same
    assert (binding_key_id(left) == binding_key_id(right)) is same
    assert len(binding_key_id(left)) == 16
    assert int(binding_key_id(left), 16) >= 0


@pytest.mark.parametrize(
    ("q", "expires_at", "expected"),
    [
        (1.0, NOW + 300, "<sip:a@h>;expires=300"),
        (0.5, NOW + 299.6, "<sip:a@h>;expires=300;q=0.5"),
        (0.0, NOW - 5, "<sip:a@h>;expires=0;q=0"),
        (0.125, NOW + 60, "<sip:a@h>;expires=60;q=0.125"),
    ],
)
def test_contact_header_value(q: float, expires_at: float, expected: str) -> None:
    binding = Binding("alice@example.com", "sip:a@h", expires_at, "c", 1, q)
    assert contact_header_value(binding, NOW) == expected


@pytest.mark.parametrize(
    ("minimum", "maximum", "default"), [(61, 3600, 60), (60, 3600, 3601), (-1, 10, 5), (0, 0, 0)]
)
def test_inconsistent_policy_is_refused(minimum: int, maximum: int, default: int) -> None:
    with pytest.raises(ValueError):
        RegistrarPolicy(minimum, maximum, default)


# --- properties -------------------------------------------------------------------------

# Property tests run where hypothesis is installed (python3-hypothesis); the table-driven
# tests above do not need it.
if importlib.util.find_spec("hypothesis") is not None:
    import hypothesis
    from hypothesis import strategies as st

    _uri = st.builds(
        lambda scheme, user, host, port, params: f"{scheme}:{user}@{host}{port}{params}",
        st.sampled_from(["sip", "sips", "SIP"]),
        st.text("abcXYZ019-_.!~*'()&=+$", min_size=1, max_size=8),
        st.from_regex(r"[a-zA-Z0-9]{1,8}(\.[a-z]{1,4}){0,2}", fullmatch=True),
        st.sampled_from(["", ":5060", ":15"]),
        st.sampled_from(["", ";transport=tcp", ";lr;ob"]),
    )
    _display = st.one_of(
        st.just(""),
        st.from_regex(r"[A-Za-z][A-Za-z ]{0,8}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=10).map(
            lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '" '
        ),
    )
    _params = st.sampled_from(["", ";expires=60", ";q=0.5", ';+sip.instance="<urn:uuid:1,2>"'])

    # A contact is (display, uri, params, glue): glue "" starts a new Contact header,
    # otherwise the contact is appended to the previous header after that comma.
    _contact = st.tuples(_display, _uri, _params, st.sampled_from(["", ",", ", ", " ,\t"]))

    @hypothesis.given(st.lists(_contact, max_size=6))
    def test_parse_contacts_round_trips_uris(contacts: list[tuple[str, str, str, str]]) -> None:
        headers: list[str] = []
        for display, uri, params, glue in contacts:
            if headers and glue:
                headers[-1] += f"{glue}{display}<{uri}>{params}"
            else:
                headers.append(f"{display}<{uri}>{params}")
        parsed = parse_contacts(headers)
        assert parsed != "*"
        assert [contact.uri for contact in parsed] == [uri for _, uri, _, _ in contacts]

    @hypothesis.given(
        st.lists(st.tuples(_uri, st.sampled_from([0, 60, 600, 99999])), max_size=5),
        st.lists(
            st.tuples(_uri, st.floats(NOW - 100, NOW + 100)),
            max_size=5,
            unique_by=lambda held: normalise_uri(held[0]),  # the store keys by URI
        ),
    )
    def test_outcome_is_consistent(
        wanted: list[tuple[str, int]], held: list[tuple[str, float]]
    ) -> None:
        current = [stored(uri, expires_at, call_id="old") for uri, expires_at in held]
        contacts = [ContactSpec(uri, expires) for uri, expires in wanted]
        outcome = register(request(contacts), *current)
        keys = [binding_id(b) for b in outcome.bindings]
        assert len(keys) == len(set(keys))
        assert all(b.expires_at > NOW for b in outcome.bindings)
        assert set(outcome.upserts) <= set(outcome.bindings)
        assert not {binding_id(b) for b in outcome.upserts} & {binding_id(b) for b in outcome.removals}


    _device = st.sampled_from(["", "urn:uuid:a", "urn:uuid:b"])

    @hypothesis.given(
        st.lists(st.tuples(_uri, _device, st.sampled_from(["", "1"]), st.sampled_from([0, 600])), max_size=6),
        st.lists(st.tuples(_uri, _device, st.floats(NOW - 100, NOW + 100)), max_size=6),
        st.integers(1, 4),
    )
    def test_outcome_with_devices_and_cap_is_consistent(
        wanted: list[tuple[str, str, str, int]], held: list[tuple[str, str, float]], cap: int
    ) -> None:
        bindings = [replace(stored(uri, expires_at, call_id="old"), sip_instance=dev) for uri, dev, expires_at in held]
        by_id = {binding_id(b): b for b in bindings}  # the store holds one binding per key
        contacts = [
            ContactSpec(uri, expires, sip_instance=dev, reg_id=reg_id if dev else "")
            for uri, dev, reg_id, expires in wanted
        ]
        policy = RegistrarPolicy(max_bindings=cap)
        live = sum(1 for b in by_id.values() if b.expires_at > NOW)
        try:
            outcome = apply_register(request(contacts), list(by_id.values()), policy, NOW)
        except SipError as refused:
            assert refused.status == 403
            return
        ids = [binding_id(b) for b in outcome.bindings]
        assert len(ids) == len(set(ids))
        assert len(ids) <= max(cap, live)
        assert not {binding_id(b) for b in outcome.upserts} & {binding_id(b) for b in outcome.removals}
        rewritten = {binding_id(b) for b in outcome.upserts}
        for binding in by_id.values():  # each is kept, deleted, or overwritten under its key
            assert binding in outcome.bindings or binding in outcome.removals or binding_id(binding) in rewritten


def test_call_targets_are_live_contacts_best_q_first_then_freshest():
    from statestore.domain.registrar import call_targets

    def binding(contact: str, expires_at: float, q: float = 1.0) -> Binding:
        return Binding("alice@example.com", contact, expires_at, "c", 1, q)

    expired = binding("sip:old@h", 99.0)
    low = binding("sip:low@h", 500.0, q=0.5)
    fresh = binding("sip:fresh@h", 400.0)
    stale = binding("sip:stale@h", 200.0)
    assert call_targets([expired, low, stale, fresh], now=100.0) == [fresh, stale, low]
    assert call_targets([expired], now=100.0) == []


# --- RFC 5626 +sip.instance and reg-id (issue 5, finding 9) --------------------------------

X = "urn:uuid:00000000-0000-1000-8000-00000000000a"
Y = "urn:uuid:00000000-0000-1000-8000-00000000000b"


def device(
    contact: str,
    sip_instance: str = X,
    reg_id: str = "",
    expires: int | None = 600,
) -> ContactSpec:
    """A contact as a phone with an instance-id sends it."""
    raw = f';+sip.instance="<{sip_instance}>"' + (f";reg-id={reg_id}" if reg_id else "")
    return parse_contacts([f"<{contact}>{raw}" + ("" if expires is None else f";expires={expires}")])[0]  # type: ignore[index]


def registered(
    contact: str, sip_instance: str = "", reg_id: str = "", call_id: str = "boot-1", cseq: int = 5
) -> Binding:
    return Binding(
        "alice@example.com", contact, NOW + 300, call_id, cseq, sip_instance=sip_instance, reg_id=reg_id
    )


@pytest.mark.parametrize(
    ("value", "sip_instance", "reg_id"),
    [
        ('<sip:a@h>;+sip.instance="<urn:uuid:ABC-1>";reg-id=1', "urn:uuid:abc-1", "1"),
        ('<sip:a@h>;+SIP.INSTANCE="<urn:uuid:abc-1>"', "urn:uuid:abc-1", ""),
        ("<sip:a@h>;+sip.instance=<urn:uuid:abc-1>", "urn:uuid:abc-1", ""),  # unquoted, tolerated
        ('<sip:a@h>;+sip.instance=" <urn:uuid:abc-1> "', "urn:uuid:abc-1", ""),
        ("<sip:a@h>;reg-id=2147483647", "", "2147483647"),  # reg-id alone: no device named
        ("<sip:a@h>;audio;expires=60", "", ""),
    ],
)
def test_parse_instance_and_reg_id(value: str, sip_instance: str, reg_id: str) -> None:
    (spec,) = parse_contacts([value])  # type: ignore[misc]
    assert (spec.sip_instance, spec.reg_id) == (sip_instance, reg_id)


@pytest.mark.parametrize(
    "value",
    [
        "<sip:a@h>;+sip.instance",
        '<sip:a@h>;+sip.instance=""',
        '<sip:a@h>;+sip.instance="<>"',
        '<sip:a@h>;+sip.instance="<urn:a b>"',
        '<sip:a@h>;+sip.instance="<urn:a<b>"',
        "<sip:a@h>;reg-id",
        "<sip:a@h>;reg-id=0",
        "<sip:a@h>;reg-id=01",
        "<sip:a@h>;reg-id=x",
        "<sip:a@h>;reg-id=2147483648",
    ],
)
def test_bad_instance_or_reg_id_is_400(value: str) -> None:
    with pytest.raises(SipError) as caught:
        parse_contacts([value])
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("raw", "echoed"),
    [
        ("", ""),
        (";expires=60", ""),
        (";q=0.5;EXPIRES=60", ""),
        (';+sip.instance="<urn:x;y>";reg-id=1;expires=60', ';+sip.instance="<urn:x;y>";reg-id=1'),
        (";audio; video ;q=1;+sip.ice", ";audio;video;+sip.ice"),
        (';methods="INVITE, MESSAGE";expires=3600', ';methods="INVITE, MESSAGE"'),
    ],
)
def test_echoed_params_leave_out_expires_and_q(raw: str, echoed: str) -> None:
    from statestore.domain.contact import echoed_params

    assert echoed_params(raw) == echoed


def test_binding_keeps_instance_reg_id_params_and_nat() -> None:
    req = replace(request([device(ALICE, reg_id="1")]), nat=True, received="tcp:192.0.2.7:40000")
    (binding,) = register(req).upserts
    assert (binding.sip_instance, binding.reg_id, binding.nat) == (X, "1", True)
    assert binding.params == f';+sip.instance="<{X}>";reg-id=1'
    assert binding.received == "tcp:192.0.2.7:40000"
    assert contact_header_value(binding, NOW) == f'<{ALICE}>;expires=600;+sip.instance="<{X}>";reg-id=1'


def test_contact_header_value_never_repeats_expires_or_q() -> None:
    (spec,) = parse_contacts([f'<{ALICE}>;q=0.5;expires=900;+sip.instance="<{X}>"'])  # type: ignore[misc]
    (binding,) = register(request([spec])).upserts
    assert contact_header_value(binding, NOW) == f'<{ALICE}>;expires=900;q=0.5;+sip.instance="<{X}>"'


def test_restarted_phone_with_same_instance_replaces_its_old_binding() -> None:
    old = registered("sip:alice-boot1@10.0.0.1:5060", X)
    other = registered("sip:desk@10.0.0.9", Y)
    req = request([device("sip:alice-boot2@10.0.0.1:5060")], call_id="boot-2", cseq=1)
    outcome = register(req, old, other)
    (new,) = outcome.upserts
    assert new.contact == "sip:alice-boot2@10.0.0.1:5060"
    # The same store key is rewritten: nothing to delete, the old contact is gone.
    assert binding_id(new) == binding_id(old)
    assert outcome.removals == ()
    assert outcome.bindings == (new, other)


@pytest.mark.parametrize(
    ("stored_reg_id", "new_reg_id", "replaced"),
    [("1", "1", True), ("1", "2", False), ("", "", True), ("1", "", False), ("", "1", False)],
)
def test_reg_id_is_part_of_the_identity(stored_reg_id: str, new_reg_id: str, replaced: bool) -> None:
    old = registered("sip:flow1@10.0.0.1", X, stored_reg_id)
    outcome = register(request([device("sip:flow2@10.0.0.1", reg_id=new_reg_id)], call_id="c2"), old)
    assert (binding_id(outcome.upserts[0]) == binding_id(old)) is replaced
    expected = ["sip:flow2@10.0.0.1"] if replaced else [old.contact, "sip:flow2@10.0.0.1"]
    assert [b.contact for b in outcome.bindings] == expected
    assert outcome.removals == ()


@pytest.mark.parametrize(("stored_instance", "new_instance"), [("", X), (X, "")])
def test_same_uri_with_and_without_instance_is_one_binding(stored_instance: str, new_instance: str) -> None:
    old = registered(ALICE, stored_instance)
    spec = device(ALICE_UPPER, new_instance) if new_instance else ContactSpec(ALICE_UPPER, 600)
    outcome = register(request([spec], call_id="c2"), old)
    assert len(outcome.bindings) == 1
    if binding_id(outcome.upserts[0]) == binding_id(old):
        assert outcome.removals == ()
    else:
        assert outcome.removals == (old,)


def test_two_devices_with_the_same_private_contact_stay_apart() -> None:
    # Two phones in two homes, both sip:alice@192.168.1.2: their instance-ids tell them apart.
    one = registered("sip:alice@192.168.1.2", X)
    outcome = register(request([device("sip:alice@192.168.1.2", Y)], call_id="c2"), one)
    assert outcome.removals == ()
    assert len(outcome.bindings) == 2


def test_expires_zero_with_instance_removes_the_device_under_any_contact() -> None:
    old = registered("sip:boot1@10.0.0.1", X)
    outcome = register(request([device("sip:boot2@10.0.0.1", expires=0)], call_id="c2"), old)
    assert outcome == RegisterOutcome((), (old,), ())


def test_instance_replacement_obeys_cseq_order() -> None:
    old = registered("sip:boot1@10.0.0.1", X, call_id="same", cseq=9)
    with pytest.raises(SipError) as caught:
        register(request([device("sip:boot2@10.0.0.1")], call_id="same", cseq=9), old)
    assert caught.value.reason == "Out of order CSeq"


# --- retransmissions (issue 6, finding 6) ------------------------------------------------------


def test_a_retransmission_is_answered_with_the_bindings_as_stored_and_writes_nothing() -> None:
    mine, other = stored(cseq=5), stored(BOB, call_id="call-9", cseq=1)
    outcome = register(request([ContactSpec(ALICE_UPPER, 600)], None, "call-1", 5), mine, other)
    assert outcome == RegisterOutcome((), (), (mine, other))
    assert not outcome.writes


def test_a_retransmission_of_a_device_registration_is_recognised() -> None:
    old = registered("sip:boot1@10.0.0.1", X, call_id="same", cseq=9)
    outcome = register(request([device("sip:boot1@10.0.0.1")], call_id="same", cseq=9), old)
    assert outcome == RegisterOutcome((), (), (old,))


@pytest.mark.parametrize(
    ("contacts", "reason"),
    [
        ([ContactSpec(ALICE, 0)], "a removal at the CSeq that wrote the binding"),
        ([ContactSpec(ALICE, 600, q=0.5)], "another q"),
        ([ContactSpec(ALICE, 600), ContactSpec(BOB, 600)], "a contact more"),
    ],
)
def test_the_same_cseq_asking_for_something_else_is_out_of_order(contacts: list[ContactSpec], reason: str) -> None:
    with pytest.raises(SipError) as caught:
        register(request(contacts, None, "call-1", 5), stored(cseq=5))
    assert caught.value.reason == "Out of order CSeq", reason


def test_a_retransmitted_removal_finds_nothing_to_remove() -> None:
    assert register(request([ContactSpec(ALICE, 0)], None, "call-1", 5)) == RegisterOutcome((), (), ())


def test_wildcard_removes_device_bindings_too() -> None:
    a, b = registered("sip:boot1@10.0.0.1", X), registered(BOB)
    outcome = register(request("*", 0, call_id="c2"), a, b)
    assert set(outcome.removals) == {a, b}
    assert outcome.bindings == ()


def test_device_key_differs_from_uri_key() -> None:
    from statestore.domain.uri_identity import device_key_id

    assert device_key_id(X) != device_key_id(X, "1") != binding_key_id(X)
    assert device_key_id(X) == binding_id(registered("sip:any@h", X))
    assert binding_key_id(ALICE) == binding_id(registered(ALICE_UPPER))


# --- cap on bindings per account (issue 5, finding 4) ---------------------------------------

CAPPED = RegistrarPolicy(min_expires=60, max_expires=3600, default_expires=1800, max_bindings=3)


def held(count: int, **changes: object) -> list[Binding]:
    return [replace(registered(f"sip:p{index}@10.0.0.{index}"), **changes) for index in range(count)]  # type: ignore[arg-type]


def test_one_binding_over_the_cap_is_403_and_writes_nothing() -> None:
    with pytest.raises(SipError) as caught:
        apply_register(request([ContactSpec("sip:new@h", 600)], call_id="c2"), held(3), CAPPED, NOW)
    assert (caught.value.status, caught.value.reason) == (403, "Forbidden - Too Many Registrations")


def test_many_contacts_in_one_request_over_the_cap_are_refused() -> None:
    contacts = [ContactSpec(f"sip:n{index}@h", 600) for index in range(4)]
    with pytest.raises(SipError) as caught:
        apply_register(request(contacts), [], CAPPED, NOW)
    assert caught.value.status == 403


@pytest.mark.parametrize(
    "contacts",
    [
        [ContactSpec("sip:p0@10.0.0.0", 600)],  # a refresh at the cap
        [ContactSpec("sip:p0@10.0.0.0", 0), ContactSpec("sip:new@h", 600)],  # one out, one in
        [],  # a query
    ],
)
def test_at_the_cap_refreshes_and_swaps_are_fine(contacts: list[ContactSpec]) -> None:
    outcome = apply_register(request(contacts, call_id="c2"), held(3), CAPPED, NOW)
    assert len(outcome.bindings) == 3


def test_device_replacement_at_the_cap_is_fine() -> None:
    current = [*held(2), registered("sip:boot1@10.0.0.1", X)]
    outcome = apply_register(request([device("sip:boot2@10.0.0.1")], call_id="c2"), current, CAPPED, NOW)
    assert len(outcome.bindings) == 3


def test_expired_bindings_do_not_count() -> None:
    outcome = apply_register(
        request([ContactSpec("sip:new@h", 600)], call_id="c2"), held(3, expires_at=NOW - 1), CAPPED, NOW
    )
    assert len(outcome.bindings) == 1
    assert len(outcome.removals) == 3


def test_account_over_a_lowered_cap_keeps_its_refreshes_but_cannot_grow() -> None:
    current = held(5)
    refresh = apply_register(request([ContactSpec("sip:p1@10.0.0.1", 600)], call_id="c2"), current, CAPPED, NOW)
    assert len(refresh.bindings) == 5
    with pytest.raises(SipError):
        apply_register(request([ContactSpec("sip:new@h", 600)], call_id="c2"), current, CAPPED, NOW)


def test_default_cap_is_ten() -> None:
    assert RegistrarPolicy().max_bindings == 10
    outcome = apply_register(request([ContactSpec("sip:new@h", 600)], call_id="c2"), held(9), POLICY, NOW)
    assert len(outcome.bindings) == 10
    with pytest.raises(SipError):
        apply_register(request([ContactSpec("sip:new@h", 600)], call_id="c2"), held(10), POLICY, NOW)


# --- NAT: expiry of a UDP binding behind NAT (issue 5, finding 6) ---------------------------


@pytest.mark.parametrize(
    ("nat", "received", "asked", "granted"),
    [
        (True, "udp:192.0.2.7:40000", 3600, 60),  # clamped: the phone refreshes every minute
        (True, "UDP:192.0.2.7:40000", None, 60),  # the default is clamped too
        (True, "udp:192.0.2.7:40000", 60, 60),
        (True, "tcp:192.0.2.7:40000", 3600, 3600),  # a connection keeps its own mapping
        (False, "udp:192.0.2.7:5060", 3600, 3600),
    ],
)
def test_udp_binding_behind_nat_is_clamped(nat: bool, received: str, asked: int | None, granted: int) -> None:
    req = replace(request([ContactSpec(ALICE, asked)]), nat=nat, received=received)
    (binding,) = register(req).upserts
    assert binding.expires_at == NOW + granted
    assert binding.nat is nat


def test_nat_clamp_is_configurable_and_removal_still_works() -> None:
    policy = RegistrarPolicy(nat_expires=30)
    req = replace(request([ContactSpec(ALICE, 600)]), nat=True, received="udp:192.0.2.7:1")
    assert apply_register(req, [], policy, NOW).upserts[0].expires_at == NOW + 30
    gone = replace(request([ContactSpec(ALICE, 0)], call_id="c2"), nat=True, received="udp:192.0.2.7:1")
    assert apply_register(gone, [stored()], policy, NOW).removals == (stored(),)


@pytest.mark.parametrize(("bindings", "nat_expires"), [(0, 60), (10, 0), (-1, 60)])
def test_policy_needs_positive_cap_and_nat_expiry(bindings: int, nat_expires: int) -> None:
    with pytest.raises(ValueError):
        RegistrarPolicy(max_bindings=bindings, nat_expires=nat_expires)


# --- Binding records ----------------------------------------------------------------------


def test_binding_from_a_record_written_before_and_after() -> None:
    before = {"account": "a@h", "contact": "sip:a@h", "expires_at": 5.0, "call_id": "c", "cseq": 1,
              "q": 1.0, "instance": "ks1", "received": "udp:1.2.3.4:5"}
    assert Binding.from_dict(before) == Binding("a@h", "sip:a@h", 5.0, "c", 1, 1.0, "ks1", "udp:1.2.3.4:5")
    newer = {**before, "nat": True, "sip_instance": X, "flow_token": "from a later version"}
    assert Binding.from_dict(newer).nat is True
    full = Binding("a@h", "sip:a@h", 5.0, "c", 1, sip_instance=X, reg_id="1", params=";reg-id=1", nat=True)
    assert Binding.from_dict(full.to_dict()) == full
