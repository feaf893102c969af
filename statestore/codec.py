"""JSON values of the store.

Leg values start with their order (`{"v":"2.0000000001",…}`: the state's rank in the
RFC 4235 §3.7.1 FSM, then the call's write counter; `legs.order_of`), so that etcd can
order two values of one leg by comparing bytes inside a transaction: a leg is written
only if the stored value sorts lower. No clock is involved (issue 6, finding 4).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from statestore.domain.legs import CallParties, Ending, LegChange, order_of
from statestore.domain.model import Binding, Leg, LegState, Publication, Subscription, TerminationEvent


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes | str) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        # ValueError like json's own decode errors: callers handle one kind of bad value.
        raise ValueError("store value is not an object")  # noqa: TRY004
    return value


def encode_leg(leg: Leg) -> bytes:
    head = f'{{"v":"{order_of(leg)}",'
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


def encode_publication(publication: Publication) -> bytes:
    return encode(publication.to_dict())


def decode_publication(raw: bytes | str) -> Publication:
    return Publication.from_dict(decode(raw))


def encode_subscription(subscription: Subscription) -> bytes:
    return encode(subscription.to_dict())


def decode_subscription(raw: bytes | str) -> Subscription:
    return Subscription.from_dict(decode(raw))


def encode_change(parties: CallParties, change: LegChange) -> str:
    """A change of a call as a SIP worker hands it to the leg writer (ASCII JSON: it
    travels through Kamailio's shared memory as a C string)."""
    ending = change.ending
    return json.dumps(
        {
            "parties": asdict(parties),
            "state": change.state.value,
            "to_tag": change.to_tag,
            "callee_target": change.callee_target,
            "event": ending.event.value if ending and ending.event else None,
            "code": ending.code if ending else 0,
            "ended": ending is not None,
        },
        separators=(",", ":"),
    )


def decode_change(raw: str) -> tuple[CallParties, LegChange]:
    data = decode(raw)
    ending = Ending(TerminationEvent(data["event"]) if data.get("event") else None, int(data.get("code") or 0))
    change = LegChange(
        LegState(data["state"]), str(data.get("to_tag", "")), str(data.get("callee_target", "")),
        ending if data.get("ended") else None,
    )
    return CallParties(**data["parties"]), change
