"""The lab's state (var/lab.json) and where its parts run: the var directory, instance names
and SIP ports, the layout of zones and members, the sites (statestore.lab_sites) and how a
process of a site is started. The base of statestore.lab.Lab."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statestore import lab_etcd, lab_sites
from statestore.lab_etcd import Member
from statestore.lab_process import ROOT, LabError, alive, spawn
from statestore.lab_sites import Site
from statestore.zones import Zones

HOST = "127.0.0.1"
ETCD_CLIENT = f"{HOST}:{lab_etcd.CLIENT_BASE}"
MEMCACHED = f"{HOST}:11211"
BASE_PORT = 5070


@dataclass(frozen=True)
class Paths:
    var: Path

    @classmethod
    def default(cls) -> Paths:
        return cls(Path(os.environ.get("BLF_VAR", str(ROOT / "var"))).resolve())

    @property
    def state(self) -> Path:
        return self.var / "lab.json"

    def instance_dir(self, name: str) -> Path:
        return self.var / name


def instance_port(name: str) -> int:
    if not name.startswith("ks") or not name[2:].isdigit() or int(name[2:]) < 1:
        raise LabError(f"instance names are ks1, ks2, ...; not {name!r}")
    return BASE_PORT + int(name[2:])


class LabState:
    """What the lab's commands (statestore.lab) and its components (statestore.lab_components)
    share: the state file and the lab's layout."""

    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or Paths.default()
        self.paths.var.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        state: dict[str, Any] = {"secret": secrets.token_hex(16)}
        if self.paths.state.exists():
            state = json.loads(self.paths.state.read_text())
        for part in ("instances", "zones", "relays", "etcd", "memcached"):
            state.setdefault(part, {})
        state.setdefault("layout", {"zones": 1, "etcd_members": 1})
        state["layout"].setdefault("sites", 0)
        state.setdefault("sites", {"cut": [], "memcached": {}})
        return state

    def _save(self) -> None:
        # "etcd" is z1's first member, as the single etcd of the lab before zones (tools read it).
        first = self.state["zones"].get("z1", {}).get("members", {}).get("z1-etcd1")
        self.state["etcd"] = dict(first) if first else {}
        tmp = self.paths.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True))
        tmp.replace(self.paths.state)

    def layout(self) -> dict[str, list[Member]]:
        hosts = [site.address for site in self.sites()] or None
        return lab_etcd.layout(self.state["layout"]["zones"], self.state["layout"]["etcd_members"], hosts)

    def sites(self) -> list[Site]:
        """The lab's sites (statestore.lab_sites); none for a lab on loopback."""
        count = int(self.state["layout"].get("sites", 0))
        prefix = self.state["sites"].get("prefix") or lab_sites.prefix_of(os.environ)
        return lab_sites.plan(count, prefix) if count else []

    def _site(self, index: int) -> Site | None:
        """The site where instance ks{index} and the members {index} run; None on loopback."""
        sites = self.sites()
        if not sites:
            return None
        if not 1 <= index <= len(sites):
            raise LabError(f"this lab has {len(sites)} sites: no ks{index}")
        return sites[index - 1]

    def _spawner(self, site: Site | None) -> Callable[[list[str], Path, dict[str, str]], int]:
        """How a process of `site` (None: of the loopback lab) is started."""
        if site is None:
            return spawn
        anchor = self.state["sites"].get("memcached", {}).get(site.name, {}).get("pid")
        where = lab_sites.netns_path(site, anchor if alive(anchor) else None)
        return lambda command, log, env: lab_sites.spawn_in(where, command, log, env)

    def zones(self) -> Zones:
        """Every zone's member client endpoints (what blfctl and a direct instance use)."""
        return {zone: [member.client for member in members] for zone, members in self.layout().items()}
