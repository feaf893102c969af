"""Shared test factories: one copy of each record a test needs, not one per test file."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from statestore.domain.model import Subscription


def subscription(
    watcher: str = "bob@example.com", presentity: str = "alice@example.com", **changes: Any
) -> Subscription:
    """A fresh stored subscription of `watcher` to `presentity` (a new id, dialog and source
    address each time), owned by ks1 and expiring in an hour; `changes` replace fields."""
    sub_id = uuid.uuid4().hex[:24]
    base = Subscription(
        sub_id=sub_id, event="dialog", presentity=presentity, entity=f"sip:{presentity}", watcher=watcher,
        watcher_contact=f"sip:{sub_id}@127.0.0.1:5090", call_id=f"{sub_id}@itest", local_tag="lt",
        remote_tag="rt", local_uri=f"sip:{presentity}", remote_uri=f"sip:{watcher}", route_set=(),
        expires_at=time.time() + 3600, owner="ks1", received=f"udp:127.0.0.1:{1024 + int(sub_id[:4], 16)}",
        flow_instance="ks1",
    )
    return replace(base, **changes)
