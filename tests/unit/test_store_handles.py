"""The seam for zones: the "store down" flag and the instance lease are held per store
(kemi/blf_context.py StoreHandle): the first zone's in kamailio.cfg's $shv variables, any
other zone's in the htable blf_zones."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from statestore.memory import MemoryStore

KEMI = str(Path(__file__).resolve().parents[2] / "kemi")


@pytest.fixture
def handles(monkeypatch: pytest.MonkeyPatch) -> Any:
    shared: dict[str, str] = {}
    ksr = types.ModuleType("KSR")
    ksr.pv = types.SimpleNamespace(get=shared.get, sets=shared.__setitem__)  # type: ignore[attr-defined]
    ksr.htable = types.SimpleNamespace(  # type: ignore[attr-defined]
        sht_get=lambda table, key: shared.get(f"{table}[{key}]"),
        sht_sets=lambda table, key, value: shared.__setitem__(f"{table}[{key}]", value),
    )
    monkeypatch.setitem(sys.modules, "KSR", ksr)
    monkeypatch.syspath_prepend(KEMI)
    monkeypatch.delitem(sys.modules, "blf_context", raising=False)
    import blf_context  # type: ignore[import-not-found]

    monkeypatch.setitem(sys.modules, "blf_context", blf_context)  # gone again after the test
    return blf_context, shared


def test_each_store_has_its_own_down_flag_and_lease(handles: Any) -> None:
    blf_context, shared = handles
    home, eu = MemoryStore(), MemoryStore()
    default, zone = blf_context.StoreHandle("z1", home), blf_context.StoreHandle("eu", eu, first=False)
    zone.mark_down()
    assert zone.down() and not default.down()
    assert (eu.closed, home.closed) == (1, 0)
    default.share_lease_id(7)
    zone.share_lease_id(9)
    assert (default.lease_id(), zone.lease_id()) == (7, 9)
    zone.mark_reached()
    assert not zone.down()
    assert shared.pop("blf_zones[eu:store_down_at]")  # when the zone's outage began
    # The first zone's are kamailio.cfg's variables, as before zones.
    assert shared == {"blf_zones[eu:store]": "up", "$shv(blf_lease)": "7", "blf_zones[eu:lease]": "9"}


def test_a_client_from_before_an_outage_is_dropped_at_its_next_use(handles: Any) -> None:
    """Another process's client may hold a channel gRPC is still backing off: it reconnects."""
    blf_context, shared = handles
    store = MemoryStore()
    worker, keeper = blf_context.StoreHandle("", store), blf_context.StoreHandle("", MemoryStore())
    assert worker.store is store and store.closed == 0  # no outage yet: kept
    keeper.mark_down()  # another process of the instance found the store down
    keeper.mark_down()  # still the same outage
    keeper.mark_reached()
    assert worker.store is store and store.closed == 1  # dropped once: it connects afresh
    assert worker.store is store and store.closed == 1  # and only once per outage


def test_a_process_holding_watches_keeps_its_client_after_an_outage(handles: Any) -> None:
    """Closing it would end a healthy watch silently; it resyncs on its watch's own error."""
    blf_context, shared = handles
    store = MemoryStore()
    notifier, worker = blf_context.StoreHandle("", store), blf_context.StoreHandle("", MemoryStore())
    notifier.holds_watches = True
    worker.mark_down()
    worker.mark_reached()
    assert notifier.store is store and store.closed == 0
