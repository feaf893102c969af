"""A fake `KSR` module for unit tests of kemi/, built from Kamailio's own list of its KEMI
functions (tests/fixtures/ksr_api_5.6.json, from `kamcmd app_python.api_list` on the
Kamailio 5.6.3 of `make setup`, with the modules kamailio/kamailio.cfg loads).

Every function that list names exists, with its arity and argument types checked as
app_python3 checks them; a function it does not name does not exist (AttributeError),
so a misspelt or removed KSR call fails in a unit test, not in production. Calls are
recorded; answers come from `answers` (a value, or a callable given the arguments),
else a neutral default for the return type. Pseudo-variables are a dict (`pv.get`,
`pv.sets`, `pv.seti`, `pv.unset`), shared variables ($shv) included.

    ksr = install()            # sys.modules["KSR"] is now the fake; kemi/ is importable
    ksr.answers["tm.t_uac_send"] = -1
    ...
    assert ksr.calls_of("tm.t_uac_send")
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from statestore.domain.registrar import RegistrarPolicy
from statestore.domain.subscription import SubscriptionPolicy

ROOT = Path(__file__).resolve().parents[1]
API = Path(__file__).resolve().parent / "fixtures" / "ksr_api_5.6.json"
_DEFAULTS: dict[str, Any] = {"int": 1, "bool": True, "none": None, "xval": None, "str": ""}
_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "int": int}


class FakeKSR(types.ModuleType):
    def __init__(self, api: list[dict[str, Any]]) -> None:
        super().__init__("KSR")
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answers: dict[str, Any] = {}
        self.pvs: dict[str, Any] = {}
        for entry in api:
            module, name = entry["module"], entry["name"]
            owner: types.ModuleType = self
            if module:
                owner = getattr(self, module, None) or types.ModuleType(f"KSR.{module}")
                setattr(self, module, owner)
            setattr(owner, name, self._function(module, name, entry["params"], entry["ret"]))
        # app_python3's pv functions, with a real store behind them.
        self.pv.get = self._pv_get  # type: ignore[attr-defined]
        self.pv.sets = self._pv_set  # type: ignore[attr-defined]
        self.pv.seti = self._pv_set  # type: ignore[attr-defined]
        self.pv.unset = self._pv_unset  # type: ignore[attr-defined]

    def _function(self, module: str, name: str, params: list[str], ret: str) -> Callable[..., Any]:
        qualified = f"{module}.{name}" if module else name

        def call(*args: Any) -> Any:
            if len(args) != len(params):
                raise TypeError(f"KSR.{qualified} takes {len(params)} arguments ({', '.join(params)}), got {len(args)}")
            for index, (kind, value) in enumerate(zip(params, args, strict=True)):
                expected = _TYPES.get(kind)
                if expected is not None and not isinstance(value, expected):
                    raise TypeError(f"KSR.{qualified} argument {index + 1} must be {kind}, got {value!r}")
            self.calls.append((qualified, args))
            answer = self.answers.get(qualified, _DEFAULTS.get(ret))
            return answer(*args) if callable(answer) else answer

        call.__name__ = name
        return call

    def _pv_get(self, name: str) -> Any:
        if not isinstance(name, str):
            raise TypeError("KSR.pv.get takes a string")
        self.calls.append(("pv.get", (name,)))
        return self.pvs.get(name)

    def _pv_set(self, name: str, value: Any) -> int:
        self.calls.append(("pv.set", (name, value)))
        self.pvs[name] = value
        return 1

    def _pv_unset(self, name: str) -> int:
        self.pvs.pop(name, None)
        return 1

    def calls_of(self, qualified: str) -> list[tuple[Any, ...]]:
        """The arguments of every call of `qualified` ("tm.t_uac_send", "warn"), in order."""
        return [args for name, args in self.calls if name == qualified]

    def logged(self, level: str = "") -> str:
        """What was logged (KSR.err, warn, notice, info, dbg), one level or all."""
        levels = (level,) if level else ("err", "warn", "notice", "info", "dbg", "crit")
        return "".join(str(args[0]) for name, args in self.calls if name in levels)

    def reset(self) -> None:
        self.calls.clear()
        self.answers.clear()
        self.pvs.clear()


def install() -> FakeKSR:
    """Make `import KSR` give the fake (one per test process, reset between tests) and
    kemi/ importable as Kamailio makes it (its directory on sys.path)."""
    current = sys.modules.get("KSR")
    if isinstance(current, FakeKSR):
        current.reset()
        return current
    fake = FakeKSR(json.loads(API.read_text()))
    sys.modules["KSR"] = fake
    kemi = str(ROOT / "kemi")
    if kemi not in sys.path:
        sys.path.insert(0, kemi)
    return fake


def back_htables(fake: FakeKSR) -> dict[str, str]:
    """Give the fake's htable functions a store: one dict, keyed like Kamailio's table (a
    test uses one table). Returned, so a test can look inside."""
    table: dict[str, str] = {}
    fake.answers["htable.sht_sets"] = lambda name, key, value: (table.__setitem__(key, value), 1)[1]
    fake.answers["htable.sht_setxs"] = lambda name, key, value, expire: (table.__setitem__(key, value), 1)[1]
    fake.answers["htable.sht_rm"] = lambda name, key: (table.pop(key, None), 1)[1]
    fake.answers["htable.sht_get"] = lambda name, key: table.get(key)
    return table


class FakeSettings:
    """The settings of kemi/blf_settings.Settings a unit of kemi/ reads (override per test)."""

    instance = "ks1"
    sip = "127.0.0.1:5071"
    secret = "s3cret"
    lease_ttl = 6
    notifier_wait = 0.0


class FakeContext:
    """What kemi/ code reads of blf_context.Context: the store, the settings, the cache and
    the instance's "store down" flag (a plain attribute here, $shv in Kamailio)."""

    def __init__(self, store: Any, settings: Any = None, cache: Any = None, **extra: Any) -> None:
        self.store = store
        self.settings = settings if settings is not None else FakeSettings()
        self.cache = cache
        self.down = False
        # The real Context's policies, with their defaults (kemi/blf_tcp.hold_flow reads them).
        self.registrar = RegistrarPolicy()
        self.subscriptions = SubscriptionPolicy()
        for name, value in extra.items():
            setattr(self, name, value)

    def store_down(self) -> bool:
        return self.down

    def mark_store_down(self) -> None:
        self.down = True

    def mark_unavailable(self, exc: Exception) -> None:
        self.down = True

    # --- zones: one, the first, whose store is `store` and whose "down" flag is `down` ---

    @property
    def home(self) -> Any:
        if "_home" not in self.__dict__:
            self._home = FakeZone(self)
        return self._home

    @property
    def stores(self) -> dict[str, Any]:
        return {"z1": self.home}

    def zone(self, name: str) -> Any:
        return self.home

    def zone_named(self, zone: str) -> Any:
        return self.home


class FakeZone:
    """kemi/blf_context.StoreHandle of FakeContext's one zone: its store and "down" flag are
    the context's; its shared values are the first zone's $shv variables, as in Kamailio."""

    def __init__(self, ctx: FakeContext) -> None:
        import blf_context  # type: ignore[import-not-found]  # kemi/, importable once install() ran

        self._values = blf_context.ZoneValues("z1", first=True)
        self.ctx = ctx
        self.zone = "z1"
        self.first = True
        self.holds_watches = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._values, name)  # get, set, lease_id, epoch, round_trip...

    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def raw(self) -> Any:
        return self.ctx.store

    def down(self) -> bool:
        return self.ctx.down

    def mark_down(self) -> None:
        self.ctx.down = True

    def mark_reached(self) -> None:
        self.ctx.down = False
