"""Sites in the lab (issue 14): `blfctl lab up --sites N --etcd-members N`.

Each site `sI` (I = 1..N) is a network namespace of its own, `PREFIX-sI` (PREFIX is
BLF_SITES_PREFIX, default `blf`; namespace names are global to the machine, so two labs
with sites on one machine need two prefixes). Site I runs:

    ks{I}          SIP on ADDRESS:5070+I, UDP and TCP (the loopback lab's port)
    zK-etcd{I}     member I of every zone K, client/peer/metrics on ADDRESS with the
                   loopback lab's ports (statestore.lab_etcd: z1-etcd1 ADDRESS:2379, ...)
    memcached      127.0.0.1:11211 inside the site (one per site, see below)
    store link     ks{I}'s (statestore.storelink), on 127.0.0.1 inside the site

with ADDRESS = 198.18.77.I (RFC 2544's benchmarking range, see SUBNET). The namespace the
lab is started from (the "host") has a bridge `PREFIX-br` with 198.18.77.254/24 and one
veth per site (`PREFIX-sI`, `eth0` in the site, ADDRESS/32 with a route to .254 only).
Phones and tests in the host namespace reach ks{I} at ADDRESS:5070+I and any member at
its client address, without delay, and the site answers them without delay.

Between sites there is no bridge path: every other site's address is routed through the
site's `wan0`, a TUN device of the lab's WAN emulator (statestore.lab_wan), which delays
what a site sends to another by the site's own egress delay, 10 + 5*(I-1) ms (capped at
25): a round trip between two sites is 25-45 ms (s1-s2 25, s1-s3 30, s2-s3 35). Etcd peer
traffic, an instance's traffic to another site's member and SIP between instances are all
delayed; an instance and the member of its own site talk over the site's loopback.

`lab cut sI` drops everything between sI and the other sites (in the WAN emulator): its
members are partitioned from their peers, its instance reaches only its own member (which
has lost its quorum). Phones still reach it. `lab heal sI` undoes it. `lab down` stops the
emulator and deletes the namespaces (with their veths, TUN devices and firewall tables)
and the bridge.

memcached is one per site, on the site's loopback: it is the call path's fallback for
accounts and bindings when etcd cannot answer (statestore.cache), so it must answer in
microseconds and stay reachable from a site cut off from the others; a shared one would
put an inter-site round trip on calls and be one more thing a cut site loses.

The edge firewall (etc/blf-edge.nft) is applied inside each site's namespace, on its
instance's SIP TCP port, with every site address exempt (the cluster's instances); the
phones of the host namespace (all from 198.18.77.254) are limited as one address.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statestore.lab_edge import METRICS_BASE_PORT
from statestore.lab_edge import apply_edge_firewall as apply_edge_rules
from statestore.lab_process import ROOT, LabError, wait_for

# RFC 2544's benchmarking range: not an RFC 1918 address, so a phone of the host namespace is
# not taken for one behind NAT (statestore.domain.routing.behind_nat), as on loopback; a
# phone behind NAT is reached only through the instance holding its flow, which a cut site
# cannot reach.
SUBNET = "198.18.77"
HOST_ADDRESS = f"{SUBNET}.254"
PREFIX_VARIABLE = "BLF_SITES_PREFIX"
DEFAULT_PREFIX = "blf"
BASE_DELAY_MS = 10
DELAY_STEP_MS = 5
MAX_DELAY_MS = 25
MAX_SITES = 9
MEMCACHED = "127.0.0.1:11211"  # in each site's namespace
SIP_BASE_PORT = 5070
NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
# How long `cut` and `heal` wait for the WAN emulator to say it applied them.
SIGNAL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Site:
    index: int
    prefix: str = DEFAULT_PREFIX

    @property
    def name(self) -> str:
        return f"s{self.index}"

    @property
    def netns(self) -> str:
        return f"{self.prefix}-{self.name}"

    @property
    def host_link(self) -> str:
        """The veth end in the host namespace (on the bridge)."""
        return f"{self.prefix}-{self.name}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}"

    @property
    def delay_ms(self) -> int:
        """This site's egress delay towards the other sites."""
        return min(MAX_DELAY_MS, BASE_DELAY_MS + DELAY_STEP_MS * (self.index - 1))

    @property
    def instance(self) -> str:
        return f"ks{self.index}"


def prefix_of(environ: dict[str, str] | os._Environ[str]) -> str:
    prefix = environ.get(PREFIX_VARIABLE, DEFAULT_PREFIX)
    # Interface names have 15 characters: PREFIX-br and PREFIX-sI must fit.
    if not prefix or len(prefix) > 10 or not prefix.replace("-", "").isalnum():
        raise LabError(f"{PREFIX_VARIABLE} must be 1-10 letters, digits or '-', not {prefix!r}")
    return prefix


def plan(count: int, prefix: str = DEFAULT_PREFIX) -> list[Site]:
    if not 1 <= count <= MAX_SITES:
        raise LabError(f"--sites is 1 to {MAX_SITES}, not {count}")
    return [Site(index, prefix) for index in range(1, count + 1)]


def bridge(prefix: str) -> str:
    return f"{prefix}-br"


def round_trip_ms(one: Site, other: Site) -> int:
    return one.delay_ms + other.delay_ms


def site_named(name: str, sites: list[Site]) -> Site | None:
    return next((site for site in sites if site.name == name), None)


def network_commands(sites: list[Site]) -> list[list[str]]:
    """The `ip` commands that build the sites' namespaces, the bridge and the veths."""
    prefix = sites[0].prefix
    commands = [
        ["ip", "link", "add", bridge(prefix), "type", "bridge"],
        ["ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", bridge(prefix)],
        ["ip", "link", "set", bridge(prefix), "up"],
    ]
    for site in sites:
        ns = site.netns
        commands += [
            ["ip", "netns", "add", ns],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "link", "add", site.host_link, "type", "veth", "peer", "name", "eth0", "netns", ns],
            ["ip", "link", "set", site.host_link, "master", bridge(prefix), "up"],
            ["ip", "-n", ns, "addr", "add", f"{site.address}/32", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
            ["ip", "-n", ns, "route", "add", f"{HOST_ADDRESS}/32", "dev", "eth0", "src", site.address],
        ]
    return commands


def wan_commands(sites: list[Site]) -> list[list[str]]:
    """Once the WAN emulator has made each site's wan0: up, and every other site routed through it."""
    commands = []
    for site in sites:
        commands.append(["ip", "-n", site.netns, "link", "set", "wan0", "up"])
        commands += [
            ["ip", "-n", site.netns, "route", "add", f"{other.address}/32", "dev", "wan0", "src", site.address]
            for other in sites if other != site
        ]
    return commands


def teardown_commands(sites: list[Site]) -> list[list[str]]:
    """The veths (both ends) and the bridge first: the kernel destroys a deleted namespace
    (its TUN device, routes and nft tables) asynchronously, seen taking minutes here, and a
    veth left in the host namespace until then blocks the next `lab up`."""
    return (
        [["ip", "link", "del", site.host_link] for site in sites]
        + [["ip", "link", "del", bridge(sites[0].prefix)]]
        + [["ip", "netns", "del", site.netns] for site in sites]
    )


def _run(command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done


def network_up(sites: list[Site]) -> bool:
    """Whether the sites' namespaces and bridge exist."""
    done = _run(["ip", "link", "show", bridge(sites[0].prefix)], check=False)
    return done.returncode == 0 and all((NETNS_DIR / site.netns).exists() for site in sites)


def build_network(sites: list[Site]) -> None:
    if os.geteuid() != 0:
        raise LabError("--sites needs root (network namespaces, veths, TUN devices)")
    for site in sites:
        if (NETNS_DIR / site.netns).exists():
            raise LabError(f"network namespace {site.netns} exists already (another lab's? set {PREFIX_VARIABLE})")
    # No namespace of ours, so links of these names are what a lab that did not finish its
    # `down` left behind (its namespaces gone): removed.
    for name in [site.host_link for site in sites] + [bridge(sites[0].prefix)]:
        _run(["ip", "link", "del", name], check=False)
    for command in network_commands(sites):
        _run(command)


def remove_network(sites: list[Site]) -> None:
    for command in teardown_commands(sites):
        _run(command, check=False)


def wan_config(sites: list[Site], cut: list[str]) -> dict[str, Any]:
    return {
        "sites": [{"name": s.name, "netns": s.netns, "address": s.address, "delay_ms": s.delay_ms} for s in sites],
        "cut": sorted(cut),
    }


def start_wan(var: Path, sites: list[Site], cut: list[str], spawn: Callable[..., int]) -> int:
    """Start the WAN emulator, wait for its devices and route the sites through them."""
    config, ready = var / "wan.json", var / "wan.ready"
    config.write_text(json.dumps(wan_config(sites, cut), indent=2))
    ready.unlink(missing_ok=True)
    command = [sys.executable, "-m", "statestore.lab_wan", "--config", str(config), "--ready", str(ready)]
    pid = spawn(command, var / "wan.log", os.environ.copy())
    wait_for("the WAN emulator", ready.exists, pid)
    for command in wan_commands(sites):
        _run(command)
    return pid


def apply_cut(var: Path, pid: int, sites: list[Site], cut: list[str]) -> None:
    """Write the cut sites to the WAN emulator's config, SIGHUP it, wait until it applied them."""
    (var / "wan.json").write_text(json.dumps(wan_config(sites, cut), indent=2))
    log = var / "wan.log"
    wanted = f"lab_wan: applied cut={sorted(cut)}"
    before = _count(log, wanted)
    os.kill(pid, signal.SIGHUP)
    wait_for("the WAN emulator", lambda: _count(log, wanted) > before, pid, SIGNAL_TIMEOUT)


def _count(log: Path, text: str) -> int:
    try:
        return log.read_text(errors="replace").count(text)
    except OSError:
        return 0


def netns_path(site: Site, anchor: int | None) -> str:
    """Where to enter `site`'s namespace: /run/netns/NAME, or the namespace of `anchor` (a
    process running in the site) when that file is not the namespace here. `ip netns add`
    bind-mounts the namespace on the file in the mount namespace it runs in; a later
    command run under another `ip netns exec` (which gives each command a mount namespace
    of its own) sees only an empty file."""
    named = str(NETNS_DIR / site.netns)
    if not anchor:
        return named
    by_process = f"/proc/{anchor}/ns/net"
    try:
        if os.stat(named).st_ino != os.stat(by_process).st_ino:
            return by_process
    except OSError:
        pass
    return named


def spawn_in(netns: str, command: list[str], log: Path, env: dict[str, str]) -> int:
    """statestore.lab_process.spawn, the program running in the network namespace at path
    or name `netns` (setns before exec: its PID is the program's from the start, as the
    lab expects)."""
    target = os.open(netns if netns.startswith("/") else str(NETNS_DIR / netns), os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)

    def enter() -> None:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")

    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(log, "ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, cwd=str(ROOT), preexec_fn=enter, pass_fds=(target,),  # noqa: PLW1509
            )
    finally:
        os.close(target)
    return process.pid


def apply_edge_firewall(sites: list[Site]) -> dict[str, Any]:
    """etc/blf-edge.nft in each site's namespace, on its instance's SIP and metrics TCP ports, the
    sites' addresses and 127.0.0.1 exempt; one report for all."""
    cluster = ", ".join(["127.0.0.1", *(site.address for site in sites)])
    reports = [
        apply_edge_rules(site.netns, cluster, f"{{ {SIP_BASE_PORT + site.index}, {METRICS_BASE_PORT + site.index} }}")
        for site in sites
    ]
    failed = [report["report"] for report in reports if not report["applied"]]
    if failed:
        return {"applied": False, "report": failed[0]}
    return {"applied": True, "report": f"applied in {', '.join(site.netns for site in sites)}: "
            f"etc/blf-edge.nft on each instance's tcp port, {cluster} exempt"}


def status(sites: list[Site], cut: list[str], runs: dict[str, list[str]]) -> dict[str, Any]:
    """The "sites" part of `lab status --json`: each site's namespace, address, delay and what runs there."""
    return {
        site.name: {
            "namespace": site.netns, "address": site.address, "delay_ms": site.delay_ms, "cut": site.name in cut,
            "runs": runs.get(site.name, []),
            "round_trip_ms": {other.name: round_trip_ms(site, other) for other in sites if other != site},
        }
        for site in sites
    }
