"""Bodies of each event package: the one table that maps a package to its renderer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from statestore.domain import dialoginfo
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


# (entity, version, state); version may be a stand-in string (Template).
Renderer = Callable[[str, int | str, PresentityState], bytes]
Digester = Callable[[PresentityState], str]


def _dialog_body(entity: str, version: int | str, state: PresentityState) -> bytes:
    return dialoginfo.render_dialog_info(entity, version, state.legs)


def _dialog_digest(state: PresentityState) -> str:
    return dialoginfo.body_digest(state.legs)


RENDERERS: dict[str, tuple[Renderer, Digester]] = {"dialog": (_dialog_body, _dialog_digest)}


def render(event: str, entity: str, version: int, state: PresentityState) -> bytes:
    return RENDERERS[event][0](entity, version, state)


def digest(event: str, state: PresentityState) -> str:
    return RENDERERS[event][1](state)


# Stand-ins for the two attributes that differ between the watchers of one presentity.
# The root element's attributes come first in a document, so the first occurrence of each
# is theirs, whatever the dialogs below contain.
_ENTITY_MARK = "\u2063entity\u2063"
_VERSION_MARK = "\u2063version\u2063"
_ATTRIBUTE_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


@dataclass
class Template:
    """The body of one event package for one presentity state, rendered once (on first
    use) for every watcher of that presentity: only entity and version differ."""

    event: str
    state: PresentityState
    _rendered: bytes | None = field(default=None, repr=False, compare=False)

    def fill(self, entity: str, version: int) -> bytes:
        if self._rendered is None:
            self._rendered = RENDERERS[self.event][0](_ENTITY_MARK, _VERSION_MARK, self.state)
        body = self._rendered.replace(_VERSION_MARK.encode(), str(version).encode(), 1)
        return body.replace(_ENTITY_MARK.encode(), escape(entity, _ATTRIBUTE_ESCAPES).encode(), 1)


def presentity_state(legs: Sequence[Leg], bindings: Sequence[Binding]) -> PresentityState:
    return PresentityState(tuple(legs), tuple(bindings))
