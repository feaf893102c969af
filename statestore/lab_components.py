"""The lab's components, started if not running: the sites' network, every zone's etcd
members, memcached, and each Kamailio instance with its store link, each waited for until
ready (statestore.lab explains the layout)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from statestore import dropin_recipe, lab_etcd, lab_link, lab_sites
from statestore.domain.errors import StoreUnavailable
from statestore.etcd_store import EtcdStore
from statestore.lab_etcd import Member
from statestore.lab_kamailio import (
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
    require_free,
    spawn,
    stop,
    stopped,
    tcp_answers,
    wait_for,
)
from statestore.lab_state import BASE_PORT, ETCD_CLIENT, HOST, MEMCACHED, LabState, instance_port
from statestore.zones import Zones, format_zones, parse_endpoints


class LabComponents(LabState):
    """Starting the lab's parts and waiting for them (statestore.lab.Lab's commands use these)."""

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
