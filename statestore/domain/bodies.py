"""What a NOTIFY body is made of (PresentityState) and the body rendered once for every
watcher who sees it alike (Template). Packages and their renderers: domain.packages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from statestore.domain.model import Binding, Leg, Publication, Subscription


@dataclass(frozen=True)
class PresentityState:
    """Everything the store knows of one account that a body may show: its call legs on
    every instance, its registered contacts, its publications (RFC 3903) and the
    subscriptions to it (`watchers`, what watcher information shows, RFC 3857). `now` is
    when it was read (remaining expiries in a body); never part of a comparison."""

    legs: tuple[Leg, ...]
    bindings: tuple[Binding, ...]
    publications: tuple[Publication, ...] = ()
    watchers: tuple[Subscription, ...] = ()
    now: float = field(default=0.0, compare=False)


# (entity, version, state, profile, previous) -> body; version may be a stand-in (Template).
Renderer = Callable[[str, "int | str", PresentityState, frozenset[str], "PresentityState | None"], bytes]


def _no_body(
    entity: str, version: int | str, state: PresentityState, profile: frozenset[str], previous: PresentityState | None
) -> bytes:
    return b""


# Stand-ins for the two attributes that differ between the watchers of one presentity.
# The root element's attributes come first in a document, so the first occurrence of each
# is theirs, whatever the dialogs below contain.
_ENTITY_MARK = "\u2063entity\u2063"
_VERSION_MARK = "\u2063version\u2063"
_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


@dataclass
class Template:
    """The body of one event package for one presentity state, rendered once (on first
    use) for every watcher of that presentity that sees it alike (same profile, same
    previous state for partial documents): only entity and version differ. An empty
    body (a pending subscription's NOTIFY, RFC 6665 §4.2.1) has `content_type` "".
    """

    render: Renderer
    state: PresentityState
    content_type: str
    profile: frozenset[str] = frozenset()
    previous: PresentityState | None = None
    _rendered: bytes | None = field(default=None, repr=False, compare=False)

    def fill(self, entity: str, version: int) -> bytes:
        if self._rendered is None:
            self._rendered = self.render(_ENTITY_MARK, _VERSION_MARK, self.state, self.profile, self.previous)
        if not self._rendered:
            return b""
        body = self._rendered.replace(_VERSION_MARK.encode(), str(version).encode(), 1)
        return body.replace(_ENTITY_MARK.encode(), escape(entity, _ATTRIBUTE_ESCAPES).encode(), 1)


def empty(state: PresentityState) -> Template:
    """A NOTIFY without a body: no state to show (a pending subscription)."""
    return Template(_no_body, state, "")


def presentity_state(
    legs: Sequence[Leg], bindings: Sequence[Binding], publications: Sequence[Publication] = (),
    watchers: Sequence[Subscription] = (), now: float = 0.0,
) -> PresentityState:
    return PresentityState(tuple(legs), tuple(bindings), tuple(publications), tuple(watchers), now)
