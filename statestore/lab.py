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

import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from statestore import lab_etcd, lab_link, lab_sites
from statestore.lab_components import LabComponents
from statestore.lab_edge import apply_edge_firewall, remove_edge_firewall
from statestore.lab_etcd import member_named
from statestore.lab_kamailio import CONFIGS, sip_options
from statestore.lab_process import LabError, alive, reap, signal_group, stop, stop_all, stopped, wait_for
from statestore.lab_sites import Site
from statestore.lab_state import ETCD_CLIENT, MEMCACHED, Paths, instance_port

__all__ = ["ETCD_CLIENT", "MEMCACHED", "Lab", "LabError", "Paths", "instance_port", "sip_options"]

# How long `stop`, `cut` and `heal` wait for the signalled process to have acted.
SIGNAL_TIMEOUT = 5.0


class Lab(LabComponents):
    """The lab's commands (`blfctl lab ...`): its state and layout are statestore.lab_state's,
    starting its parts statestore.lab_components'."""

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


def _process_status(defaults: dict[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    pid = entry.get("pid")
    return {**defaults, **entry, "pid": pid, "alive": alive(pid), "stopped": stopped(pid)}
