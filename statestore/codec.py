"""JSON values of the store.

Leg values start with their version as a fixed-width string (`{"v":"000…123",…}`), so
that etcd can order two values of one leg by comparing bytes inside a transaction: a
leg is written only if the stored value sorts lower (RFC 4235 ordering, see issue 2).
"""

from __future__ import annotations

import json
from typing import Any

from statestore.domain.model import Binding, Leg, Subscription

VERSION_WIDTH = 20


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes | str) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        # ValueError like json's own decode errors: callers handle one kind of bad value.
        raise ValueError("store value is not an object")  # noqa: TRY004
    return value


def encode_leg(leg: Leg) -> bytes:
    head = f'{{"v":"{leg.version:0{VERSION_WIDTH}d}",'
    body = json.dumps(leg.to_dict(), separators=(",", ":"), sort_keys=True)
    return (head + body[1:]).encode()


def decode_leg(raw: bytes | str) -> Leg:
    data = decode(raw)
    data.pop("v", None)
    return Leg.from_dict(data)


def encode_binding(binding: Binding) -> bytes:
    return encode(binding.to_dict())


def decode_binding(raw: bytes | str) -> Binding:
    return Binding.from_dict(decode(raw))


def encode_subscription(subscription: Subscription) -> bytes:
    return encode(subscription.to_dict())


def decode_subscription(raw: bytes | str) -> Subscription:
    return Subscription.from_dict(decode(raw))
