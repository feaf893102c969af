"""Bodies of each event package: the one table that maps a package to its renderer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from statestore.domain import dialoginfo
from statestore.domain.model import Binding, Leg


@dataclass(frozen=True)
class PresentityState:
    """Everything the store knows of one account that a body may show."""

    legs: tuple[Leg, ...]
    bindings: tuple[Binding, ...]


Renderer = Callable[[str, int, PresentityState], bytes]
Digester = Callable[[PresentityState], str]


def _dialog_body(entity: str, version: int, state: PresentityState) -> bytes:
    return dialoginfo.render_dialog_info(entity, version, state.legs)


def _dialog_digest(state: PresentityState) -> str:
    return dialoginfo.body_digest(state.legs)


RENDERERS: dict[str, tuple[Renderer, Digester]] = {"dialog": (_dialog_body, _dialog_digest)}


def render(event: str, entity: str, version: int, state: PresentityState) -> bytes:
    return RENDERERS[event][0](entity, version, state)


def digest(event: str, state: PresentityState) -> str:
    return RENDERERS[event][1](state)


def presentity_state(legs: Sequence[Leg], bindings: Sequence[Binding]) -> PresentityState:
    return PresentityState(tuple(legs), tuple(bindings))
