"""Waking the leg writer when a SIP worker queues a change of a call.

The leg writer is an rtimer process polling the mqueue; polling every 2 ms cost each
instance about 2 % of a core doing nothing. Instead it blocks on a datagram socket of
its own (Linux abstract namespace, so per network namespace and never a file left
behind) and a SIP worker sends it an empty datagram after each change it queues. The
socket only wakes it: the change itself is in the mqueue, and a lost datagram (writer
not bound yet, buffer full) costs at most the writer's longest wait.
"""

from __future__ import annotations

import os
import select
import socket

_sender: socket.socket | None = None
# This instance's name (checked at start-up, blf_settings.instance_name).
INSTANCE = os.environ.get("BLF_INSTANCE", "")


def address(instance: str) -> str:
    return f"\0blf-legs/{instance}"


def wake(instance: str = INSTANCE) -> None:
    """Called by a SIP worker after it queued a change: never blocks, never raises."""
    global _sender
    try:
        if _sender is None:
            _sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            _sender.setblocking(False)
        _sender.sendto(b"", address(instance))
    except OSError:
        pass  # nobody bound yet, or its buffer full: it is awake or wakes at its timeout


class Wakeup:
    """The leg writer's end: wait(timeout) returns when woken or after `timeout` seconds."""

    def __init__(self, instance: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.socket.bind(address(instance))

    def wait(self, timeout: float) -> None:
        if timeout > 0:
            select.select([self.socket], [], [], timeout)
        try:
            while True:
                self.socket.recv(16)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.socket.close()
