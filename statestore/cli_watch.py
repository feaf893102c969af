"""blfctl watch ACCOUNT...: a live panel of lamps, redrawn as calls happen (docs/inspect.md).

Each account's legs and registrations are read once (one snapshot per zone) and then
followed by one etcd watch per account prefix from the revision after it: only those
accounts' keys travel, never the whole cluster's. The panel itself is
statestore.watch_panel (pure); here are the terminal and the store.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any, TextIO

from statestore import watch_panel
from statestore.cli_inspect import resolve
from statestore.cli_zones import stores
from statestore.domain.errors import StoreUnavailable
from statestore.store import StateStore, WatchEvent

# The panel is looked at again at least this often (a registration's expiry shows without
# an event; the clock in the title moves).
TICK_SECONDS = 1.0
CLEAR = "\x1b[H\x1b[2J"


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def follow(
    groups: Sequence[tuple[StateStore, list[str]]], out: TextIO, once: bool, tty: bool,
) -> int:
    """Read each zone's accounts, then redraw on every change until interrupted."""
    events: queue.Queue[list[WatchEvent] | Exception] = queue.Queue()
    panels = []
    for store, accounts in groups:
        panel = watch_panel.Panel(accounts, time.time())
        revision, items = store.snapshot(panel.prefixes())
        panel.apply((item.key, item.value) for item in items)
        panel.refresh(time.time())
        panels.append(panel)
        if not once:
            store.watch_prefixes(revision + 1, events.put, panel.prefixes())
    rows = {row.account: row for panel in panels for row in panel.rows.values()}
    order = [aor for _, accounts in groups for aor in accounts]
    _draw([rows[aor] for aor in order], out, tty, all_rows=True)
    if once:
        return 0
    while True:
        try:
            item = events.get(timeout=TICK_SECONDS)
        except queue.Empty:
            item = []
        if isinstance(item, Exception):
            raise StoreUnavailable(f"watch ended: {item}")
        for panel in panels:
            panel.apply((event.key, event.value) for event in item)
        changed = [row for panel in panels for row in panel.refresh(time.time())]
        rows |= {row.account: row for row in changed}
        if changed or tty:
            _draw([rows[aor] for aor in order] if tty else changed, out, tty, all_rows=False)


def _draw(rows: list[watch_panel.Row], out: TextIO, tty: bool, all_rows: bool) -> None:
    """On a terminal the whole panel in place; otherwise plain lines: the header and every
    row at start, then each row that changed."""
    if tty:
        out.write(CLEAR + "\n".join(watch_panel.render(rows, time.time())) + "\n")
    elif all_rows:
        out.write("\n".join(watch_panel.render(rows, time.time())[1:]) + "\n")
    else:
        out.write("".join(watch_panel.line(row) + "\n" for row in rows))
    out.flush()


def cmd_watch(args: argparse.Namespace) -> int:
    zones = stores(args)
    by_store: dict[int, tuple[StateStore, list[str]]] = {}
    for name in args.accounts:
        store = zones.for_domain(name.rpartition("@")[2].lower())
        by_store.setdefault(id(store), (store, []))[1].append(resolve(store, name))
    signal.signal(signal.SIGTERM, _stopped)
    try:
        return follow(list(by_store.values()), sys.stdout, args.once, sys.stdout.isatty())
    except KeyboardInterrupt:
        return 0
    finally:
        zones.close()


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("watch", help="a live panel of lamps (idle/ringing/busy/offline), Ctrl-C to leave")
    parser.add_argument("accounts", nargs="+", metavar="ACCOUNT", help="USER@DOMAIN or ALIAS@DOMAIN")
    parser.add_argument("--once", action="store_true", help="print the panel once and exit")
