"""blfctl and zones: a domain lives in one zone; an account's commands go to its domain's
zone, found by asking each zone in order (a fake store per zone endpoint)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from statestore import cli_zones
from statestore.cli import main
from statestore.domain.errors import StoreUnavailable
from statestore.domain.policy import DomainRules

ZONES = "z1=127.0.0.1:2379,127.0.0.1:2389;z2=127.0.0.1:2479"


class FakeZoneStore:
    """Only the directory calls these commands make; one dict of domains per cluster."""

    clusters: dict[str, dict[str, DomainRules]] = {}
    down: set[str] = set()

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.domains = self.clusters.setdefault(endpoint, {})

    def _up(self) -> None:
        if self.endpoint in self.down:
            raise StoreUnavailable(f"etcd at {self.endpoint}: down")

    def domain_exists(self, name: str) -> bool:
        self._up()
        return name in self.domains

    def add_domain(self, name: str, rules: DomainRules | None = None) -> None:
        self._up()
        if rules is not None or name not in self.domains:
            self.domains[name] = rules or DomainRules(name)

    def domain_rules(self, name: str) -> DomainRules | None:
        self._up()
        return self.domains.get(name)

    def close(self) -> None:
        pass


@pytest.fixture
def zones(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, DomainRules]]:
    FakeZoneStore.clusters = {}
    FakeZoneStore.down = set()
    monkeypatch.setattr(cli_zones, "EtcdStore", FakeZoneStore)
    monkeypatch.setenv("BLF_ZONES", ZONES)
    return FakeZoneStore.clusters


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


Z1, Z2 = "127.0.0.1:2379,127.0.0.1:2389", "127.0.0.1:2479"


def test_a_domain_goes_to_the_zone_named_or_the_first(zones: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "domain", "add", "a.example", "--zone", "z2")[:2] == (0, "domain a.example added (zone z2)\n")
    assert run(capsys, "domain", "add", "b.example")[:2] == (0, "domain b.example added (zone z1)\n")
    assert set(zones[Z2]) == {"a.example"} and set(zones[Z1]) == {"b.example"}
    code, out, _ = run(capsys, "domain", "show", "a.example")
    assert code == 0 and json.loads(out)["zone"] == "z2" and json.loads(out)["domain"] == "a.example"


def test_a_domain_of_another_zone_is_refused(zones: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "domain", "add", "a.example", "--zone", "z2")
    code, _, err = run(capsys, "domain", "add", "a.example", "--zone", "z1")
    assert code == 1 and "domain a.example is in zone z2" in err
    assert run(capsys, "domain", "add", "a.example")[0] == 1  # the default zone is z1
    assert "a.example" not in zones[Z1]
    assert run(capsys, "domain", "add", "a.example", "--zone", "z2")[0] == 0  # its own zone: fine
    code, _, err = run(capsys, "domain", "add", "c.example", "--zone", "z9")
    assert code == 1 and "no zone z9 (zones: z1, z2)" in err


def test_the_zone_of_a_domain_is_asked_of_each_zone_passing_over_one_that_is_down(zones: Any) -> None:
    stores = cli_zones.ZoneStores({"z1": ["h:1"], "z2": ["h:2"], "z3": ["h:3"]})
    stores.store("z2").add_domain("a.example")
    FakeZoneStore.down = {"h:1"}
    assert stores.zone_of("a.example") == "z2"
    assert stores.for_domain("a.example").endpoint == "h:2"
    with pytest.raises(StoreUnavailable):
        stores.zone_of("unknown.example")  # z1 might hold it
    FakeZoneStore.down = set()
    assert stores.zone_of("unknown.example") is None
    assert stores.for_domain("unknown.example").endpoint == "h:1"  # a new domain: the first zone


def test_etcd_is_zone_z1_when_blf_zones_is_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("BLF_ZONES", raising=False)
    monkeypatch.setenv("BLF_VAR", str(tmp_path))
    args = type("Args", (), {"etcd": "10.0.0.1:2379,10.0.0.2:2379"})()
    assert cli_zones.zones_of(args) == {"z1": ["10.0.0.1:2379", "10.0.0.2:2379"]}  # type: ignore[arg-type]
    monkeypatch.setenv("BLF_ZONES", ZONES)
    assert list(cli_zones.zones_of(args)) == ["z1", "z2"]  # type: ignore[arg-type]
