"""The local lab: etcd, memcached and N Kamailio instances on loopback, under var/.

Contract (issues 2 and 14): instance ksN listens on 127.0.0.1:(5070+N), UDP and TCP; each
zone zK (`--zones`, default 1) is an etcd cluster of 1 or 3 members (`--etcd-members`,
default 1) named zK-etcdM, member M of zone K on client port 2379 + 100*(K-1) + 10*(M-1),
peer port +1, metrics port +2 (statestore.lab_etcd): z1-etcd1 keeps 2379/2380/2381, as in a
single-member lab. Each member has var/zK-etcdM/ (data dir and etcd.log). `up` returns only
when every member sees a leader and every instance answers SIP.

Each instance reaches the store through a store link of its own (statestore.storelink, a
TCP relay, one port per member) so that `cut`/`heal` can cut it off from the store and
not from phones; `up --direct-store` leaves the link out (the benchmarks). An instance gets
BLF_ETCD (zone z1's members) and BLF_ZONES (every zone, statestore.zones) as it reaches
them. `kill`, `start`, `stop` (SIGSTOP) and `cont` take instance and member names.

`up --sites N` runs each site (ks{I}, member I of every zone, a memcached, ks{I}'s store
link) in a network namespace of its own, at address 198.18.77.I, with delay between sites:
addresses, ports and links in statestore.lab_sites. `cut`/`heal` then also take a site name.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statestore import dropin_recipe, lab_etcd, lab_link, lab_sites
from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import EtcdStore
from statestore.lab_edge import apply_edge_firewall, remove_edge_firewall
from statestore.lab_etcd import Member, member_named
from statestore.lab_kamailio import (
    CONFIGS,
    FULL_CONFIG,
    kamailio_command,
    kamailio_environment,
    metrics_environment,
    metrics_port,
    sip_options,
)
from statestore.lab_process import (
    ROOT,
    LabError,
    alive,
    binary,
    reap,
    require_free,
    signal_group,
    spawn,
    stop,
    stop_all,
    stopped,
    tcp_answers,
    wait_for,
)
from statestore.lab_sites import Site
from statestore.zones import Zones, format_zones, parse_endpoints

__all__ = ["ETCD_CLIENT", "MEMCACHED", "Lab", "LabError", "Paths", "instance_port", "sip_options"]

HOST = "127.0.0.1"
ETCD_CLIENT = f"{HOST}:{lab_etcd.CLIENT_BASE}"
MEMCACHED = f"{HOST}:11211"
BASE_PORT = 5070
# How long `stop`, `cut` and `heal` wait for the signalled process to have acted.
SIGNAL_TIMEOUT = 5.0


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


class Lab:
    def __init__(self, paths: Paths | None = None) -> None:
        self.paths = paths or Paths.default()
        self.paths.var.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = self._load()

    # --- state file -------------------------------------------------------------------------

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

    # --- commands -----------------------------------------------------------------------------

    def up(self, instances: int = 2, lease_ttl: int = 6, zones: int | None = None,
           etcd_members: int | None = None, direct_store: bool = False, sites: int | None = None,
           config: str = "full") -> None:
        """Start what is not running. `zones`, `etcd_members` and `sites` default to the
        lab's layout (1, 1 and none for a new lab); a lab whose members have data keeps its
        layout. With sites, `etcd_members` defaults to their number and the instances are
        one per site (`instances` is not used). `config`: the configuration every instance
        runs, "full" (kamailio/kamailio.cfg) or "dropin" (the stock one with docs/dropin.md's
        additions); a running instance keeps the one it was started with."""
        if config not in CONFIGS:
            raise LabError(f"no configuration {config!r} (one of {', '.join(CONFIGS)})")
        if sites and etcd_members is None:
            etcd_members = sites
        self._set_layout(zones, etcd_members, sites)
        self.state["lease_ttl"] = lease_ttl
        self.state["direct_store"] = direct_store
        self.state["config"] = config
        if self.sites():
            instances = len(self.sites())
            self.ensure_sites()
            self.state["edge_firewall"] = lab_sites.apply_edge_firewall(self.sites())
        else:
            self.state["edge_firewall"] = apply_edge_firewall()
        self._save()
        if not self.state["edge_firewall"]["applied"]:
            print(f"blfctl lab: edge firewall {self.state['edge_firewall']['report']}", file=sys.stderr)
        self.ensure_store()
        self.ensure_memcached()
        names = [f"ks{index}" for index in range(1, instances + 1)]
        for name in names:
            self._start_instance(name, None)
        for name in names:
            self._wait_instance(name)

    def _set_layout(self, zones: int | None, etcd_members: int | None, sites: int | None = None) -> None:
        current = self.state["layout"]
        wanted = {"zones": current["zones"] if zones is None else zones,
                  "etcd_members": current["etcd_members"] if etcd_members is None else etcd_members,
                  "sites": current.get("sites", 0) if sites is None else sites}
        # refuses what it cannot build
        lab_etcd.layout(wanted["zones"], wanted["etcd_members"],
                        [site.address for site in lab_sites.plan(wanted["sites"])] if wanted["sites"] else None)
        if wanted == current:
            return
        kept = [member.name for members in self.layout().values() for member in members
                if (self.paths.var / member.name / "data").exists()]
        if kept:
            raise LabError(
                f"this lab holds a store of {current['zones']} zone(s) of {current['etcd_members']} member(s) "
                f"({', '.join(kept)} under {self.paths.var}); `lab down` and remove {self.paths.var}, "
                "or use another BLF_VAR, to change it"
            )
        self.state["layout"] = wanted

    def start(self, name: str, wait: bool = True, etcd: str | None = None) -> None:
        """Start instance or member `name` if it is not running. An instance reaches zone z1
        at `etcd` (host:port,...) if given, else at the caller's BLF_ETCD if set, else
        as the lab decides (`BLF_ETCD=... blfctl lab start ks1` puts something between one
        instance and the store: a delaying proxy in tests/e2e/test_edge_store.py). A member
        rejoins its cluster with its data."""
        member = member_named(name)
        if member is not None:
            self._start_member(self._lab_member(member), wait)
            return
        self._start_instance(name, etcd or os.environ.get("BLF_ETCD"))
        if wait:
            self._wait_instance(name)

    def kill(self, name: str) -> None:
        # The whole process group: Kamailio's children (SIP workers, the lease keeper)
        # would otherwise outlive a SIGKILLed main process and keep its lease alive.
        pid = self._running(name)
        signal_group(pid, signal.SIGKILL)
        reap(pid, 5.0)

    def pause(self, name: str) -> None:
        """SIGSTOP the whole process group of an instance or a member (`lab stop`)."""
        pid = self._running(name)
        signal_group(pid, signal.SIGSTOP)
        wait_for(f"{name} stopping", lambda: stopped(pid), pid, SIGNAL_TIMEOUT)

    def resume(self, name: str) -> None:
        """SIGCONT what `pause` stopped (`lab cont`)."""
        pid = self._running(name)
        signal_group(pid, signal.SIGCONT)
        wait_for(f"{name} continuing", lambda: not stopped(pid), pid, SIGNAL_TIMEOUT)

    def cut(self, name: str, heal: bool = False) -> None:
        """Cut instance `name` off from every member of every zone (its store link drops and
        blackholes), or site `name` off from the other sites; or heal it. Phones still reach
        it: only its store traffic (a site: its traffic with other sites) is cut."""
        site = lab_sites.site_named(name, self.sites())
        if site is not None:
            self._cut_site(site, heal)
            return
        instance_port(name)
        relay = self.state["relays"].get(name, {})
        if not alive(relay.get("pid")):
            raise LabError(f"{name} has no store link (not started, or the lab is up with --direct-store)")
        lab_link.signal(self.paths.instance_dir(name), int(relay["pid"]), heal)
        relay["cut"] = not heal
        self._save()

    def _cut_site(self, site: Site, heal: bool) -> None:
        wan = self.state["sites"].get("wan", {}).get("pid")
        if not alive(wan):
            raise LabError(f"the links between sites are not up (lab not up?): cannot cut or heal {site.name}")
        cut = set(self.state["sites"].get("cut", []))
        cut = cut - {site.name} if heal else cut | {site.name}
        lab_sites.apply_cut(self.paths.var, int(wan), self.sites(), sorted(cut))
        self.state["sites"]["cut"] = sorted(cut)
        self._save()

    def ensure_sites(self) -> None:
        """The sites' namespaces, bridge and WAN emulator, made if missing (a cut is kept)."""
        sites = self.sites()
        if not sites:
            return
        self.state["sites"]["prefix"] = sites[0].prefix
        self._save()  # a `down` after a failed build removes what it made
        if not lab_sites.network_up(sites):
            stop(self.state["sites"].get("wan", {}).get("pid"))
            lab_sites.build_network(sites)
        if not alive(self.state["sites"].get("wan", {}).get("pid")):
            cut = list(self.state["sites"].get("cut", []))
            self.state["sites"]["wan"] = {"pid": lab_sites.start_wan(self.paths.var, sites, cut, spawn)}
        self._save()

    def down(self) -> None:
        """Stop everything: instances first (their store goes last, so they leave cleanly),
        then the store links and memcached, then every member; stopped ones continued; then
        the sites' links and namespaces."""
        stop_all([entry.get("pid") for entry in self.state["instances"].values()])
        site_memcached = [entry.get("pid") for entry in self.state["sites"].get("memcached", {}).values()]
        stop_all([entry.get("pid") for entry in self.state["relays"].values()]
                 + [self.state["memcached"].get("pid"), *site_memcached])
        members = [entry.get("pid") for zone in self.state["zones"].values() for entry in zone["members"].values()]
        stop_all([*members, self.state["etcd"].get("pid")])  # "etcd": a lab started before zones knew only it
        sites = self.sites()
        if sites:
            stop(self.state["sites"].get("wan", {}).get("pid"))
            lab_sites.remove_network(sites)
            self.state["edge_firewall"] = {"applied": False, "report": "removed with the sites' namespaces"}
        elif self.state.get("edge_firewall", {}).get("applied"):
            self.state["edge_firewall"] = remove_edge_firewall()
        for part in ("instances", "relays", "zones", "memcached"):
            self.state[part] = {}
        self.state["sites"] = {"cut": [], "memcached": {}}
        self._save()

    def status(self) -> dict[str, Any]:
        instances = {}
        for name, entry in sorted(self.state["instances"].items()):
            relay = self.state["relays"].get(name, {})
            link = "direct" if not alive(relay.get("pid")) else ("cut" if relay.get("cut") else "relayed")
            instances[name] = {
                "sip": entry["sip"], "metrics": entry.get("metrics"), "pid": entry["pid"], "alive": alive(entry["pid"]),
                "stopped": stopped(entry["pid"]), "store": link, "config": entry.get("config", "full"),
            }
        zones = {
            zone: {"members": {
                member.name: _process_status({"client": member.client}, self._member_entry(member))
                for member in members
            }}
            for zone, members in self.layout().items()
        }
        etcd = _process_status({"client": ETCD_CLIENT}, self.state["etcd"])
        memcached = _process_status({"address": MEMCACHED}, self.state["memcached"])
        edge = self.state.get("edge_firewall", {"applied": False, "report": "not applied (lab not up)"})
        shown = {"instances": instances, "etcd": etcd, "memcached": memcached, "edge_firewall": edge, "zones": zones}
        if self.sites():
            shown.update(self._sites_status())
        return shown

    def _sites_status(self) -> dict[str, Any]:
        """`sites` (each site's namespace, address, delay and what runs there), `wan` (the
        links' emulator); `memcached` is then s1's (each site has its own)."""
        sites, state = self.sites(), self.state["sites"]
        runs = {site.name: [site.instance] + [member.name for members in self.layout().values()
                                              for member in members if member.index == site.index]
                + ["memcached"] + ([] if self.state.get("direct_store") else ["store link"]) for site in sites}
        shown = lab_sites.status(sites, list(state.get("cut", [])), runs)
        for site in sites:
            shown[site.name]["memcached"] = _process_status(
                {"address": lab_sites.MEMCACHED}, state.get("memcached", {}).get(site.name, {}))
        wan = state.get("wan", {})
        return {
            "sites": shown,
            "memcached": shown[sites[0].name]["memcached"],
            "wan": {**wan, "alive": alive(wan.get("pid")), "bridge": lab_sites.bridge(sites[0].prefix),
                    "host_address": lab_sites.HOST_ADDRESS},
        }

    # --- components ---------------------------------------------------------------------------

    def ensure_store(self) -> None:
        """Start every member of every zone that is not running, then wait until each sees a
        leader. A new cluster's members are all started before any is waited for."""
        started = []
        for members in self.layout().values():
            for member in members:
                if not alive(self._member_entry(member).get("pid")):
                    started.append(self._spawn_member(member, members))
        for member, pid in started:
            _wait_member(member, pid, leader=False)
        for member, pid in started:
            _wait_member(member, pid, leader=True)

    def _start_member(self, member: Member, wait: bool) -> None:
        cluster = self.layout()[member.zone_name]
        pid: int | None = self._member_entry(member).get("pid")
        if pid is None or not alive(pid):
            member, pid = self._spawn_member(member, cluster)
        if not wait:
            return
        _wait_member(member, pid, leader=False)
        running = [other for other in cluster if alive(self._member_entry(other).get("pid"))
                   and not stopped(self._member_entry(other).get("pid"))]
        if 2 * len(running) > len(cluster):  # a quorum: it finds the leader (or elects one)
            _wait_member(member, pid, leader=True)

    def _spawn_member(self, member: Member, cluster: list[Member]) -> tuple[Member, int]:
        site = self._site(member.index)
        if site is None:  # a site's namespace is the lab's alone
            require_free(member.name, member.client, socket.SOCK_STREAM)
            require_free(member.name, member.peer, socket.SOCK_STREAM)
        else:
            self.ensure_sites()
        directory = self.paths.var / member.name
        data = directory / "data"
        directory.mkdir(parents=True, exist_ok=True)
        pid = self._spawner(site)(
            lab_etcd.command(binary("etcd"), member, cluster, data), directory / "etcd.log", os.environ.copy())
        zone = self.state["zones"].setdefault(member.zone_name, {"members": {}})
        zone["members"][member.name] = {
            "client": member.client, "peer": member.peer, "metrics": member.metrics, "pid": pid, "data": str(data),
        }
        self._save()
        return member, pid

    def _member_entry(self, member: Member) -> dict[str, Any]:
        entry: dict[str, Any] = self.state["zones"].get(member.zone_name, {}).get("members", {}).get(member.name, {})
        return entry

    def _lab_member(self, member: Member) -> Member:
        """The lab's member of that name (on its site's address when the lab runs sites)."""
        found = next((ours for ours in self.layout().get(member.zone_name, []) if ours.name == member.name), None)
        if found is None:
            layout = self.state["layout"]
            raise LabError(f"no member {member.name} in this lab "
                           f"({layout['zones']} zone(s) of {layout['etcd_members']} member(s))")
        return found

    def _running(self, name: str) -> int:
        """The PID of instance or member `name`; LabError unless it is running (or stopped)."""
        member = member_named(name)
        if member is not None:
            pid = self._member_entry(self._lab_member(member)).get("pid")
        else:
            instance_port(name)
            pid = self.state["instances"].get(name, {}).get("pid")
        if pid is None or not alive(pid):
            raise LabError(f"{name} is not running")
        return int(pid)

    def ensure_memcached(self) -> None:
        if self.sites():
            self._ensure_site_memcached()
            return
        if alive(self.state["memcached"].get("pid")):
            return
        require_free("memcached", MEMCACHED, socket.SOCK_STREAM)
        host, _, port = MEMCACHED.partition(":")
        command = [binary("memcached"), "-l", host, "-p", port, "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            command += ["-u", "root"]
        pid = spawn(command, self.paths.var / "memcached.log", os.environ.copy())
        self.state["memcached"] = {"address": MEMCACHED, "pid": pid}
        self._save()
        wait_for("memcached", lambda: tcp_answers(host, int(port)), pid)

    def _ensure_site_memcached(self) -> None:
        """One memcached per site, on the site's loopback (why: statestore.lab_sites)."""
        self.ensure_sites()
        started = self.state["sites"].setdefault("memcached", {})
        for site in self.sites():
            if alive(started.get(site.name, {}).get("pid")):
                continue
            host, _, port = lab_sites.MEMCACHED.partition(":")
            command = [binary("memcached"), "-l", host, "-p", port, "-U", "0", "-m", "64", "-u", "root"]
            log = self.paths.var / f"memcached-{site.name}.log"
            started[site.name] = {"pid": self._spawner(site)(command, log, os.environ.copy())}
            self._save()

    def _start_instance(self, name: str, etcd: str | None) -> None:
        port = instance_port(name)
        entry = self.state["instances"].get(name, {})
        if alive(entry.get("pid")):
            return
        site = self._site(port - BASE_PORT)
        if site is None:
            require_free(name, f"{HOST}:{port}", socket.SOCK_DGRAM)
        if not self.state["zones"]:
            self.ensure_store()
        self.ensure_memcached()
        reached, stores = self._reached_zones(name), self.zones()
        if etcd:
            reached["z1"] = stores["z1"] = parse_endpoints(etcd)
        config = self.state.get("config", "full")
        pid = self._spawn_kamailio(name, port, reached, self._config_file(name, config))
        # The stores it uses (through its link or not): "etcd" is its zone z1's, as before zones.
        self.state["instances"][name] = {
            "sip": f"{site.address if site else HOST}:{port}", "pid": pid, "etcd": ",".join(stores["z1"]),
            "metrics": f"{site.address if site else HOST}:{metrics_port(port)}",
            "zones": format_zones(stores), "config": config,
        }
        self._save()

    def _reached_zones(self, name: str) -> Zones:
        """The zones as instance `name` reaches them: through its store link, or direct. In
        a site, its own site's member first (the one its client uses while it answers)."""
        direct = self.zones()
        site = self._site(instance_port(name) - BASE_PORT)
        if site is not None:
            direct = {zone: sorted(endpoints, key=lambda endpoint: not endpoint.startswith(f"{site.address}:"))
                      for zone, endpoints in direct.items()}
        if self.state.get("direct_store"):
            return direct
        ports = self._ensure_link(name, [endpoint for endpoints in direct.values() for endpoint in endpoints])
        return {zone: [f"{HOST}:{ports[endpoint]}" for endpoint in endpoints] for zone, endpoints in direct.items()}

    def _ensure_link(self, name: str, upstreams: list[str]) -> dict[str, int]:
        """Instance `name`'s store link, started if needed; the port it listens on for each
        member. A running link keeps its ports (and its cut)."""
        entry = self.state["relays"].get(name, {})
        if alive(entry.get("pid")) and sorted(entry.get("ports", {})) == sorted(upstreams):
            return dict(entry["ports"])
        stop(entry.get("pid"))
        site = self._site(instance_port(name) - BASE_PORT)
        pid = lab_link.spawn_link(self.paths.instance_dir(name), upstreams, self._spawner(site))
        self.state["relays"][name] = {"pid": pid, "ports": {}, "cut": False}
        self._save()
        ports = lab_link.wait_ports(self.paths.instance_dir(name), pid, name)
        self.state["relays"][name]["ports"] = ports
        self._save()
        return ports

    def _config_file(self, name: str, config: str) -> Path:
        """The configuration file instance `name` starts with: in drop-in mode, the stock
        configuration with docs/dropin.md's additions, written under its directory."""
        if config == "dropin":
            try:
                return dropin_recipe.build(self.paths.instance_dir(name) / "config")
            except dropin_recipe.RecipeError as exc:
                raise LabError(f"the drop-in recipe (docs/dropin.md) cannot be applied: {exc}") from exc
        return FULL_CONFIG

    def _spawn_kamailio(self, name: str, port: int, zones: Zones, config: Path) -> int:
        site = self._site(port - BASE_PORT)
        host = site.address if site else HOST
        run = self.paths.instance_dir(name) / "run"
        run.mkdir(parents=True, exist_ok=True)
        env = kamailio_environment(os.environ)
        env.update(
            BLF_KEMI_SCRIPT=str(ROOT / "kemi" / "blf_kemi.py"),
            BLF_AUTH_SECRET=self.state["secret"],
            BLF_INSTANCE=name,
            BLF_SIP=f"{host}:{port}",
            BLF_ETCD=",".join(zones["z1"]),
            BLF_ZONES=format_zones(zones),
            BLF_MEMCACHED=lab_sites.MEMCACHED if site else MEMCACHED,
            BLF_LEASE_TTL=str(self.state.get("lease_ttl", 6)),
            **metrics_environment(host, port),
        )
        return self._spawner(site)(kamailio_command(run, host, port, config), run.parent / "kamailio.log", env)

    def _wait_instance(self, name: str) -> None:
        entry = self.state["instances"][name]
        host, _, port = entry["sip"].rpartition(":")
        wait_for(name, lambda: sip_options(host, int(port)) == 200 and self._announced(name), entry["pid"])

    def _announced(self, name: str) -> bool:
        """`name` is in zone z1's list of instances, read from a member that runs."""
        endpoint = next(
            (entry["client"] for entry in self.state["zones"].get("z1", {}).get("members", {}).values()
             if alive(entry.get("pid")) and not stopped(entry.get("pid"))),
            ETCD_CLIENT,
        )
        store = EtcdStore(endpoint, timeout=1.0)
        try:
            return name in store.instances()
        except StoreUnavailable:
            return False
        finally:
            store.close()


def _wait_member(member: Member, pid: int, leader: bool) -> None:
    """Until `member` listens (leader False) or sees a leader of its zone (True)."""
    if leader:
        wait_for(f"{member.name} (a leader in {member.zone_name})", lambda: lab_etcd.healthy(member), pid)
    else:
        wait_for(member.name, lambda: tcp_answers(member.host, member.client_port), pid)


def _process_status(defaults: dict[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    pid = entry.get("pid")
    return {**defaults, **entry, "pid": pid, "alive": alive(pid), "stopped": stopped(pid)}


