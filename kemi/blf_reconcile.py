"""Reading this instance's dialogs from the dialog module (dlg.list over in-process RPC)."""

from __future__ import annotations

import json
from typing import Any

import KSR  # type: ignore[import-not-found]

from statestore.domain.legs import CallParties
from statestore.domain.model import LegState
from statestore.domain.reconcile import LiveDialog

# dialog module states (dlg_hash.h): 1 unconfirmed, 2 early, 3 confirmed without ACK,
# 4 confirmed, 5 deleted.
DIALOG_STATES = {1: LegState.TRYING, 2: LegState.EARLY, 3: LegState.CONFIRMED, 4: LegState.CONFIRMED}


def live_dialogs() -> list[LiveDialog]:
    KSR.jsonrpcs.exec(json.dumps({"jsonrpc": "2.0", "method": "dlg.list", "id": 1}))
    raw = KSR.pv.get("$jsonrpl(body)")
    result = json.loads(raw).get("result", []) if raw else []
    dialogs = [_live(item) for item in (result if isinstance(result, list) else [])]
    return [dialog for dialog in dialogs if dialog is not None]


def _live(item: dict[str, Any]) -> LiveDialog | None:
    parties = _parties(item.get("variables"))
    if parties is None:
        return None
    callee = item.get("callee") or {}
    return LiveDialog(
        parties=parties,
        state=DIALOG_STATES.get(int(item.get("state", 5)), LegState.TERMINATED),
        to_tag=str(callee.get("tag") or ""),
        callee_target=str(callee.get("contact") or ""),
    )


def _parties(variables: Any) -> CallParties | None:
    entries = variables if isinstance(variables, list) else [variables or {}]
    for entry in entries:
        if isinstance(entry, dict) and entry.get("blf"):
            return CallParties(**json.loads(entry["blf"]))
    return None
