"""Event packages are declarations: a package defined here, in a test module, with its
own renderer is served by every pure layer (Event check, Accept negotiation, Allow-Events,
the mirror's dirtying, NOTIFY planning and the body template) with no other change."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from statestore import codec, keys
from statestore.domain import packages
from statestore.domain.bodies import PresentityState
from statestore.domain.errors import SipError
from statestore.domain.packages import PACKAGES, EventPackage, Input, declare, event_package, negotiate
from statestore.mirror import Mirror
from tests.unit.test_mirror import ALICE, BINDING, LEG, LEG_KEY, NOW, REG_KEY, SUB, mirror_with, sub_item


def _count_body(
    entity: str, version: int | str, state: PresentityState, profile: frozenset[str], previous: PresentityState | None
) -> bytes:
    return f"{entity} v{version}: {len(state.bindings)} contacts\n".encode()


def _count_digest(state: PresentityState, profile: frozenset[str]) -> str:
    return str(len(state.bindings))


COUNT = EventPackage(
    name="x-contact-count",
    content_types=("text/x-count", "text/plain"),
    render=_count_body,
    digest=_count_digest,
    inputs=frozenset({Input.REGS}),
)


@pytest.fixture
def declared() -> Iterator[EventPackage]:
    declare(COUNT)
    yield COUNT
    del PACKAGES[COUNT.name]


def live(*names: str, serving: list[str] | None = None) -> list[tuple[str, bytes, int]]:
    info: dict[str, object] = {"sip": "127.0.0.1:5060"}
    if serving is not None:
        info["packages"] = serving
    return [(keys.instance(name), codec.encode(info), 1 + n) for n, name in enumerate(names)]


def test_a_package_declared_in_a_test_module_is_served_by_the_pure_layers(declared: EventPackage) -> None:
    assert event_package("x-contact-count;id=7") is declared
    assert "x-contact-count" in packages.allow_events()
    assert negotiate(["text/plain"], declared) == "text/plain"
    with pytest.raises(SipError) as refused:
        negotiate(["application/pidf+xml"], declared)
    assert refused.value.status == 406 and refused.value.headers["Accept"] == "text/x-count, text/plain"

    sub = replace(SUB, event=declared.name, content_type="text/plain")
    mirror = mirror_with(*live("node-a", serving=[declared.name, "dialog"]), sub_item(sub, 5))
    mirror.epoch = sub.epoch
    [first] = mirror.due("node-a", {ALICE}, NOW)
    assert first.body is not None and first.body.fill(sub.entity, 0) == b"sip:alice@example.com v0: 0 contacts\n"
    assert first.body.content_type == "text/plain"
    mirror.numbered(first)
    assert mirror.apply(LEG_KEY, codec.encode_leg(LEG), 6) == set()  # its bodies are not made of calls
    assert mirror.apply(REG_KEY, codec.encode_binding(BINDING), 7) == {ALICE}
    [second] = mirror.due("node-a", {ALICE}, NOW + 1)
    assert second.body is not None and second.body.fill(sub.entity, 1) == b"sip:alice@example.com v1: 1 contacts\n"
    assert keys.REGS in Mirror.prefixes()


def test_no_subscription_is_given_to_an_instance_that_does_not_serve_its_package() -> None:
    presence = replace(SUB, event="presence", owner="node-gone")
    items = [*live("node-old"), *live("node-new", serving=sorted(PACKAGES)), sub_item(presence, 9)]
    for me, expected in (("node-old", []), ("node-new", ["sub-1"])):
        mirror = mirror_with(*items)
        assert [due.subscription.sub_id for due in mirror.due(me, {ALICE}, NOW)] == expected


def test_an_unknown_package_name_is_489_listing_what_is_served() -> None:
    with pytest.raises(SipError) as refused:
        event_package("x-contact-count")
    assert refused.value.status == 489
    assert refused.value.headers["Allow-Events"] == packages.allow_events()
