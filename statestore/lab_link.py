"""Each lab instance's store link (statestore.storelink): starting it, learning its ports,
signalling it to cut or heal and waiting until it has."""

from __future__ import annotations

import json
import os
import signal as signals
import sys
from collections.abc import Callable
from pathlib import Path

from statestore.lab_process import spawn, wait_for

# How long `cut` and `heal` wait for the link to say it acted.
SIGNAL_TIMEOUT = 5.0


def spawn_link(directory: Path, upstreams: list[str], spawner: Callable[..., int] = spawn) -> int:
    """Start a link to `upstreams` logging to directory/storelink.log; its PID. `spawner`
    starts it elsewhere than beside the lab (in a site's namespace: statestore.lab_sites)."""
    directory.mkdir(parents=True, exist_ok=True)
    ports_file = directory / "storelink.json"
    ports_file.unlink(missing_ok=True)
    command = [sys.executable, "-m", "statestore.storelink", "--ports-file", str(ports_file), *upstreams]
    return spawner(command, directory / "storelink.log", os.environ.copy())


def wait_ports(directory: Path, pid: int, name: str) -> dict[str, int]:
    """The link's port per member, once it listens on every one."""
    ports_file = directory / "storelink.json"
    wait_for(f"{name}'s store link", ports_file.exists, pid)
    ports: dict[str, int] = json.loads(ports_file.read_text())
    return ports


def signal(directory: Path, pid: int, heal: bool) -> None:
    """SIGUSR1 (cut) or SIGUSR2 (heal), then wait until the link logs that it acted."""
    word = "healed" if heal else "cut"
    log = directory / "storelink.log"
    before = said(log, word)
    os.kill(pid, signals.SIGUSR2 if heal else signals.SIGUSR1)
    wait_for(f"the store link {word}", lambda: said(log, word) > before, pid, SIGNAL_TIMEOUT)


def said(log: Path, word: str) -> int:
    """How many times a store link has logged `storelink: WORD` (it does once per signal)."""
    try:
        return log.read_text(errors="replace").count(f"storelink: {word}")
    except OSError:
        return 0
