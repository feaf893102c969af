"""Watching the store on etcd (the snapshot is in kv.py): changes delivered from the
client's watch thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import etcd3  # type: ignore[import-untyped]

from statestore import keys
from statestore.etcd.kv import EtcdKv
from statestore.store import WatchCallback, WatchEvent


class EtcdWatching(EtcdKv):
    """Watches."""

    def watch(self, start_revision: int, callback: WatchCallback, prefix: str = keys.ROOT) -> int:
        """Deliver every change under prefix from start_revision on, from a client thread."""

        def deliver(response: Any) -> None:
            if isinstance(response, Exception):
                callback(response)
                return
            callback([_watch_event(event) for event in response.events])

        with self._guard():
            return int(
                self.client.add_watch_prefix_callback(prefix, deliver, start_revision=start_revision)
            )

    def watch_prefixes(self, start_revision: int, callback: WatchCallback, prefixes: Sequence[str]) -> list[int]:
        """`watch` on each prefix (one stream: etcd3 multiplexes them): only what the
        caller reads travels, not every change of the cluster."""
        return [self.watch(start_revision, callback, prefix) for prefix in prefixes]

    def cancel_watch(self, watch_id: int) -> None:
        with self._guard():
            self.client.cancel_watch(watch_id)


def _watch_event(event: Any) -> WatchEvent:
    deleted = isinstance(event, etcd3.events.DeleteEvent)
    return WatchEvent(
        key=event.key.decode(),
        value=None if deleted else bytes(event.value),
        revision=int(event.mod_revision),
    )
