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


def zoned_context(blf_context: Any, stores: dict[str, MemoryStore]) -> Any:
    """A Context of the zones `stores` (first: the default), without Settings or etcd."""
    ctx = object.__new__(blf_context.Context)
    ctx.stores = {
        name: blf_context.StoreHandle(name, store, first=index == 0)
        for index, (name, store) in enumerate(stores.items())
    }
    return ctx


def test_a_domain_is_served_by_the_zone_the_directory_copy_found_it_in(handles: Any) -> None:
    blf_context, shared = handles
    z1, z2 = MemoryStore(), MemoryStore()
    ctx = zoned_context(blf_context, {"z1": z1, "z2": z2})
    shared["blf_dir[zoneof/zone2.example]"] = "z2"  # blf_directory.Keeper notes it as it loads z2
    assert ctx.zone("bob@zone2.example").zone == "z2"
    assert ctx.zone("ZONE2.example").zone == "z2"
    assert ctx.zone("alice@example.com").zone == "z1"  # not known elsewhere: the first zone
    assert ctx.zone_named("z2").raw is z2


def test_a_store_error_flags_down_only_the_zone_whose_store_raised_it(handles: Any) -> None:
    from statestore.domain.errors import StoreUnavailable
    from statestore.etcd import EtcdStore

    blf_context, _ = handles
    ctx = object.__new__(blf_context.Context)
    first, second = EtcdStore("127.0.0.1:1"), EtcdStore("127.0.0.1:2,127.0.0.1:3")
    ctx.stores = {"z1": blf_context.StoreHandle("z1", first), "z2": blf_context.StoreHandle("z2", second, first=False)}
    ctx.mark_unavailable(StoreUnavailable("gone", "127.0.0.1:2,127.0.0.1:3"))
    assert ctx.stores["z2"].down() and not ctx.stores["z1"].down()
    ctx.mark_unavailable(StoreUnavailable("no endpoint said"))
    assert ctx.stores["z1"].down()


def test_a_subscription_is_looked_for_in_its_domains_zone_then_in_the_others(handles: Any) -> None:
    from statestore.domain.model import Subscription

    blf_context, shared = handles
    z1, z2 = MemoryStore(), MemoryStore()
    ctx = zoned_context(blf_context, {"z1": z1, "z2": z2})
    shared["blf_dir[zoneof/zone2.example]"] = "z2"
    sub = Subscription(
        sub_id="s-1", event="dialog", presentity="bob@zone2.example", entity="sip:bob@zone2.example",
        watcher="carol@example.com", watcher_contact="sip:carol@192.0.2.3", call_id="c", local_tag="l",
        remote_tag="r", local_uri="sip:bob@zone2.example", remote_uri="sip:carol@example.com", route_set=(),
        expires_at=2e9, owner="ks1", cseq=1, version=0, epoch=1,
    )
    assert z2.create_subscription(sub) is not None
    zone, found = blf_context.find_subscription(ctx, "s-1", "zone2.example")
    assert zone.zone == "z2" and found is not None and found[0].sub_id == "s-1"
    zone, found = blf_context.find_subscription(ctx, "s-1", "example.com")  # its zone's, found elsewhere
    assert zone.zone == "z2" and found is not None
    assert blf_context.find_subscription(ctx, "nope", "example.com")[1] is None
