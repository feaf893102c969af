"""The host firewall's per-address TCP limit in the lab (issue 12, finding 3): the rules the
project ships, applied by `lab up` to the lab's SIP TCP ports with its own address exempt,
removed by `lab down`."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from statestore.lab_process import ROOT

HOST = "127.0.0.1"
BASE_PORT = 5070
# The instances' metrics sockets (docs/metrics.md): ksN on METRICS_BASE_PORT + N. Limited per
# address like the SIP ports: a flood of idle connections there would fill the same global
# tcp_max_connections.
METRICS_BASE_PORT = 9470
EDGE_RULES = ROOT / "etc" / "blf-edge.nft"
EDGE_TABLE = ("inet", "blf_edge")
EDGE_PORTS = f"{{ {BASE_PORT + 1}-{BASE_PORT + 29}, {METRICS_BASE_PORT + 1}-{METRICS_BASE_PORT + 29} }}"


def apply_edge_firewall(netns: str | None = None, cluster: str = HOST, ports: str = EDGE_PORTS) -> dict[str, Any]:
    """Apply etc/blf-edge.nft to the lab's SIP and metrics TCP ports, 127.0.0.1 (the instances)
    exempt.

    Only as root and with nft installed (Debian `nftables`); otherwise the lab runs without
    it and says so in `blfctl lab status` (the per-address limit then does not hold). It
    replaces only its own table, in the network namespace the lab runs in (or `netns`, a
    site's: statestore.lab_sites, with `cluster` the sites' addresses)."""
    nft = _nft()
    if os.geteuid() != 0:
        return {"applied": False, "report": "not applied: not root (per-address TCP limit off)"}
    if nft is None:
        return {"applied": False, "report": "not applied: nft not installed (apt-get install nftables)"}
    command = [
        nft, "-D", f"sip_tcp_ports={ports}", "-D", f"cluster_v4={{ {cluster} }}",
        "-D", "cluster_v6={ ::1 }", "-f", str(EDGE_RULES),
    ]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"applied": False, "report": f"not applied: nft failed: {done.stderr.strip()}"}
    return {"applied": True, "report": f"applied: {EDGE_RULES.name} on tcp {ports}, {cluster} exempt"}


def remove_edge_firewall() -> dict[str, Any]:
    nft = _nft()
    if nft is None:
        return {"applied": True, "report": "not removed: nft not installed"}
    done = subprocess.run([nft, "delete", "table", *EDGE_TABLE], capture_output=True, text=True, check=False)
    if done.returncode != 0 and "No such file" not in done.stderr:
        return {"applied": True, "report": f"not removed: nft failed: {done.stderr.strip()}"}
    return {"applied": False, "report": "removed"}


def _nft() -> str | None:
    for candidate in (shutil.which("nft"), "/usr/sbin/nft"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None
