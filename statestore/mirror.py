"""An in-memory copy of the store, fed by a snapshot and then by watch events.

The notifier process plans its NOTIFYs from it without reading etcd per event. Pure:
the adapter passes keys, values and revisions in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from statestore import codec, keys
from statestore.domain import bodies
from statestore.domain.bodies import PresentityState
from statestore.domain.model import Binding, Leg, Subscription
from statestore.domain.subscription import is_expired, responsible_instance

ALL = "*"
T = TypeVar("T")


@dataclass(frozen=True)
class Due:
    """A subscription this instance must act on: expire it, or notify its new state."""

    subscription: Subscription
    revision: int
    state: PresentityState
    expired: bool


class Mirror:
    def __init__(self) -> None:
        self.legs: dict[str, dict[str, Leg]] = {}
        self.bindings: dict[str, dict[str, Binding]] = {}
        self.subs: dict[str, tuple[Subscription, int]] = {}
        self.instances: set[str] = set()

    def load(self, items: Iterable[tuple[str, bytes, int]]) -> None:
        self.__init__()  # type: ignore[misc]
        for key, value, revision in items:
            self.apply(key, value, revision)

    def apply(self, key: str, value: bytes | None, revision: int) -> set[str]:
        """Take one change in; the presentities whose state may differ (ALL for any)."""
        parsed = keys.parse(key)
        if parsed is None:
            return set()
        if parsed.kind == "legs":
            _put(self.legs, parsed.account, key, None if value is None else codec.decode_leg(value))
            return {parsed.account}
        if parsed.kind == "regs":
            binding = None if value is None else codec.decode_binding(value)
            _put(self.bindings, parsed.account, key, binding)
            return {parsed.account}
        if parsed.kind == "subs":
            return self._apply_sub(parsed.name, value, revision)
        if parsed.kind == "instances":
            (self.instances.add if value is not None else self.instances.discard)(parsed.name)
            return {ALL}
        return set()

    def _apply_sub(self, sub_id: str, value: bytes | None, revision: int) -> set[str]:
        if value is None:
            old = self.subs.pop(sub_id, None)
            return set() if old is None else {old[0].presentity}
        current = self.subs.get(sub_id)
        if current is not None and current[1] >= revision:
            return set()  # our own write, already remembered
        subscription = codec.decode_subscription(value)
        self.subs[sub_id] = (subscription, revision)
        return {subscription.presentity}

    def state_of(self, presentity: str) -> PresentityState:
        return bodies.presentity_state(
            list(self.legs.get(presentity, {}).values()), list(self.bindings.get(presentity, {}).values())
        )

    def due(self, me: str, dirty: set[str], now: float) -> list[Due]:
        """Subscriptions of dirty presentities that `me` sends for and that need a NOTIFY."""
        live = sorted(self.instances)
        result = []
        for subscription, revision in list(self.subs.values()):
            if ALL not in dirty and subscription.presentity not in dirty:
                continue
            if responsible_instance(subscription, live) != me:
                continue
            state = self.state_of(subscription.presentity)
            expired = is_expired(subscription, now)
            if expired or bodies.digest(subscription.event, state) != subscription.last_digest:
                result.append(Due(subscription, revision, state, expired))
        return result

    def forget(self, sub_id: str) -> None:
        self.subs.pop(sub_id, None)

    def remember(self, subscription: Subscription, revision: int) -> None:
        current = self.subs.get(subscription.sub_id)
        if current is None or current[1] < revision:
            self.subs[subscription.sub_id] = (subscription, revision)


def _put(table: dict[str, dict[str, T]], account: str, key: str, value: T | None) -> None:
    entries = table.setdefault(account, {})
    if value is None:
        entries.pop(key, None)
        if not entries:
            table.pop(account, None)
    else:
        entries[key] = value
